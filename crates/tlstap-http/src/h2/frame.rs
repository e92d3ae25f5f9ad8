//! HTTP/2 frame headers (RFC 9113 §4.1) and the plausibility test that finds frame boundaries
//! in a connection tlstap joined mid-way.

/// The client's connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub const HEADER_LEN: usize = 9;

pub const DATA: u8 = 0;
pub const HEADERS: u8 = 1;
pub const PRIORITY: u8 = 2;
pub const RST_STREAM: u8 = 3;
pub const SETTINGS: u8 = 4;
pub const PUSH_PROMISE: u8 = 5;
pub const PING: u8 = 6;
pub const GOAWAY: u8 = 7;
pub const WINDOW_UPDATE: u8 = 8;
pub const CONTINUATION: u8 = 9;

pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
pub const PADDED: u8 = 0x8;
pub const PRIORITY_FLAG: u8 = 0x20;

/// Largest frame payload accepted when finding boundaries mid-connection: Go's peers read up
/// to 1 MiB (http2 `MaxReadFrameSize`), and little else uses more.
const PLAUSIBLE_MAX_LEN: u32 = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub len: u32,
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
}

impl FrameHeader {
    pub fn parse(bytes: &[u8]) -> Option<FrameHeader> {
        let b: &[u8; HEADER_LEN] = bytes.get(..HEADER_LEN)?.try_into().ok()?;
        Some(FrameHeader {
            len: u32::from_be_bytes([0, b[0], b[1], b[2]]),
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        })
    }

    /// Whether this could be a real frame header: a known type, only that type's flags, the
    /// reserved bit clear, the stream and length rules of RFC 9113 §6. Used only to find frame
    /// boundaries in a connection joined mid-way; a connection seen from its preface is framed
    /// by lengths alone.
    pub fn plausible(bytes: &[u8]) -> bool {
        let Some(h) = FrameHeader::parse(bytes) else { return false };
        if bytes[5] & 0x80 != 0 || h.len > PLAUSIBLE_MAX_LEN {
            return false;
        }
        let (flags, on_stream, len_ok) = match h.kind {
            DATA => (END_STREAM | PADDED, Some(true), true),
            HEADERS => (END_STREAM | END_HEADERS | PADDED | PRIORITY_FLAG, Some(true), true),
            PRIORITY => (0, Some(true), h.len == 5),
            RST_STREAM => (0, Some(true), h.len == 4),
            SETTINGS => (ACK, Some(false), h.len % 6 == 0 && (h.flags & ACK == 0 || h.len == 0)),
            PUSH_PROMISE => (END_HEADERS | PADDED, Some(true), h.len >= 4),
            PING => (ACK, Some(false), h.len == 8),
            GOAWAY => (0, Some(false), h.len >= 8),
            WINDOW_UPDATE => (0, None, h.len == 4),
            CONTINUATION => (END_HEADERS, Some(true), true),
            _ => return false,
        };
        let stream_ok = match on_stream {
            Some(true) => h.stream != 0,
            Some(false) => h.stream == 0,
            None => true,
        };
        h.flags & !flags == 0 && stream_ok && len_ok
    }
}

/// How a call found while joining a connection mid-way can begin the frame stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPoint {
    /// Whole plausible frames, then possibly the start of one (a plausible header, or fewer
    /// than 9 bytes): at least two frames, or one frame ending exactly at the call's end.
    Frames,
    /// Exactly one plausible frame header and nothing else. Go's HTTP/2 server reads a header,
    /// then its payload, call by call; the sync is confirmed when a frame ends with a call.
    LoneHeader,
}

/// Whether a call that begins at a frame boundary would look like this: how a connection
/// joined mid-way is recognised as HTTP/2. Go writes whole frames per flush, its server reads
/// frame by frame, and its client reads whatever its buffer holds, which is a frame boundary
/// when the connection was idle; random bytes rarely chain into plausible frames.
pub fn sync_point(data: &[u8]) -> Option<SyncPoint> {
    if data.len() == HEADER_LEN && FrameHeader::plausible(data) {
        return Some(SyncPoint::LoneHeader);
    }
    let (mut at, mut frames) = (0, 0);
    while at < data.len() {
        let rest = &data[at..];
        if rest.len() < HEADER_LEN {
            break;
        }
        if !FrameHeader::plausible(rest) {
            return None;
        }
        let h = FrameHeader::parse(rest)?;
        at += HEADER_LEN + h.len as usize;
        frames += u32::from(at <= data.len());
    }
    (frames >= 2 || (frames == 1 && at == data.len())).then_some(SyncPoint::Frames)
}

/// Removes a PADDED frame's pad length byte and padding; `None` when they do not fit.
pub fn unpad(flags: u8, payload: &[u8]) -> Option<&[u8]> {
    if flags & PADDED == 0 {
        return Some(payload);
    }
    let (&pad, rest) = payload.split_first()?;
    rest.len().checked_sub(usize::from(pad)).map(|end| &rest[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(len: u32, kind: u8, flags: u8, stream: u32) -> Vec<u8> {
        let mut out = len.to_be_bytes()[1..].to_vec();
        out.extend([kind, flags]);
        out.extend(stream.to_be_bytes());
        out
    }

    #[test]
    fn sync_points_need_plausible_chains_of_frames() {
        let frames = |parts: &[Vec<u8>]| sync_point(&parts.concat());
        let mut settings = header(12, SETTINGS, 0, 0);
        settings.extend([0; 12]);
        let mut window = header(4, WINDOW_UPDATE, 0, 0);
        window.extend([0, 0, 1, 0]);
        let mut data = header(5, DATA, END_STREAM, 1);
        data.extend(b"hello");
        assert_eq!(frames(&[settings.clone(), window.clone()]), Some(SyncPoint::Frames));
        assert_eq!(frames(&[header(0, SETTINGS, ACK, 0)]), Some(SyncPoint::LoneHeader));
        assert_eq!(frames(&[data.clone()]), Some(SyncPoint::Frames));
        // A client's buffered read: two frames, then the start of a third.
        assert_eq!(frames(&[settings.clone(), window.clone(), data[..12].to_vec()]), Some(SyncPoint::Frames));
        assert_eq!(frames(&[settings.clone(), window.clone(), data[..4].to_vec()]), Some(SyncPoint::Frames));
        // One frame and the start of another is too little to go on.
        assert_eq!(frames(&[settings.clone(), data[..12].to_vec()]), None);
        assert_eq!(frames(&[header(100, DATA, 0, 1)]), Some(SyncPoint::LoneHeader));
        assert_eq!(frames(&[b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()]), None);
        assert_eq!(frames(&[header(0, DATA, 0, 0)]), None, "DATA on stream 0");
        assert_eq!(frames(&[header(0, 10, 0, 1)]), None, "unknown type");
        assert_eq!(frames(&[header(0, DATA, 0x2, 1)]), None, "undefined flag");
        assert_eq!(frames(&[settings.clone(), window.clone(), header(0, 10, 0, 1)]), None);
        assert_eq!(frames(&[]), None);
    }

    #[test]
    fn padding_is_removed_or_refused() {
        assert_eq!(unpad(PADDED, &[2, b'a', b'b', 0, 0]), Some(&b"ab"[..]));
        assert_eq!(unpad(0, b"ab"), Some(&b"ab"[..]));
        assert_eq!(unpad(PADDED, &[5, b'a']), None);
        assert_eq!(unpad(PADDED, &[]), None);
    }
}
