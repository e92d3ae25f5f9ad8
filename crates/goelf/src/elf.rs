//! The ELF container: header checks, segments, sections, symbol tables, the dynamic section,
//! and reading file bytes by virtual address (relocation-aware for pointers). Knows nothing of Go.

use std::cell::OnceCell;

use object::elf;
use object::read::elf::{Dyn as _, FileHeader, ProgramHeader as _, SectionHeader as _};
use object::Endianness;

use crate::reloc::Relocations;
use crate::{Arch, Error};

type Header = elf::FileHeader64<Endianness>;
pub(crate) type SymbolTable<'a> = object::read::elf::SymbolTable<'a, Header, &'a [u8]>;

/// One PT_LOAD segment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Segment {
    pub vaddr: u64,
    pub memsz: u64,
    pub offset: u64,
    pub filesz: u64,
    pub flags: u32,
}

impl Segment {
    pub fn executable(&self) -> bool {
        self.flags & elf::PF_X != 0
    }
    /// Contains `vaddr` in its file-backed part.
    fn holds(&self, vaddr: u64) -> bool {
        vaddr >= self.vaddr && vaddr - self.vaddr < self.filesz
    }
}

/// One section header, with its name resolved.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Section<'a> {
    pub name: &'a [u8],
    pub sh_type: u32,
    pub addr: u64,
    pub offset: u64,
    pub size: u64,
}

/// A parsed 64-bit little-endian ELF image for amd64 or arm64.
pub(crate) struct Image<'a> {
    pub data: &'a [u8],
    pub arch: Arch,
    pub elf_type: u16,
    pub segments: Vec<Segment>,
    pub sections: Vec<Section<'a>>,
    pub has_interp: bool,
    pub symtab: Option<SymbolTable<'a>>,
    pub dynsym: Option<SymbolTable<'a>>,
    /// DT_NEEDED library names.
    pub needed: Vec<&'a [u8]>,
    dyn_tags: Vec<(u64, u64)>,
    relocs: OnceCell<Relocations>,
}

impl std::fmt::Debug for Image<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Image")
            .field("len", &self.data.len())
            .field("arch", &self.arch)
            .field("elf_type", &self.elf_type)
            .field("segments", &self.segments.len())
            .field("sections", &self.sections.len())
            .finish_non_exhaustive()
    }
}

/// Checks the ELF identification bytes: magic, class, byte order, machine.
fn check_ident(data: &[u8]) -> Result<Arch, Error> {
    if data.get(..4) != Some(&elf::ELFMAG[..]) {
        return Err(Error::NotElf);
    }
    let class = *data.get(4).ok_or(Error::NotElf)?;
    let little = data.get(5) == Some(&elf::ELFDATA2LSB);
    let raw: [u8; 2] =
        data.get(18..20).and_then(|b| b.try_into().ok()).ok_or_else(|| Error::malformed("truncated ELF header"))?;
    let machine = if little { u16::from_le_bytes(raw) } else { u16::from_be_bytes(raw) };
    let name = machine_name(machine);
    match class {
        elf::ELFCLASS32 => return Err(Error::Bits32 { machine: name }),
        elf::ELFCLASS64 => {}
        other => return Err(Error::malformed(format!("unknown ELF class {other}"))),
    }
    let arch = match machine {
        elf::EM_X86_64 => Arch::Amd64,
        elf::EM_AARCH64 => Arch::Arm64,
        _ => return Err(Error::UnsupportedArch(name)),
    };
    if !little {
        return Err(Error::UnsupportedArch(format!("{name} (big-endian)")));
    }
    Ok(arch)
}

fn machine_name(machine: u16) -> String {
    match machine {
        elf::EM_386 => "x86 (386)".into(),
        elf::EM_X86_64 => "x86-64 (amd64)".into(),
        elf::EM_ARM => "ARM (arm)".into(),
        elf::EM_AARCH64 => "AArch64 (arm64)".into(),
        elf::EM_PPC64 => "PowerPC64 (ppc64)".into(),
        elf::EM_S390 => "S/390 (s390x)".into(),
        elf::EM_RISCV => "RISC-V (riscv64)".into(),
        elf::EM_MIPS => "MIPS (mips)".into(),
        elf::EM_LOONGARCH => "LoongArch (loong64)".into(),
        other => format!("ELF machine {other}"),
    }
}

impl<'a> Image<'a> {
    pub fn parse(data: &'a [u8]) -> Result<Image<'a>, Error> {
        let arch = check_ident(data)?;
        let header = Header::parse(data)?;
        let endian = header.endian()?;
        let mut segments = Vec::new();
        let mut has_interp = false;
        let mut dyn_tags = Vec::new();
        for ph in header.program_headers(endian, data)? {
            match ph.p_type(endian) {
                elf::PT_LOAD => segments.push(Segment {
                    vaddr: ph.p_vaddr(endian),
                    memsz: ph.p_memsz(endian),
                    offset: ph.p_offset(endian),
                    filesz: ph.p_filesz(endian),
                    flags: ph.p_flags(endian),
                }),
                elf::PT_INTERP => has_interp = true,
                elf::PT_DYNAMIC => {
                    if let Ok(Some(dyns)) = ph.dynamic(endian, data) {
                        dyn_tags = dyns
                            .iter()
                            .map(|d| (d.d_tag(endian), d.d_val(endian)))
                            .take_while(|&(tag, _)| tag != u64::from(elf::DT_NULL))
                            .collect();
                    }
                }
                _ => {}
            }
        }
        if let Some(seg) =
            segments.iter().find(|s| s.offset.checked_add(s.filesz).is_none_or(|end| end > data.len() as u64))
        {
            return Err(Error::malformed(format!(
                "truncated file: PT_LOAD at offset {:#x} (+{:#x}) extends past its end ({:#x})",
                seg.offset,
                seg.filesz,
                data.len()
            )));
        }
        // A damaged section table must not hide a usable program-header view.
        let table = header.sections(endian, data).ok();
        let mut sections = Vec::new();
        let (mut symtab, mut dynsym) = (None, None);
        if let Some(table) = &table {
            for sh in table.iter() {
                let name = table.section_name(endian, sh).unwrap_or(&[]);
                sections.push(Section {
                    name,
                    sh_type: sh.sh_type(endian),
                    addr: sh.sh_addr(endian),
                    offset: sh.sh_offset(endian),
                    size: sh.sh_size(endian),
                });
            }
            symtab = table.symbols(endian, data, elf::SHT_SYMTAB).ok().filter(|s| !s.is_empty());
            dynsym = table.symbols(endian, data, elf::SHT_DYNSYM).ok().filter(|s| !s.is_empty());
        }
        let mut image = Image {
            data,
            arch,
            elf_type: header.e_type(endian),
            segments,
            sections,
            has_interp,
            symtab,
            dynsym,
            needed: Vec::new(),
            dyn_tags,
            relocs: OnceCell::new(),
        };
        image.needed = image.needed_libs();
        Ok(image)
    }

    /// The value of the first dynamic tag `tag`.
    pub fn dyn_value(&self, tag: u32) -> Option<u64> {
        self.dyn_tags.iter().find(|&&(t, _)| t == u64::from(tag)).map(|&(_, v)| v)
    }

    fn needed_libs(&self) -> Vec<&'a [u8]> {
        let Some(strtab) = self.dyn_value(elf::DT_STRTAB) else {
            return Vec::new();
        };
        let Some(strs) = self.slice_from(strtab) else {
            return Vec::new();
        };
        let strsz = self.dyn_value(elf::DT_STRSZ).and_then(|s| usize::try_from(s).ok());
        let strs = strs.get(..strsz.unwrap_or(strs.len()).min(strs.len())).unwrap_or(strs);
        self.dyn_tags
            .iter()
            .filter(|&&(t, _)| t == u64::from(elf::DT_NEEDED))
            .filter_map(|&(_, off)| {
                let s = strs.get(usize::try_from(off).ok()?..)?;
                let end = s.iter().position(|&b| b == 0)?;
                s.get(..end)
            })
            .collect()
    }

    /// The first section with this exact name.
    pub fn section(&self, name: &str) -> Option<&Section<'a>> {
        self.sections.iter().find(|s| s.name == name.as_bytes())
    }

    /// The file bytes of a section (None for NOBITS or out-of-range headers).
    pub fn section_data(&self, s: &Section<'a>) -> Option<&'a [u8]> {
        if s.sh_type == elf::SHT_NOBITS {
            return None;
        }
        self.file_range(s.offset, s.size)
    }

    /// `len` bytes at file offset `off`, if all present.
    pub fn file_range(&self, off: u64, len: u64) -> Option<&'a [u8]> {
        let start = usize::try_from(off).ok()?;
        let end = start.checked_add(usize::try_from(len).ok()?)?;
        self.data.get(start..end)
    }

    /// The PT_LOAD segment whose file-backed part holds `vaddr`.
    pub fn segment_of(&self, vaddr: u64) -> Option<&Segment> {
        self.segments.iter().find(|s| s.holds(vaddr))
    }

    /// `vaddr − p_vaddr + p_offset` of the PT_LOAD holding it (executable ones only if `exec`).
    pub fn file_offset(&self, vaddr: u64, exec: bool) -> Result<u64, Error> {
        let seg = self
            .segments
            .iter()
            .find(|s| s.holds(vaddr) && (!exec || s.executable()))
            .ok_or(Error::AddressNotMapped { vaddr, what: if exec { "executable" } else { "file-backed" } })?;
        (vaddr - seg.vaddr)
            .checked_add(seg.offset)
            .filter(|&off| off < self.data.len() as u64)
            .ok_or(Error::AddressNotMapped { vaddr, what: "file-backed" })
    }

    /// The file bytes from `vaddr` to the end of its segment's file-backed part.
    pub fn slice_from(&self, vaddr: u64) -> Option<&'a [u8]> {
        let seg = self.segment_of(vaddr)?;
        let delta = vaddr - seg.vaddr;
        let off = seg.offset.checked_add(delta)?;
        self.file_range(off, seg.filesz - delta)
    }

    /// Exactly `len` file bytes at `vaddr` (within one segment).
    pub fn bytes_at(&self, vaddr: u64, len: u64) -> Option<&'a [u8]> {
        self.slice_from(vaddr)?.get(..usize::try_from(len).ok()?)
    }

    /// The virtual address at which file offset `off` is loaded, if any segment maps it.
    pub fn vaddr_of_offset(&self, off: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|s| off >= s.offset && off - s.offset < s.filesz)
            .and_then(|s| s.vaddr.checked_add(off - s.offset))
    }

    /// The little-endian u64 stored in the file at `vaddr` (no relocation applied).
    pub fn raw_u64(&self, vaddr: u64) -> Option<u64> {
        read_u64(self.bytes_at(vaddr, 8)?, 0)
    }

    /// The pointer value at `vaddr` as the loader would see it at base 0: the addend of a
    /// RELATIVE RELA relocation there if there is one, else the stored word (which is also
    /// right for RELR, whose addends are implicit).
    pub fn read_ptr(&self, vaddr: u64) -> Option<u64> {
        match self.relocations().addend_at(vaddr) {
            Some(addend) => Some(addend),
            None => self.raw_u64(vaddr),
        }
    }

    /// `count` consecutive pointers from `vaddr` (see [`Image::read_ptr`]), reading the
    /// relocations of just that range.
    pub fn read_ptrs(&self, vaddr: u64, count: u64) -> Vec<Option<u64>> {
        let Some(end) = count.checked_mul(8).and_then(|n| vaddr.checked_add(n)) else {
            return Vec::new();
        };
        let window = self.relocations().window(vaddr, end);
        (0..count)
            .map(|i| {
                let at = vaddr.checked_add(i * 8)?;
                match window.binary_search_by_key(&at, |r| r.0) {
                    Ok(j) => window.get(j).map(|r| r.1),
                    Err(_) => self.raw_u64(at),
                }
            })
            .collect()
    }

    /// The RELATIVE relocations of this image (built on first use).
    pub fn relocations(&self) -> &Relocations {
        self.relocs.get_or_init(|| Relocations::load(self))
    }

    /// The data sections to scan for Go runtime structures: every allocated PROGBITS section
    /// that is writable or named like Go data; without section headers, every non-executable
    /// file-backed segment.
    pub fn data_regions(&self) -> Vec<(u64, &'a [u8])> {
        let mut out = Vec::new();
        for s in &self.sections {
            let wanted = s.sh_type == elf::SHT_PROGBITS
                && s.addr != 0
                && (s.name.starts_with(b".noptrdata") || s.name.starts_with(b".data") || s.name.starts_with(b".go."));
            if let Some(bytes) = wanted.then(|| self.section_data(s)).flatten() {
                out.push((s.addr, bytes));
            }
        }
        if out.is_empty() {
            for seg in self.segments.iter().filter(|s| !s.executable()) {
                if let Some(bytes) = self.file_range(seg.offset, seg.filesz) {
                    out.push((seg.vaddr, bytes));
                }
            }
        }
        out
    }
}

/// Little-endian u64 at `off` in `b`.
pub(crate) fn read_u64(b: &[u8], off: usize) -> Option<u64> {
    let bytes = b.get(off..off.checked_add(8)?)?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

/// Little-endian u32 at `off` in `b`.
pub(crate) fn read_u32(b: &[u8], off: usize) -> Option<u32> {
    let bytes = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

/// Little-endian pointer-sized (4 or 8 bytes) value at `off` in `b`.
pub(crate) fn read_word(b: &[u8], off: usize, ptr_size: usize) -> Option<u64> {
    match ptr_size {
        8 => read_u64(b, off),
        4 => read_u32(b, off).map(u64::from),
        _ => None,
    }
}
