//! Decoding of ring-buffer records into [`Chunk`]s. Every length is checked against the record
//! before it is trusted; a malformed record is an error, counted by the caller, never a panic.

use std::mem::size_of;

use tlstap_core::event::Direction;
use tlstap_core::reassembly::{CallMeta, Chunk};

use crate::skel::types::{tlstap_data_flags, tlstap_data_hdr, tlstap_direction, tlstap_limits, tlstap_record_kind};

/// Size of the data record header: 88 bytes, asserted against events.h's layout below.
pub const DATA_HDR_LEN: usize = size_of::<tlstap_data_hdr>();
const _: () = assert!(DATA_HDR_LEN == 88, "events.h: struct tlstap_data_hdr must be 88 bytes");

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
}

/// A decoded ring-buffer record.
#[derive(Debug, Clone, Copy)]
pub enum Record<'a> {
    Data(Chunk<'a>),
}

/// Decodes one ring-buffer record.
pub fn decode(record: &[u8]) -> Result<Record<'_>, DecodeError> {
    let kind_bytes = record.get(..4).ok_or(DecodeError::Short(record.len()))?;
    let kind = u32::from_ne_bytes([kind_bytes[0], kind_bytes[1], kind_bytes[2], kind_bytes[3]]);
    match tlstap_record_kind(kind) {
        tlstap_record_kind::TLSTAP_RECORD_DATA => decode_data(record).map(Record::Data),
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
    let span = if read_fault {
        hdr.call_len.saturating_sub(hdr.chunk_off).min(CHUNK_MAX)
    } else {
        payload.len() as u64
    };
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
        },
        offset: hdr.chunk_off,
        span,
        read_fault,
        payload,
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
            _reserved: 0,
            comm: [b'g' as i8; 16],
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
        let Record::Data(c) = decode(&rec).unwrap();
        assert_eq!(c.payload, b"abcd");
        assert_eq!((c.offset, c.span, c.read_fault), (16_384, 4, false));
        assert_eq!((c.meta.call_id, c.meta.call_len, c.meta.pid, c.meta.tid), (7, 20_000, 100, 101));
        assert_eq!(c.meta.direction, Direction::Read);
    }

    #[test]
    fn read_fault_spans_the_rest_of_the_call() {
        let rec = record(0, b"", tlstap_data_flags::TLSTAP_DATA_READ_FAULT.0);
        let Record::Data(c) = decode(&rec).unwrap();
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
