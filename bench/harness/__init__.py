"""tlstap benchmark harness (bench/run -> bench/bench.py -> harness.main). Python 3 standard library only.

common      paths, constants, log()
procfs      child processes (Procs/PROCS) and /proc, fdinfo, BPF stats, uprobe counters
stats       med, spread, f
base        BaseBench: builds, machine, target copies, fixture server, tlstap start/stop, hey, settle
overhead    1. overhead A/B, hit breakdown, heap calls
pinned      1b. the A/B with the server alone on a core, and a null-vs-jsonl profile of that core
profiling   perf profiles of tlstap and of the traced server's kernel path
throughput  2. large-body throughput
startup     3. startup, --dry-run analysis, host-wide discovery
report      results JSON, the BENCHMARKS.md markdown
main        options, signals, the Bench class (BaseBench + the mixins), main()
"""
