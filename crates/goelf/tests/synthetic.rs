//! Hand-built Go-like ELF files for every pclntab layout (1.2, 1.16, 1.20 with and without
//! pcHeader.textStart). Go 1.16/1.17 toolchains are not installable here, so the 1.16
//! layout (as written by cmd/link's pcln.go of that era) is checked on a synthetic table.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: panics are failures

use goelf::{tls, Abi, GoBinary, PclntabVersion, SymbolSource, TextStartSource};

mod common;

use common::synth::{Synth, BASE, CODE};

/// (name, code): laid out 16-byte aligned from CODE.
const FUNCS: [(&str, &[u8]); 3] = [
    ("main.a", &[0x90, 0xc3]),
    // xor eax,eax; ret; nop; ret
    (tls::CONN_READ, &[0x31, 0xc0, 0xc3, 0x90, 0xc3]),
    (tls::CONN_WRITE, &[0xc3]),
];

fn entry(i: usize) -> u64 {
    BASE + CODE as u64 + 16 * i as u64
}

/// An ELF with code (R+X) and one read-only segment holding pclntab, build info and,
/// optionally, a moduledata-like block (pointer to the pclntab, then minpc/maxpc).
fn elf(version: PclntabVersion, text_start: u64, moduledata: bool) -> Vec<u8> {
    let mut s = Synth::new(FUNCS.iter().map(|(n, c)| (n.to_string(), c.to_vec())).collect());
    s.pclntab = Some((version, text_start));
    s.moduledata = moduledata;
    s.build()
}

fn check(data: &[u8], version: PclntabVersion, source: TextStartSource) {
    let bin = GoBinary::parse(data).unwrap();
    let info = bin.info();
    assert_eq!((info.go_version.minor, info.abi), (17, Abi::Register));
    assert_eq!(info.symbol_source, SymbolSource::Pclntab);
    assert_eq!(info.pclntab_version, Some(version));
    assert_eq!(info.text_start_source, Some(source));
    let funcs = bin.functions();
    let want: Vec<(String, u64, u64)> =
        FUNCS.iter().enumerate().map(|(i, (n, c))| (n.to_string(), entry(i), c.len() as u64)).collect();
    let got: Vec<(String, u64, u64)> = funcs.into_iter().map(|f| (f.name, f.vaddr, f.size)).collect();
    assert_eq!(got, want, "{version:?}");
    let plan = tls::plan(&bin).unwrap();
    let rets: Vec<u64> = plan.read_returns.iter().map(|r| r.vaddr).collect();
    assert_eq!(rets, vec![entry(1) + 2, entry(1) + 4]);
    assert_eq!(plan.write_entry.file_offset, (CODE + 32) as u64);
    assert!(plan.keylog_entry.is_none());
}

#[test]
fn layout_go1_2() {
    check(&elf(PclntabVersion::V12, 0, false), PclntabVersion::V12, TextStartSource::AbsoluteEntries);
}

#[test]
fn layout_go1_16() {
    check(&elf(PclntabVersion::V116, 0, false), PclntabVersion::V116, TextStartSource::AbsoluteEntries);
}

#[test]
fn layout_go1_20_text_start_in_header() {
    let data = elf(PclntabVersion::V120, BASE + CODE as u64, false);
    check(&data, PclntabVersion::V120, TextStartSource::PcHeader);
}

#[test]
fn layout_go1_26_text_start_from_moduledata() {
    let data = elf(PclntabVersion::V120, 0, true);
    check(&data, PclntabVersion::V120, TextStartSource::Moduledata);
    // Without moduledata, symbols or sections the base is unknown: refuse, don't guess.
    let err = GoBinary::parse(&elf(PclntabVersion::V120, 0, false)).unwrap_err();
    assert!(err.to_string().contains("text start"), "{err}");
}
