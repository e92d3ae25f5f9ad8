//! `hexdump -C`-style rendering of payload bytes, shared by the text and hex formats.

use std::io::{self, Write};

/// Writes `data` as lines of `OFFSET  16 hex bytes  |ascii|`.
pub(crate) fn write_hexdump<W: Write>(out: &mut W, data: &[u8]) -> io::Result<()> {
    for (line, chunk) in data.chunks(16).enumerate() {
        write!(out, "{:08x} ", line * 16)?;
        for i in 0..16 {
            if i == 8 {
                out.write_all(b" ")?;
            }
            match chunk.get(i) {
                Some(b) => write!(out, " {b:02x}")?,
                None => out.write_all(b"   ")?,
            }
        }
        out.write_all(b"  |")?;
        for &b in chunk {
            let shown = if b.is_ascii_graphic() || b == b' ' { b } else { b'.' };
            out.write_all(&[shown])?;
        }
        out.write_all(b"|\n")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_partial_last_line() {
        let mut out = Vec::new();
        write_hexdump(&mut out, b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
        let expected = "\
00000000  47 45 54 20 2f 20 48 54  54 50 2f 31 2e 31 0d 0a  |GET / HTTP/1.1..|
00000010  48 6f 73 74 3a 20 78 0d  0a                       |Host: x..|
";
        assert_eq!(String::from_utf8(out).unwrap(), expected);
    }
}
