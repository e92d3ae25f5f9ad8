//! Where a stack-ABI amd64 Go binary keeps its `g` pointer: a fixed distance below the FS
//! base (thread pointer), set by the linker through `runtime.tlsg`.

use object::elf;
use object::read::elf::{FileHeader as _, ProgramHeader as _};

use crate::elf::Image;
use crate::{symtab, Abi, Arch, GoBinary};

type Header = elf::FileHeader64<object::Endianness>;

/// For stack-ABI amd64 binaries (Go < 1.17), how far below the FS base the `g` pointer
/// lives: 8 with internal linking; with external linking, the executable's TLS block
/// (PT_TLS `memsz` rounded up to its alignment) ends at FS, and `runtime.tlsg` sits at its
/// `.symtab` value into it (0 assumed when stripped). `None` for register-ABI or arm64
/// binaries (g is in a register there).
pub fn g_below_fs(bin: &GoBinary<'_>) -> Option<u64> {
    if bin.info.arch != Arch::Amd64 || bin.info.abi != Abi::Stack {
        return None;
    }
    let Some((memsz, align)) = pt_tls(&bin.image) else { return Some(8) };
    let align = align.max(1);
    let block = memsz.checked_add(align - 1)? / align * align;
    let tlsg = bin.image.symtab.as_ref().and_then(|t| symtab::symbol_value(t, b"runtime.tlsg")).unwrap_or(0);
    block.checked_sub(tlsg).filter(|&d| d >= 8)
}

/// (p_memsz, p_align) of the PT_TLS program header.
fn pt_tls(image: &Image<'_>) -> Option<(u64, u64)> {
    let header = Header::parse(image.data).ok()?;
    let endian = header.endian().ok()?;
    let phdrs = header.program_headers(endian, image.data).ok()?;
    phdrs.iter().find(|ph| ph.p_type(endian) == elf::PT_TLS).map(|ph| (ph.p_memsz(endian), ph.p_align(endian)))
}
