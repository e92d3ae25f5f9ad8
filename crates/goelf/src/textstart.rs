//! The base address that Go ≥ 1.18 function-table offsets are relative to (`runtime.text`):
//! from pcHeader.textStart, else from `runtime.firstmoduledata` (Go 1.26+ zero the header
//! field), else the `runtime.text` symbol, else the `.text` section.

use crate::elf::{read_u64, Image};
use crate::pclntab::Pclntab;

/// Where the text start of a 1.18+ function table came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TextStartSource {
    /// Entries are absolute addresses (pclntab before Go 1.18): no base needed.
    AbsoluteEntries,
    /// pcHeader.textStart (Go 1.18–1.25).
    PcHeader,
    /// runtime.moduledata's minpc, found by scanning data for a pointer to the pclntab.
    Moduledata,
    /// The `runtime.text` symbol.
    Symbol,
    /// The start of the `.text` section (wrong with external linking; last resort).
    TextSection,
}

/// Words of moduledata searched for the minpc/maxpc pair (layout-independent).
const MODULEDATA_WORDS: u64 = 64;

/// Resolves the text start of `table`; `None` if no source gives a base under which the
/// first and last entries land in one executable segment.
pub(crate) fn resolve(
    image: &Image<'_>,
    table: &Pclntab<'_>,
    runtime_text_symbol: Option<u64>,
) -> Option<(u64, TextStartSource)> {
    if !table.version.entries_are_offsets() {
        return Some((0, TextStartSource::AbsoluteEntries));
    }
    let first = table.raw_entry(image, 0)?;
    let last = table.raw_entry(image, table.nfunc)?;
    let fits = |base: u64| entries_fit(image, base, first, last);
    if table.header_text_start != 0 && fits(table.header_text_start) {
        return Some((table.header_text_start, TextStartSource::PcHeader));
    }
    if let Some(base) = from_moduledata(image, table.vaddr, first, last).filter(|&b| fits(b)) {
        return Some((base, TextStartSource::Moduledata));
    }
    if let Some(base) = runtime_text_symbol.filter(|&b| fits(b)) {
        return Some((base, TextStartSource::Symbol));
    }
    let text = image.section(".text").map(|s| s.addr).filter(|&b| fits(b))?;
    Some((text, TextStartSource::TextSection))
}

/// True if `base+first` and `base+last` lie in the same executable segment (the last entry
/// is the end of the final function, so it may equal the segment end).
fn entries_fit(image: &Image<'_>, base: u64, first: u64, last: u64) -> bool {
    let (Some(lo), Some(hi)) = (base.checked_add(first), base.checked_add(last)) else {
        return false;
    };
    image.segments.iter().any(|s| s.executable() && lo >= s.vaddr && hi >= lo && hi - s.vaddr <= s.filesz.max(s.memsz))
}

/// Finds moduledata (whose first word points at the pclntab header) and derives the text
/// start from its minpc/maxpc pair: minpc = text + first entry, maxpc = text + last entry.
fn from_moduledata(image: &Image<'_>, pclntab_vaddr: u64, first: u64, last: u64) -> Option<u64> {
    let span = last.checked_sub(first).filter(|&s| s > 0)?;
    find_moduledata(image, pclntab_vaddr, |md| minpc_in(image, md, first, span))
}

/// Calls `check` with each address holding a pointer to the pclntab header (moduledata's
/// first word: `pcHeader`, or `pclntable`'s data before Go 1.16), most likely first, and
/// returns the first answer.
pub(crate) fn find_moduledata<T>(
    image: &Image<'_>,
    pclntab_vaddr: u64,
    mut check: impl FnMut(u64) -> Option<T>,
) -> Option<T> {
    // PIE: the pointer may only exist as a RELA addend (the stored word can be zero).
    let rela_sites: Vec<u64> = image.relocations().sites_with_addend(pclntab_vaddr).collect();
    if let Some(found) = rela_sites.into_iter().find_map(&mut check) {
        return Some(found);
    }
    let mut regions = image.data_regions();
    // runtime.firstmoduledata lives in .go.module (Go 1.26+) or .noptrdata: look there first.
    let within =
        |name: &str, addr: u64| image.section(name).is_some_and(|s| addr >= s.addr && addr - s.addr < s.size.max(1));
    regions.sort_by_key(|&(addr, _)| {
        if within(".go.module", addr) {
            0
        } else if within(".noptrdata", addr) {
            1
        } else {
            2
        }
    });
    for (addr, bytes) in regions {
        let misalign = (8 - addr % 8) % 8;
        let mut off = usize::try_from(misalign).ok()?;
        while let Some(word) = read_u64(bytes, off) {
            if word == pclntab_vaddr {
                if let Some(found) = addr.checked_add(off as u64).and_then(&mut check) {
                    return Some(found);
                }
            }
            off = off.checked_add(8)?;
        }
    }
    None
}

/// Looks for consecutive words (minpc, maxpc) with maxpc − minpc = `span` in the moduledata
/// at `md`; returns minpc − `first` (the text start).
fn minpc_in(image: &Image<'_>, md: u64, first: u64, span: u64) -> Option<u64> {
    let start = md.checked_add(8)?;
    let words: Vec<u64> = image.read_ptrs(start, MODULEDATA_WORDS - 1).into_iter().map(|w| w.unwrap_or(0)).collect();
    words.windows(2).find_map(|w| match *w {
        [minpc, maxpc] if minpc != 0 && maxpc.checked_sub(minpc) == Some(span) => minpc.checked_sub(first),
        _ => None,
    })
}
