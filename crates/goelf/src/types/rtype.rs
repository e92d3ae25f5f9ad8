//! Go runtime type descriptors (`runtime._type`, `internal/abi.Type` since Go 1.21) and the
//! `name`s they point at, read from the file bytes of a 64-bit binary (relocation-aware).
//!
//! Layout (64-bit, Go 1.14 through 1.27): size 0, ptrdata 8, hash 16, tflag 20, align 21,
//! fieldAlign 22, kind 23, equal 24, gcdata 32, str (nameOff) 40, ptrToThis (typeOff) 44;
//! 48 bytes, followed by the kind's own fields, then the uncommon type if tflag says so.

use crate::buildinfo::uvarint;
use crate::elf::{read_u32, read_u64, Image};
use crate::Error;

/// Size of the common `_type` header.
pub(crate) const TYPE_SIZE: u64 = 48;
/// `kind & KIND_MASK` is the kind (Go < 1.27 keeps flag bits above it).
const KIND_MASK: u8 = 0x1f;
pub(crate) const KIND_ARRAY: u8 = 17;
pub(crate) const KIND_CHAN: u8 = 18;
pub(crate) const KIND_FUNC: u8 = 19;
pub(crate) const KIND_INTERFACE: u8 = 20;
pub(crate) const KIND_MAP: u8 = 21;
pub(crate) const KIND_PTR: u8 = 22;
pub(crate) const KIND_SLICE: u8 = 23;
pub(crate) const KIND_STRUCT: u8 = 25;
const KIND_UNSAFE_POINTER: u8 = 26;
/// tflag bits.
pub(crate) const TFLAG_UNCOMMON: u8 = 1;
pub(crate) const TFLAG_EXTRA_STAR: u8 = 2;
/// Longest name, and most struct fields, accepted from the data.
const MAX_NAME: u64 = 1 << 16;
const MAX_FIELDS: u64 = 1 << 14;
/// Size of one `structField` {name *byte, typ *_type, offset uintptr}.
const FIELD_SIZE: u64 = 24;
/// Size of `uncommonType` {pkgpath nameOff, mcount, xcount uint16, moff uint32, _ uint32}.
const UNCOMMON_SIZE: u64 = 16;
/// Size of one `method` {name nameOff, mtyp typeOff, ifn, tfn textOff}.
const METHOD_SIZE: u64 = 16;

/// How `name` lengths are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NameEncoding {
    /// Two bytes, big-endian, after the flags byte (Go ≤ 1.16).
    BigEndian16,
    /// A uvarint after the flags byte (Go ≥ 1.17).
    Varint,
}

/// What the third word of a `structField` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldOffsetEncoding {
    /// `offsetAnon = offset << 1 | embedded` (Go ≤ 1.18).
    OffsetAnon,
    /// The plain offset; embedded is bit 3 of the name's flags (Go ≥ 1.19).
    Plain,
}

/// One parsed type descriptor (the common header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RType {
    pub addr: u64,
    pub size: u64,
    pub tflag: u8,
    pub kind: u8,
    pub str_off: u32,
}

/// One struct field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Field<'a> {
    pub name: &'a [u8],
    pub typ: u64,
    pub offset: u64,
    pub embedded: bool,
}

/// A decoded `name`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Name<'a> {
    pub flags: u8,
    pub bytes: &'a [u8],
}

/// Reads descriptors of one module: `[types, etypes)` holds every nameOff target.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reader<'i, 'a> {
    pub image: &'i Image<'a>,
    pub types: u64,
    pub etypes: u64,
    pub names: NameEncoding,
    pub fields: FieldOffsetEncoding,
}

fn bad(what: impl std::fmt::Display) -> Error {
    Error::malformed(format!("type data: {what}"))
}

impl<'i, 'a> Reader<'i, 'a> {
    /// The u64 pointer at `addr` as the loader would set it (RELA addend or stored word).
    fn ptr(&self, addr: u64) -> Result<u64, Error> {
        self.image.read_ptr(addr).ok_or_else(|| bad(format!("no pointer at {addr:#x}")))
    }

    /// The plain (never relocated) u64 at `addr`.
    fn word(&self, addr: u64) -> Result<u64, Error> {
        self.image.raw_u64(addr).ok_or_else(|| bad(format!("no word at {addr:#x}")))
    }

    /// The descriptor at `addr`.
    pub fn rtype(&self, addr: u64) -> Result<RType, Error> {
        let b = self
            .image
            .bytes_at(addr, TYPE_SIZE)
            .ok_or_else(|| bad(format!("descriptor at {addr:#x} is not in the file")))?;
        let byte = |i: usize| b.get(i).copied().unwrap_or(0);
        Ok(RType {
            addr,
            size: read_u64(b, 0).unwrap_or(0),
            tflag: byte(20),
            kind: byte(23) & KIND_MASK,
            str_off: read_u32(b, 40).unwrap_or(0),
        })
    }

    /// The `name` at `addr`.
    pub fn name_at(&self, addr: u64) -> Result<Name<'a>, Error> {
        let b = self.image.slice_from(addr).ok_or_else(|| bad(format!("name at {addr:#x} not in the file")))?;
        decode_name(b, self.names).ok_or_else(|| bad(format!("undecodable name at {addr:#x}")))
    }

    /// The `name` at nameOff `off` (relative to `types`; must lie before `etypes`).
    pub fn name_off(&self, off: u32) -> Result<Name<'a>, Error> {
        let addr = self.types.checked_add(u64::from(off)).filter(|&a| a < self.etypes);
        self.name_at(addr.ok_or_else(|| bad(format!("nameOff {off:#x} outside the type data")))?)
    }

    /// The type's string as stored (`*T` for a named `T` with tflag extraStar, still starred).
    pub fn raw_string(&self, t: &RType) -> Result<&'a [u8], Error> {
        Ok(self.name_off(t.str_off)?.bytes)
    }

    /// The type's string as Go prints it, e.g. `*tls.Conn` or `tls.Conn`.
    pub fn string(&self, t: &RType) -> Result<&'a [u8], Error> {
        let s = self.raw_string(t)?;
        Ok(if t.tflag & TFLAG_EXTRA_STAR != 0 { s.get(1..).unwrap_or(s) } else { s })
    }

    /// The element type of a pointer or slice type (both hold it right after the descriptor).
    pub fn elem(&self, t: &RType) -> Result<u64, Error> {
        if t.kind != KIND_PTR && t.kind != KIND_SLICE {
            return Err(bad(format!("type at {:#x} is not a pointer or slice (kind {})", t.addr, t.kind)));
        }
        self.ptr(t.addr.wrapping_add(TYPE_SIZE))
    }

    /// The fields of a struct type, in declaration order.
    pub fn fields(&self, t: &RType) -> Result<Vec<Field<'a>>, Error> {
        if t.kind != KIND_STRUCT {
            return Err(bad(format!("type at {:#x} is not a struct (kind {})", t.addr, t.kind)));
        }
        let slice = t.addr.checked_add(TYPE_SIZE + 8).ok_or_else(|| bad("address overflow"))?;
        let data = self.ptr(slice)?;
        let len = self.word(slice.wrapping_add(8))?;
        if len > MAX_FIELDS {
            return Err(bad(format!("struct at {:#x} claims {len} fields", t.addr)));
        }
        let mut out = Vec::new();
        for i in 0..len {
            let at =
                i.checked_mul(FIELD_SIZE).and_then(|o| data.checked_add(o)).ok_or_else(|| bad("field overflow"))?;
            let name = self.name_at(self.ptr(at)?)?;
            let typ = self.ptr(at.wrapping_add(8))?;
            let raw = self.word(at.wrapping_add(16))?;
            let (offset, embedded) = match self.fields {
                FieldOffsetEncoding::OffsetAnon => (raw >> 1, raw & 1 == 1),
                FieldOffsetEncoding::Plain => (raw, name.flags & 8 != 0),
            };
            if offset > t.size {
                return Err(bad(format!("field {i} of struct at {:#x}: offset {offset} > size {}", t.addr, t.size)));
            }
            out.push(Field { name: name.bytes, typ, offset, embedded });
        }
        Ok(out)
    }

    /// The package path of a named type (its uncommon type), or of a struct's fields.
    pub fn pkg_path(&self, t: &RType) -> Result<Option<&'a [u8]>, Error> {
        if t.tflag & TFLAG_UNCOMMON != 0 {
            if let Some(base) = kind_size(t.kind, MapSize::Unknown) {
                let at = t.addr.checked_add(base).ok_or_else(|| bad("address overflow"))?;
                let b = self.image.bytes_at(at, 4).ok_or_else(|| bad("uncommon type not in the file"))?;
                let off = read_u32(b, 0).unwrap_or(0);
                if off != 0 {
                    return Ok(Some(self.name_off(off)?.bytes));
                }
            }
        }
        if t.kind == KIND_STRUCT {
            let p = self.ptr(t.addr.wrapping_add(TYPE_SIZE))?;
            if p != 0 {
                return Ok(Some(self.name_at(p)?.bytes));
            }
        }
        Ok(None)
    }

    /// The contiguous size of the descriptor at `t` (Go ≥ 1.27's `DescriptorSize`), for
    /// walking the typelink descriptors; None for kinds whose size is not known here.
    pub fn descriptor_size(&self, t: &RType, map: MapSize) -> Option<u64> {
        let base = kind_size(t.kind, map)?;
        let (mut add, mut mcount) = (0u64, 0u64);
        match t.kind {
            KIND_FUNC => {
                let b = self.image.bytes_at(t.addr.checked_add(TYPE_SIZE)?, 4)?;
                let inc = u64::from(u16::from_le_bytes([*b.first()?, *b.get(1)?]));
                let outc = u64::from(u16::from_le_bytes([*b.get(2)?, *b.get(3)?]) & 0x7fff);
                add = (inc + outc) * 8;
            }
            KIND_INTERFACE => add = self.image.raw_u64(t.addr.checked_add(TYPE_SIZE + 16)?)?.checked_mul(8)?,
            KIND_STRUCT => add = self.image.raw_u64(t.addr.checked_add(TYPE_SIZE + 16)?)?.checked_mul(FIELD_SIZE)?,
            _ => {}
        }
        let mut size = base;
        if t.tflag & TFLAG_UNCOMMON != 0 {
            let b = self.image.bytes_at(t.addr.checked_add(base)?, UNCOMMON_SIZE)?;
            mcount = u64::from(u16::from_le_bytes([*b.get(4)?, *b.get(5)?]));
            size = size.checked_add(UNCOMMON_SIZE)?;
        }
        size.checked_add(add)?.checked_add(mcount.checked_mul(METHOD_SIZE)?)
    }
}

/// The size of a map type's descriptor, which changed with the map implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MapSize {
    /// Unknown: map descriptors cannot be sized.
    Unknown,
    /// Known size in bytes.
    Bytes(u64),
}

/// Size of the kind-specific descriptor struct (where the uncommon type starts).
fn kind_size(kind: u8, map: MapSize) -> Option<u64> {
    Some(match kind {
        1..=16 | 24 | KIND_UNSAFE_POINTER => TYPE_SIZE,
        KIND_ARRAY => TYPE_SIZE + 24,                       // elem, slice, len
        KIND_CHAN => TYPE_SIZE + 16,                        // elem, dir
        KIND_FUNC => TYPE_SIZE + 8,                         // inCount, outCount (padded)
        KIND_INTERFACE | KIND_STRUCT => TYPE_SIZE + 8 + 24, // pkgPath, slice
        KIND_PTR | KIND_SLICE => TYPE_SIZE + 8,             // elem
        KIND_MAP => match map {
            MapSize::Bytes(n) => n,
            MapSize::Unknown => return None,
        },
        _ => return None,
    })
}

/// Decodes a `name`: flags byte (1 exported, 2 tag follows, 4 pkgPath nameOff follows,
/// 8 embedded field), length, bytes. The tag and pkgPath after the bytes are not needed.
pub(crate) fn decode_name(b: &[u8], enc: NameEncoding) -> Option<Name<'_>> {
    let flags = *b.first()?;
    let (len, hdr) = read_len(b, 1, enc)?;
    let bytes = b.get(hdr..hdr.checked_add(len)?)?;
    Some(Name { flags, bytes })
}

/// A length at `at`: (length, offset of the bytes after it).
fn read_len(b: &[u8], at: usize, enc: NameEncoding) -> Option<(usize, usize)> {
    let (len, n) = match enc {
        NameEncoding::BigEndian16 => {
            let hi = u64::from(*b.get(at)?);
            let lo = u64::from(*b.get(at.checked_add(1)?)?);
            (hi << 8 | lo, 2)
        }
        NameEncoding::Varint => uvarint(b.get(at..)?)?,
    };
    if len > MAX_NAME {
        return None;
    }
    Some((usize::try_from(len).ok()?, at.checked_add(n)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_both_encodings() {
        let n = decode_name(b"\x01\x00\x04connXX", NameEncoding::BigEndian16).unwrap();
        assert_eq!((n.flags, n.bytes), (1, &b"conn"[..]));
        let n = decode_name(b"\x0e\x02fd\x01t\x10\x00\x00\x00", NameEncoding::Varint).unwrap();
        assert_eq!((n.flags, n.bytes), (0x0e, &b"fd"[..]));
        let long = [&[0u8, 0x80, 0x01][..], &[b'x'; 128][..]].concat();
        assert_eq!(decode_name(&long, NameEncoding::Varint).unwrap().bytes.len(), 128);
        assert!(decode_name(b"\x00\x05ab", NameEncoding::Varint).is_none());
        assert!(decode_name(b"\x00\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", NameEncoding::Varint).is_none());
        assert!(decode_name(b"", NameEncoding::Varint).is_none());
    }
}
