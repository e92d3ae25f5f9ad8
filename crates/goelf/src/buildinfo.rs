//! The `.go.buildinfo` blob: Go version string and module info (build settings such as
//! -buildmode, CGO_ENABLED, -ldflags), found by section name or by scanning for its magic.

use crate::elf::Image;
use crate::Error;

/// The 14-byte magic that opens the build info blob (16-byte aligned).
pub const MAGIC: &[u8; 14] = b"\xff Go buildinf:";
const HEADER_LEN: usize = 32;
/// Longest string accepted from build info (version or modinfo).
const MAX_STRING: u64 = 1 << 24;

/// What the build info blob holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildInfo {
    /// The Go version string, e.g. "go1.19.8".
    pub version: String,
    /// The main package path ("path" line), if recorded.
    pub path: Option<String>,
    /// `build KEY=VALUE` lines in order (Go ≥ 1.18).
    pub settings: Vec<(String, String)>,
}

impl BuildInfo {
    /// The value of build setting `key` (e.g. "-buildmode").
    pub fn setting(&self, key: &str) -> Option<&str> {
        self.settings.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// Finds and decodes the build info. `Ok(None)` when there is none.
pub(crate) fn find(image: &Image<'_>) -> Result<Option<BuildInfo>, Error> {
    let from_section = image
        .section(".go.buildinfo")
        .and_then(|s| Some((s.addr, image.section_data(s)?)))
        .filter(|(_, b)| b.starts_with(MAGIC));
    let found = from_section.or_else(|| {
        let off = scan_for_magic(image.data)?;
        Some((image.vaddr_of_offset(off as u64)?, image.data.get(off..)?))
    });
    found.map(|(vaddr, blob)| decode(image, vaddr, blob)).transpose()
}

/// The file offset of the first 16-byte-aligned occurrence of the magic.
fn scan_for_magic(data: &[u8]) -> Option<usize> {
    data.chunks_exact(16).position(|c| c.starts_with(MAGIC)).and_then(|i| i.checked_mul(16))
}

fn decode(image: &Image<'_>, vaddr: u64, blob: &[u8]) -> Result<BuildInfo, Error> {
    let header = blob.get(..HEADER_LEN).ok_or_else(|| Error::malformed("build info header truncated"))?;
    let ptr_size = header.get(14).copied().unwrap_or(0);
    let flags = header.get(15).copied().unwrap_or(0);
    if flags & 1 != 0 {
        return Err(Error::malformed("big-endian build info in a little-endian binary"));
    }
    let (version, modinfo) = if flags & 2 != 0 {
        let rest = blob.get(HEADER_LEN..).unwrap_or(&[]);
        let (version, rest) = inline_string(rest).ok_or_else(|| truncated("version"))?;
        let (modinfo, _) = inline_string(rest).unwrap_or((&[], &[]));
        (version.to_vec(), modinfo.to_vec())
    } else {
        if ptr_size != 8 {
            return Err(Error::malformed(format!("build info pointer size {ptr_size}")));
        }
        let version = pointed_string(image, vaddr.wrapping_add(16)).ok_or_else(|| truncated("version"))?;
        let modinfo = pointed_string(image, vaddr.wrapping_add(24)).unwrap_or_default();
        (version, modinfo)
    };
    let version = String::from_utf8_lossy(&version).into_owned();
    let (path, settings) = parse_modinfo(&String::from_utf8_lossy(strip_sentinels(&modinfo)));
    Ok(BuildInfo { version, path, settings })
}

fn truncated(what: &str) -> Error {
    Error::malformed(format!("build info {what} string unreadable"))
}

/// A uvarint-length-prefixed string and the bytes after it.
fn inline_string(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, n) = uvarint(b)?;
    if len > MAX_STRING {
        return None;
    }
    let end = n.checked_add(usize::try_from(len).ok()?)?;
    Some((b.get(n..end)?, b.get(end..)?))
}

/// Decodes an unsigned LEB128 varint: (value, bytes used).
pub(crate) fn uvarint(b: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, &byte) in b.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f).checked_shl(7 * i as u32)?;
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// Pre-1.18 layout: a pointer at `at` to a Go string header {data, len}.
fn pointed_string(image: &Image<'_>, at: u64) -> Option<Vec<u8>> {
    let header_addr = image.read_ptr(at)?;
    let data_addr = image.read_ptr(header_addr)?;
    let len = image.raw_u64(header_addr.checked_add(8)?)?;
    if len > MAX_STRING {
        return None;
    }
    Some(image.bytes_at(data_addr, len)?.to_vec())
}

/// Removes the 16-byte sentinels Go puts around modinfo; empty if they are not there.
fn strip_sentinels(m: &[u8]) -> &[u8] {
    if m.len() >= 33 && m.get(m.len() - 17) == Some(&b'\n') {
        m.get(16..m.len() - 16).unwrap_or(&[])
    } else {
        &[]
    }
}

/// Parses modinfo text: the "path" line and every "build\tKEY=VALUE" line.
pub(crate) fn parse_modinfo(text: &str) -> (Option<String>, Vec<(String, String)>) {
    let mut path = None;
    let mut settings = Vec::new();
    for line in text.lines() {
        if let Some(p) = line.strip_prefix("path\t") {
            path = Some(p.to_string());
        } else if let Some(kv) = line.strip_prefix("build\t") {
            let (key, value) = split_setting(kv);
            settings.push((key, value));
        }
    }
    (path, settings)
}

/// Splits `KEY=VALUE`, where either side may be a Go-quoted string.
fn split_setting(kv: &str) -> (String, String) {
    let (key, rest) = if kv.starts_with('"') {
        match quoted_prefix(kv) {
            Some((k, rest)) => (k, rest),
            None => (kv.to_string(), ""),
        }
    } else {
        match kv.find('=') {
            Some(i) => (kv.get(..i).unwrap_or("").to_string(), kv.get(i..).unwrap_or("")),
            None => (kv.to_string(), ""),
        }
    };
    let value = rest.strip_prefix('=').unwrap_or(rest);
    let value = match quoted_prefix(value) {
        Some((v, "")) => v,
        _ => value.to_string(),
    };
    (key, value)
}

/// Unquotes a leading Go double-quoted string; returns it and the rest.
fn quoted_prefix(s: &str) -> Option<(String, &str)> {
    let mut chars = s.strip_prefix('"')?.char_indices();
    let mut out = String::new();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, s.get(i + 2..).unwrap_or(""))),
            '\\' => {
                let (_, e) = chars.next()?;
                match e {
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    'r' => out.push('\r'),
                    '0'..='7' | 'x' | 'u' | 'U' => {
                        let digits = match e {
                            'x' => 2,
                            'u' => 4,
                            'U' => 8,
                            _ => 2,
                        };
                        let mut hex = String::new();
                        for _ in 0..digits {
                            hex.push(chars.next()?.1);
                        }
                        let (radix, text) = if e.is_ascii_digit() { (8, format!("{e}{hex}")) } else { (16, hex) };
                        out.push(char::from_u32(u32::from_str_radix(&text, radix).ok()?)?);
                    }
                    other => out.push(other),
                }
            }
            c => out.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modinfo_settings_with_quotes() {
        let text = "path\texample.com/x\nmod\texample.com/x\t(devel)\t\nbuild\t-buildmode=pie\n\
                    build\t-ldflags=\"-s -w\"\nbuild\tCGO_ENABLED=1\nbuild\t\"odd key\"=v\n";
        let (path, s) = parse_modinfo(text);
        assert_eq!(path.as_deref(), Some("example.com/x"));
        let get = |k: &str| s.iter().find(|(a, _)| a == k).map(|(_, b)| b.as_str());
        assert_eq!(get("-buildmode"), Some("pie"));
        assert_eq!(get("-ldflags"), Some("-s -w"));
        assert_eq!(get("CGO_ENABLED"), Some("1"));
        assert_eq!(get("odd key"), Some("v"));
    }

    #[test]
    fn quoted_escapes() {
        assert_eq!(quoted_prefix(r#""a\"b\x41\t""#), Some(("a\"bA\t".to_string(), "")));
        assert_eq!(quoted_prefix(r#""unterminated"#), None);
        assert_eq!(quoted_prefix(r#""bad\x4"#), None);
    }

    #[test]
    fn varints() {
        assert_eq!(uvarint(&[0x05]), Some((5, 1)));
        assert_eq!(uvarint(&[0x80, 0x01]), Some((128, 2)));
        assert_eq!(uvarint(&[0x80]), None);
        assert_eq!(uvarint(&[0xff; 11]), None);
    }

    #[test]
    fn sentinels() {
        let mut m = vec![b'S'; 16];
        m.extend_from_slice(b"path\tx\n");
        m.extend_from_slice(&[b'E'; 16]);
        assert_eq!(strip_sentinels(&m), b"path\tx\n");
        assert_eq!(strip_sentinels(b"short"), b"");
    }

    #[test]
    fn magic_scan_requires_alignment() {
        let mut data = vec![0u8; 64];
        data[3..17].copy_from_slice(MAGIC);
        assert!(scan_for_magic(&data).is_none());
        data[32..46].copy_from_slice(MAGIC);
        assert_eq!(scan_for_magic(&data), Some(32));
    }
}
