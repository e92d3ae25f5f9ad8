//! The fixture matrix: real Go binaries of every supported version, build mode, stripping
//! level and architecture, checked against independent oracles (section headers, a full
//! instruction sweep, the unstripped twin's .symtab).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test/tool code: panics are failures

mod common;

use std::collections::HashMap;

use common::*;
use goelf::{tls, Abi, Arch, Function, GoBinary, SymbolSource, TextStartSource};

/// (arch, variant, unstripped twin) built for every version.
/// scripts/fixtures-matrix.sh builds the same list up front.
const BUILDS: [(&str, &str, Option<&str>); 12] = [
    ("amd64", "exe", None),
    ("amd64", "pie", None),
    ("amd64", "exe-sw", Some("exe")),
    ("amd64", "pie-strip", Some("pie")),
    ("amd64", "exe-objcopy", Some("exe")),
    ("amd64", "cgo", None),
    ("amd64", "cgo-pie", None),
    // External linking puts C code before runtime.text: a stripped binary's function table
    // base must come from the binary's own data (Go 1.26+ zero pcHeader.textStart).
    ("amd64", "cgo-strip", Some("cgo")),
    ("amd64", "cgo-pie-strip", Some("cgo-pie")),
    ("arm64", "exe", None),
    ("arm64", "pie", None),
    ("arm64", "pie-strip", Some("pie")),
];

const TLS_FUNCS: [&str; 4] =
    [tls::CONN_WRITE, tls::CONN_READ, tls::CONFIG_WRITE_KEY_LOG, tls::CONN_WRITE_RECORD_LOCKED];

fn check_version(version: &str) {
    if skip_fixtures() {
        eprintln!("TLSTAP_SKIP_FIXTURES=1: skipping the go{version} fixture matrix");
        return;
    }
    let mut failures = Vec::new();
    for (arch, variant, twin) in BUILDS {
        let path = fixture(version, variant, "tlsfixture", arch);
        let data = std::fs::read(&path).expect("read fixture");
        let twin_data = twin.map(|t| std::fs::read(fixture(version, t, "tlsfixture", arch)).expect("read twin"));
        let label = format!("go{version} {arch} {variant} ({})", path.display());
        if let Err(e) = check_binary(version, arch, variant, &data, twin_data.as_deref()) {
            failures.push(format!("{label}: {e}"));
        }
    }
    assert!(failures.is_empty(), "{} failure(s):\n{}", failures.len(), failures.join("\n"));
}

fn check_binary(version: &str, arch: &str, variant: &str, data: &[u8], twin: Option<&[u8]>) -> Result<(), String> {
    let bin = GoBinary::parse(data).map_err(|e| format!("parse: {e}"))?;
    let info = bin.info();
    let minor: u32 = version.trim_start_matches("1.").parse().unwrap();
    let want_arch = if arch == "amd64" { Arch::Amd64 } else { Arch::Arm64 };
    let want_abi = match want_arch {
        Arch::Amd64 if minor >= 17 => Abi::Register,
        Arch::Arm64 if minor >= 18 => Abi::Register,
        _ => Abi::Stack,
    };
    let stripped = variant.ends_with("-sw") || variant.ends_with("-strip") || variant.ends_with("-objcopy");
    let checks = [
        ("major", info.go_version.major == 1),
        ("minor", info.go_version.minor == minor),
        ("raw version", info.go_version.raw.starts_with(&format!("go{version}"))),
        ("arch", info.arch == want_arch),
        ("abi", info.abi == want_abi),
        ("pie", info.pie == variant.contains("pie")),
        ("has_symtab", info.has_symtab != stripped),
        ("symbol source", info.symbol_source == if stripped { SymbolSource::Pclntab } else { SymbolSource::Symtab }),
        ("pclntab found", info.pclntab_version.is_some()),
        // Where the function table's base came from: each release's own record of it, never a
        // fallback (the .text section is wrong under external linking).
        (
            "text start source",
            info.text_start_source
                == Some(match minor {
                    ..18 => TextStartSource::AbsoluteEntries,
                    18..=25 => TextStartSource::PcHeader,
                    _ => TextStartSource::Moduledata,
                }),
        ),
    ];
    for (what, ok) in checks {
        if !ok {
            return Err(format!("{what} wrong: {info:?}"));
        }
    }
    if minor >= 18 && info.build_settings.iter().all(|(k, _)| k != "GOARCH") {
        return Err(format!("no GOARCH build setting: {:?}", info.build_settings));
    }

    let plan = tls::plan(&bin).map_err(|e| format!("plan: {e}"))?;
    let read = bin.function(tls::CONN_READ).ok_or("Read vanished")?;
    if plan.keylog_entry.is_none() || plan.write_record_entry.is_none() {
        return Err("writeKeyLog / writeRecordLocked not found".into());
    }
    check_returns(&bin, want_arch, &read, data, &plan.read_returns)?;
    // Every amd64 release keeps Read's c and b.ptr in their stack words at every RET (the
    // register ABI spills them in the entry block), and copies the plaintext into b with one
    // call of runtime.memmove: one emulated probe hit per Read. arm64 is not analysed for it.
    match (&plan.read_capture, want_arch) {
        (tls::ReadCapture::AtCopy { site, depth, returns_proven: true }, Arch::Amd64) => {
            let memmove = bin.function("runtime.memmove").ok_or("no runtime.memmove")?;
            let call = bin.code(&read).map_err(|e| e.to_string())?;
            let at = (site.vaddr - read.vaddr) as usize;
            // An E8 call whose target is memmove, at a decoded instruction start (a RET check's
            // sweep above decoded the same body).
            let rel = i32::from_le_bytes(call[at + 1..at + 5].try_into().unwrap());
            let target = site.vaddr.wrapping_add(5).wrapping_add_signed(i64::from(rel));
            if call[at] != 0xe8 || target != memmove.vaddr {
                return Err(format!("the copy site {:#x} is no call of runtime.memmove", site.vaddr));
            }
            if *depth == 0 || depth % 8 != 0 {
                return Err(format!("copy depth {depth}"));
            }
        }
        (tls::ReadCapture::EntryAndReturn { .. }, Arch::Arm64) => {}
        (other, _) => return Err(format!("Read captured {other:?}")),
    }
    // Write's stack check ends in a JBE on amd64, just before the body start.
    match (&plan.write_check, want_arch) {
        (Some(check), Arch::Amd64) => {
            let write = bin.function(tls::CONN_WRITE).ok_or("Write vanished")?;
            let code = bin.code(&write).map_err(|e| e.to_string())?;
            let at = (check.vaddr - write.vaddr) as usize;
            // JBE rel8 (76) or rel32 (0F 86), the body start right after it.
            let len = match code.get(at..at + 2) {
                Some([0x76, _]) => 2,
                Some([0x0f, 0x86]) => 6,
                _ => return Err(format!("Write's check {:#x} is no JBE", check.vaddr)),
            };
            if check.vaddr + len != plan.write_entry.vaddr {
                return Err(format!("Write's check {:#x} does not end at the body start", check.vaddr));
            }
        }
        (None, Arch::Arm64) => {}
        (other, _) => return Err(format!("Write's check {other:?}")),
    }
    let entries = [Some(&plan.write_entry), Some(&plan.read_entry), plan.keylog_entry.as_ref()];
    for entry in entries.into_iter().flatten() {
        check_entry(&bin, want_arch, data, entry)?;
    }
    let mut points = vec![&plan.write_entry, &plan.read_entry];
    points.extend(&plan.read_returns);
    points.extend(plan.keylog_entry.iter().chain(&plan.write_record_entry));
    for p in points {
        let off = p.file_offset as usize;
        let want = bytes_via_sections(data, p.vaddr, 16).ok_or(format!("{:#x} not in a section", p.vaddr))?;
        if data.get(off..off + 16) != Some(want) {
            return Err(format!("{} {:#x}: file offset {off:#x} holds other bytes", p.symbol, p.vaddr));
        }
    }

    if stripped {
        let twin = GoBinary::parse(twin.ok_or("no twin")?).map_err(|e| format!("twin: {e}"))?;
        let ours = bin.functions_named(&TLS_FUNCS);
        let theirs = twin.functions_named_from(SymbolSource::Symtab, &TLS_FUNCS);
        if ours != theirs {
            return Err(format!("stripped pclntab {ours:?} != twin symtab {theirs:?}"));
        }
    } else {
        compare_sources(&bin)?;
    }
    Ok(())
}

/// Every RET reported is a RET at an instruction start inside Read, and none is missed.
fn check_returns(
    bin: &GoBinary,
    arch: Arch,
    f: &Function,
    data: &[u8],
    rets: &[tls::ProbePoint],
) -> Result<(), String> {
    let end = f.vaddr + f.size;
    let addrs: Vec<u64> = rets.iter().map(|r| r.vaddr).collect();
    if addrs.is_empty() || addrs.iter().any(|&a| a < f.vaddr || a >= end) {
        return Err(format!("RETs {addrs:x?} outside {:#x}..{end:#x}", f.vaddr));
    }
    let code = bytes_via_sections(data, f.vaddr, f.size as usize).ok_or("Read code not in a section")?;
    let want: Vec<u64> = match arch {
        Arch::Amd64 => {
            let starts = amd64_instruction_starts(code, f.vaddr);
            if starts.iter().any(|&(_, m)| m == iced_x86::Mnemonic::INVALID) {
                return Err("Read does not decode cleanly".into());
            }
            starts.iter().filter(|&&(_, m)| m == iced_x86::Mnemonic::Ret).map(|&(a, _)| a).collect()
        }
        Arch::Arm64 => (0..code.len() / 4)
            .filter(|i| {
                let word = &code[i * 4..i * 4 + 4];
                // Two readings that must agree: the decoder's, and the encoding of RET Xn
                // (1101011001011111000000nnnnn00000) read off the word by hand.
                let raw = u32::from_le_bytes(word.try_into().unwrap()) & 0xffff_fc1f == 0xd65f_0000;
                assert_eq!(raw, arm64_is_ret(word), "{:#x}", f.vaddr + 4 * *i as u64);
                raw
            })
            .map(|i| f.vaddr + 4 * i as u64)
            .collect(),
    };
    if want != addrs {
        return Err(format!("RETs {addrs:x?}, independent sweep finds {want:x?}"));
    }
    if bin.ret_addresses(f).map_err(|e| e.to_string())? != addrs {
        return Err("ret_addresses disagrees with the plan".into());
    }
    Ok(())
}

/// An entry probe lies inside its function, on an instruction boundary of a full decode of
/// the function (attaching anywhere else corrupts the target), past the first instruction
/// when the function starts with a stack check (the first runs again after a stack growth).
fn check_entry(bin: &GoBinary, arch: Arch, data: &[u8], p: &tls::ProbePoint) -> Result<(), String> {
    let f = bin.function(p.symbol).ok_or(format!("{} vanished", p.symbol))?;
    if p.vaddr < f.vaddr || p.vaddr >= f.vaddr + f.size {
        return Err(format!("{} entry {:#x} outside {:#x}+{:#x}", p.symbol, p.vaddr, f.vaddr, f.size));
    }
    let code = bytes_via_sections(data, f.vaddr, f.size as usize).ok_or("code not in a section")?;
    let on_boundary = match arch {
        Arch::Amd64 => amd64_instruction_starts(code, f.vaddr).iter().any(|&(a, _)| a == p.vaddr),
        Arch::Arm64 => (p.vaddr - f.vaddr) % 4 == 0,
    };
    if !on_boundary {
        return Err(format!("{} entry {:#x} is not an instruction start", p.symbol, p.vaddr));
    }
    // Every crypto/tls function of these fixtures grows its stack: none starts at instruction 0.
    if p.vaddr == f.vaddr {
        return Err(format!("{} entry at the first instruction, before the stack check", p.symbol));
    }
    Ok(())
}

/// On an unstripped binary, the pclntab answers what .symtab answers.
fn compare_sources(bin: &GoBinary) -> Result<(), String> {
    let from_symtab = bin.functions_named_from(SymbolSource::Symtab, &TLS_FUNCS);
    let from_pclntab = bin.functions_named_from(SymbolSource::Pclntab, &TLS_FUNCS);
    if from_symtab != from_pclntab || from_symtab.iter().any(Option::is_none) {
        return Err(format!("crypto/tls: symtab {from_symtab:?} != pclntab {from_pclntab:?}"));
    }
    let mut symtab: HashMap<String, Vec<(u64, u64)>> = HashMap::new();
    for f in bin.functions_from(SymbolSource::Symtab) {
        // Spelling differences that are the linker's, not goelf's: old symtabs write "·" as
        // ".", and some pclntabs shorten generic instantiations to "F[...]".
        let name = f.name.replace('·', ".");
        let short = shorten_type_args(&name);
        if short != name {
            symtab.entry(short).or_default().push((f.vaddr, f.size));
        }
        symtab.entry(name).or_default().push((f.vaddr, f.size));
    }
    let pcln = bin.functions_from(SymbolSource::Pclntab);
    if pcln.len() < 1000 {
        return Err(format!("only {} pclntab functions", pcln.len()));
    }
    let step = pcln.len() / 1000;
    let mut mismatches = Vec::new();
    // "go:" names are linker markers (e.g. go:textfipsstart) without pc tables.
    for f in pcln.iter().filter(|f| !f.name.starts_with("go:")).step_by(step).take(1000) {
        let ok = symtab.get(&f.name.replace('·', ".")).is_some_and(|v| v.contains(&(f.vaddr, f.size)));
        if !ok {
            mismatches.push(format!("{} {:#x}+{:#x} vs symtab {:x?}", f.name, f.vaddr, f.size, symtab.get(&f.name)));
        }
    }
    if !mismatches.is_empty() {
        return Err(format!(
            "{} of 1000 sampled functions differ, e.g. {:?}",
            mismatches.len(),
            &mismatches[..mismatches.len().min(5)]
        ));
    }
    Ok(())
}

/// Replaces every top-level bracketed type-argument list with "[...]".
fn shorten_type_args(name: &str) -> String {
    let mut out = String::new();
    let mut depth = 0;
    for c in name.chars() {
        match c {
            '[' => {
                if depth == 0 {
                    out.push_str("[...]");
                }
                depth += 1;
            }
            ']' if depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
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
