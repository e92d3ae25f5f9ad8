//! Opens the files TLS secrets go to (key logs, pcapng files with decryption secrets) so that
//! tlstap, usually root, cannot be tricked into writing secrets through someone else's link.
//! Must stay true: a file we create is mode 0600 whatever the umask; an existing file keeps its
//! mode; a symlink owned by another user is refused (ours are followed, each hop checked); a
//! regular file owned by another user with more than one hard link is refused; every error
//! names the path. An existing single-link file of another user is used as it is, mode
//! included: choosing it was the caller's decision, as with any output path.

use std::fs::{File, Metadata, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// What to do with a file that already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Keep its contents and write after them (key logs).
    Append,
    /// Empty it first (pcapng files, which start with a section header).
    Truncate,
}

/// Mode of a file we create.
pub const SECRET_FILE_MODE: u32 = 0o600;

/// Symlink hops followed before giving up, as the kernel's `MAXSYMLINKS`.
const MAX_SYMLINK_HOPS: usize = 40;

/// Opens `path` for writing secrets; see the module documentation for the rules.
pub fn open_secret_file(path: &Path, mode: OpenMode) -> io::Result<File> {
    let uid = effective_uid();
    let target = resolve_own_symlinks(path, uid)?;
    let file = if target == path {
        open_no_follow(path, mode)
    } else {
        // Every hop is ours. Let the kernel follow them (it also understands /proc's magic
        // links, as in /dev/stdout); create the final target only if it does not exist.
        match existing_options(mode).open(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => open_no_follow(&target, mode),
            other => other,
        }
    };
    let file = file.map_err(|e| annotate(e, path, &target))?;
    let meta = file.metadata().map_err(|e| annotate(e, path, &target))?;
    refuse_foreign_hard_link(&meta, uid).map_err(|e| annotate(e, path, &target))?;
    if mode == OpenMode::Truncate && meta.is_file() {
        // Truncated only after the checks above, through the descriptor they examined.
        file.set_len(0).map_err(|e| annotate(e, path, &target))?;
    }
    Ok(file)
}

/// Follows symlinks owned by `uid` until a path that is not a symlink or does not exist (a
/// dangling link, or a /proc magic link whose text is no path); refuses anyone else's.
fn resolve_own_symlinks(path: &Path, uid: u32) -> io::Result<PathBuf> {
    let mut current = path.to_path_buf();
    for _ in 0..MAX_SYMLINK_HOPS {
        let meta = match std::fs::symlink_metadata(&current) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(current),
            Err(e) => return Err(annotate(e, path, &current)),
        };
        if !meta.file_type().is_symlink() {
            return Ok(current);
        }
        if meta.uid() != uid {
            let msg = format!(
                "{}: refusing to follow a symlink owned by uid {} (tlstap runs as uid {uid}); \
                 it could point secrets anywhere",
                shown(path, &current),
                meta.uid()
            );
            return Err(io::Error::new(io::ErrorKind::PermissionDenied, msg));
        }
        let link = std::fs::read_link(&current).map_err(|e| annotate(e, path, &current))?;
        current = match current.parent() {
            Some(dir) => dir.join(link),
            None => link,
        };
    }
    let msg = format!("{}: too many levels of symbolic links", path.display());
    Err(io::Error::other(msg))
}

/// Creates `path` (0600, exclusively) or opens the existing file, never through a symlink.
fn open_no_follow(path: &Path, mode: OpenMode) -> io::Result<File> {
    let append = mode == OpenMode::Append;
    let mut create = OpenOptions::new();
    create.write(true).append(append).create_new(true).mode(SECRET_FILE_MODE).custom_flags(libc::O_NOFOLLOW);
    match create.open(path) {
        Ok(file) => {
            // The umask may have removed bits from 0600 (never added any): set it exactly.
            file.set_permissions(Permissions::from_mode(SECRET_FILE_MODE))?;
            return Ok(file);
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let mut existing = existing_options(mode);
    existing.custom_flags(libc::O_NOFOLLOW);
    existing.open(path).map_err(|e| {
        if e.raw_os_error() == Some(libc::ELOOP) {
            io::Error::new(io::ErrorKind::PermissionDenied, "became a symlink while being opened")
        } else {
            e
        }
    })
}

/// Opens an existing file for writing, appending in [`OpenMode::Append`]; never truncates.
fn existing_options(mode: OpenMode) -> OpenOptions {
    let mut options = OpenOptions::new();
    options.write(true).append(mode == OpenMode::Append);
    options
}

/// A hard link to another user's file could be anything of theirs (or the system's).
fn refuse_foreign_hard_link(meta: &Metadata, uid: u32) -> io::Result<()> {
    if meta.file_type().is_file() && meta.nlink() > 1 && meta.uid() != uid {
        let msg =
            format!("refusing to write to a file owned by uid {} that has {} hard links", meta.uid(), meta.nlink());
        return Err(io::Error::new(io::ErrorKind::PermissionDenied, msg));
    }
    Ok(())
}

fn effective_uid() -> u32 {
    // SAFETY: geteuid takes no arguments, touches no memory of ours and cannot fail.
    unsafe { libc::geteuid() }
}

/// `path` as the user gave it, with the resolved target when a symlink led elsewhere.
fn shown(path: &Path, target: &Path) -> String {
    if path == target {
        path.display().to_string()
    } else {
        format!("{} (-> {})", path.display(), target.display())
    }
}

fn annotate(e: io::Error, path: &Path, target: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", shown(path, target)))
}
