//! Go's pc-line table (`runtime.pcheader` + functab + func records + name table): the
//! function list that survives stripping. Reads the 1.2, 1.16, 1.18 and 1.20 layouts.

use crate::elf::{read_u32, read_word, Image};
use std::ffi::CStr;

use crate::body::Candidates;
use crate::Error;

/// The pclntab layout generation, named by the first Go release that wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PclntabVersion {
    /// Magic 0xfffffffb: Go 1.2–1.15.
    V12,
    /// Magic 0xfffffffa: Go 1.16–1.17.
    V116,
    /// Magic 0xfffffff0: Go 1.18–1.19.
    V118,
    /// Magic 0xfffffff1: Go 1.20 and later.
    V120,
}

impl PclntabVersion {
    fn from_magic(magic: u32) -> Option<Self> {
        match magic {
            0xffff_fffb => Some(Self::V12),
            0xffff_fffa => Some(Self::V116),
            0xffff_fff0 => Some(Self::V118),
            0xffff_fff1 => Some(Self::V120),
            _ => None,
        }
    }
    /// The magic number that opens this layout.
    pub fn magic(self) -> u32 {
        match self {
            Self::V12 => 0xffff_fffb,
            Self::V116 => 0xffff_fffa,
            Self::V118 => 0xffff_fff0,
            Self::V120 => 0xffff_fff1,
        }
    }
    /// Function entries are 32-bit offsets from the module's text start (1.18+).
    pub fn entries_are_offsets(self) -> bool {
        matches!(self, Self::V118 | Self::V120)
    }
}

/// A parsed pclntab. Entries of 1.18+ tables are offsets from `text_start`.
#[derive(Debug, Clone)]
pub(crate) struct Pclntab<'a> {
    /// Virtual address of the pcHeader.
    pub vaddr: u64,
    pub version: PclntabVersion,
    min_lc: u64,
    ptr_size: usize,
    /// Number of functab entries (functions and text-section hole markers).
    pub nfunc: usize,
    funcnametab: &'a [u8],
    pctab: &'a [u8],
    /// The table funcoff values index into (starts with the functab).
    pclntable: &'a [u8],
    /// Virtual address of `pclntable` (for relocation-aware reads of old absolute entries).
    pclntable_vaddr: u64,
    /// The pcHeader.textStart field as stored (1.18+; 0 if zeroed or older).
    pub header_text_start: u64,
    /// Base added to 1.18+ entry offsets; set by the caller after resolving it.
    pub text_start: u64,
}

/// One function record from the table.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawFunc<'a> {
    pub name: &'a [u8],
    pub entry: u64,
    pub size: u64,
}

impl<'a> Pclntab<'a> {
    /// Parses a pclntab whose header is at `vaddr`, `data` running to the end of its bytes.
    pub fn parse(image: &Image<'a>, vaddr: u64, data: &'a [u8]) -> Result<Self, Error> {
        let bad = |what: &str| Error::malformed(format!("pclntab at {vaddr:#x}: {what}"));
        let magic = read_u32(data, 0).ok_or_else(|| bad("truncated header"))?;
        let version = PclntabVersion::from_magic(magic).ok_or_else(|| bad("bad magic"))?;
        let (pad, min_lc, ptr_size) = (data.get(4..6), data.get(6), data.get(7));
        if pad != Some(&[0, 0][..]) || !matches!(min_lc, Some(1 | 2 | 4)) || ptr_size != Some(&8) {
            return Err(bad("bad header bytes"));
        }
        let min_lc = u64::from(min_lc.copied().unwrap_or(1));
        let ptr_size = 8usize;
        let word = |i: usize| read_word(data, 8 + i * ptr_size, ptr_size).ok_or_else(|| bad("truncated header"));
        let sub = |off: u64| -> Result<&'a [u8], Error> {
            data.get(usize::try_from(off).map_err(|_| bad("offset"))?..).ok_or_else(|| bad("offset out of range"))
        };
        // A table that ends where the next one (by header offset) begins.
        let range = |start: u64, end: u64| -> Result<&'a [u8], Error> {
            let len = end.checked_sub(start).ok_or_else(|| bad("table offsets out of order"))?;
            sub(start)?.get(..usize::try_from(len).map_err(|_| bad("offset"))?).ok_or_else(|| bad("table out of range"))
        };
        let nfunc = usize::try_from(word(0)?).map_err(|_| bad("nfunc"))?;
        // 1.2 tables index names, pc tables and func records from the header itself.
        let (funcnametab, pctab, pclntable, pcln_off, header_text_start) = match version {
            PclntabVersion::V12 => (data, data, data, 0, 0),
            PclntabVersion::V116 => {
                let pcln_off = word(6)?;
                (range(word(2)?, word(3)?)?, range(word(5)?, pcln_off)?, sub(pcln_off)?, pcln_off, 0)
            }
            PclntabVersion::V118 | PclntabVersion::V120 => {
                let text = image.read_ptr(vaddr.wrapping_add(8 + 2 * 8)).unwrap_or(0);
                let pcln_off = word(7)?;
                (range(word(3)?, word(4)?)?, range(word(6)?, pcln_off)?, sub(pcln_off)?, pcln_off, text)
            }
        };
        let table = Pclntab {
            vaddr,
            version,
            min_lc,
            ptr_size,
            nfunc,
            funcnametab,
            pctab,
            pclntable,
            pclntable_vaddr: vaddr.wrapping_add(pcln_off),
            header_text_start,
            text_start: header_text_start,
        };
        let need = nfunc
            .checked_add(1)
            .and_then(|n| n.checked_mul(table.functab_entry_size()))
            .and_then(|n| n.checked_add(table.functab_start()))
            .ok_or_else(|| bad("nfunc overflow"))?;
        if nfunc == 0 || need > table.pclntable.len() {
            return Err(bad("functab out of range"));
        }
        Ok(table)
    }

    fn functab_entry_size(&self) -> usize {
        if self.version.entries_are_offsets() {
            8
        } else {
            2 * self.ptr_size
        }
    }

    /// Offset of the functab inside `pclntable`.
    fn functab_start(&self) -> usize {
        if self.version == PclntabVersion::V12 {
            8 + self.ptr_size
        } else {
            0
        }
    }

    /// The raw entry field of functab slot `i` (an offset for 1.18+, an address before).
    pub fn raw_entry(&self, image: &Image<'_>, i: usize) -> Option<u64> {
        let off = self.functab_start().checked_add(i.checked_mul(self.functab_entry_size())?)?;
        if self.version.entries_are_offsets() {
            read_u32(self.pclntable, off).map(u64::from)
        } else if image.relocations().counts().0 > 0 {
            image.read_ptr(self.pclntable_vaddr.checked_add(off as u64)?)
        } else {
            read_word(self.pclntable, off, self.ptr_size)
        }
    }

    /// The entry address of functab slot `i`.
    pub fn entry(&self, image: &Image<'_>, i: usize) -> Option<u64> {
        let raw = self.raw_entry(image, i)?;
        if self.version.entries_are_offsets() {
            self.text_start.checked_add(raw)
        } else {
            Some(raw)
        }
    }

    /// The func record offset of slot `i` in `pclntable`; None for a text-section hole marker.
    fn funcoff(&self, i: usize) -> Option<usize> {
        let esz = self.functab_entry_size();
        let off = self.functab_start().checked_add(i.checked_mul(esz)?)?.checked_add(esz / 2)?;
        let (value, hole) = if self.version.entries_are_offsets() {
            let v = u64::from(read_u32(self.pclntable, off)?);
            (v, v == u64::from(u32::MAX))
        } else {
            let v = read_word(self.pclntable, off, self.ptr_size)?;
            (v, v == u64::MAX)
        };
        if hole {
            None
        } else {
            usize::try_from(value).ok()
        }
    }

    /// The func record of slot `i`.
    fn func_record(&self, i: usize) -> Option<&'a [u8]> {
        self.pclntable.get(self.funcoff(i)?..)
    }

    /// Size of the entry field that opens a func record.
    fn entry_field_size(&self) -> usize {
        if self.version.entries_are_offsets() {
            4
        } else {
            self.ptr_size
        }
    }

    /// The name of slot `i` (None for holes or damaged records).
    pub fn name(&self, i: usize) -> Option<&'a [u8]> {
        self.name_at(self.name_off(i)?)
    }

    /// The NUL-terminated string at funcnametab offset `off`.
    fn name_at(&self, off: u32) -> Option<&'a [u8]> {
        let s = self.funcnametab.get(usize::try_from(off).ok()?..)?;
        CStr::from_bytes_until_nul(s).ok().map(CStr::to_bytes)
    }

    /// The funcnametab offset of slot `i`'s name.
    fn name_off(&self, i: usize) -> Option<u32> {
        read_u32(self.func_record(i)?, self.entry_field_size())
    }

    /// For each of `names`, every funcnametab offset holding exactly that string. One walk
    /// over the table's strings (NUL search via `CStr`, which is fast even unoptimised).
    fn name_offsets(&self, names: &[&str]) -> Vec<Vec<u32>> {
        let mut out = vec![Vec::new(); names.len()];
        let tab = self.funcnametab;
        let mut pos = 0usize;
        while let Some(rest) = tab.get(pos..).filter(|r| !r.is_empty()) {
            let Ok(s) = CStr::from_bytes_until_nul(rest) else {
                break;
            };
            let s = s.to_bytes();
            for (offsets, name) in out.iter_mut().zip(names) {
                if s == name.as_bytes() {
                    if let Ok(p) = u32::try_from(pos) {
                        offsets.push(p);
                    }
                }
            }
            pos = match pos.checked_add(s.len() + 1) {
                Some(p) => p,
                None => break,
            };
        }
        out
    }

    /// The byte length covered by the pcsp table of slot `i`: the function's exact size as
    /// the compiler emitted it (without the alignment padding before the next function).
    fn pcsp_size(&self, i: usize) -> Option<u64> {
        let rec = self.func_record(i)?;
        let pcsp = usize::try_from(read_u32(rec, self.entry_field_size() + 12)?).ok()?;
        if pcsp == 0 {
            return None;
        }
        let mut p = self.pctab.get(pcsp..)?;
        let mut pc = 0u64;
        let mut first = true;
        // Each step is (value delta, pc delta); a zero value delta after the first ends it.
        for _ in 0..1_000_000 {
            let (vdelta, n) = varint32(p)?;
            if vdelta == 0 && !first {
                return (pc > 0).then_some(pc);
            }
            p = p.get(n..)?;
            let (pcdelta, n) = varint32(p)?;
            p = p.get(n..)?;
            pc = pc.checked_add(u64::from(pcdelta).checked_mul(self.min_lc)?)?;
            first = false;
        }
        None
    }

    /// The function in slot `i`: name, entry and size. Size is the pcsp-covered length when
    /// that fits before the next entry, else the distance to the next entry.
    pub fn func(&self, image: &Image<'_>, i: usize) -> Option<RawFunc<'a>> {
        if i >= self.nfunc {
            return None;
        }
        let name = self.name(i)?;
        let entry = self.entry(image, i)?;
        let next = self.entry(image, i + 1)?;
        let span = next.checked_sub(entry)?;
        let size = match self.pcsp_size(i) {
            Some(s) if s <= span => s,
            _ => span,
        };
        Some(RawFunc { name, entry, size })
    }

    /// The functions named in `names`, in one pass over the table. Duplicate names (an ABI
    /// wrapper beside the body) are resolved by [`Candidates`].
    pub fn find_many(&self, image: &Image<'_>, names: &[&str]) -> Vec<Option<RawFunc<'a>>> {
        let mut found = Candidates::new(names.len());
        let mut take = |k: usize, i: usize| {
            if let Some(f) = self.func(image, i) {
                found.offer(image, k, f, |f: &RawFunc<'a>| (f.entry, f.size));
            }
        };
        if !self.version.entries_are_offsets() {
            // 1.2 tables interleave names with other data, and 1.16 functab entries are
            // pointer pairs: take the general path, comparing each record's name.
            for i in 0..self.nfunc {
                let Some(name) = self.name_off(i).and_then(|off| self.name_at(off)) else {
                    continue;
                };
                for (k, wanted) in names.iter().enumerate() {
                    if name == wanted.as_bytes() {
                        take(k, i);
                    }
                }
            }
            return found.into_found();
        }
        // Find each name's string in the name table first, then the records pointing at
        // it: per function one integer read and a range check.
        let targets: Vec<(u32, usize)> = self
            .name_offsets(names)
            .into_iter()
            .enumerate()
            .flat_map(|(k, offsets)| offsets.into_iter().map(move |off| (off, k)))
            .collect();
        let (Some(lo), Some(hi)) = (targets.iter().map(|t| t.0).min(), targets.iter().map(|t| t.0).max()) else {
            return found.into_found();
        };
        // 1.18+: the functab is (entryoff u32, funcoff u32) pairs; nameOff is the second
        // u32 of each record. Read them directly: this loop touches every function.
        let functab = self.pclntable.get(..self.nfunc.saturating_mul(8)).unwrap_or(&[]);
        for (i, pair) in functab.chunks_exact(8).enumerate() {
            let Some(funcoff) = read_u32(pair, 4).and_then(|f| usize::try_from(f).ok()) else {
                continue;
            };
            let Some(off) = read_u32(self.pclntable, funcoff.wrapping_add(4)) else {
                continue;
            };
            if off < lo || off > hi {
                continue;
            }
            for &(target, k) in &targets {
                if target == off {
                    take(k, i);
                }
            }
        }
        found.into_found()
    }
}

/// Go's readvarint: little-endian base-128, at most 5 bytes for a u32.
fn varint32(p: &[u8]) -> Option<(u32, usize)> {
    let mut v = 0u32;
    for (i, &b) in p.iter().enumerate().take(5) {
        v |= u32::from(b & 0x7f).checked_shl(7 * i as u32)?;
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}
