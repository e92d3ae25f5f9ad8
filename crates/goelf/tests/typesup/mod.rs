//! Independent oracles for goelf::types: DWARF (gimli) runtime-type attributes and member
//! offsets, itab symbols from `.symtab` read through the object crate's relocations, and
//! the reflect-based `typeoracle` Go program.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::borrow::Cow;
use std::collections::HashMap;

use object::{Object, ObjectSection, ObjectSymbol};

/// Go's DW_AT_go_runtime_type: where the runtime type descriptor of a DWARF type is (an
/// offset from `runtime.types`).
const DW_AT_GO_RUNTIME_TYPE: gimli::DwAt = gimli::DwAt(0x2904);

/// What the DWARF of a binary says about some types.
#[derive(Debug, Default)]
pub struct DwarfFacts {
    /// DW_AT_go_runtime_type of each named type.
    pub runtime_type: HashMap<String, u64>,
    /// DW_AT_data_member_location of (struct name, member name).
    pub members: HashMap<(String, String), u64>,
}

/// Reads the DWARF of `data` (None if it has none).
pub fn dwarf_facts(data: &[u8]) -> Option<DwarfFacts> {
    let file = object::File::parse(data).ok()?;
    file.section_by_name(".debug_info").or_else(|| file.section_by_name(".zdebug_info"))?;
    let load = |id: gimli::SectionId| -> Result<Cow<'_, [u8]>, gimli::Error> {
        let name = id.name();
        let zname = name.replacen(".debug_", ".zdebug_", 1);
        let section = file.section_by_name(name).or_else(|| file.section_by_name(&zname));
        Ok(section.and_then(|s| s.uncompressed_data().ok()).unwrap_or(Cow::Borrowed(&[])))
    };
    let owned = gimli::DwarfSections::load(load).ok()?;
    let dwarf = owned.borrow(|s| gimli::EndianSlice::new(s, gimli::LittleEndian));
    let mut facts = DwarfFacts::default();
    let mut units = dwarf.units();
    while let Ok(Some(header)) = units.next() {
        let Ok(unit) = dwarf.unit(header) else { continue };
        let mut entries = unit.entries();
        // Names of the enclosing DIEs by depth.
        let mut stack: Vec<String> = Vec::new();
        let mut depth = 0isize;
        while let Ok(Some((delta, entry))) = entries.next_dfs() {
            depth += delta;
            let name = entry
                .attr_value(gimli::DW_AT_name)
                .ok()
                .flatten()
                .and_then(|v| dwarf.attr_string(&unit, v).ok())
                .map(|s| String::from_utf8_lossy(&s).into_owned())
                .unwrap_or_default();
            stack.truncate(usize::try_from(depth).unwrap_or(0));
            if let Ok(Some(v)) = entry.attr_value(DW_AT_GO_RUNTIME_TYPE) {
                let value = match v {
                    gimli::AttributeValue::Addr(a) => Some(a),
                    other => other.udata_value(),
                };
                if let Some(value) = value {
                    facts.runtime_type.entry(name.clone()).or_insert(value);
                }
            }
            if entry.tag() == gimli::DW_TAG_member {
                let loc = entry.attr_value(gimli::DW_AT_data_member_location).ok().flatten();
                if let (Some(parent), Some(off)) = (stack.last(), loc.and_then(|v| v.udata_value())) {
                    facts.members.entry((parent.clone(), name.clone())).or_insert(off);
                }
            }
            stack.push(name);
        }
    }
    Some(facts)
}

/// The value of `.symtab` symbol `name`.
pub fn symbol(data: &[u8], name: &str) -> Option<u64> {
    let file = object::File::parse(data).ok()?;
    file.symbols().find(|s| s.name() == Ok(name)).map(|s| s.address())
}

/// The pointer at `vaddr` as loaded at base 0: a dynamic relocation's addend if one patches
/// it (read through the object crate, independently of goelf's reloc.rs), else the word.
pub fn pointer_at(data: &[u8], vaddr: u64) -> Option<u64> {
    let file = object::File::parse(data).ok()?;
    if let Some(relocs) = file.dynamic_relocations() {
        for (off, r) in relocs {
            if off == vaddr && r.addend() != 0 {
                return u64::try_from(r.addend()).ok();
            }
        }
    }
    let bytes = super::common::bytes_via_sections(data, vaddr, 8)?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

/// The `*net.TCPConn` descriptor named by the itab `*net.TCPConn,net.Conn` (its second
/// word), if `.symtab` has that itab (Go ≤ 1.26).
pub fn tcp_conn_type_from_itab(data: &[u8]) -> Option<u64> {
    let itab =
        ["go:itab.*net.TCPConn,net.Conn", "go.itab.*net.TCPConn,net.Conn"].iter().find_map(|n| symbol(data, n))?;
    pointer_at(data, itab + 8)
}

/// Field offsets printed by the typeoracle program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Oracle {
    pub tls_conn_conn: u64,
    pub tcp_conn_conn: u64,
    pub conn_fd: u64,
    pub netfd_pfd: u64,
    pub fd_sysfd: u64,
    pub unix_conn_conn: u64,
}

/// Runs the typeoracle built by `version`'s toolchain (amd64, cached like fixtures).
pub fn oracle(version: &str) -> Oracle {
    let path = super::common::fixture(version, "exe", "typeoracle", "amd64");
    let out = std::process::Command::new(&path).output().expect("run typeoracle");
    assert!(out.status.success(), "typeoracle {version}: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let get = |key: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("typeoracle {version}: no {key} in {text}"))
    };
    Oracle {
        tls_conn_conn: get("tls.Conn.conn"),
        tcp_conn_conn: get("net.TCPConn.conn"),
        conn_fd: get("net.conn.fd"),
        netfd_pfd: get("net.netFD.pfd"),
        fd_sysfd: get("poll.FD.Sysfd"),
        unix_conn_conn: get("net.UnixConn.conn"),
    }
}
