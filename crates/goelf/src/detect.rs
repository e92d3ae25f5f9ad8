//! Recognising binaries tlstap must refuse with a reason: gccgo output and Go c-shared /
//! c-archive builds, and telling how a binary was stripped.

use object::read::elf::Sym as _;
use object::{elf, Endianness};

use crate::buildinfo::BuildInfo;
use crate::elf::Image;
use crate::Error;

/// How much symbol information a binary kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StrippedKind {
    /// `.symtab` is present.
    NotStripped,
    /// No `.symtab`, and the build settings show `-ldflags=-s`: Go's linker omitted it.
    LinkerStripped,
    /// No `.symtab`, cause not recorded: removed after linking (`strip`, `objcopy
    /// --strip-all`), or `-s` given while Go did not record `-ldflags` (e.g. with -trimpath).
    Stripped,
    /// No section header table at all (sstrip-like); everything comes from segments.
    NoSectionHeaders,
}

impl StrippedKind {
    pub(crate) fn of(image: &Image<'_>, build: Option<&BuildInfo>) -> StrippedKind {
        if image.sections.is_empty() {
            return StrippedKind::NoSectionHeaders;
        }
        if image.symtab.is_some() {
            return StrippedKind::NotStripped;
        }
        let ldflags = build.and_then(|b| b.setting("-ldflags")).unwrap_or("");
        if ldflags.split_whitespace().any(|f| f == "-s" || f == "-s=true" || f == "--s") {
            StrippedKind::LinkerStripped
        } else {
            StrippedKind::Stripped
        }
    }
}

/// Signs of gccgo: a `.go_export` section or a libgo dependency. Cheap; checked first.
pub(crate) fn gccgo_marker(image: &Image<'_>) -> Option<String> {
    if image.section(".go_export").is_some() {
        return Some("has a .go_export section".into());
    }
    image
        .needed
        .iter()
        .find(|lib| lib.starts_with(b"libgo.so"))
        .map(|lib| format!("links {}", String::from_utf8_lossy(lib)))
}

/// Signs of gccgo in symbol names (`__go_*` runtime helpers, `go..` mangling), for binaries
/// that have neither gc build info nor a gc function table.
pub(crate) fn gccgo_symbols(image: &Image<'_>) -> Option<String> {
    let endian = Endianness::Little;
    for table in [&image.symtab, &image.dynsym].into_iter().flatten() {
        for sym in table.symbols().iter() {
            let Ok(name) = table.symbol_name(endian, sym) else {
                continue;
            };
            if name.starts_with(b"__go_") || name.starts_with(b"go..") || name.starts_with(b"go_0") {
                return Some(format!("symbol {}", String::from_utf8_lossy(name)));
            }
        }
    }
    None
}

/// Refuses c-shared / c-archive builds: by build settings first, else (older Go without
/// settings) a shared object without interpreter that exports `_cgo_` symbols.
pub(crate) fn check_buildmode(image: &Image<'_>, build: Option<&BuildInfo>) -> Result<(), Error> {
    match build.and_then(|b| b.setting("-buildmode")) {
        Some("c-shared") => return Err(Error::CShared("build setting -buildmode=c-shared".into())),
        Some("c-archive") => return Err(Error::CArchive("build setting -buildmode=c-archive".into())),
        Some(_) => return Ok(()),
        None => {}
    }
    if image.elf_type == elf::ET_DYN && !image.has_interp && exports_cgo(image) {
        return Err(Error::CShared("shared object without interpreter exporting _cgo_ symbols".into()));
    }
    if image.elf_type == elf::ET_REL {
        return Err(Error::CArchive("relocatable object, not an executable".into()));
    }
    Ok(())
}

fn exports_cgo(image: &Image<'_>) -> bool {
    let endian = Endianness::Little;
    let Some(table) = &image.dynsym else {
        return false;
    };
    table.symbols().iter().any(|sym| {
        sym.st_shndx(endian) != elf::SHN_UNDEF && table.symbol_name(endian, sym).is_ok_and(|n| n.starts_with(b"_cgo_"))
    })
}
