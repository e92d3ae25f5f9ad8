//! `open_secret_file`: 0600 on create, an existing private file of ours appended to or
//! truncated, files others own or may read refused, directories others could swap the file in
//! refused, our symlinks followed, other users' symlinks and hard links refused, errors naming
//! the path.
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
fn an_existing_private_file_of_ours_appends_or_truncates() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("keys.log");
    fs::write(&p, b"old\n").unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
    open_secret_file(&p, OpenMode::Append).unwrap().write_all(b"new\n").unwrap();
    assert_eq!(fs::read(&p).unwrap(), b"old\nnew\n");
    open_secret_file(&p, OpenMode::Truncate).unwrap().write_all(b"fresh").unwrap();
    assert_eq!(fs::read(&p).unwrap(), b"fresh");
    assert_eq!(mode(&p), 0o600);
}

/// An existing file others may read or write would give them the secrets: refused, untouched.
#[test]
fn an_existing_file_open_to_others_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("out.pcapng");
    for m in [0o640, 0o604, 0o620, 0o666] {
        fs::write(&p, b"kept").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(m)).unwrap();
        for open in [OpenMode::Append, OpenMode::Truncate] {
            let err = open_secret_file(&p, open).unwrap_err();
            assert!(err.to_string().contains("lets group or others at it"), "{m:o}: {err}");
            assert_eq!(fs::read(&p).unwrap(), b"kept", "{m:o}: not truncated");
        }
    }
}

/// Another user's file, even with one link and mode 0600, is theirs: refused.
#[test]
fn an_existing_file_of_another_user_is_refused() {
    if !prerequisites("an_existing_file_of_another_user_is_refused", &[], true) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("keys.log");
    fs::write(&p, b"theirs").unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(&p, Some(NOBODY), Some(NOBODY)).unwrap();
    let err = open_secret_file(&p, OpenMode::Truncate).unwrap_err();
    assert!(err.to_string().contains("owned by uid 65534"), "{err}");
    assert_eq!(fs::read(&p).unwrap(), b"theirs");
}

/// A directory others may write without the sticky bit (or another user's) lets them swap the
/// file: refused before anything is created; a sticky one (as /tmp) is fine.
#[test]
fn directories_others_can_swap_entries_in_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let open = dir.path().join("open");
    fs::create_dir(&open).unwrap();
    for (m, refused) in [(0o777, true), (0o775, true), (0o1777, false), (0o755, false)] {
        fs::set_permissions(&open, fs::Permissions::from_mode(m)).unwrap();
        let p = open.join("keys.log");
        let result = open_secret_file(&p, OpenMode::Append);
        assert_eq!(result.is_err(), refused, "dir {m:o}: {result:?}");
        if let Err(err) = result {
            assert!(err.to_string().contains("without the sticky bit"), "{err}");
            assert!(!p.exists(), "nothing created in dir {m:o}");
        }
        let _ = fs::remove_file(&p);
    }
    // Deeper: a swappable ancestor is as bad as the parent.
    fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
    let inner = open.join("inner");
    fs::create_dir(&inner).unwrap();
    fs::set_permissions(&inner, fs::Permissions::from_mode(0o700)).unwrap();
    assert!(open_secret_file(&inner.join("k.log"), OpenMode::Append).is_err(), "ancestor 0777");
    if prerequisites("directories_others_can_swap_entries_in_are_refused (foreign owner)", &[], true) {
        fs::set_permissions(&open, fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::chown(&open, Some(NOBODY), Some(NOBODY)).unwrap();
        let err = open_secret_file(&open.join("k.log"), OpenMode::Append).unwrap_err();
        assert!(err.to_string().contains("is owned by uid 65534"), "{err}");
    }
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
