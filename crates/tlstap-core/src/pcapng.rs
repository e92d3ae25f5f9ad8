//! A pcapng writer for what tlstap needs: Section Header, Interface Description, Enhanced Packet
//! and Decryption Secrets blocks (draft-ietf-opsawg-pcapng), little-endian.
//!
//! Hand-written rather than a crate: `pcap-file` 2.0 and 3.0.0-rc.3 have no Decryption Secrets
//! Block (only a generic "unknown" block; 3.0 also needs Rust 1.93 > this workspace's 1.85);
//! `pcap-parser` has one but is a nom parser whose writing is a side feature. The four blocks
//! here are ~150 lines, and tshark/capinfos check them in `tests/pcapng_oracle.rs`.
//!
//! Must stay true: every block's total length is a multiple of 4, fits in u32 and is repeated at
//! its end; every option value fits in u16 and is padded to 32 bits; a non-empty option list
//! ends with `opt_endofopt`; a packet names an interface already described; writing a packet
//! does not allocate.

use std::io::{self, Write};

/// BSD loopback (4-byte address family header).
pub const LINKTYPE_NULL: u16 = 0;
/// Ethernet; also how Linux presents `lo`.
pub const LINKTYPE_ETHERNET: u16 = 1;
/// Raw IPv4/IPv6, no link header.
pub const LINKTYPE_RAW: u16 = 101;

/// `shb_userappl` value tlstap writes.
pub const USER_APPL: &str = concat!("tlstap ", env!("CARGO_PKG_VERSION"));

const BLOCK_SHB: u32 = 0x0A0D_0D0A;
const BLOCK_IDB: u32 = 0x0000_0001;
const BLOCK_EPB: u32 = 0x0000_0006;
const BLOCK_DSB: u32 = 0x0000_000A;
const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;
/// Decryption Secrets Block type for NSS key log lines ("TLSK").
pub const SECRETS_TYPE_TLS_KEY_LOG: u32 = 0x544C_534B;

const OPT_ENDOFOPT: u16 = 0;
const OPT_COMMENT: u16 = 1;
const SHB_USERAPPL: u16 = 4;
const IF_NAME: u16 = 2;
const IF_TSRESOL: u16 = 9;
/// `if_tsresol` value: 10^-9 seconds.
const TSRESOL_NANOS: u8 = 9;

/// Block type, total length, and the trailing total length.
const BLOCK_OVERHEAD: usize = 12;
const ZEROS: [u8; 4] = [0; 4];

fn padding(len: usize) -> usize {
    (4 - len % 4) % 4
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// One option: code and value (padded when written).
type Opt<'a> = (u16, &'a [u8]);

/// Bytes an option list takes, `opt_endofopt` included; checks each value fits an option.
fn options_len(options: &[Opt<'_>]) -> io::Result<usize> {
    if options.is_empty() {
        return Ok(0);
    }
    let mut len = 4; // opt_endofopt
    for &(code, value) in options {
        if value.len() > usize::from(u16::MAX) {
            return Err(invalid(format!("pcapng option {code}: {} bytes > 65535", value.len())));
        }
        len += 4 + value.len() + padding(value.len());
    }
    Ok(len)
}

/// Writes pcapng to `out`. Wrap a file in a `BufWriter`: blocks are written in pieces.
#[derive(Debug)]
pub struct PcapngWriter<W: Write> {
    out: W,
    interfaces: u32,
}

impl<W: Write> PcapngWriter<W> {
    /// Starts a section: writes the Section Header Block with `shb_userappl` = `user_appl`.
    pub fn new(out: W, user_appl: &str) -> io::Result<Self> {
        let mut writer = PcapngWriter { out, interfaces: 0 };
        let mut fixed = [0u8; 16];
        fixed[0..4].copy_from_slice(&BYTE_ORDER_MAGIC.to_le_bytes());
        fixed[4..6].copy_from_slice(&1u16.to_le_bytes()); // major version
        fixed[6..8].copy_from_slice(&0u16.to_le_bytes()); // minor version
        fixed[8..16].copy_from_slice(&(-1i64).to_le_bytes()); // section length: unknown
        writer.write_block(BLOCK_SHB, &fixed, &[], &[(SHB_USERAPPL, user_appl.as_bytes())])?;
        Ok(writer)
    }

    /// Describes an interface (snaplen unlimited, nanosecond timestamps); returns its id for
    /// [`Self::write_packet`].
    pub fn add_interface(&mut self, linktype: u16, name: &str) -> io::Result<u32> {
        let id = self.interfaces;
        if id == u32::MAX {
            return Err(invalid("pcapng: too many interfaces".to_string()));
        }
        let mut fixed = [0u8; 8];
        fixed[0..2].copy_from_slice(&linktype.to_le_bytes());
        // bytes 2..4 reserved, 4..8 snaplen 0 = no limit
        let options: [Opt<'_>; 2] = [(IF_NAME, name.as_bytes()), (IF_TSRESOL, &[TSRESOL_NANOS])];
        self.write_block(BLOCK_IDB, &fixed, &[], &options)?;
        self.interfaces = id + 1;
        Ok(id)
    }

    /// Writes NSS key log lines as a Decryption Secrets Block. Write it before the packets it
    /// decrypts; more may follow at any point. Empty input writes nothing.
    pub fn write_secrets(&mut self, nss_lines: &[u8]) -> io::Result<()> {
        if nss_lines.is_empty() {
            return Ok(());
        }
        let len = u32::try_from(nss_lines.len())
            .map_err(|_| invalid(format!("pcapng secrets: {} bytes > 4 GiB", nss_lines.len())))?;
        let mut fixed = [0u8; 8];
        fixed[0..4].copy_from_slice(&SECRETS_TYPE_TLS_KEY_LOG.to_le_bytes());
        fixed[4..8].copy_from_slice(&len.to_le_bytes());
        self.write_block(BLOCK_DSB, &fixed, nss_lines, &[])
    }

    /// Writes one packet: `ts_ns` is wall-clock nanoseconds since the epoch, `data` the captured
    /// bytes, `orig_len` the length on the wire (at least `data.len()`), `comment` e.g.
    /// "pid=1234 comm=server".
    pub fn write_packet(
        &mut self,
        if_id: u32,
        ts_ns: u64,
        data: &[u8],
        orig_len: u32,
        comment: Option<&str>,
    ) -> io::Result<()> {
        if if_id >= self.interfaces {
            return Err(invalid(format!("pcapng: packet on undescribed interface {if_id}")));
        }
        let cap_len = u32::try_from(data.len())
            .ok()
            .filter(|&n| n <= orig_len)
            .ok_or_else(|| invalid(format!("pcapng: captured {} > original {orig_len} bytes", data.len())))?;
        let mut fixed = [0u8; 20];
        fixed[0..4].copy_from_slice(&if_id.to_le_bytes());
        fixed[4..8].copy_from_slice(&((ts_ns >> 32) as u32).to_le_bytes());
        fixed[8..12].copy_from_slice(&(ts_ns as u32).to_le_bytes());
        fixed[12..16].copy_from_slice(&cap_len.to_le_bytes());
        fixed[16..20].copy_from_slice(&orig_len.to_le_bytes());
        match comment {
            Some(c) => self.write_block(BLOCK_EPB, &fixed, data, &[(OPT_COMMENT, c.as_bytes())]),
            None => self.write_block(BLOCK_EPB, &fixed, data, &[]),
        }
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    pub fn get_ref(&self) -> &W {
        &self.out
    }

    pub fn into_inner(self) -> W {
        self.out
    }

    /// Writes one block: fixed fields, `data` padded to 32 bits, then the options. Lengths are
    /// all checked before the first byte is written, so a refused block leaves the file valid.
    fn write_block(&mut self, block_type: u32, fixed: &[u8], data: &[u8], options: &[Opt<'_>]) -> io::Result<()> {
        let total = BLOCK_OVERHEAD + fixed.len() + data.len() + padding(data.len()) + options_len(options)?;
        let total = u32::try_from(total)
            .map_err(|_| invalid(format!("pcapng block type {block_type:#x}: {total} bytes > 4 GiB")))?;
        let out = &mut self.out;
        out.write_all(&block_type.to_le_bytes())?;
        out.write_all(&total.to_le_bytes())?;
        out.write_all(fixed)?;
        out.write_all(data)?;
        out.write_all(&ZEROS[..padding(data.len())])?;
        if !options.is_empty() {
            for &(code, value) in options {
                write_option(out, code, value)?;
            }
            write_option(out, OPT_ENDOFOPT, &[])?;
        }
        out.write_all(&total.to_le_bytes())
    }
}

/// Writes one option whose length [`options_len`] has checked.
fn write_option<W: Write>(out: &mut W, code: u16, value: &[u8]) -> io::Result<()> {
    let len = u16::try_from(value.len()).map_err(|_| invalid(format!("pcapng option {code} too long")))?;
    out.write_all(&code.to_le_bytes())?;
    out.write_all(&len.to_le_bytes())?;
    out.write_all(value)?;
    out.write_all(&ZEROS[..padding(value.len())])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Splits a little-endian pcapng byte string into (type, body) per block, checking the
    /// framing rules independently of the writer.
    fn blocks(mut b: &[u8]) -> Vec<(u32, Vec<u8>)> {
        let mut out = Vec::new();
        while !b.is_empty() {
            let t = u32::from_le_bytes(b[0..4].try_into().unwrap());
            let len = u32::from_le_bytes(b[4..8].try_into().unwrap()) as usize;
            assert_eq!(len % 4, 0, "block {t:#x} length {len}");
            let trailer = u32::from_le_bytes(b[len - 4..len].try_into().unwrap()) as usize;
            assert_eq!(trailer, len);
            out.push((t, b[8..len - 4].to_vec()));
            b = &b[len..];
        }
        out
    }

    #[test]
    fn section_header_bytes() {
        let w = PcapngWriter::new(Vec::new(), "ab").unwrap();
        let expected: &[u8] = &[
            0x0a, 0x0d, 0x0d, 0x0a, 40, 0, 0, 0, // type, total length
            0x4d, 0x3c, 0x2b, 0x1a, 1, 0, 0, 0, // magic, version 1.0
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // section length -1
            4, 0, 2, 0, b'a', b'b', 0, 0, // shb_userappl "ab" padded
            0, 0, 0, 0, // opt_endofopt
            40, 0, 0, 0,
        ];
        assert_eq!(w.into_inner(), expected);
    }

    #[test]
    fn packet_bytes_and_padding() {
        let mut w = PcapngWriter::new(Vec::new(), "t").unwrap();
        assert_eq!(w.add_interface(LINKTYPE_RAW, "lo").unwrap(), 0);
        w.write_packet(0, 0x1_0000_0002, b"abcde", 9, Some("pid=1")).unwrap();
        w.write_packet(0, 7, b"", 0, None).unwrap();
        let b = blocks(&w.into_inner());
        assert_eq!(b.iter().map(|(t, _)| *t).collect::<Vec<_>>(), [BLOCK_SHB, BLOCK_IDB, BLOCK_EPB, BLOCK_EPB]);
        let idb: &[u8] = &[101, 0, 0, 0, 0, 0, 0, 0, 2, 0, 2, 0, b'l', b'o', 0, 0, 9, 0, 1, 0, 9, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(b[1].1, idb);
        let epb: &[u8] = &[
            0, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 5, 0, 0, 0, 9, 0, 0, 0, // if, ts hi, ts lo, lens
            b'a', b'b', b'c', b'd', b'e', 0, 0, 0, // data padded
            1, 0, 5, 0, b'p', b'i', b'd', b'=', b'1', 0, 0, 0, 0, 0, 0, 0, // comment, end
        ];
        assert_eq!(b[2].1, epb);
        assert_eq!(b[3].1, [0, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn secrets_block_bytes() {
        let mut w = PcapngWriter::new(Vec::new(), "t").unwrap();
        w.write_secrets(b"").unwrap();
        w.write_secrets(b"L 01 02\n").unwrap();
        let b = blocks(&w.into_inner());
        assert_eq!(b.len(), 2);
        assert_eq!(b[1].0, 0x0000_000A);
        assert_eq!(b[1].1, b"KSLT\x08\0\0\0L 01 02\n");
    }

    #[test]
    fn refuses_bad_lengths_without_writing() {
        let mut w = PcapngWriter::new(Vec::new(), "t").unwrap();
        let before = w.get_ref().len();
        assert!(w.write_packet(0, 0, b"x", 1, None).is_err(), "no interface yet");
        w.add_interface(LINKTYPE_ETHERNET, "eth0").unwrap();
        assert!(w.write_packet(0, 0, b"xy", 1, None).is_err(), "captured > original");
        assert!(w.write_packet(1, 0, b"x", 1, None).is_err(), "unknown interface");
        let long = "c".repeat(65_536);
        assert!(w.write_packet(0, 0, b"x", 1, Some(&long)).is_err(), "comment too long");
        assert!(w.add_interface(LINKTYPE_ETHERNET, &long).is_err(), "name too long");
        let after_idb = w.get_ref().len();
        assert_eq!(blocks(w.get_ref()).len(), 2);
        assert!(after_idb > before);
        w.write_packet(0, 0, b"x", 1, Some(&long[..65_535])).unwrap();
    }
}
