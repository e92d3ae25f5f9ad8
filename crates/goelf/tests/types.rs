//! goelf::types against real Go binaries of every fixture version and variant: field offsets
//! against a reflect-based Go oracle and the DWARF, `*net.TCPConn`'s descriptor address
//! against DWARF, itab symbols and the unstripped twin; plus g_below_fs and damaged input.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod typesup;

use std::time::{Duration, Instant};

use common::*;
use goelf::types::{self, ConnLayout, FieldOffsetEncoding, ModuledataLayout, NameEncoding, TypeData};
use goelf::{Error, GoBinary};
use typesup::*;

/// (arch, variant, unstripped twin with the same build flags).
const AMD64: [(&str, &str, Option<&str>); 6] = [
    ("amd64", "exe", None),
    ("amd64", "pie", None),
    ("amd64", "exe-sw", Some("exe")),
    ("amd64", "pie-strip", Some("pie")),
    ("amd64", "cgo", None),
    ("amd64", "cgo-pie", None),
];
const ARM64: [(&str, &str, Option<&str>); 2] = [("arm64", "exe", None), ("arm64", "pie-strip", Some("pie"))];

/// Time allowed for TypeData::load + conn_layout on one binary (release: 100 ms; the
/// unoptimised test build gets more, and tests run in parallel).
fn budget() -> Duration {
    Duration::from_millis(if cfg!(debug_assertions) { 400 } else { 100 })
}

fn builds(version: &str) -> Vec<(&'static str, &'static str, Option<&'static str>)> {
    let mut b = AMD64.to_vec();
    if version == "1.19" || version == "1.27" {
        b.extend(ARM64);
    }
    b
}

fn check_version(version: &str) {
    if skip_fixtures() {
        eprintln!("TLSTAP_SKIP_FIXTURES=1: skipping the go{version} type-layout checks");
        return;
    }
    let want = oracle(version);
    let mut failures = Vec::new();
    for (arch, variant, twin) in builds(version) {
        let path = fixture(version, variant, "tlsfixture", arch);
        let data = std::fs::read(&path).expect("read fixture");
        let twin = twin.map(|t| std::fs::read(fixture(version, t, "tlsfixture", arch)).expect("read twin"));
        if let Err(e) = check_binary(version, &want, &data, twin.as_deref()) {
            failures.push(format!("go{version} {arch} {variant} ({}): {e}", path.display()));
        }
    }
    assert!(failures.is_empty(), "{} failure(s):\n{}", failures.len(), failures.join("\n"));
}

fn check_binary(version: &str, want: &Oracle, data: &[u8], twin: Option<&[u8]>) -> Result<(), String> {
    let minor: u32 = version.trim_start_matches("1.").parse().map_err(|e| format!("{e}"))?;
    let bin = GoBinary::parse(data).map_err(|e| format!("parse: {e}"))?;
    let start = Instant::now();
    let td = TypeData::load(&bin).map_err(|e| format!("TypeData::load: {e}"))?;
    let layout = types::conn_layout(&bin).map_err(|e| format!("conn_layout: {e}"))?;
    let took = start.elapsed();
    if took > budget() {
        return Err(format!("took {took:?} (budget {:?})", budget()));
    }

    // Offsets: the reflect oracle built by the same toolchain.
    let expected = (want.tls_conn_conn, want.tcp_conn_conn + want.conn_fd, want.netfd_pfd + want.fd_sysfd);
    let got = (layout.tls_conn_conn, layout.net_conn_fd, layout.net_fd_sysfd);
    if got != expected {
        return Err(format!("offsets {got:?}, oracle says {expected:?} ({want:?})"));
    }
    if want.unix_conn_conn == want.tcp_conn_conn && layout.unix_conn_type.is_none() {
        return Err("unix_conn_type missing".into());
    }

    // The moduledata layout and encodings the version implies.
    let (exp_layout, exp_names, exp_fields) = expected_formats(minor);
    let formats = (td.layout(), td.name_encoding(), td.field_offset_encoding());
    if formats != (exp_layout, exp_names, exp_fields) {
        return Err(format!("formats {formats:?}, expected {:?}", (exp_layout, exp_names, exp_fields)));
    }
    check_typelinks(&td, &layout)?;

    // The descriptor address, independently: DWARF, the itab symbol, the unstripped twin.
    let mut independent = 0;
    if let Some(facts) = dwarf_facts(data) {
        let types = symbol(data, "runtime.types").ok_or("DWARF but no runtime.types symbol")?;
        if types != td.types_range().0 {
            return Err(format!("runtime.types is {types:#x}, moduledata says {:#x}", td.types_range().0));
        }
        check_dwarf(&facts, &layout, types)?;
        independent += 1;
    }
    if let Some(t) = tcp_conn_type_from_itab(data) {
        if t != layout.tcp_conn_type {
            return Err(format!("itab says *net.TCPConn is at {t:#x}, conn_layout {:#x}", layout.tcp_conn_type));
        }
        independent += 1;
    }
    if let Some(twin) = twin {
        let twin_bin = GoBinary::parse(twin).map_err(|e| format!("twin parse: {e}"))?;
        let twin_layout = types::conn_layout(&twin_bin).map_err(|e| format!("twin conn_layout: {e}"))?;
        if twin_layout != layout {
            return Err(format!("unstripped twin gives {twin_layout:?}, stripped {layout:?}"));
        }
        independent += 1;
    }
    if independent == 0 {
        return Err("no independent check of tcp_conn_type ran".into());
    }
    Ok(())
}

/// (moduledata layout, name length encoding, struct field offset encoding) of Go 1.`minor`.
fn expected_formats(minor: u32) -> (ModuledataLayout, NameEncoding, FieldOffsetEncoding) {
    let layout = match minor {
        0..=15 => ModuledataLayout::Go12,
        16..=17 => ModuledataLayout::Go116,
        18..=19 => ModuledataLayout::Go118,
        20..=25 => ModuledataLayout::Go120,
        26 => ModuledataLayout::Go126,
        _ => ModuledataLayout::Go127,
    };
    let names = if minor >= 17 { NameEncoding::Varint } else { NameEncoding::BigEndian16 };
    let fields = if minor >= 19 { FieldOffsetEncoding::Plain } else { FieldOffsetEncoding::OffsetAnon };
    (layout, names, fields)
}

/// The typelinks are the linker's sorted list of reflect-constructible types: every entry
/// must be a readable descriptor, in string order, and must include the three pointer types
/// (so they were found without the fallback scan).
fn check_typelinks(td: &TypeData<'_, '_>, layout: &ConnLayout) -> Result<(), String> {
    let links = td.typelinks();
    if links.len() < 500 {
        return Err(format!("only {} typelinks", links.len()));
    }
    let mut prev = String::new();
    for &t in links {
        let s = td.type_string(t).map_err(|e| format!("typelink {t:#x}: {e}"))?;
        if s < prev {
            return Err(format!("typelinks out of order: {prev:?} before {s:?}"));
        }
        prev = s;
    }
    for (what, addr) in [("*net.TCPConn", Some(layout.tcp_conn_type)), ("*net.UnixConn", layout.unix_conn_type)] {
        let addr = addr.ok_or(format!("{what} missing"))?;
        if !links.contains(&addr) {
            return Err(format!("{what} at {addr:#x} is not among the typelinks"));
        }
        if td.type_string(addr).as_deref() != Ok(what) {
            return Err(format!("{addr:#x} prints as {:?}, not {what}", td.type_string(addr)));
        }
    }
    let tls = td.pointer_type("*tls.Conn", "crypto/tls").map_err(|e| e.to_string())?.ok_or("no *tls.Conn")?;
    let elem = td.elem(tls).map_err(|e| e.to_string())?;
    if td.pkg_path(elem).map_err(|e| e.to_string())?.as_deref() != Some("crypto/tls") {
        return Err("tls.Conn's package path is not crypto/tls".into());
    }
    if td.pointer_type("*tls.Conn", "example.com/not/tls").map_err(|e| e.to_string())?.is_some() {
        return Err("package path not checked".into());
    }
    Ok(())
}

/// DWARF: member offsets (Go names types by full package path) and runtime type addresses.
fn check_dwarf(facts: &DwarfFacts, layout: &ConnLayout, types: u64) -> Result<(), String> {
    let member = |s: &str, m: &str| {
        facts.members.get(&(s.to_string(), m.to_string())).copied().ok_or(format!("DWARF lacks {s}.{m}"))
    };
    let dw = (
        member("crypto/tls.Conn", "conn")?,
        member("net.TCPConn", "conn")? + member("net.conn", "fd")?,
        member("net.netFD", "pfd")? + member("internal/poll.FD", "Sysfd")?,
    );
    if dw != (layout.tls_conn_conn, layout.net_conn_fd, layout.net_fd_sysfd) {
        return Err(format!("DWARF offsets {dw:?}, conn_layout {layout:?}"));
    }
    for (name, got) in [("*net.TCPConn", Some(layout.tcp_conn_type)), ("*net.UnixConn", layout.unix_conn_type)] {
        let raw = *facts.runtime_type.get(name).ok_or(format!("DWARF has no runtime type for {name}"))?;
        // An offset from runtime.types (in every fixture release, 1.15 to 1.27).
        let addr = types + raw;
        if Some(addr) != got {
            return Err(format!("DWARF runtime type of {name}: {raw:#x} → {addr:#x}, conn_layout {got:x?}"));
        }
    }
    Ok(())
}

#[test]
fn go1_15() {
    check_version("1.15");
}
#[test]
fn go1_19() {
    check_version("1.19");
}
#[test]
fn go1_21() {
    check_version("1.21");
}
#[test]
fn go1_22() {
    check_version("1.22");
}
#[test]
fn go1_23() {
    check_version("1.23");
}
#[test]
fn go1_24() {
    check_version("1.24");
}
#[test]
fn go1_25() {
    check_version("1.25");
}
#[test]
fn go1_26() {
    check_version("1.26");
}
#[test]
fn go1_27() {
    check_version("1.27");
}

#[test]
fn g_below_fs_stack_abi_only() {
    if skip_fixtures() {
        return;
    }
    for variant in ["exe", "pie", "exe-sw", "pie-strip", "cgo", "cgo-pie"] {
        let data = std::fs::read(fixture("1.15", variant, "tlsfixture", "amd64")).unwrap();
        let bin = GoBinary::parse(&data).unwrap();
        assert_eq!(types::g_below_fs(&bin), Some(8), "go1.15 {variant}");
    }
    for (version, arch) in [("1.19", "amd64"), ("1.27", "amd64"), ("1.19", "arm64")] {
        let data = std::fs::read(fixture(version, "exe", "tlsfixture", arch)).unwrap();
        let bin = GoBinary::parse(&data).unwrap();
        assert_eq!(types::g_below_fs(&bin), None, "go{version} {arch}: register ABI has g in a register");
    }
}

#[test]
fn no_crypto_tls_is_type_not_found() {
    if skip_fixtures() {
        return;
    }
    let data = std::fs::read(fixture("1.19", "exe", "notls", "amd64")).unwrap();
    let bin = GoBinary::parse(&data).unwrap();
    let err = types::conn_layout(&bin).unwrap_err();
    assert!(matches!(&err, Error::TypeNotFound(what) if what.contains("*tls.Conn")), "{err:?}");
}

/// Tiny xorshift generator (deterministic, no dependency).
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n.max(1) as u64) as usize
    }
}

/// Damaged type data and moduledata: errors or (rarely) answers, never panics or hangs.
#[test]
fn damaged_type_data_never_panics() {
    if skip_fixtures() {
        return;
    }
    for (version, variant, seed) in [("1.27", "pie-strip", 1u64), ("1.15", "exe", 2), ("1.21", "cgo-pie", 3)] {
        let data = std::fs::read(fixture(version, variant, "tlsfixture", "amd64")).unwrap();
        let bin = GoBinary::parse(&data).unwrap();
        let td = TypeData::load(&bin).unwrap();
        let layout = types::conn_layout(&bin).unwrap();
        // Hot spots: moduledata, the descriptors on the path, the whole type region.
        let tls = td.pointer_type("*tls.Conn", "crypto/tls").unwrap().unwrap();
        let spots: Vec<(u64, u64)> = vec![
            (td.moduledata(), 64 * 8),
            (layout.tcp_conn_type, 128),
            (td.elem(layout.tcp_conn_type).unwrap(), 128),
            (tls, 128),
            (td.elem(tls).unwrap(), 256),
            (td.types_range().0, td.types_range().1 - td.types_range().0),
        ];
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let start = Instant::now();
        let mut copy = data.clone();
        for case in 0..60 {
            copy.copy_from_slice(&data);
            let (vaddr, len) = spots[case % spots.len()];
            let off = bin.file_offset(vaddr).unwrap() as usize;
            for _ in 0..1 + rng.below(8) {
                let i = off + rng.below(len as usize);
                if let Some(b) = copy.get_mut(i) {
                    *b = match rng.below(3) {
                        0 => 0,
                        1 => 0xff,
                        _ => rng.below(256) as u8,
                    };
                }
            }
            if let Ok(b) = GoBinary::parse(&copy) {
                let _ = types::conn_layout(&b);
                let _ = types::g_below_fs(&b);
                if let Ok(t) = TypeData::load(&b) {
                    for &l in t.typelinks().iter().take(50) {
                        let _ = t.type_string(l);
                    }
                }
            }
        }
        assert!(start.elapsed() < Duration::from_secs(60), "go{version} {variant}: too slow");
        // Truncations: everything after a cut is gone.
        for cut in [td.types_range().0, td.moduledata() + 100, layout.tcp_conn_type + 20] {
            let at = bin.file_offset(cut).unwrap() as usize;
            if let Ok(b) = GoBinary::parse(&data[..at]) {
                let _ = types::conn_layout(&b);
            }
        }
    }
}

/// A Go 1.27 typelink walk that loses its way (here: an invalid kind in the first
/// descriptor) leaves no typelinks, and the lookups fall back to scanning the type data.
#[test]
fn lost_walk_falls_back_to_scan() {
    if skip_fixtures() {
        return;
    }
    let data = std::fs::read(fixture("1.27", "exe-sw", "tlsfixture", "amd64")).unwrap();
    let bin = GoBinary::parse(&data).unwrap();
    let want = types::conn_layout(&bin).unwrap();
    let first = TypeData::load(&bin).unwrap().typelinks()[0];
    let mut copy = data.clone();
    copy[bin.file_offset(first + 23).unwrap() as usize] = 0; // kind: invalid
    let bin = GoBinary::parse(&copy).unwrap();
    assert!(TypeData::load(&bin).unwrap().typelinks().is_empty());
    assert_eq!(types::conn_layout(&bin).unwrap(), want);
}
