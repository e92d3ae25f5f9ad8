//! `open_secret_file`: 0600 on create, existing modes kept, append vs truncate, our symlinks
//! followed, other users' symlinks and hard links refused, errors naming the path.
//! (The umask case lives alone in `secret_file_umask.rs`: the umask is process-wide.)
// An integration test crate: a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::{lchown, symlink, PermissionsExt};
use std::path::Path;

use common::prerequisites;
use tlstap_core::secret_file::{open_secret_file, OpenMode};

const NOBODY: u32 = 65534;

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn creates_0600() {
    let dir = tempfile::tempdir().unwrap();
    for (name, m) in [("a.log", OpenMode::Append), ("b.pcapng", OpenMode::Truncate)] {
        let p = dir.path().join(name);
        open_secret_file(&p, m).unwrap().write_all(b"x").unwrap();
        assert_eq!(mode(&p), 0o600, "{name}");
        assert_eq!(fs::read(&p).unwrap(), b"x");
    }
}

#[test]
fn existing_file_keeps_mode_and_appends_or_truncates() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("keys.log");
    fs::write(&p, b"old\n").unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
    open_secret_file(&p, OpenMode::Append).unwrap().write_all(b"new\n").unwrap();
    assert_eq!(fs::read(&p).unwrap(), b"old\nnew\n");
    assert_eq!(mode(&p), 0o640);
    open_secret_file(&p, OpenMode::Truncate).unwrap().write_all(b"fresh").unwrap();
    assert_eq!(fs::read(&p).unwrap(), b"fresh");
    assert_eq!(mode(&p), 0o640);
}

#[test]
fn own_symlink_is_followed_and_target_created_0600() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("real.log");
    let link = dir.path().join("link.log");
    symlink("real.log", &link).unwrap(); // relative, dangling
    open_secret_file(&link, OpenMode::Append).unwrap().write_all(b"1\n").unwrap();
    assert_eq!(mode(&target), 0o600);
    open_secret_file(&link, OpenMode::Append).unwrap().write_all(b"2\n").unwrap();
    assert_eq!(fs::read(&target).unwrap(), b"1\n2\n");
    assert!(fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "link left alone");
}

#[test]
fn foreign_symlink_is_refused() {
    if !prerequisites("foreign_symlink_is_refused", &[], true) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("victim");
    fs::write(&target, b"precious").unwrap();
    let link = dir.path().join("keys.log");
    symlink(&target, &link).unwrap();
    lchown(&link, Some(NOBODY), Some(NOBODY)).unwrap();
    for m in [OpenMode::Append, OpenMode::Truncate] {
        let err = open_secret_file(&link, m).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied);
        let msg = err.to_string();
        assert!(msg.contains(&link.display().to_string()) && msg.contains("65534"), "{msg}");
    }
    assert_eq!(fs::read(&target).unwrap(), b"precious");

    // A chain whose second hop is foreign is refused too, and a dangling one creates nothing.
    let first = dir.path().join("first.log");
    symlink(&link, &first).unwrap();
    assert!(open_secret_file(&first, OpenMode::Append).is_err());
    let dangling = dir.path().join("dangling.log");
    symlink(dir.path().join("nothing"), &dangling).unwrap();
    lchown(&dangling, Some(NOBODY), Some(NOBODY)).unwrap();
    assert!(open_secret_file(&dangling, OpenMode::Append).is_err());
    assert!(!dir.path().join("nothing").exists());
}

#[test]
fn foreign_hard_link_is_refused() {
    if !prerequisites("foreign_hard_link_is_refused", &[], true) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let theirs = dir.path().join("theirs");
    fs::write(&theirs, b"precious").unwrap();
    std::os::unix::fs::chown(&theirs, Some(NOBODY), Some(NOBODY)).unwrap();
    let link = dir.path().join("out.pcapng");
    fs::hard_link(&theirs, &link).unwrap();
    let err = open_secret_file(&link, OpenMode::Truncate).unwrap_err();
    assert!(err.to_string().contains("hard links"), "{err}");
    assert_eq!(fs::read(&theirs).unwrap(), b"precious", "not truncated");
}

#[test]
fn devices_are_not_truncated() {
    open_secret_file(Path::new("/dev/null"), OpenMode::Truncate).unwrap().write_all(b"x").unwrap();
    open_secret_file(Path::new("/dev/null"), OpenMode::Append).unwrap().write_all(b"x").unwrap();
}

#[test]
fn errors_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("no/such/dir/keys.log");
    let err = open_secret_file(&p, OpenMode::Append).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    assert!(err.to_string().contains(&p.display().to_string()), "{err}");
}
