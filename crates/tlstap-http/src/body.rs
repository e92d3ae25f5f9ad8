//! Bodies: collected up to a limit, then decompressed (Content-Encoding) and, for gRPC, split
//! into length-prefixed messages.

use std::io::Read;

use tlstap_core::http::{GrpcMessage, HttpMessage};

/// Collects a message's body bytes, keeping at most `limit`.
#[derive(Debug, Default)]
pub struct BodyBuffer {
    pub kept: Vec<u8>,
    pub len: u64,
    /// Bytes are missing from `kept`: over the limit, or lost in capture.
    pub truncated: bool,
}

impl BodyBuffer {
    pub fn push(&mut self, bytes: &[u8], limit: usize) {
        self.len += bytes.len() as u64;
        let room = limit.saturating_sub(self.kept.len());
        if bytes.len() > room {
            self.truncated = true;
        }
        self.kept.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }
}

/// Content-Encoding tokens of a header value, in the order they were applied.
pub fn encodings(value: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(value)
        .split(',')
        .map(|e| e.trim().to_ascii_lowercase())
        .filter(|e| !e.is_empty() && e != "identity")
        .collect()
}

/// Undoes `encodings` (applied in order) on `raw`, producing at most `limit` bytes. `None`
/// when an encoding is unknown, the data is corrupt, or the result would exceed `limit`
/// (a decompression bomb is not expanded).
pub fn decode(encodings: &[String], raw: &[u8], limit: usize) -> Option<Vec<u8>> {
    let mut data = raw.to_vec();
    for encoding in encodings.iter().rev() {
        data = decode_one(encoding, &data, limit)?;
    }
    Some(data)
}

fn decode_one(encoding: &str, data: &[u8], limit: usize) -> Option<Vec<u8>> {
    match encoding {
        "gzip" | "x-gzip" => read_limited(flate2::read::MultiGzDecoder::new(data), limit),
        // "deflate" is zlib (RFC 9110 §8.4.1.2), but some servers send raw deflate.
        "deflate" => read_limited(flate2::read::ZlibDecoder::new(data), limit)
            .or_else(|| read_limited(flate2::read::DeflateDecoder::new(data), limit)),
        "br" => read_limited(brotli::Decompressor::new(data, 4096), limit),
        "zstd" => read_limited(zstd::stream::read::Decoder::new(data).ok()?, limit),
        _ => None,
    }
}

fn read_limited(reader: impl Read, limit: usize) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    reader.take(cap).read_to_end(&mut out).ok()?;
    (out.len() <= limit).then_some(out)
}

/// Fills a message's body fields from what was collected: decompressed by its
/// Content-Encoding when that works (the transferred bytes kept in `raw_body`), else as
/// transferred.
pub fn finish(message: &mut HttpMessage, body: BodyBuffer, limit: usize) {
    message.body_len = body.len;
    message.body_truncated = body.truncated;
    message.encodings = message.header("content-encoding").map(encodings).unwrap_or_default();
    let decoded = match message.encodings.is_empty() || body.truncated {
        true => None,
        false => decode(&message.encodings, &body.kept, limit),
    };
    match decoded {
        Some(plain) => {
            message.decoded = true;
            message.body = plain;
            message.raw_body = Some(body.kept);
        }
        None => message.body = body.kept,
    }
}

/// Splits a gRPC body into its length-prefixed messages (gRPC over HTTP/2: a compressed-flag
/// byte, a 4-byte big-endian length, the message), decompressing those flagged with
/// `grpc_encoding`. A message cut by truncation ends the list.
pub fn grpc_messages(body: &[u8], grpc_encoding: Option<&[u8]>, limit: usize) -> Vec<GrpcMessage> {
    let encoding = grpc_encoding.map(|e| String::from_utf8_lossy(e).trim().to_ascii_lowercase());
    let mut messages = Vec::new();
    let mut rest = body;
    while rest.len() >= 5 {
        let compressed = rest[0] & 1 != 0;
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        let Some(data) = rest.get(5..5 + len) else { break };
        rest = &rest[5 + len..];
        let plain = match (&encoding, compressed) {
            (Some(e), true) => decode(std::slice::from_ref(e), data, limit),
            (_, false) => Some(data.to_vec()),
            (None, true) => None,
        };
        messages.push(match plain {
            Some(data) => GrpcMessage { compressed, data, decoded: true },
            None => GrpcMessage { compressed, data: data.to_vec(), decoded: false },
        });
    }
    messages
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn brotli(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
        w.write_all(data).unwrap();
        drop(w);
        out
    }

    #[test]
    fn every_encoding_round_trips() {
        let plain: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let zlib = {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(&plain).unwrap();
            e.finish().unwrap()
        };
        let raw_deflate = {
            let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(&plain).unwrap();
            e.finish().unwrap()
        };
        let zstd = zstd::encode_all(&plain[..], 3).unwrap();
        for (encoding, data) in [
            ("gzip", gzip(&plain)),
            ("deflate", zlib),
            ("deflate", raw_deflate),
            ("br", brotli(&plain)),
            ("zstd", zstd),
        ] {
            assert_eq!(decode(&[encoding.into()], &data, 1 << 20).as_deref(), Some(&plain[..]), "{encoding}");
        }
        // Applied in order: gzip, then br.
        let twice = brotli(&gzip(&plain));
        assert_eq!(decode(&encodings(b"gzip, br"), &twice, 1 << 20).as_deref(), Some(&plain[..]));
    }

    #[test]
    fn bombs_corruption_and_unknown_encodings_are_not_decoded() {
        let zeros = gzip(&vec![0; 1 << 20]);
        assert_eq!(decode(&["gzip".into()], &zeros, 1000), None);
        assert_eq!(decode(&["gzip".into()], b"not gzip", 1000), None);
        assert_eq!(decode(&["compress".into()], b"x", 1000), None);
        assert_eq!(encodings(b"identity"), Vec::<String>::new());
    }

    #[test]
    fn body_buffer_keeps_up_to_the_limit_and_counts_the_rest() {
        let mut b = BodyBuffer::default();
        b.push(b"hello", 8);
        b.push(b"world", 8);
        assert_eq!((b.kept.as_slice(), b.len, b.truncated), (&b"hellowor"[..], 10, true));
    }

    #[test]
    fn grpc_messages_are_split_and_decompressed() {
        let mut body = vec![0, 0, 0, 0, 3];
        body.extend(b"abc");
        let packed = gzip(b"hello hello hello");
        body.push(1);
        body.extend((packed.len() as u32).to_be_bytes());
        body.extend(&packed);
        body.extend([0, 0, 0, 0, 9, b'x']); // cut: dropped
        let messages = grpc_messages(&body, Some(b"gzip"), 1 << 20);
        assert_eq!(
            messages,
            vec![
                GrpcMessage { compressed: false, data: b"abc".to_vec(), decoded: true },
                GrpcMessage { compressed: true, data: b"hello hello hello".to_vec(), decoded: true },
            ]
        );
        assert!(!grpc_messages(&body, None, 1 << 20)[1].decoded);
    }
}
