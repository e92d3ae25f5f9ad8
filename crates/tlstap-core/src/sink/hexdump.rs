//! `hexdump -C`-style rendering of payload bytes, shared by the text and hex formats.

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// `" xx"` for every byte value.
const CELLS: [[u8; 3]; 256] = {
    let mut cells = [[0u8; 3]; 256];
    let mut b = 0;
    while b < 256 {
        cells[b] = [b' ', DIGITS[b >> 4], DIGITS[b & 0xf]];
        b += 1;
    }
    cells
};

/// Offset (8 hex digits) + " " + 16 x " xx" + one extra space after the 8th + "  |".
const ASCII_AT: usize = 8 + 1 + 16 * 3 + 1 + 3;

/// Appends `data` as lines of `OFFSET  16 hex bytes  |ascii|` to `out`.
///
/// Every line is built in a stack buffer at fixed positions and appended whole, and the
/// caller writes the dump once: formatting byte by byte through `write!`, writing each line
/// on its own and computing each position were in turn most of the text sink's time under
/// load (bench: perf profile of tlstap). Offsets past 4 GiB take more than 8 digits.
pub(crate) fn push_hexdump(out: &mut Vec<u8>, data: &[u8]) {
    let mut line = [b' '; ASCII_AT + 16 + 2];
    for (index, chunk) in data.chunks(16).enumerate() {
        let offset = index * 16;
        if offset > u32::MAX as usize {
            push_line_general(out, offset, chunk);
            continue;
        }
        for (i, digit) in line[..8].iter_mut().enumerate() {
            *digit = DIGITS[(offset >> (28 - 4 * i)) & 0xf];
        }
        for i in 0..16 {
            let at = 9 + 3 * i + usize::from(i >= 8);
            line[at..at + 3].copy_from_slice(chunk.get(i).map_or(b"   ", |&b| &CELLS[usize::from(b)]));
        }
        line[ASCII_AT - 3..ASCII_AT].copy_from_slice(b"  |");
        for (cell, &b) in line[ASCII_AT..].iter_mut().zip(chunk) {
            *cell = printable(b);
        }
        let end = ASCII_AT + chunk.len();
        line[end..end + 2].copy_from_slice(b"|\n");
        out.extend_from_slice(&line[..end + 2]);
    }
}

fn printable(b: u8) -> u8 {
    if b.is_ascii_graphic() || b == b' ' {
        b
    } else {
        b'.'
    }
}

/// One line whose offset needs more than 8 hex digits.
fn push_line_general(out: &mut Vec<u8>, offset: usize, chunk: &[u8]) {
    let digits = (usize::BITS - offset.leading_zeros()).div_ceil(4).max(8) as usize;
    out.extend((0..digits).rev().map(|shift| DIGITS[(offset >> (shift * 4)) & 0xf]));
    out.push(b' ');
    for i in 0..16 {
        if i == 8 {
            out.push(b' ');
        }
        out.extend_from_slice(chunk.get(i).map_or(b"   ", |&b| &CELLS[usize::from(b)]));
    }
    out.extend_from_slice(b"  |");
    out.extend(chunk.iter().map(|&b| printable(b)));
    out.extend_from_slice(b"|\n");
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

    /// The line for an offset past 4 GiB has the layout of the others, with more digits.
    #[test]
    fn general_line_matches_the_fast_layout() {
        let chunk = b"0123456789abcdef";
        let mut fast = Vec::new();
        push_hexdump(&mut fast, chunk);
        let mut general = Vec::new();
        push_line_general(&mut general, 0, chunk);
        assert_eq!(String::from_utf8(general).unwrap(), String::from_utf8(fast).unwrap());
        let mut big = Vec::new();
        push_line_general(&mut big, 0x1_0000_0010, b"ab");
        let mut small = Vec::new();
        push_hexdump(&mut small, b"ab");
        let expected = format!("100000010{}", &String::from_utf8(small).unwrap()[8..]);
        assert_eq!(String::from_utf8(big).unwrap(), expected);
    }
}
