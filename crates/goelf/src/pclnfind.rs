//! Finding the pclntab in an image: by section name, by symbol, or by scanning the
//! non-executable segments for a header that parses and names its first functions.

use crate::elf::{read_u32, Image};
use crate::pclntab::Pclntab;

/// Where a pclntab can start: at `vaddr`, its bytes running to the end of `data`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Candidate<'a> {
    pub vaddr: u64,
    pub data: &'a [u8],
}

/// Finds the pclntab: by section name (`.gopclntab`, `.data.rel.ro.gopclntab`), by the
/// `runtime.pclntab`/`runtime.pcheader` symbol, else by scanning non-executable segments for
/// a header that parses and whose first functions have names.
pub(crate) fn locate<'a>(image: &Image<'a>, symbol: Option<u64>) -> Option<Pclntab<'a>> {
    let mut candidates: Vec<Candidate<'a>> = Vec::new();
    for name in [".gopclntab", ".data.rel.ro.gopclntab"] {
        if let Some(s) = image.section(name) {
            if let Some(data) = image.section_data(s) {
                candidates.push(Candidate { vaddr: s.addr, data });
            }
        }
    }
    if let Some(vaddr) = symbol {
        if let Some(data) = image.slice_from(vaddr) {
            candidates.push(Candidate { vaddr, data });
        }
    }
    for c in &candidates {
        if let Some(t) = plausible(image, *c) {
            return Some(t);
        }
    }
    scan(image)
}

fn plausible<'a>(image: &Image<'a>, c: Candidate<'a>) -> Option<Pclntab<'a>> {
    let t = Pclntab::parse(image, c.vaddr, c.data).ok()?;
    // The first few records must carry names: rules out stray magic numbers.
    (0..t.nfunc.min(4)).all(|i| t.name(i).is_some_and(|n| !n.is_empty())).then_some(t)
}

fn scan<'a>(image: &Image<'a>) -> Option<Pclntab<'a>> {
    const MAGICS: [u32; 4] = [0xffff_fff1, 0xffff_fff0, 0xffff_fffa, 0xffff_fffb];
    for seg in image.segments.iter().filter(|s| !s.executable()) {
        let Some(bytes) = image.file_range(seg.offset, seg.filesz) else {
            continue;
        };
        let mut off = 0usize;
        while let Some(chunk) = bytes.get(off..off + 8) {
            let magic = read_u32(chunk, 0).unwrap_or(0);
            if MAGICS.contains(&magic) && chunk.get(4..6) == Some(&[0, 0][..]) && chunk.get(7) == Some(&8) {
                let vaddr = seg.vaddr.wrapping_add(off as u64);
                let data = bytes.get(off..).unwrap_or(&[]);
                if let Some(t) = plausible(image, Candidate { vaddr, data }) {
                    return Some(t);
                }
            }
            off += 8;
        }
    }
    None
}
