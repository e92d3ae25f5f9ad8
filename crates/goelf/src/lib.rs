//! Pure analysis of Go ELF binaries on `&[u8]`: build info, ABI, functions (from `.symtab`
//! or `.gopclntab`), RET addresses and file offsets. No BPF, no root, no I/O; never panics
//! on malformed input.
//!
//! ```no_run
//! let data = std::fs::read("/usr/local/bin/some-go-program").unwrap();
//! let bin = goelf::GoBinary::parse(&data).unwrap();
//! let plan = goelf::tls::plan(&bin).unwrap();
//! println!("{} {:?} Read at file offset {:#x}", bin.info().go_version, bin.info().abi, plan.read_entry.file_offset);
//! ```

mod body;
mod buildinfo;
mod decode;
mod detect;
mod elf;
mod error;
pub mod h2;
mod pclnfind;
mod pclntab;
mod prologue;
mod reloc;
mod spill;
mod symtab;
mod textstart;
pub mod tls;
pub mod types;
mod version;

pub use buildinfo::BuildInfo;
pub use detect::StrippedKind;
pub use error::Error;
pub use pclntab::PclntabVersion;
pub use textstart::TextStartSource;
pub use version::{Abi, Arch, GoVersion};

use elf::Image;
use pclntab::Pclntab;

/// Where function names and addresses come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SymbolSource {
    /// The ELF `.symtab` (unstripped binaries).
    Symtab,
    /// Go's own function table, which survives stripping.
    Pclntab,
}

/// What a binary is: architecture, Go version, ABI, build mode, symbol availability.
#[derive(Debug, Clone)]
pub struct BinaryInfo {
    /// Target architecture.
    pub arch: Arch,
    /// The Go toolchain version that built it.
    pub go_version: GoVersion,
    /// Calling convention of Go functions.
    pub abi: Abi,
    /// Position-independent (ELF type DYN with an interpreter, or -buildmode=pie).
    pub pie: bool,
    /// `.symtab` present and non-empty.
    pub has_symtab: bool,
    /// `.debug_info` present (DWARF).
    pub has_dwarf: bool,
    /// How it was stripped.
    pub stripped_kind: StrippedKind,
    /// `build` settings from the module info (Go ≥ 1.18), e.g. ("-buildmode", "pie").
    pub build_settings: Vec<(String, String)>,
    /// The main package path from the module info, if recorded.
    pub main_path: Option<String>,
    /// Where [`GoBinary::function`] looks names up.
    pub symbol_source: SymbolSource,
    /// The pclntab layout, if a pclntab was found.
    pub pclntab_version: Option<PclntabVersion>,
    /// Virtual address of the pclntab header, if found.
    pub pclntab_vaddr: Option<u64>,
    /// Base of 1.18+ function entry offsets (`runtime.text`); 0 for older tables.
    pub text_start: u64,
    /// Where `text_start` came from.
    pub text_start_source: Option<TextStartSource>,
}

impl BinaryInfo {
    /// The value of build setting `key` (e.g. "CGO_ENABLED").
    pub fn setting(&self, key: &str) -> Option<&str> {
        self.build_settings.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// A function of the binary: exact Go symbol name, entry address, size in bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Function {
    /// The Go symbol name, e.g. "crypto/tls.(*Conn).Read".
    pub name: String,
    /// Entry virtual address (as in the file; PIE addresses are relative to load base 0).
    pub vaddr: u64,
    /// Size in bytes (symbol size, or the extent covered by the pc tables).
    pub size: u64,
}

/// A parsed Go ELF binary. Parsing does the fixed work once; queries are cheap.
#[derive(Debug)]
pub struct GoBinary<'a> {
    image: Image<'a>,
    info: BinaryInfo,
    pclntab: Option<Pclntab<'a>>,
}

impl<'a> GoBinary<'a> {
    /// Parses `data` as a Go executable for amd64 or arm64.
    pub fn parse(data: &'a [u8]) -> Result<Self, Error> {
        let image = Image::parse(data)?;
        if let Some(why) = detect::gccgo_marker(&image) {
            return Err(Error::Gccgo(why));
        }
        let build = buildinfo::find(&image)?;
        let symtab_value = |name: &[u8]| image.symtab.as_ref().and_then(|t| symtab::symbol_value(t, name));
        let pcln_symbol = symtab_value(b"runtime.pcheader").or_else(|| symtab_value(b"runtime.pclntab"));
        let mut pclntab = pclnfind::locate(&image, pcln_symbol);
        if build.is_none() && pclntab.is_none() {
            if let Some(why) = detect::gccgo_symbols(&image) {
                return Err(Error::Gccgo(why));
            }
            return Err(Error::NotGo("no .go.buildinfo and no Go function table (pclntab)".into()));
        }
        detect::check_buildmode(&image, build.as_ref())?;
        let raw_version = match &build {
            Some(b) => b.version.clone(),
            None => return Err(Error::NotGo("Go function table but no .go.buildinfo (Go < 1.13?)".into())),
        };
        let go_version = GoVersion::parse(&raw_version)
            .ok_or_else(|| Error::malformed(format!("unparseable Go version {raw_version:?}")))?;

        let mut text = None;
        if let Some(t) = pclntab.as_mut() {
            let runtime_text = symtab_value(b"runtime.text");
            match textstart::resolve(&image, t, runtime_text) {
                Some((base, source)) => {
                    t.text_start = base;
                    text = Some((base, source));
                }
                // Entries cannot be placed: keep the table out of use rather than lie.
                None if image.symtab.is_some() => pclntab = None,
                None => return Err(Error::malformed("cannot determine the text start of the function table")),
            }
        }
        let symbol_source = if image.symtab.is_some() { SymbolSource::Symtab } else { SymbolSource::Pclntab };
        if symbol_source == SymbolSource::Pclntab && pclntab.is_none() {
            return Err(Error::NotGo("no .symtab and no Go function table (pclntab)".into()));
        }
        let settings = build.as_ref().map(|b| b.settings.clone()).unwrap_or_default();
        let buildmode_pie = settings.iter().any(|(k, v)| k == "-buildmode" && v == "pie");
        let info = BinaryInfo {
            arch: image.arch,
            abi: Abi::for_version(image.arch, &go_version),
            go_version,
            pie: image.elf_type == object::elf::ET_DYN && (image.has_interp || buildmode_pie),
            has_symtab: image.symtab.is_some(),
            has_dwarf: image.section(".debug_info").is_some() || image.section(".zdebug_info").is_some(),
            stripped_kind: StrippedKind::of(&image, build.as_ref()),
            main_path: build.as_ref().and_then(|b| b.path.clone()),
            build_settings: settings,
            symbol_source,
            pclntab_version: pclntab.as_ref().map(|t| t.version),
            pclntab_vaddr: pclntab.as_ref().map(|t| t.vaddr),
            text_start: text.map_or(0, |t| t.0),
            text_start_source: text.map(|t| t.1),
        };
        Ok(GoBinary { image, info, pclntab })
    }

    /// What the binary is.
    pub fn info(&self) -> &BinaryInfo {
        &self.info
    }

    /// The function with this exact Go symbol name (from [`BinaryInfo::symbol_source`]).
    pub fn function(&self, name: &str) -> Option<Function> {
        self.functions_named(&[name]).into_iter().next().flatten()
    }

    /// Looks several names up in one pass; results are in the order of `names`.
    pub fn functions_named(&self, names: &[&str]) -> Vec<Option<Function>> {
        self.functions_named_from(self.info.symbol_source, names)
    }

    /// Like [`GoBinary::functions_named`], from an explicit source (empty if unavailable).
    pub fn functions_named_from(&self, source: SymbolSource, names: &[&str]) -> Vec<Option<Function>> {
        match source {
            SymbolSource::Symtab => symtab::find_many(&self.image, names)
                .into_iter()
                .map(|f| f.map(|f| function(f.name, f.vaddr, f.size)))
                .collect(),
            SymbolSource::Pclntab => match &self.pclntab {
                Some(t) => t
                    .find_many(&self.image, names)
                    .into_iter()
                    .map(|f| f.map(|f| function(f.name, f.entry, f.size)))
                    .collect(),
                None => vec![None; names.len()],
            },
        }
    }

    /// Every function, from [`BinaryInfo::symbol_source`].
    pub fn functions(&self) -> Vec<Function> {
        self.functions_from(self.info.symbol_source)
    }

    /// Every function from an explicit source (empty if that source is unavailable). From
    /// `.symtab` these are the STT_FUNC symbols (C functions of cgo binaries included), with
    /// the `.abi0` suffix removed so names match the pclntab's; from the pclntab, every Go
    /// function in address order. ABI wrappers appear beside their bodies under one name.
    pub fn functions_from(&self, source: SymbolSource) -> Vec<Function> {
        match source {
            SymbolSource::Symtab => match &self.image.symtab {
                Some(table) => {
                    symtab::funcs(table).map(|f| function(symtab::go_name(f.name), f.vaddr, f.size)).collect()
                }
                None => Vec::new(),
            },
            SymbolSource::Pclntab => match &self.pclntab {
                Some(t) => (0..t.nfunc)
                    .filter_map(|i| t.func(&self.image, i))
                    .map(|f| function(f.name, f.entry, f.size))
                    .collect(),
                None => Vec::new(),
            },
        }
    }

    /// The file offset of `vaddr`: `vaddr − p_vaddr + p_offset` of the PT_LOAD holding it.
    pub fn file_offset(&self, vaddr: u64) -> Result<u64, Error> {
        self.image.file_offset(vaddr, false)
    }

    /// The lowest virtual address of an executable PT_LOAD segment: where the kernel's
    /// `mm->start_code` points, less the load bias (Linux's ELF loader sets it so).
    pub fn exec_segment_vaddr(&self) -> Option<u64> {
        self.image.segments.iter().filter(|s| s.executable()).map(|s| s.vaddr).min()
    }

    /// The file offset of code at `vaddr`, which must lie in an executable PT_LOAD.
    pub fn code_file_offset(&self, vaddr: u64) -> Result<u64, Error> {
        self.image.file_offset(vaddr, true)
    }

    /// The file bytes of `f` (from an executable segment).
    pub fn code(&self, f: &Function) -> Result<&'a [u8], Error> {
        self.code_file_offset(f.vaddr)?;
        self.image
            .bytes_at(f.vaddr, f.size)
            .ok_or(Error::AddressNotMapped { vaddr: f.vaddr.saturating_add(f.size), what: "file-backed" })
    }

    /// Virtual addresses of every return instruction of `f`, found by decoding its code.
    pub fn ret_addresses(&self, f: &Function) -> Result<Vec<u64>, Error> {
        let code = self.code(f)?;
        decode::find_returns(self.info.arch, &f.name, f.vaddr, code)
    }

    /// Counts of (RELA RELATIVE, RELR) dynamic relocations (diagnostics).
    pub fn relative_relocation_counts(&self) -> (usize, usize) {
        self.image.relocations().counts()
    }
}

fn function(name: &[u8], vaddr: u64, size: u64) -> Function {
    Function { name: String::from_utf8_lossy(name).into_owned(), vaddr, size }
}
