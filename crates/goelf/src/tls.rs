//! What tlstap attaches to in a Go binary: crypto/tls entry points and the RETs of
//! `(*Conn).Read`, each with the file offset a uprobe needs.

use crate::{Error, Function, GoBinary};

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
    /// Entry of `crypto/tls.(*Conn).Read`, past its stack check.
    pub read_entry: ProbePoint,
    /// Every RET of `crypto/tls.(*Conn).Read` (uretprobes break Go's moving stacks).
    pub read_returns: Vec<ProbePoint>,
    /// Entry of `crypto/tls.(*Config).writeKeyLog` past its stack check, if linked.
    pub keylog_entry: Option<ProbePoint>,
    /// Entry of `crypto/tls.(*Conn).writeRecordLocked`, if linked (for reference).
    pub write_record_entry: Option<ProbePoint>,
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
    Ok(TlsPlan {
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
