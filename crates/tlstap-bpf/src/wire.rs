//! Decoding of ring-buffer records into [`Chunk`]s. Every length is checked against the record
//! before it is trusted; a malformed record is an error, counted by the caller, never a panic.

use std::mem::size_of;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tlstap_core::event::{ConnKind, Direction};
use tlstap_core::reassembly::{CallMeta, Chunk, WireConn};

use crate::skel::types::{
    tlstap_conn, tlstap_conn_kind, tlstap_data_flags, tlstap_data_hdr, tlstap_direction, tlstap_h2_field,
    tlstap_h2_hdr, tlstap_h2_side, tlstap_limits, tlstap_proc_rec, tlstap_record_kind, tlstap_secret_rec,
};

/// Size of the data record header, asserted against events.h's stated layout.
pub const DATA_HDR_LEN: usize = size_of::<tlstap_data_hdr>();
const _: () = assert!(DATA_HDR_LEN == 160, "events.h: struct tlstap_data_hdr must be 160 bytes");
const SECRET_REC_LEN: usize = size_of::<tlstap_secret_rec>();
const _: () = assert!(SECRET_REC_LEN == 224, "events.h: struct tlstap_secret_rec must be 224 bytes");

const H2_HDR_LEN: usize = size_of::<tlstap_h2_hdr>();
const _: () = assert!(H2_HDR_LEN == 56, "events.h: struct tlstap_h2_hdr must be 56 bytes");
const H2_FIELD_LEN: usize = size_of::<tlstap_h2_field>();

const PROC_REC_LEN: usize = size_of::<tlstap_proc_rec>();
const _: () = assert!(PROC_REC_LEN == 40, "events.h: struct tlstap_proc_rec must be 40 bytes");

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// Largest payload of one record (events.h `TLSTAP_CHUNK_MAX`).
pub const CHUNK_MAX: u64 = tlstap_limits::TLSTAP_CHUNK_MAX.0 as u64;

/// Why a record could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record of {0} bytes is too short")]
    Short(usize),
    #[error("unknown record kind {0}")]
    UnknownKind(u32),
    #[error("payload of {payload} bytes runs past the {record}-byte record")]
    PayloadPastEnd { payload: u32, record: usize },
    #[error("unknown direction {0}")]
    UnknownDirection(u32),
    #[error("HTTP/2 field {0} runs past its record's payload")]
    FieldPastEnd(u32),
}

/// A decoded ring-buffer record.
#[derive(Debug, Clone)]
pub enum Record<'a> {
    Data(Chunk<'a>),
    Secret(Secret<'a>),
    Process(ProcessEvent),
    H2Fields(H2Fields<'a>),
}

/// Header fields a Go program had (--h2-hooks): one field its HPACK encoder was given, or every
/// field of one header block its framer decoded.
#[derive(Debug, Clone)]
pub struct H2Fields<'a> {
    /// The fields came from the encoder (sent), else from a decoded block (received).
    pub sent: bool,
    pub pid: u32,
    pub ts_ns: u64,
    pub goroutine: u64,
    /// Sent: the `*hpack.Encoder`; received: the `*MetaHeadersFrame`.
    pub owner: u64,
    /// Received: the block's stream.
    pub stream_id: u32,
    /// Fields the program had; `fields` holds them all only when the lengths are equal.
    pub field_count: u32,
    /// (name, value), whole, in the program's order.
    pub fields: Vec<(&'a [u8], &'a [u8])>,
}

impl H2Fields<'_> {
    /// Every field the program had was captured.
    pub fn complete(&self) -> bool {
        self.fields.len() == self.field_count as usize
    }
}

/// A process exec'd or exited (discovery).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessEvent {
    pub exited: bool,
    pub pid: u32,
    /// CLOCK_MONOTONIC, as BPF took it.
    pub ts_ns: u64,
    pub uid: u32,
    /// BPF stopped the process (SIGSTOP) until userspace continues it.
    pub held: bool,
    pub comm: [u8; 16],
}

/// One `writeKeyLog` call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Secret<'a> {
    /// CLOCK_MONOTONIC, as BPF took it.
    pub ts_ns: u64,
    pub pid: u32,
    pub label: &'a [u8],
    pub client_random: &'a [u8],
    pub secret: &'a [u8],
    /// Some bytes could not be read, or were longer than the record holds.
    pub incomplete: bool,
    /// BPF could not read some bytes (it counted the loss as read_fault).
    pub read_fault: bool,
}

/// Decodes one ring-buffer record.
pub fn decode(record: &[u8]) -> Result<Record<'_>, DecodeError> {
    let kind_bytes = record.get(..4).ok_or(DecodeError::Short(record.len()))?;
    let kind = u32::from_ne_bytes([kind_bytes[0], kind_bytes[1], kind_bytes[2], kind_bytes[3]]);
    match tlstap_record_kind(kind) {
        tlstap_record_kind::TLSTAP_RECORD_DATA => decode_data(record).map(Record::Data),
        tlstap_record_kind::TLSTAP_RECORD_SECRET => decode_secret(record).map(Record::Secret),
        tlstap_record_kind::TLSTAP_RECORD_EXEC | tlstap_record_kind::TLSTAP_RECORD_EXIT => {
            decode_process(record).map(Record::Process)
        }
        tlstap_record_kind::TLSTAP_RECORD_H2_FIELDS => decode_h2(record).map(Record::H2Fields),
        _ => Err(DecodeError::UnknownKind(kind)),
    }
}

fn decode_data(record: &[u8]) -> Result<Chunk<'_>, DecodeError> {
    if record.len() < DATA_HDR_LEN {
        return Err(DecodeError::Short(record.len()));
    }
    // SAFETY: the record holds at least DATA_HDR_LEN bytes (checked above); tlstap_data_hdr is a
    // repr(C) struct of integers and byte arrays, valid for every bit pattern; read_unaligned
    // makes no alignment assumption.
    let hdr: tlstap_data_hdr = unsafe { std::ptr::read_unaligned(record.as_ptr().cast()) };
    let payload = record
        .get(DATA_HDR_LEN..DATA_HDR_LEN + hdr.chunk_len as usize)
        .ok_or(DecodeError::PayloadPastEnd { payload: hdr.chunk_len, record: record.len() })?;
    let direction = match tlstap_direction(hdr.direction) {
        tlstap_direction::TLSTAP_DIR_WRITE => Direction::Write,
        tlstap_direction::TLSTAP_DIR_READ => Direction::Read,
        _ => return Err(DecodeError::UnknownDirection(hdr.direction)),
    };
    let read_fault = hdr.flags & tlstap_data_flags::TLSTAP_DATA_READ_FAULT.0 != 0;
    // A faulted chunk carries no bytes; it stood for a whole chunk of the call (or its rest).
    let span =
        if read_fault { hdr.call_len.saturating_sub(hdr.chunk_off).min(CHUNK_MAX) } else { payload.len() as u64 };
    Ok(Chunk {
        meta: CallMeta {
            call_id: hdr.call_id,
            direction,
            ts_ns: hdr.ts_ns,
            pid: hdr.pid,
            tid: hdr.tid,
            uid: hdr.uid,
            comm: hdr.comm.map(|c| c as u8),
            conn_ptr: hdr.conn_ptr,
            call_len: hdr.call_len,
            seq: hdr.seq,
            stream_epoch: hdr.stream_epoch,
            conn: decode_conn(&hdr.conn),
            goroutine: hdr.goroutine,
        },
        offset: hdr.chunk_off,
        span,
        read_fault,
        payload,
    })
}

/// Each field of the payload is a `tlstap_h2_field`, its name and value, padded to 8 bytes.
fn decode_h2(record: &[u8]) -> Result<H2Fields<'_>, DecodeError> {
    if record.len() < H2_HDR_LEN {
        return Err(DecodeError::Short(record.len()));
    }
    // SAFETY: the record holds at least H2_HDR_LEN bytes (checked above); the struct is repr(C)
    // of integers, valid for every bit pattern; read_unaligned makes no alignment assumption.
    let hdr: tlstap_h2_hdr = unsafe { std::ptr::read_unaligned(record.as_ptr().cast()) };
    let payload = record
        .get(H2_HDR_LEN..H2_HDR_LEN + hdr.payload_len as usize)
        .ok_or(DecodeError::PayloadPastEnd { payload: hdr.payload_len, record: record.len() })?;
    let mut fields = Vec::with_capacity(hdr.captured.min(64) as usize);
    let mut at = 0usize;
    for i in 0..hdr.captured {
        let past = || DecodeError::FieldPastEnd(i);
        let lens = payload.get(at..at + H2_FIELD_LEN).ok_or_else(past)?;
        let name_len = u32::from_ne_bytes([lens[0], lens[1], lens[2], lens[3]]) as usize;
        let value_len = u32::from_ne_bytes([lens[4], lens[5], lens[6], lens[7]]) as usize;
        let name_at = at + H2_FIELD_LEN;
        let name = payload.get(name_at..name_at + name_len).ok_or_else(past)?;
        let value = payload.get(name_at + name_len..name_at + name_len + value_len).ok_or_else(past)?;
        fields.push((name, value));
        at = (name_at + name_len + value_len + 7) & !7;
    }
    Ok(H2Fields {
        sent: hdr.side == tlstap_h2_side::TLSTAP_H2_SENT.0,
        pid: hdr.pid,
        ts_ns: hdr.ts_ns,
        goroutine: hdr.goroutine,
        owner: hdr.owner,
        stream_id: hdr.stream_id,
        field_count: hdr.field_count,
        fields,
    })
}

fn decode_conn(c: &tlstap_conn) -> WireConn {
    let kind = match tlstap_conn_kind(u32::from(c.kind)) {
        tlstap_conn_kind::TLSTAP_CONN_TCP => ConnKind::Tcp,
        tlstap_conn_kind::TLSTAP_CONN_UNIX => ConnKind::Unix,
        _ => ConnKind::Unknown,
    };
    let ip = |bytes: &[u8; 16]| match c.family {
        AF_INET => Some(IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))),
        // A dual-stack socket (Go's default listener, ":port") holds an IPv4 peer as
        // ::ffff:a.b.c.d; Go shows it as a.b.c.d, and so does tlstap.
        AF_INET6 => Some(Ipv6Addr::from(*bytes).to_canonical()),
        _ => None,
    };
    let (local, remote) = match (kind, ip(&c.local_addr), ip(&c.remote_addr)) {
        (ConnKind::Tcp, Some(l), Some(r)) => {
            (Some(SocketAddr::new(l, c.local_port)), Some(SocketAddr::new(r, c.remote_port)))
        }
        _ => (None, None),
    };
    let fd = (kind != ConnKind::Unknown && c.fd >= 0).then_some(c.fd);
    WireConn { kind, fd, local, remote, sock_id: c.sock_id }
}

fn decode_process(record: &[u8]) -> Result<ProcessEvent, DecodeError> {
    if record.len() < PROC_REC_LEN {
        return Err(DecodeError::Short(record.len()));
    }
    // SAFETY: the record holds at least PROC_REC_LEN bytes (checked above); the struct is
    // repr(C) of integers and byte arrays, valid for every bit pattern; read_unaligned makes no
    // alignment assumption.
    let rec: tlstap_proc_rec = unsafe { std::ptr::read_unaligned(record.as_ptr().cast()) };
    Ok(ProcessEvent {
        exited: rec.kind == tlstap_record_kind::TLSTAP_RECORD_EXIT.0,
        pid: rec.pid,
        ts_ns: rec.ts_ns,
        uid: rec.uid,
        held: rec.held != 0,
        comm: rec.comm.map(|c| c as u8),
    })
}

fn decode_secret(record: &[u8]) -> Result<Secret<'_>, DecodeError> {
    if record.len() < SECRET_REC_LEN {
        return Err(DecodeError::Short(record.len()));
    }
    // SAFETY: the record holds at least SECRET_REC_LEN bytes (checked above); the struct is
    // repr(C) of integers and byte arrays, valid for every bit pattern; read_unaligned makes no
    // alignment assumption. The arrays are then borrowed from `record`, not from the copy.
    let rec: tlstap_secret_rec = unsafe { std::ptr::read_unaligned(record.as_ptr().cast()) };
    let field = |offset: usize, cap: usize, len: u32| {
        let n = (len as usize).min(cap);
        (record.get(offset..offset + n).unwrap_or_default(), len as usize > cap)
    };
    let label_at = std::mem::offset_of!(tlstap_secret_rec, label);
    let random_at = std::mem::offset_of!(tlstap_secret_rec, client_random);
    let secret_at = std::mem::offset_of!(tlstap_secret_rec, secret);
    let (label, l_cut) = field(label_at, rec.label.len(), rec.label_len);
    let (client_random, r_cut) = field(random_at, rec.client_random.len(), rec.client_random_len);
    let (secret, s_cut) = field(secret_at, rec.secret.len(), rec.secret_len);
    let fault = rec.flags & tlstap_data_flags::TLSTAP_DATA_READ_FAULT.0 != 0;
    Ok(Secret {
        ts_ns: rec.ts_ns,
        pid: rec.pid,
        label,
        client_random,
        secret,
        incomplete: fault || l_cut || r_cut || s_cut,
        read_fault: fault,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(chunk_len: u32, payload: &[u8], flags: u32) -> Vec<u8> {
        let hdr = tlstap_data_hdr {
            kind: tlstap_record_kind::TLSTAP_RECORD_DATA.0,
            direction: tlstap_direction::TLSTAP_DIR_READ.0,
            ts_ns: 42,
            call_id: 7,
            conn_ptr: 0xc000_1234,
            call_len: 20_000,
            chunk_off: 16_384,
            chunk_len,
            flags,
            pid: 100,
            tid: 101,
            uid: 0,
            stream_epoch: 9,
            comm: [b'g' as i8; 16],
            seq: 3,
            conn: tlstap_conn {
                sock_id: 0xffff_8880_0000_1000,
                fd: 7,
                kind: tlstap_conn_kind::TLSTAP_CONN_TCP.0 as u16,
                family: AF_INET,
                local_port: 8443,
                remote_port: 50514,
                _reserved: 0,
                local_addr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                remote_addr: [127, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            },
            goroutine: 0xc000_0070,
        };
        let mut out = vec![0u8; DATA_HDR_LEN];
        // SAFETY: `out` has exactly DATA_HDR_LEN bytes; write_unaligned has no alignment need.
        unsafe { std::ptr::write_unaligned(out.as_mut_ptr().cast(), hdr) };
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn decodes_a_data_record() {
        let rec = record(4, b"abcdXXXX", 0); // ring records may be longer than the payload
        let Record::Data(c) = decode(&rec).unwrap() else { panic!("not data") };
        assert_eq!(c.payload, b"abcd");
        assert_eq!((c.offset, c.span, c.read_fault), (16_384, 4, false));
        assert_eq!((c.meta.call_id, c.meta.call_len, c.meta.pid, c.meta.tid), (7, 20_000, 100, 101));
        assert_eq!(c.meta.direction, Direction::Read);
        assert_eq!(c.meta.seq, 3);
        assert_eq!(c.meta.conn.fd, Some(7));
        assert_eq!(c.meta.conn.local, Some("127.0.0.1:8443".parse().unwrap()));
        assert_eq!(c.meta.conn.remote, Some("127.0.0.2:50514".parse().unwrap()));
    }

    #[test]
    fn decodes_a_secret_with_zero_bytes_and_exact_lengths() {
        let mut rec = tlstap_secret_rec {
            kind: tlstap_record_kind::TLSTAP_RECORD_SECRET.0,
            pid: 9,
            ts_ns: 5,
            label_len: 13,
            client_random_len: 32,
            secret_len: 48,
            flags: 0,
            label: [0; 64],
            client_random: [0; 64],
            secret: [0; 64],
        };
        for (i, b) in b"CLIENT_RANDOM".iter().enumerate() {
            rec.label[i] = *b as i8;
        }
        rec.client_random[..32].fill(0xab);
        rec.secret[..48].copy_from_slice(&[0u8; 48]); // zeros are data, not terminators
        rec.secret[47] = 1;
        let mut bytes = vec![0u8; SECRET_REC_LEN];
        // SAFETY: `bytes` has exactly SECRET_REC_LEN bytes; write_unaligned has no alignment need.
        unsafe { std::ptr::write_unaligned(bytes.as_mut_ptr().cast(), rec) };
        let Record::Secret(s) = decode(&bytes).unwrap() else { panic!("not a secret") };
        assert_eq!(s.label, b"CLIENT_RANDOM");
        assert_eq!(s.client_random, &[0xab; 32]);
        assert_eq!(s.secret.len(), 48);
        assert_eq!(s.secret[47], 1);
        assert!(!s.incomplete);
        assert!(decode(&bytes[..SECRET_REC_LEN - 1]).is_err());
    }

    fn h2_record(captured: u32, field_count: u32, fields: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut payload = Vec::new();
        for (name, value) in fields {
            payload.extend_from_slice(&(name.len() as u32).to_ne_bytes());
            payload.extend_from_slice(&(value.len() as u32).to_ne_bytes());
            payload.extend_from_slice(name);
            payload.extend_from_slice(value);
            payload.resize(payload.len().next_multiple_of(8), 0xee);
        }
        let hdr = tlstap_h2_hdr {
            kind: tlstap_record_kind::TLSTAP_RECORD_H2_FIELDS.0,
            side: tlstap_h2_side::TLSTAP_H2_RECEIVED.0,
            ts_ns: 1,
            goroutine: 0xc000_0070,
            owner: 0xc000_9000,
            pid: 100,
            stream_id: 5,
            field_count,
            captured,
            payload_len: payload.len() as u32,
            flags: 0,
        };
        let mut out = vec![0u8; H2_HDR_LEN];
        // SAFETY: `out` has exactly H2_HDR_LEN bytes; write_unaligned has no alignment need.
        unsafe { std::ptr::write_unaligned(out.as_mut_ptr().cast(), hdr) };
        out.extend_from_slice(&payload);
        out.extend_from_slice(&[0; 32]); // a ring record is reserved longer than its payload
        out
    }

    #[test]
    fn decodes_h2_fields_padded_to_8_bytes() {
        let rec = h2_record(2, 3, &[(b":status", b"200"), (b"content-type", b"text/plain; charset=utf-8")]);
        let Record::H2Fields(h) = decode(&rec).unwrap() else { panic!("not h2 fields") };
        assert!(!h.sent);
        assert_eq!((h.pid, h.stream_id, h.goroutine, h.owner), (100, 5, 0xc000_0070, 0xc000_9000));
        assert_eq!(h.fields, vec![(&b":status"[..], &b"200"[..]), (b"content-type", b"text/plain; charset=utf-8")]);
        assert!(!h.complete(), "3 fields, 2 captured");
        // A field claimed past the payload is an error, not a short read.
        let mut bad = h2_record(3, 3, &[(b"a", b"b")]);
        assert_eq!(decode(&bad).unwrap_err(), DecodeError::FieldPastEnd(1));
        bad[48..52].copy_from_slice(&1000u32.to_ne_bytes()); // payload_len past the record
        assert!(matches!(decode(&bad).unwrap_err(), DecodeError::PayloadPastEnd { .. }));
    }

    #[test]
    fn read_fault_spans_the_rest_of_the_call() {
        let rec = record(0, b"", tlstap_data_flags::TLSTAP_DATA_READ_FAULT.0);
        let Record::Data(c) = decode(&rec).unwrap() else { panic!("not data") };
        assert!(c.read_fault);
        assert_eq!(c.span, 20_000 - 16_384);
    }

    #[test]
    fn rejects_truncated_records() {
        let rec = record(10, b"abc", 0);
        assert_eq!(decode(&rec).unwrap_err(), DecodeError::PayloadPastEnd { payload: 10, record: rec.len() });
        for len in 0..DATA_HDR_LEN {
            assert!(decode(&rec[..len]).is_err(), "len {len}");
        }
        assert_eq!(decode(&[9, 0, 0, 0, 1]).unwrap_err(), DecodeError::UnknownKind(9));
    }
}
