//! Whole-string checks that let sinks copy a name or value as it is, eight bytes at a time
//! (a header field is tens of bytes; a test per byte was most of the time spent escaping
//! them, bench: httpview_cost). Each answers exactly what its byte-by-byte definition does.

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Whether a byte of `x` is below `n` (`n` at most 0x80). Which byte is flagged can be off,
/// but whether one is, is exact (the borrow of a subtraction only leaves a byte that is below).
fn any_below(x: u64, n: u8) -> bool {
    x.wrapping_sub(ONES * u64::from(n)) & !x & HIGHS != 0
}

/// Whether a byte of `x` equals `b`.
fn any_equal(x: u64, b: u8) -> bool {
    any_below(x ^ (ONES * u64::from(b)), 1)
}

/// Whether a byte of `x` is 0x7f or above (a carry only leaves a byte that is 0xff).
fn any_del_or_high(x: u64) -> bool {
    (x | x.wrapping_add(ONES)) & HIGHS != 0
}

/// Whether every word of `bytes` passes `word_ok`: the last word overlaps the one before
/// when the length is not a multiple of eight. A string shorter than a word goes byte by byte
/// through `byte_ok`.
#[inline]
fn all_words(bytes: &[u8], word_ok: impl Fn(u64) -> bool, byte_ok: impl Fn(u8) -> bool) -> bool {
    let word = |w: &[u8]| u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
    if bytes.len() < 8 {
        return bytes.iter().all(|&b| byte_ok(b));
    }
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        if !word_ok(word(w)) {
            return false;
        }
    }
    words.remainder().is_empty() || word_ok(word(&bytes[bytes.len() - 8..]))
}

/// Every byte is printable ASCII, 0x20 to 0x7e.
pub(crate) fn is_printable_ascii(bytes: &[u8]) -> bool {
    all_words(bytes, |x| !any_below(x, 0x20) && !any_del_or_high(x), |b| (0x20..0x7f).contains(&b))
}

/// No byte needs a JSON escape: none is below 0x20, a quote or a backslash.
pub(crate) fn is_json_plain(bytes: &[u8]) -> bool {
    all_words(
        bytes,
        |x| !any_below(x, 0x20) && !any_equal(x, b'"') && !any_equal(x, b'\\'),
        |b| b >= 0x20 && b != b'"' && b != b'\\',
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn printable_reference(bytes: &[u8]) -> bool {
        bytes.iter().all(|&b| (0x20..0x7f).contains(&b))
    }

    fn json_plain_reference(bytes: &[u8]) -> bool {
        bytes.iter().all(|&b| b >= 0x20 && b != b'"' && b != b'\\')
    }

    fn check(bytes: &[u8]) {
        assert_eq!(is_printable_ascii(bytes), printable_reference(bytes), "{bytes:?}");
        assert_eq!(is_json_plain(bytes), json_plain_reference(bytes), "{bytes:?}");
    }

    /// Every byte value at every position of strings of every length up to three words, among
    /// plain bytes and beside each byte value that borrows or carries: the word tests answer
    /// as the byte tests.
    #[test]
    fn word_tests_answer_as_byte_tests() {
        let fills = [b'a', b' ', b'~', 0x21, 0x5d, 0xc3, 0xff, 0x80, 0x1f, 0x00];
        let edges = [0x00, 0x01, 0x1f, 0x20, 0x21, 0x22, 0x23, 0x5b, 0x5c, 0x5d, 0x7e, 0x7f, 0x80, 0xfe, 0xff];
        for len in 0..=24 {
            for fill in fills {
                let mut bytes = vec![fill; len];
                check(&bytes);
                for at in 0..len {
                    for b in 0..=255u8 {
                        bytes[at] = b;
                        check(&bytes);
                        if at + 1 < len {
                            for edge in edges {
                                bytes[at + 1] = edge;
                                check(&bytes);
                            }
                            bytes[at + 1] = fill;
                        }
                    }
                    bytes[at] = fill;
                }
            }
        }
    }
}
