//! `runtime.moduledata`: where it is (the `runtime.firstmoduledata` symbol, else the word that
//! points at the pclntab), which field layout it has (by Go release, checked against the
//! data), and the type data it describes: `[types, etypes)` and the typelinks.

use crate::elf::{read_u32, Image};
use crate::textstart::find_moduledata;
use crate::{symtab, Error, GoBinary, GoVersion};

/// The field layouts of `runtime.moduledata`, named by the first Go release using each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModuledataLayout {
    /// Go ≤ 1.15: `pclntable, ftab, filetab []…, findfunctab, minpc, …`.
    Go12,
    /// Go 1.16–1.17: `pcHeader` and five tables before `ftab`.
    Go116,
    /// Go 1.18–1.19: `rodata, gofunc` after `etypes`.
    Go118,
    /// Go 1.20–1.25: `covctrs, ecovctrs` before `end`.
    Go120,
    /// Go 1.26: `epclntab` after `gofunc`.
    Go126,
    /// Go 1.27+: no typelinks slice; `typedesclen` after `types` (typelink descriptors
    /// follow `types` directly) and `itaboffset, itabsize`.
    Go127,
}

/// Where the typelinks come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Links {
    /// `typelinks []int32`: descriptor offsets from `types` (`len` entries at `vaddr`).
    Offsets { vaddr: u64, len: u64 },
    /// Descriptors laid end to end in `[types + 8, end)`, each aligned to 8 (Go 1.27+).
    Descriptors { end: u64 },
}

/// A validated moduledata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Moduledata {
    pub addr: u64,
    pub layout: ModuledataLayout,
    pub types: u64,
    pub etypes: u64,
    pub links: Links,
}

/// Word indices of the fields used (64-bit).
struct Words {
    minpc: u64,
    types: u64,
    etypes: u64,
    /// Index of `typelinks` (a slice) or, for Go 1.27+, of `typedesclen`.
    links: u64,
}

/// Longest typelinks table accepted.
const MAX_TYPELINKS: u64 = 1 << 22;

impl ModuledataLayout {
    const ALL: [ModuledataLayout; 6] = [Self::Go12, Self::Go116, Self::Go118, Self::Go120, Self::Go126, Self::Go127];

    /// The layout written by Go `v`.
    pub fn for_version(v: &GoVersion) -> ModuledataLayout {
        match (v.major, v.minor) {
            (1, 0..=15) => Self::Go12,
            (1, 16..=17) => Self::Go116,
            (1, 18..=19) => Self::Go118,
            (1, 20..=25) => Self::Go120,
            (1, 26) => Self::Go126,
            _ => Self::Go127,
        }
    }

    fn words(self) -> Words {
        // Counted from runtime/symtab.go of each release: a slice is 3 words, a string 2.
        let (minpc, types, etypes, links) = match self {
            Self::Go12 => (10, 25, 26, 30),  // types, etypes, textsectmap[3], typelinks
            Self::Go116 => (20, 35, 36, 40), // pcHeader + 6 tables + findfunctab before minpc
            Self::Go118 => (20, 35, 36, 42), // + rodata, gofunc
            Self::Go120 => (20, 37, 38, 44), // + covctrs, ecovctrs before end
            Self::Go126 => (20, 37, 38, 45), // + epclntab
            Self::Go127 => (20, 37, 39, 38), // types, typedesclen, etypes
        };
        Words { minpc, types, etypes, links }
    }
}

/// Finds and validates the first module's moduledata. The layout of the binary's Go version
/// is tried first, then the others (each must pass every check).
pub(crate) fn locate(bin: &GoBinary<'_>) -> Result<Moduledata, Error> {
    let image = &bin.image;
    let expected = ModuledataLayout::for_version(&bin.info.go_version);
    let mut order = vec![expected];
    order.extend(ModuledataLayout::ALL.into_iter().filter(|&l| l != expected));
    let check = |md: u64| order.iter().find_map(|&l| validate(image, md, l));
    let symbol = image.symtab.as_ref().and_then(|t| symtab::symbol_value(t, b"runtime.firstmoduledata"));
    if let Some(found) = symbol.and_then(check) {
        return Ok(found);
    }
    let pclntab = bin
        .pclntab
        .as_ref()
        .map(|t| t.vaddr)
        .ok_or_else(|| Error::malformed("no pclntab, so runtime.moduledata cannot be found"))?;
    find_moduledata(image, pclntab, check).ok_or_else(|| {
        Error::malformed("runtime.moduledata not found (no word pointing at the pclntab passes the checks)")
    })
}

/// The moduledata at `md` read with `layout`, if every field used is plausible.
fn validate(image: &Image<'_>, md: u64, layout: ModuledataLayout) -> Option<Moduledata> {
    let w = layout.words();
    let at = |i: u64| md.checked_add(i.checked_mul(8)?);
    let ptr = |i: u64| image.read_ptr(at(i)?);
    let (minpc, maxpc) = (ptr(w.minpc)?, ptr(w.minpc + 1)?);
    if minpc >= maxpc || !image.segment_of(minpc).is_some_and(|s| s.executable()) {
        return None;
    }
    let (types, etypes) = (ptr(w.types)?, ptr(w.etypes)?);
    let seg = image.segment_of(types)?;
    if types >= etypes || image.segment_of(etypes - 1)?.vaddr != seg.vaddr {
        return None;
    }
    let span = etypes - types;
    let links = if layout == ModuledataLayout::Go127 {
        let len = image.raw_u64(at(w.links)?)?;
        if !(8..=span).contains(&len) {
            return None;
        }
        Links::Descriptors { end: types + len }
    } else {
        let (vaddr, len, cap) = (ptr(w.links)?, image.raw_u64(at(w.links + 1)?)?, image.raw_u64(at(w.links + 2)?)?);
        if len == 0 || len != cap || len > MAX_TYPELINKS {
            return None;
        }
        let table = image.bytes_at(vaddr, len.checked_mul(4)?)?;
        let in_range = table.chunks_exact(4).all(|c| read_u32(c, 0).is_some_and(|o| u64::from(o) < span));
        if !in_range {
            return None;
        }
        Links::Offsets { vaddr, len }
    };
    Some(Moduledata { addr: md, layout, types, etypes, links })
}
