#!/usr/bin/env python3
"""Entry point of the tlstap benchmark harness, run by bench/run: the harness itself is the
package bench/harness/ (harness.main has the options and main())."""

import sys

# bench/run runs this as root from the work tree: leave no root-owned __pycache__ in bench/harness/
sys.dont_write_bytecode = True

from harness.main import main  # noqa: E402 (after dont_write_bytecode; bench/ is sys.path[0])

if __name__ == "__main__":
    main()
