//! What tlstap attaches to in a Go binary: crypto/tls entry points and the RETs of
//! `(*Conn).Read`, each with the file offset a uprobe needs.

use crate::{Abi, Arch, Error, Function, GoBinary};

/// `func (c *Conn) Write(b []byte) (int, error)`.
pub const CONN_WRITE: &str = "crypto/tls.(*Conn).Write";
/// `func (c *Conn) Read(b []byte) (int, error)`.
pub const CONN_READ: &str = "crypto/tls.(*Conn).Read";
/// `func (c *Config) writeKeyLog(label string, clientRandom, secret []byte) error`.
pub const CONFIG_WRITE_KEY_LOG: &str = "crypto/tls.(*Config).writeKeyLog";
/// `func (c *Conn) writeRecordLocked(typ recordType, data []byte) (int, error)`.
pub const CONN_WRITE_RECORD_LOCKED: &str = "crypto/tls.(*Conn).writeRecordLocked";

/// One place to attach a uprobe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbePoint {
    /// The Go function the point belongs to.
    pub symbol: &'static str,
    /// Virtual address of the instruction.
    pub vaddr: u64,
    /// Offset of the instruction in the file (what uprobes take).
    pub file_offset: u64,
}

/// Every probe point tlstap needs in one binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPlan {
    /// Entry of `crypto/tls.(*Conn).Write`, past its stack check (fires once per call).
    pub write_entry: ProbePoint,
    /// The `JBE` of Write's stack check (amd64), where a probe is emulated rather than
    /// single-stepped: it fires twice for a call whose stack grows, once with the branch taken
    /// (CF or ZF set), which the probe skips.
    pub write_check: Option<ProbePoint>,
    /// Entry of `crypto/tls.(*Conn).Read`, past its stack check.
    pub read_entry: ProbePoint,
    /// Every RET of `crypto/tls.(*Conn).Read` (uretprobes break Go's moving stacks).
    pub read_returns: Vec<ProbePoint>,
    /// Entry of `crypto/tls.(*Config).writeKeyLog` past its stack check, if linked.
    pub keylog_entry: Option<ProbePoint>,
    /// Entry of `crypto/tls.(*Conn).writeRecordLocked`, if linked (for reference).
    pub write_record_entry: Option<ProbePoint>,
    /// How a Read can be captured: the cheapest way the analysis proved (see spill.rs).
    pub read_capture: ReadCapture,
}

/// How a `(*Conn).Read` call is captured: its connection (`c`, argument word 0) and the bytes
/// it returns are needed once they exist, at its copy into `b` (word 1) or at its RET.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadCapture {
    /// At its one call of `runtime.memmove`, which copies the plaintext into `b` (its
    /// destination proven to be `b.ptr`): source and length from the call's arguments, `c`
    /// from its stack word at `SP + depth + 8`. One hit per Read, on a CALL, which the kernel
    /// emulates (a RET it single-steps out of line, at about 15 times the cost here).
    AtCopy {
        /// The CALL instruction.
        site: ProbePoint,
        /// How far SP is below its entry value at the call.
        depth: u64,
        /// Whether the RETs alone would do too (tlstap's `--read-path return`).
        returns_proven: bool,
    },
    /// At each RET alone, reading both words from the stack, where this analysis proved they
    /// are at every RET (see spill.rs): one probe hit per Read.
    AtReturn {
        /// Why the copy could not be used.
        why: String,
    },
    /// Saved at the entry and taken at the RET: two hits per Read. Says why the words could
    /// not be proven to be on the stack.
    EntryAndReturn { why: String },
}

impl ReadCapture {
    /// A short name for people (`--dry-run`).
    pub fn name(&self) -> &'static str {
        match self {
            ReadCapture::AtCopy { .. } => "at-copy",
            ReadCapture::AtReturn { .. } => "at-return",
            ReadCapture::EntryAndReturn { .. } => "entry-and-return",
        }
    }
}

/// Decides [`ReadCapture`] for `read`, the binary's `(*Conn).Read`.
fn read_capture(bin: &GoBinary<'_>, read: &Function) -> Result<ReadCapture, Error> {
    let args = match (bin.info().arch, bin.info().abi) {
        (Arch::Amd64, Abi::Register) => crate::spill::ArgsAt::Registers,
        (Arch::Amd64, Abi::Stack) => crate::spill::ArgsAt::Stack,
        (Arch::Arm64, _) => {
            return Ok(ReadCapture::EntryAndReturn { why: "arm64 code is not analysed for it".to_string() })
        }
    };
    let code = bin.code(read)?;
    let memmove = bin.function("runtime.memmove").map(|f| f.vaddr);
    let proof = match crate::spill::analyze(read.vaddr, code, args, 2, memmove) {
        Ok(proof) => proof,
        Err(why) => return Ok(ReadCapture::EntryAndReturn { why }),
    };
    Ok(match (proof.copy, proof.returns) {
        (Ok(site), returns) => ReadCapture::AtCopy {
            site: point(bin, CONN_READ, site.vaddr)?,
            depth: site.depth,
            returns_proven: returns.is_ok(),
        },
        (Err(why), Ok(())) => ReadCapture::AtReturn { why },
        (Err(copy), Err(returns)) => ReadCapture::EntryAndReturn { why: format!("{returns}; {copy}") },
    })
}

/// Finds the crypto/tls functions and their probe points. [`Error::NoCryptoTls`] names the
/// first of Write/Read that is missing.
pub fn plan(bin: &GoBinary<'_>) -> Result<TlsPlan, Error> {
    let names = [CONN_WRITE, CONN_READ, CONFIG_WRITE_KEY_LOG, CONN_WRITE_RECORD_LOCKED];
    let found = bin.functions_named(&names);
    let get = |i: usize| found.get(i).cloned().flatten();
    let require = |i: usize, symbol: &'static str| {
        get(i).ok_or_else(|| Error::NoCryptoTls { version: bin.info().go_version.raw.clone(), missing: symbol })
    };
    let write = require(0, CONN_WRITE)?;
    let read = require(1, CONN_READ)?;
    let read_returns = bin
        .ret_addresses(&read)?
        .into_iter()
        .map(|vaddr| point(bin, CONN_READ, vaddr))
        .collect::<Result<Vec<_>, _>>()?;
    if read_returns.is_empty() {
        return Err(Error::malformed(format!("{CONN_READ} at {:#x} has no RET instruction", read.vaddr)));
    }
    let read_capture = read_capture(bin, &read)?;
    let write_check = crate::prologue::stack_check_branch(bin.info().arch, write.vaddr, bin.code(&write)?)
        .map(|vaddr| point(bin, CONN_WRITE, vaddr))
        .transpose()?;
    Ok(TlsPlan {
        read_capture,
        write_check,
        write_entry: entry(bin, CONN_WRITE, &write)?,
        read_entry: entry(bin, CONN_READ, &read)?,
        read_returns,
        keylog_entry: get(2).map(|f| entry(bin, CONFIG_WRITE_KEY_LOG, &f)).transpose()?,
        write_record_entry: get(3).map(|f| entry(bin, CONN_WRITE_RECORD_LOCKED, &f)).transpose()?,
    })
}

/// The first instruction past the function's stack check: it runs once per call, whereas
/// the very first instruction runs again after the stack grows (see prologue.rs).
pub(crate) fn entry(bin: &GoBinary<'_>, symbol: &'static str, f: &Function) -> Result<ProbePoint, Error> {
    let code = bin.code(f)?;
    point(bin, symbol, crate::prologue::body_start(bin.info().arch, f.vaddr, code))
}

pub(crate) fn point(bin: &GoBinary<'_>, symbol: &'static str, vaddr: u64) -> Result<ProbePoint, Error> {
    Ok(ProbePoint { symbol, vaddr, file_offset: bin.code_file_offset(vaddr)? })
}
