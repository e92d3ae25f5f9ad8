//! `open_secret_file` creates 0600 whatever the umask. Alone in its test binary because the
//! umask is process-wide and would race with other tests creating files.
// An integration test crate: a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;

use tlstap_core::secret_file::{open_secret_file, OpenMode};

#[test]
fn mode_is_0600_under_any_umask() {
    let dir = tempfile::tempdir().unwrap();
    for (i, mask) in [0o000, 0o022, 0o277, 0o777].into_iter().enumerate() {
        // SAFETY: umask only swaps the process's mask; no other test runs in this binary.
        let old = unsafe { libc::umask(mask) };
        let p = dir.path().join(format!("f{i}"));
        let opened = open_secret_file(&p, OpenMode::Truncate);
        // SAFETY: as above.
        unsafe { libc::umask(old) };
        opened.unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600, "umask {mask:o}");
    }
}
