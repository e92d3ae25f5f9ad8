//! The crate's error type: every way an analysis can fail, naming what failed and why.

use thiserror::Error;

/// Why a binary could not be analysed (or a query could not be answered).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum Error {
    /// The input does not start with the ELF magic.
    #[error("not an ELF file")]
    NotElf,
    /// A 32-bit ELF file (Go's 386/arm ports): tlstap supports 64-bit only.
    #[error("32-bit ELF ({machine}) is not supported: only 64-bit amd64 and arm64 Go binaries are")]
    Bits32 {
        /// The ELF machine, e.g. "x86 (386)".
        machine: String,
    },
    /// A 64-bit ELF for an architecture other than x86-64 and aarch64.
    #[error("unsupported architecture {0}: only amd64 (x86-64) and arm64 (aarch64) are supported")]
    UnsupportedArch(String),
    /// An ELF file with no Go build info and no Go function table.
    #[error("not a Go binary: {0}")]
    NotGo(String),
    /// Built by gccgo: its runtime and calling convention differ from gc's.
    #[error("built by gccgo ({0}): only binaries from the gc toolchain are supported")]
    Gccgo(String),
    /// A Go c-shared library (loaded into a foreign process).
    #[error("a Go c-shared library ({0}): attach to Go executables only")]
    CShared(String),
    /// A Go c-archive (not an executable).
    #[error("a Go c-archive ({0}): attach to Go executables only")]
    CArchive(String),
    /// A Go binary that does not link crypto/tls (or whose linker dropped the functions).
    #[error("Go binary ({version}) does not contain crypto/tls: missing {missing}")]
    NoCryptoTls {
        /// The binary's Go version string.
        version: String,
        /// The first required symbol that was not found.
        missing: &'static str,
    },
    /// A required function is missing (other than the crypto/tls ones).
    #[error("function {0} not found")]
    FunctionNotFound(String),
    /// A virtual address not backed by file bytes of a loadable segment.
    #[error("virtual address {vaddr:#x} is not in any {what} PT_LOAD segment")]
    AddressNotMapped {
        /// The address asked for.
        vaddr: u64,
        /// "executable" or "file-backed".
        what: &'static str,
    },
    /// An instruction could not be decoded inside a function.
    #[error("cannot decode {arch} instruction at {vaddr:#x} in {function}")]
    Decode {
        /// The function being decoded.
        function: String,
        /// The address of the undecodable instruction.
        vaddr: u64,
        /// The architecture name.
        arch: &'static str,
    },
    /// A runtime type (or one of its fields) is missing from the binary's type data.
    #[error("type {0} not found in the binary's type descriptors")]
    TypeNotFound(String),
    /// The file is damaged or laid out in a way this crate does not understand.
    #[error("malformed binary: {0}")]
    Malformed(String),
}

impl Error {
    /// Shorthand for a [`Error::Malformed`] with a formatted reason.
    pub(crate) fn malformed(reason: impl Into<String>) -> Self {
        Error::Malformed(reason.into())
    }
}

impl From<object::read::Error> for Error {
    fn from(e: object::read::Error) -> Self {
        Error::Malformed(format!("ELF: {e}"))
    }
}
