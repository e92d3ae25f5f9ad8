//! `hexdump -C`-style rendering of payload bytes, shared by the text and hex formats.

/// Appends `data` as lines of `OFFSET  16 hex bytes  |ascii|` to `out`.
///
/// Each line is built in a stack buffer and appended whole, and the caller writes the dump
/// once: formatting byte by byte through `write!`, then writing each line on its own, were
/// most of the text sink's time under load (bench: perf profile of tlstap).
pub(crate) fn push_hexdump(out: &mut Vec<u8>, data: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    // offset (8 hex digits, more past 4 GiB) + " " + 16 x " xx" + one extra space after the
    // 8th + "  |" + 16 ascii + "|\n"
    let mut line = [0u8; 16 + 1 + 16 * 3 + 1 + 3 + 16 + 2];
    for (index, chunk) in data.chunks(16).enumerate() {
        let mut at = 0;
        let offset = index * 16;
        let digits = (usize::BITS - offset.leading_zeros()).div_ceil(4).max(8) as usize;
        for shift in (0..digits).rev() {
            line[at] = DIGITS[(offset >> (shift * 4)) & 0xf];
            at += 1;
        }
        line[at] = b' ';
        at += 1;
        for i in 0..16 {
            if i == 8 {
                line[at] = b' ';
                at += 1;
            }
            let cell: [u8; 3] = match chunk.get(i) {
                Some(&b) => [b' ', DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 0xf)]],
                None => *b"   ",
            };
            line[at..at + 3].copy_from_slice(&cell);
            at += 3;
        }
        line[at..at + 3].copy_from_slice(b"  |");
        at += 3;
        for &b in chunk {
            line[at] = if b.is_ascii_graphic() || b == b' ' { b } else { b'.' };
            at += 1;
        }
        line[at..at + 2].copy_from_slice(b"|\n");
        at += 2;
        out.extend_from_slice(&line[..at]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_partial_last_line() {
        let mut out = Vec::new();
        push_hexdump(&mut out, b"GET / HTTP/1.1\r\nHost: x\r\n");
        let expected = "\
00000000  47 45 54 20 2f 20 48 54  54 50 2f 31 2e 31 0d 0a  |GET / HTTP/1.1..|
00000010  48 6f 73 74 3a 20 78 0d  0a                       |Host: x..|
";
        assert_eq!(String::from_utf8(out).unwrap(), expected);
    }
}
