//! Opens the files TLS secrets go to (key logs, pcapng files with decryption secrets) so that
//! tlstap, usually root, cannot be tricked into writing secrets through someone else's link.
//! Must stay true: a file we create is mode 0600 whatever the umask; a symlink owned by another
//! user is refused (ours are followed, each hop checked); an existing regular file is used only
//! if it is ours and no one else may read or write it (no group or other bits), and is then
//! left with its mode; a regular file goes only in directories where no one else can swap it
//! (each directory from the root down owned by root or us, and not writable by group or
//! others unless sticky); nothing is created or truncated before these checks pass; every
//! error names the path. Devices, pipes and sockets (/dev/null, /dev/stdout) are written as
//! they are: they hold nothing to steal.

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
    let regular = std::fs::symlink_metadata(&target).map_or(true, |m| m.is_file());
    if regular {
        refuse_swappable_directories(&target, uid).map_err(|e| annotate(e, path, &target))?;
    }
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
    refuse_shared_file(&meta, uid).map_err(|e| annotate(e, path, &target))?;
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

/// An existing regular file that is another user's, or that others may read or write, would
/// hand them the secrets. (A file we just created is ours and 0600.)
fn refuse_shared_file(meta: &Metadata, uid: u32) -> io::Result<()> {
    if !meta.is_file() {
        return Ok(());
    }
    let why = if meta.uid() != uid {
        format!("it is owned by uid {} (tlstap runs as uid {uid})", meta.uid())
    } else if meta.mode() & 0o077 != 0 {
        format!("its mode {:04o} lets group or others at it (chmod 600 it, or remove it)", meta.mode() & 0o7777)
    } else {
        return Ok(());
    };
    Err(io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!("refusing to write secrets to an existing file: {why}"),
    ))
}

/// Whoever may rename or replace entries of a directory on the way to the file could swap it:
/// every directory from the root down must be root's or ours, and not writable by group or
/// others unless sticky (as /tmp: there, only an entry's owner may rename it).
fn refuse_swappable_directories(target: &Path, uid: u32) -> io::Result<()> {
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let parent = std::fs::canonicalize(parent)?;
    for dir in parent.ancestors() {
        let meta = std::fs::metadata(dir)?;
        let (owner, mode) = (meta.uid(), meta.mode());
        let why = if owner != 0 && owner != uid {
            format!("is owned by uid {owner}")
        } else if mode & 0o022 != 0 && mode & 0o1000 == 0 {
            format!("is writable by group or others (mode {:04o}) without the sticky bit", mode & 0o7777)
        } else {
            continue;
        };
        let msg =
            format!("refusing: the directory {} {why}: whoever can write there could swap the file", dir.display());
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
