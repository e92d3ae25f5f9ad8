//! Names chosen by whoever starts a program (binary paths, command names), as tlstap writes
//! them: lossless, on one line, with no terminal control in them. Valid UTF-8 free of control
//! characters and backslashes is written as it is; otherwise a backslash becomes `\\` and each
//! byte of a control character, or of something that is not UTF-8, becomes `\xNN`. A reader
//! gets the original bytes back by undoing exactly those two escapes.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;

/// `bytes` as tlstap writes a name (see the module).
pub fn escape_name(bytes: &[u8]) -> Cow<'_, str> {
    if let Ok(text) = std::str::from_utf8(bytes) {
        if !text.chars().any(|c| c == '\\' || c.is_control()) {
            return Cow::Borrowed(text);
        }
    }
    let mut out = String::with_capacity(bytes.len() + 8);
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' {
                out.push_str("\\\\");
            } else if c.is_control() {
                let mut buf = [0; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    let _ = write!(out, "\\x{b:02x}");
                }
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    Cow::Owned(out)
}

/// A path as tlstap writes it (see the module).
pub fn escape_path(path: &Path) -> Cow<'_, str> {
    escape_name(path.as_os_str().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Undoes the two escapes: the bytes come back.
    fn unescape(text: &str) -> Vec<u8> {
        let (mut out, b) = (Vec::new(), text.as_bytes());
        let mut i = 0;
        while i < b.len() {
            match (b[i], b.get(i + 1)) {
                (b'\\', Some(b'\\')) => (out.push(b'\\'), i += 2).1,
                (b'\\', Some(b'x')) => {
                    out.push(u8::from_str_radix(&text[i + 2..i + 4], 16).unwrap());
                    i += 4;
                }
                (c, _) => (out.push(c), i += 1).1,
            }
        }
        out
    }

    #[test]
    fn plain_names_are_kept_and_the_rest_escaped_losslessly() {
        assert!(matches!(escape_name(b"/usr/bin/caddy"), Cow::Borrowed("/usr/bin/caddy")));
        assert!(matches!(escape_name("/srv/café".as_bytes()), Cow::Borrowed(_)));
        let hostile: &[&[u8]] =
            &[b"/tmp/srv\xff\xfe", b"/tmp/a\x1b[2Jb\nc", b"back\\slash", "nel\u{85}x".as_bytes(), b"\\x41"];
        for &name in hostile {
            let shown = escape_name(name);
            assert!(!shown.chars().any(char::is_control), "{shown:?}");
            assert_eq!(unescape(&shown), name, "{shown:?}");
        }
        assert_eq!(escape_name(b"/tmp/a\x1b[2J\n\xff"), "/tmp/a\\x1b[2J\\x0a\\xff");
    }
}
