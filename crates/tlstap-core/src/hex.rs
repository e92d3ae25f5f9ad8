//! Lowercase hex encoding of binary secrets into caller-owned, reused buffers.
//! Must stay true: output is exactly two lowercase digits per byte; nothing allocates beyond
//! the growth of the buffer it is given.

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// The two lowercase hex digits of `b`.
fn digits(b: u8) -> [u8; 2] {
    [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 0x0f)]]
}

/// Appends the lowercase hex of `bytes` to `buf`.
pub fn push_hex(buf: &mut Vec<u8>, bytes: &[u8]) {
    buf.reserve(bytes.len() * 2);
    for &b in bytes {
        buf.extend_from_slice(&digits(b));
    }
}

/// Appends the lowercase hex of `bytes` to `buf`.
pub fn push_hex_str(buf: &mut String, bytes: &[u8]) {
    buf.reserve(bytes.len() * 2);
    for &b in bytes {
        let [hi, lo] = digits(b);
        buf.push(char::from(hi));
        buf.push(char::from(lo));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_format_oracle() {
        let bytes: Vec<u8> = (0..=255).collect();
        let expected: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let mut v = Vec::new();
        push_hex(&mut v, &bytes);
        assert_eq!(v, expected.as_bytes());
        let mut s = String::from("x");
        push_hex_str(&mut s, &bytes);
        assert_eq!(s, format!("x{expected}"));
    }
}
