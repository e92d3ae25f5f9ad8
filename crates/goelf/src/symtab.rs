//! Functions from the ELF `.symtab` (STT_FUNC symbols, ABI suffixes mapped to Go names).

use object::elf;
use object::read::elf::Sym as _;
use object::Endianness;

use crate::body::Candidates;
use crate::elf::{Image, SymbolTable};

/// A function symbol: name, address, size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SymFunc<'a> {
    pub name: &'a [u8],
    pub vaddr: u64,
    pub size: u64,
}

/// Every STT_FUNC symbol with a nonzero address in `table`.
pub(crate) fn funcs<'a, 'b>(table: &'b SymbolTable<'a>) -> impl Iterator<Item = SymFunc<'a>> + 'b {
    let endian = Endianness::Little;
    table.symbols().iter().filter_map(move |sym| {
        if sym.st_type() != elf::STT_FUNC || sym.st_shndx(endian) == elf::SHN_UNDEF {
            return None;
        }
        let vaddr = sym.st_value(endian);
        if vaddr == 0 {
            return None;
        }
        let name = table.symbol_name(endian, sym).ok()?;
        Some(SymFunc { name, vaddr, size: sym.st_size(endian) })
    })
}

/// Any symbol (of any type) named `name`: its value.
pub(crate) fn symbol_value(table: &SymbolTable<'_>, name: &[u8]) -> Option<u64> {
    let endian = Endianness::Little;
    table.symbols().iter().find(|sym| table.symbol_name(endian, sym).ok() == Some(name)).map(|sym| sym.st_value(endian))
}

/// Suffixes the Go linker appends to one of two same-named ABI variants in `.symtab`.
const ABI_SUFFIXES: [&[u8]; 2] = [b".abi0", b".abiinternal"];

/// The Go name of a `.symtab` function name: without an ABI suffix.
pub(crate) fn go_name(name: &[u8]) -> &[u8] {
    ABI_SUFFIXES.iter().find_map(|suffix| name.strip_suffix(*suffix)).unwrap_or(name)
}

/// The functions named in `names` (one pass over the table). `X.abi0` counts as `X`; two
/// candidates are resolved by [`Candidates`].
pub(crate) fn find_many<'a>(image: &Image<'a>, names: &[&str]) -> Vec<Option<SymFunc<'a>>> {
    let mut found = Candidates::new(names.len());
    let Some(table) = &image.symtab else {
        return found.into_found();
    };
    for f in funcs(table) {
        let name = go_name(f.name);
        for (k, wanted) in names.iter().enumerate() {
            if name == wanted.as_bytes() {
                found.offer(image, k, f, |s| (s.vaddr, s.size));
            }
        }
    }
    found.into_found()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abi_suffixes() {
        assert_eq!(go_name(b"runtime.osyield.abi0"), b"runtime.osyield");
        assert_eq!(go_name(b"main.f.abiinternal"), b"main.f");
        assert_eq!(go_name(b"main.abi0x"), b"main.abi0x");
    }
}
