//! HPACK (RFC 7541) decoding that stays truthful when the dynamic table is only partly known.
//!
//! Written here rather than taken from a crate because no HPACK crate can decode from the
//! middle of a connection: they all treat an index past their table as a fatal error. Here a
//! decoder that started after the encoder (tlstap attached to a live connection, or bytes were
//! lost) is *partial*: it knows only the entries inserted since it started, which are exactly
//! the encoder's newest ones, because dynamic indices count from the newest entry. An index
//! within them is right; one past them yields an undecodable field (`None`), never a guess.
//! Eviction needs no agreement either: keeping an entry the encoder evicted is harmless (it is
//! never referenced again) and evicting one it kept makes later references undecodable, not
//! wrong. Huffman codes come from the `hpack` crate.

use std::collections::VecDeque;

use tlstap_core::http::Header;

/// RFC 7541 Appendix A.
const STATIC_TABLE: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// HTTP/2's initial SETTINGS_HEADER_TABLE_SIZE.
pub const DEFAULT_TABLE_SIZE: usize = 4096;
/// A partial decoder's table size until the encoder announces one: larger than any encoder
/// is likely to use, since keeping extra entries is harmless (see the module comment).
const PARTIAL_TABLE_SIZE: usize = 64 * 1024;
/// Largest table size honoured, whatever an update says (memory bound).
const MAX_TABLE_SIZE: usize = 1 << 20;
/// Largest string accepted in a header block (memory bound; a block is bounded anyway).
const MAX_STRING: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HpackError {
    /// The block ends inside a representation.
    Truncated,
    /// An integer past 2^32, a bad Huffman code, index 0, or (in a complete decoder) an index
    /// past the table: the peer's encoder and this decoder disagree, nothing more can be trusted.
    Malformed(&'static str),
}

#[derive(Debug, Clone)]
struct Entry {
    /// `None`: inserted with a name indexed into entries this decoder never saw.
    name: Option<Vec<u8>>,
    value: Vec<u8>,
}

impl Entry {
    /// RFC 7541 §4.1; an unknown name counts as empty (an underestimate only delays eviction).
    fn size(&self) -> usize {
        self.name.as_ref().map_or(0, Vec::len) + self.value.len() + 32
    }
}

pub struct Decoder {
    /// Newest first: dynamic index 62 is `table[0]`.
    table: VecDeque<Entry>,
    size: usize,
    max_size: usize,
    /// Started after the encoder: indices past the table are unknown, not errors.
    partial: bool,
    huffman: hpack::huffman::HuffmanDecoder,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("entries", &self.table.len())
            .field("size", &self.size)
            .field("max_size", &self.max_size)
            .field("partial", &self.partial)
            .finish_non_exhaustive()
    }
}

impl Decoder {
    /// A decoder that has seen everything its encoder encoded (a connection seen from its
    /// preface).
    pub fn complete() -> Decoder {
        Decoder::new(DEFAULT_TABLE_SIZE, false)
    }

    /// A decoder that started after its encoder (mid-connection, or after lost bytes).
    pub fn partial() -> Decoder {
        Decoder::new(PARTIAL_TABLE_SIZE, true)
    }

    fn new(max_size: usize, partial: bool) -> Decoder {
        Decoder { table: VecDeque::new(), size: 0, max_size, partial, huffman: hpack::huffman::HuffmanDecoder::new() }
    }

    pub fn is_partial(&self) -> bool {
        self.partial
    }

    /// Decodes one complete header block. On error the decoder must be replaced by a partial
    /// one: what the block inserted is unknown.
    pub fn decode(&mut self, block: &[u8]) -> Result<Vec<Header>, HpackError> {
        let mut fields = Vec::new();
        let mut at = 0;
        while at < block.len() {
            let first = block[at];
            if first & 0x80 != 0 {
                let index = integer(block, &mut at, 7)?;
                let (name, value) = self.lookup(index)?;
                fields.push(Header { name, value });
            } else if first & 0xe0 == 0x20 {
                let size = integer(block, &mut at, 5)?;
                self.set_max_size(size);
            } else {
                // Literal: with incremental indexing (01), without (0000) or never indexed (0001).
                let indexing = first & 0x40 != 0;
                let index = integer(block, &mut at, if indexing { 6 } else { 4 })?;
                let name = if index == 0 { Some(self.string(block, &mut at)?) } else { self.lookup(index)?.0 };
                let value = self.string(block, &mut at)?;
                if indexing {
                    self.insert(Entry { name: name.clone(), value: value.clone() });
                }
                fields.push(Header { name, value: Some(value) });
            }
        }
        Ok(fields)
    }

    /// (name, value) of an index; `None` parts are unknown to a partial decoder.
    #[allow(clippy::type_complexity)]
    fn lookup(&self, index: usize) -> Result<(Option<Vec<u8>>, Option<Vec<u8>>), HpackError> {
        match index {
            0 => Err(HpackError::Malformed("index 0")),
            1..=61 => {
                let (name, value) = STATIC_TABLE[index - 1];
                Ok((Some(name.as_bytes().to_vec()), Some(value.as_bytes().to_vec())))
            }
            _ => match self.table.get(index - 62) {
                Some(entry) => Ok((entry.name.clone(), Some(entry.value.clone()))),
                None if self.partial => Ok((None, None)),
                None => Err(HpackError::Malformed("index past the dynamic table")),
            },
        }
    }

    fn insert(&mut self, entry: Entry) {
        self.size += entry.size();
        self.table.push_front(entry);
        self.evict();
    }

    fn set_max_size(&mut self, size: usize) {
        self.max_size = size.min(MAX_TABLE_SIZE);
        self.evict();
        if size == 0 {
            // The encoder emptied its table too: from here on this decoder knows all of it.
            self.partial = false;
        }
    }

    fn evict(&mut self) {
        while self.size > self.max_size {
            match self.table.pop_back() {
                Some(old) => self.size -= old.size(),
                None => break,
            }
        }
    }

    fn string(&mut self, block: &[u8], at: &mut usize) -> Result<Vec<u8>, HpackError> {
        let huffman = block.get(*at).ok_or(HpackError::Truncated)? & 0x80 != 0;
        let len = integer(block, at, 7)?;
        if len > MAX_STRING {
            return Err(HpackError::Malformed("string longer than 1 MiB"));
        }
        let end = at.checked_add(len).filter(|&end| end <= block.len()).ok_or(HpackError::Truncated)?;
        let raw = &block[*at..end];
        *at = end;
        if huffman {
            self.huffman.decode(raw).map_err(|_| HpackError::Malformed("bad Huffman code"))
        } else {
            Ok(raw.to_vec())
        }
    }
}

/// RFC 7541 §5.1 integer with an `prefix`-bit prefix, starting at `block[*at]`.
fn integer(block: &[u8], at: &mut usize, prefix: u32) -> Result<usize, HpackError> {
    let mask = (1u32 << prefix) - 1;
    let mut value = u32::from(*block.get(*at).ok_or(HpackError::Truncated)?) & mask;
    *at += 1;
    if value < mask {
        return Ok(value as usize);
    }
    let mut shift = 0u32;
    loop {
        let byte = *block.get(*at).ok_or(HpackError::Truncated)?;
        *at += 1;
        let add = u32::from(byte & 0x7f).checked_shl(shift).filter(|_| shift <= 28);
        value = add.and_then(|add| value.checked_add(add)).ok_or(HpackError::Malformed("integer overflow"))?;
        if byte & 0x80 == 0 {
            return Ok(value as usize);
        }
        shift += 7;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(text: &str) -> Vec<u8> {
        let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
        digits.chunks(2).map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap()).collect()
    }

    fn fields(headers: &[Header]) -> Vec<(String, String)> {
        headers
            .iter()
            .map(|h| {
                let text =
                    |b: &Option<Vec<u8>>| b.as_ref().map_or("?".into(), |b| String::from_utf8(b.clone()).unwrap());
                (text(&h.name), text(&h.value))
            })
            .collect()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    }

    const REQUEST_1: &[(&str, &str)] =
        &[(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "www.example.com")];
    const REQUEST_2: &[(&str, &str)] = &[
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/"),
        (":authority", "www.example.com"),
        ("cache-control", "no-cache"),
    ];
    const REQUEST_3: &[(&str, &str)] = &[
        (":method", "GET"),
        (":scheme", "https"),
        (":path", "/index.html"),
        (":authority", "www.example.com"),
        ("custom-key", "custom-value"),
    ];
    const DATE_21: &str = "Mon, 21 Oct 2013 20:13:21 GMT";
    const LOCATION: &str = "https://www.example.com";
    const COOKIE: &str = "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1";

    fn responses() -> [Vec<(String, String)>; 3] {
        let common = |status: &str, date: &str| {
            pairs(&[(":status", status), ("cache-control", "private"), ("date", date), ("location", LOCATION)])
        };
        let mut third = common("200", "Mon, 21 Oct 2013 20:13:22 GMT");
        third.extend(pairs(&[("content-encoding", "gzip"), ("set-cookie", COOKIE)]));
        [common("302", DATE_21), common("307", DATE_21), third]
    }

    /// Decodes the blocks on one decoder, checking each list and the table size after it.
    fn run(decoder: &mut Decoder, blocks: &[&str], want: &[Vec<(String, String)>], sizes: &[usize]) {
        for ((block, want), size) in blocks.iter().zip(want).zip(sizes) {
            assert_eq!(&fields(&decoder.decode(&hex(block)).unwrap()), want, "{block}");
            assert_eq!(decoder.size, *size, "table size after {block}");
        }
    }

    #[test]
    fn rfc7541_c3_requests_without_huffman() {
        run(
            &mut Decoder::complete(),
            &[
                "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
                "8286 84be 5808 6e6f 2d63 6163 6865",
                "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
            ],
            &[pairs(REQUEST_1), pairs(REQUEST_2), pairs(REQUEST_3)],
            &[57, 110, 164],
        );
    }

    #[test]
    fn rfc7541_c4_requests_with_huffman() {
        run(
            &mut Decoder::complete(),
            &[
                "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
                "8286 84be 5886 a8eb 1064 9cbf",
                "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
            ],
            &[pairs(REQUEST_1), pairs(REQUEST_2), pairs(REQUEST_3)],
            &[57, 110, 164],
        );
    }

    #[test]
    fn rfc7541_c5_responses_without_huffman_evict() {
        let mut decoder = Decoder::new(256, false);
        run(
            &mut decoder,
            &[
                "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 \
                 2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 \
                 6c65 2e63 6f6d",
                "4803 3330 37c1 c0bf",
                "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d \
                 54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049 \
                 5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e 3d31",
            ],
            &responses(),
            &[222, 222, 215],
        );
        assert_eq!(decoder.table.len(), 3);
    }

    #[test]
    fn rfc7541_c6_responses_with_huffman_evict() {
        run(
            &mut Decoder::new(256, false),
            &[
                "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 \
                 2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
                "4883 640e ffc1 c0bf",
                "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab \
                 77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f \
                 9587 3160 65c0 03ed 4ee5 b106 3d50 07",
            ],
            &responses(),
            &[222, 222, 215],
        );
    }

    /// A decoder that starts at the second request of C.3 (it missed the first block, which
    /// inserted `:authority`) must not invent the authority, and must get the rest right,
    /// including the entry the second block inserts and the third block references.
    #[test]
    fn partial_decoder_marks_what_it_cannot_know_and_nothing_else() {
        let mut decoder = Decoder::partial();
        let second = fields(&decoder.decode(&hex("8286 84be 5808 6e6f 2d63 6163 6865")).unwrap());
        assert_eq!(
            second,
            pairs(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                ("?", "?"),
                ("cache-control", "no-cache")
            ])
        );
        // The third block indexes (bf = 63) the first block's :authority: now past the table.
        let third = fields(
            &decoder.decode(&hex("8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65")).unwrap(),
        );
        assert_eq!(
            third,
            pairs(&[
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/index.html"),
                ("?", "?"),
                ("custom-key", "custom-value")
            ])
        );
        // A literal whose name indexes an unknown entry keeps the name unknown when inserted,
        // and the next reference to it gives the value with the name still unknown.
        let mut decoder = Decoder::partial();
        let got = fields(&decoder.decode(&[0x40 | 0x3f, 0x0f, 0x03, b'a', b'b', b'c', 0x80 | 62]).unwrap());
        assert_eq!(got, pairs(&[("?", "abc"), ("?", "abc")]));
    }

    #[test]
    fn complete_decoder_rejects_what_a_partial_one_marks() {
        assert!(matches!(Decoder::complete().decode(&[0xbe]), Err(HpackError::Malformed(_))));
        assert!(matches!(Decoder::complete().decode(&[0x80]), Err(HpackError::Malformed(_))));
        assert_eq!(Decoder::complete().decode(&[0x40, 0x05, b'a']), Err(HpackError::Truncated));
        assert!(matches!(
            Decoder::complete().decode(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]),
            Err(HpackError::Malformed(_))
        ));
    }

    /// A size update to 0 empties both tables: the partial decoder then knows everything.
    #[test]
    fn size_update_to_zero_makes_a_partial_decoder_complete() {
        let mut decoder = Decoder::partial();
        decoder.decode(&[0x20, 0x3f, 0xe1, 0x1f]).unwrap(); // 0, then 4096
        assert!(!decoder.is_partial());
        assert_eq!(decoder.max_size, 4096);
    }
}
