//! Hand-built Go-like ELF files: code, a pclntab of any layout, build info, optionally a
//! moduledata-like block, a `.symtab` and RELATIVE relocations. Small enough to reason about
//! byte by byte, and the shapes a hostile file takes (duplicate symbols, sizes the file does
//! not hold, padding-only bodies, many relocations) are one field away. Shared by the
//! synthetic and crafted tests and by the fuzz seed writer (examples/fuzz-seeds.rs, which
//! includes this file by path: it uses nothing but goelf and std).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // test support: panics are failures

use goelf::PclntabVersion;

/// Load address of file offset 0 (every byte is mapped at `BASE + offset`).
pub const BASE: u64 = 0x40_0000;
/// File offset of the first function.
pub const CODE: usize = 0x400;
/// R_X86_64_RELATIVE.
const RELATIVE: u64 = 8;

/// What to build. `funcs` are laid out from [`CODE`], each 16-byte aligned.
#[derive(Debug, Clone)]
pub struct Synth {
    pub funcs: Vec<(String, Vec<u8>)>,
    /// Layout of the function table and the text start its 1.18+ header records.
    pub pclntab: Option<(PclntabVersion, u64)>,
    /// A moduledata-like block after the build info (pointer to the pclntab, minpc/maxpc).
    pub moduledata: bool,
    /// `.symtab` STT_FUNC entries: (name, vaddr, size). Empty: no section headers at all.
    pub symbols: Vec<(String, u64, u64)>,
    /// RELATIVE RELA entries behind a PT_DYNAMIC (each patching a word of the data segment).
    pub relocs: usize,
    /// Words of a DT_RELR table: the first an address, the rest bitmaps with all 63 bits set.
    pub relr_words: usize,
    /// The Go version the build info records.
    pub go_version: String,
}

impl Synth {
    /// `funcs` with a Go 1.20 table whose header records the text start, no symbols.
    pub fn new(funcs: Vec<(String, Vec<u8>)>) -> Synth {
        Synth {
            funcs,
            pclntab: Some((PclntabVersion::V120, BASE + CODE as u64)),
            moduledata: false,
            symbols: Vec::new(),
            relocs: 0,
            relr_words: 0,
            go_version: "go1.17.13".into(),
        }
    }

    /// Entry address of function `i`.
    pub fn entry(&self, i: usize) -> u64 {
        BASE + self.offset(i) as u64
    }

    /// The address just past the last function.
    pub fn code_end(&self) -> u64 {
        self.funcs.last().map_or(BASE + CODE as u64, |(_, c)| self.entry(self.funcs.len() - 1) + c.len() as u64)
    }

    fn offset(&self, i: usize) -> usize {
        self.funcs[..i].iter().fold(CODE, |at, (_, c)| (at + c.len()).next_multiple_of(16))
    }

    pub fn build(&self) -> Vec<u8> {
        let data = (self.code_end() - BASE).next_multiple_of(0x1000) as usize;
        let mut f = vec![0u8; data];
        header(&mut f);
        for (i, (_, code)) in self.funcs.iter().enumerate() {
            let at = self.offset(i);
            let end = (at + code.len()).next_multiple_of(16).min(data);
            f[at..end].fill(0xcc); // Go pads between functions with INT3
            f[at..at + code.len()].copy_from_slice(code);
        }
        if let Some((version, text_start)) = self.pclntab {
            f.extend(self.table(version, text_start));
        }
        align(&mut f, 16);
        f.extend_from_slice(b"\xff Go buildinf:\x08\x02");
        f.resize(f.len() + 16, 0);
        f.push(self.go_version.len() as u8);
        f.extend_from_slice(self.go_version.as_bytes());
        f.push(0);
        align(&mut f, 8);
        if self.moduledata {
            put64(&mut f, BASE + data as u64);
            f.resize(f.len() + 8 * 19, 0);
            put64(&mut f, self.entry(0)); // minpc
            put64(&mut f, self.code_end()); // maxpc
            put64(&mut f, self.entry(0)); // text
        }
        let dynamic = (self.relocs > 0 || self.relr_words > 0).then(|| self.dynamic(&mut f));
        let len = f.len() as u64;
        let mut phdrs = vec![(1u32, 5u32, 0u64, data as u64), (1, 4, data as u64, len - data as u64)];
        if let Some((at, size)) = dynamic {
            phdrs.push((2, 4, at, size)); // PT_DYNAMIC
        }
        f[56..58].copy_from_slice(&(phdrs.len() as u16).to_le_bytes());
        for (k, (typ, flags, off, size)) in phdrs.into_iter().enumerate() {
            let ph = 64 + 56 * k;
            f[ph..ph + 4].copy_from_slice(&typ.to_le_bytes());
            f[ph + 4..ph + 8].copy_from_slice(&flags.to_le_bytes());
            for (j, v) in [off, BASE + off, BASE + off, size, size, 0x1000].into_iter().enumerate() {
                set64(&mut f, ph + 8 + 8 * j, v);
            }
        }
        if !self.symbols.is_empty() {
            self.sections(&mut f);
        }
        f
    }

    /// 64 words the relocations patch (read by nothing else), the RELA table and the
    /// dynamic array, appended to the data segment: (offset, size) of the dynamic array.
    fn dynamic(&self, f: &mut Vec<u8>) -> (u64, u64) {
        align(f, 8);
        let scratch = f.len();
        f.resize(scratch + 8 * 64, 0);
        let rela = f.len();
        for i in 0..self.relocs {
            put64(f, BASE + (scratch + 8 * (i % 64)) as u64);
            put64(f, RELATIVE);
            put64(f, BASE + i as u64);
        }
        let relr = f.len();
        for i in 0..self.relr_words {
            put64(f, if i == 0 { BASE + scratch as u64 } else { u64::MAX });
        }
        let dynamic = f.len();
        let (rela_size, relr_size) = (24 * self.relocs as u64, 8 * self.relr_words as u64);
        // DT_RELA, DT_RELASZ, DT_RELAENT, DT_RELR, DT_RELRSZ, DT_RELRENT, DT_NULL
        let tags =
            [(7u64, BASE + rela as u64), (8, rela_size), (9, 24), (36, BASE + relr as u64), (35, relr_size), (37, 8)];
        for (tag, val) in tags.into_iter().chain([(0, 0)]) {
            put64(f, tag);
            put64(f, val);
        }
        (dynamic as u64, (f.len() - dynamic) as u64)
    }

    /// `.symtab`, `.strtab` and `.shstrtab` after everything loaded, and the section headers.
    fn sections(&self, f: &mut Vec<u8>) {
        let mut strtab = vec![0u8];
        let mut symtab = vec![0u8; 24];
        for (name, vaddr, size) in &self.symbols {
            put32(&mut symtab, strtab.len() as u32);
            strtab.extend_from_slice(name.as_bytes());
            strtab.push(0);
            symtab.extend_from_slice(&[0x12, 0, 1, 0]); // STB_GLOBAL|STT_FUNC, shndx 1
            put64(&mut symtab, *vaddr);
            put64(&mut symtab, *size);
        }
        let shstrtab = b"\0.symtab\0.strtab\0.shstrtab\0";
        let mut place = |bytes: &[u8]| {
            align(f, 8);
            let at = f.len() as u64;
            f.extend_from_slice(bytes);
            (at, bytes.len() as u64)
        };
        let (sym_at, sym_len) = place(&symtab);
        let (str_at, str_len) = place(&strtab);
        let (sh_at, sh_len) = place(shstrtab);
        align(f, 8);
        let shoff = f.len() as u64;
        f.resize(f.len() + 64, 0); // SHN_UNDEF
                                   // (name, type, offset, size, link, info, entsize)
        for (name, typ, off, size, link, info, entsize) in [
            (1u32, 2u32, sym_at, sym_len, 2u32, 1u32, 24u64),
            (9, 3, str_at, str_len, 0, 0, 0),
            (17, 3, sh_at, sh_len, 0, 0, 0),
        ] {
            put32(f, name);
            put32(f, typ);
            put64(f, 0); // flags
            put64(f, 0); // addr
            put64(f, off);
            put64(f, size);
            put32(f, link);
            put32(f, info);
            put64(f, 1); // addralign
            put64(f, entsize);
        }
        set64(f, 40, shoff);
        f[58..60].copy_from_slice(&64u16.to_le_bytes()); // e_shentsize
        f[60..62].copy_from_slice(&4u16.to_le_bytes()); // e_shnum
        f[62..64].copy_from_slice(&3u16.to_le_bytes()); // e_shstrndx
    }

    /// The pclntab bytes for `version`; `text_start` is what the 1.18+ header records.
    fn table(&self, version: PclntabVersion, text_start: u64) -> Vec<u8> {
        let n = self.funcs.len();
        let (abs, hdr_words) = match version {
            PclntabVersion::V12 => (true, 1),
            PclntabVersion::V116 => (true, 7),
            _ => (false, 8),
        };
        let mut t = Vec::new();
        put32(&mut t, version.magic());
        t.extend_from_slice(&[0, 0, 1, 8]);
        t.resize(8 + 8 * hdr_words, 0);
        set64(&mut t, 8, n as u64);
        let v12 = version == PclntabVersion::V12;
        let esz = if abs { 16 } else { 8 };
        let table_len = esz * (n + 1) + 8 + 48 * n;
        // 1.2: the functab follows the header; later layouts put it last (pclnOffset).
        let mut pcln_at = t.len();
        if v12 {
            t.resize(pcln_at + table_len, 0);
        }
        // Names and pc tables: offsets from the table start (1.2) or from funcnametab / pctab.
        let names_at = t.len();
        let mut name_offs = Vec::new();
        for (name, _) in &self.funcs {
            name_offs.push((t.len() - if v12 { 0 } else { names_at }) as u32);
            t.extend_from_slice(name.as_bytes());
            t.push(0);
        }
        let pctab_at = t.len();
        t.push(0); // offset 0 means "no table"
        let mut pcsp = Vec::new();
        for (_, code) in &self.funcs {
            pcsp.push((t.len() - if v12 { 0 } else { pctab_at }) as u32);
            t.push(0); // value +0 ...
            uvarint(&mut t, code.len() as u64); // ... for the whole body
            t.push(0); // end
        }
        if !v12 {
            align(&mut t, 8);
            pcln_at = t.len();
            t.resize(pcln_at + table_len, 0);
        }
        let recs_at = pcln_at + esz * (n + 1) + 8;
        let text = BASE + CODE as u64;
        let slot_entry = |t: &mut Vec<u8>, at: usize, vaddr: u64| {
            if abs {
                set64(t, at, vaddr);
            } else {
                t[at..at + 4].copy_from_slice(&((vaddr - text) as u32).to_le_bytes());
            }
        };
        for (i, _) in self.funcs.iter().enumerate() {
            let slot = pcln_at + esz * i;
            let rec = recs_at + 48 * i;
            let funcoff = (rec - if v12 { 0 } else { pcln_at }) as u64;
            slot_entry(&mut t, slot, self.entry(i));
            slot_entry(&mut t, rec, self.entry(i));
            if abs {
                set64(&mut t, slot + 8, funcoff);
            } else {
                t[slot + 4..slot + 8].copy_from_slice(&(funcoff as u32).to_le_bytes());
            }
            let entry_field = if abs { 8 } else { 4 };
            t[rec + entry_field..rec + entry_field + 4].copy_from_slice(&name_offs[i].to_le_bytes());
            t[rec + entry_field + 12..rec + entry_field + 16].copy_from_slice(&pcsp[i].to_le_bytes());
        }
        slot_entry(&mut t, pcln_at + esz * n, self.code_end());
        // Header offsets: (nfunc, nfiles, [textStart,] funcname, cu, filetab, pctab, pcln).
        let offs = [names_at, pctab_at, pctab_at, pctab_at, pcln_at].map(|o| o as u64);
        match version {
            PclntabVersion::V12 => {}
            PclntabVersion::V116 => (0..5).for_each(|k| set64(&mut t, 24 + 8 * k, offs[k])),
            _ => {
                set64(&mut t, 24, text_start);
                (0..5).for_each(|k| set64(&mut t, 32 + 8 * k, offs[k]));
            }
        }
        t
    }
}

/// The ELF header of a little-endian amd64 executable (program headers at 64).
fn header(f: &mut [u8]) {
    f[..4].copy_from_slice(b"\x7fELF");
    f[4..8].copy_from_slice(&[2, 1, 1, 0]);
    f[16..20].copy_from_slice(&[2, 0, 62, 0]); // ET_EXEC, EM_X86_64
    f[20] = 1;
    set64(f, 24, BASE + CODE as u64);
    set64(f, 32, 64); // e_phoff
    f[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
    f[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
}

pub fn put32(b: &mut Vec<u8>, v: u32) {
    b.extend_from_slice(&v.to_le_bytes());
}
pub fn put64(b: &mut Vec<u8>, v: u64) {
    b.extend_from_slice(&v.to_le_bytes());
}
pub fn set64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
fn align(b: &mut Vec<u8>, to: usize) {
    b.resize(b.len().next_multiple_of(to), 0);
}
fn uvarint(b: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        b.push(v as u8 | 0x80);
        v >>= 7;
    }
    b.push(v as u8);
}
