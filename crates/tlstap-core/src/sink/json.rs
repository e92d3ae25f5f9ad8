//! The pieces of JSON the hand-written JSON Lines records are built from, each appended to a
//! line buffer. They write exactly what serde_json writes for the same value (its escapes:
//! `\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t`, other bytes below 0x20 as `\u00xx`, nothing
//! else), so the records read the same as when they were serialized by serde; the tests here
//! and in jsonl.rs and http_json.rs compare with serde_json itself.

use super::ascii::is_json_plain;
use super::push_decimal;
use crate::event::ConnInfo;

/// What serde_json writes after a backslash for each byte: 0 for a byte written as it is,
/// `u` for `\u00xx`.
const ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = b'u';
        b += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0a] = b'n';
    table[0x0c] = b'f';
    table[0x0d] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

/// Appends the contents of a JSON string (no quotes) for `text`, valid UTF-8: copied whole
/// when no byte needs an escape (nearly always), else in runs between the bytes that do.
fn push_escaped(line: &mut Vec<u8>, text: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    if is_json_plain(text) {
        line.extend_from_slice(text);
        return;
    }
    let mut run = 0;
    for (i, &b) in text.iter().enumerate() {
        let escape = ESCAPE[usize::from(b)];
        if escape == 0 {
            continue;
        }
        line.extend_from_slice(&text[run..i]);
        run = i + 1;
        match escape {
            b'u' => line.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                DIGITS[usize::from(b >> 4)],
                DIGITS[usize::from(b & 0xf)],
            ]),
            c => line.extend_from_slice(&[b'\\', c]),
        }
    }
    line.extend_from_slice(&text[run..]);
}

/// Appends `s` as a JSON string.
pub(crate) fn push_str(line: &mut Vec<u8>, s: &str) {
    line.push(b'"');
    push_escaped(line, s.as_bytes());
    line.push(b'"');
}

/// Appends `s` as a JSON string, `null` when `None`.
pub(crate) fn push_opt_str(line: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => push_str(line, s),
        None => line.extend_from_slice(b"null"),
    }
}

/// Appends `bytes` as the JSON string of `String::from_utf8_lossy(bytes)`: each run of bytes
/// that is not UTF-8 becomes one U+FFFD, as there.
pub(crate) fn push_lossy(line: &mut Vec<u8>, bytes: &[u8]) {
    line.push(b'"');
    if bytes.is_ascii() {
        push_escaped(line, bytes);
    } else {
        for chunk in bytes.utf8_chunks() {
            push_escaped(line, chunk.valid().as_bytes());
            if !chunk.invalid().is_empty() {
                line.extend_from_slice(char::REPLACEMENT_CHARACTER.encode_utf8(&mut [0; 4]).as_bytes());
            }
        }
    }
    line.push(b'"');
}

/// Appends `bytes` as [`push_lossy`] does, `null` when `None`.
pub(crate) fn push_opt_lossy(line: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        Some(bytes) => push_lossy(line, bytes),
        None => line.extend_from_slice(b"null"),
    }
}

/// Appends a number, `null` when `None`.
pub(crate) fn push_opt_decimal(line: &mut Vec<u8>, n: Option<impl itoa::Integer>) {
    match n {
        Some(n) => push_decimal(line, n),
        None => line.extend_from_slice(b"null"),
    }
}

pub(crate) fn push_bool(line: &mut Vec<u8>, b: bool) {
    line.extend_from_slice(if b { b"true" } else { b"false" });
}

/// Appends `data` as a JSON string of standard base64 (with padding). SIMD: the scalar encoder
/// of the `base64` crate was the largest single part of the consumer's time under load, and
/// serde would JSON-escape its output byte by byte.
pub(crate) fn push_base64(line: &mut Vec<u8>, data: &[u8]) {
    line.push(b'"');
    base64_simd::STANDARD.encode_append(data, line);
    line.push(b'"');
}

/// Appends a connection's address as a JSON string (`null` when unknown). `SocketAddr`'s
/// `Display` writes digits, hex, `.`, `:`, `[`, `]` and `%`: nothing JSON escapes.
fn push_opt_addr(line: &mut Vec<u8>, addr: Option<&std::net::SocketAddr>) {
    match addr {
        Some(addr) => {
            line.push(b'"');
            super::push_addr(line, Some(addr));
            line.push(b'"');
        }
        None => line.extend_from_slice(b"null"),
    }
}

/// Appends the `conn` object every record that has one shares (`null` when unknown).
pub(crate) fn push_conn(line: &mut Vec<u8>, conn: Option<&ConnInfo>) {
    let Some(c) = conn else {
        line.extend_from_slice(b"null");
        return;
    };
    line.extend_from_slice(br#"{"kind":""#);
    line.extend_from_slice(c.kind.as_str().as_bytes());
    line.extend_from_slice(br#"","fd":"#);
    push_opt_decimal(line, c.fd);
    line.extend_from_slice(br#","local":"#);
    push_opt_addr(line, c.local.as_ref());
    line.extend_from_slice(br#","remote":"#);
    push_opt_addr(line, c.remote.as_ref());
    line.extend_from_slice(br#","id":"#);
    push_str(line, &c.id);
    line.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Strings that exercise every escape, next to kept bytes and multi-byte characters.
    fn strings() -> Vec<Vec<u8>> {
        let mut cases: Vec<Vec<u8>> = [
            &b""[..],
            b"plain",
            b"quote \" back\\slash \\\"",
            b"\x00\x01\x07\x08\t\n\x0b\x0c\r\x0e\x1b\x1f\x20\x7f",
            "caf\u{e9} \u{65e5}\u{672c} \u{85} \u{2028} \u{1f600}".as_bytes(),
            b"invalid \xff\xfe, cut \xc3, surrogate \xed\xa0\x80, overlong \xc0\xaf, high \xf4\x90\x80\x80",
            b"\xe2\x82",
            b"ends cut \xf0\x9f\x98",
        ]
        .iter()
        .map(|c| c.to_vec())
        .collect();
        cases.push((0..=255).collect());
        for a in 0..=255u8 {
            for b in [0u8, b'a', b'"', b'\\', 0x7f, 0x80, 0xa9, 0xc3, 0xe2, 0xff] {
                cases.push(vec![a, b]);
                cases.push(vec![b'x', a, b, b'y']);
            }
        }
        cases
    }

    #[test]
    fn strings_are_written_as_serde_json_writes_them() {
        for case in strings() {
            let lossy = String::from_utf8_lossy(&case);
            let mut out = Vec::new();
            push_lossy(&mut out, &case);
            assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(&lossy).unwrap(), "{case:?}");
            let mut out = Vec::new();
            push_str(&mut out, &lossy);
            assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(&lossy).unwrap(), "{case:?}");
        }
    }

    #[test]
    fn options_numbers_and_base64() {
        let mut out = Vec::new();
        push_opt_str(&mut out, None);
        push_opt_lossy(&mut out, None);
        push_opt_decimal(&mut out, None::<u32>);
        push_opt_decimal(&mut out, Some(u64::MAX));
        push_bool(&mut out, true);
        push_base64(&mut out, b"");
        push_base64(&mut out, b"\xff\x00ab");
        assert_eq!(String::from_utf8(out).unwrap(), r#"nullnullnull18446744073709551615true"""/wBhYg==""#);
    }
}
