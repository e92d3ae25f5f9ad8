//! `--dry-run`: what would be attached, without BPF and without root.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on broken expectations

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;

use common::*;

#[test]
fn dry_run_as_nobody_on_a_stripped_pie() {
    let dir = TempDir::new("inspect");
    let binary = copy_binary(&fixture("1.27", "pie-strip", "tlsfixture"), &dir, "server");
    let tlstap = copy_binary(Path::new(TLSTAP), &dir, "tlstap");
    for p in [&dir.0, &binary, &tlstap] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"])
        .arg(&tlstap)
        .args(["gotls", "--dry-run", "-e"])
        .arg(&binary)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for line in [
        "go:       go1.27",
        "abi:      register",
        "pie:      yes",
        "symbols:  .gopclntab (stripped)",
        "conn:     tls.Conn.conn +0",
    ] {
        assert!(text.contains(line), "{line:?} in:\n{text}");
    }
    let probes = text.lines().filter(|l| l.starts_with("probe:")).count();
    assert!(probes >= 4, "write entry, read entry and read returns:\n{text}");
}

#[test]
fn dry_run_of_a_stack_abi_binary() {
    let out = Command::new(TLSTAP)
        .args(["gotls", "--dry-run", "-e"])
        .arg(fixture("1.15", "exe", "tlsfixture"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.contains("abi:      stack") && text.contains("go:       go1.15"), "{text}");
}

/// The analysis of an arm64 binary (cross-built, stripped PIE) runs on any host: the offsets
/// --dry-run prints are the library's plan for that file.
#[test]
fn dry_run_of_an_arm64_binary_prints_the_plan() {
    let binary = fixture_for_arch("1.27", "pie-strip", "tlsfixture", "arm64");
    let out = Command::new(TLSTAP).args(["gotls", "--dry-run", "-e"]).arg(&binary).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("arch:     arm64") && text.contains("abi:      register"), "{text}");
    let data = std::fs::read(&binary).unwrap();
    let bin = goelf::GoBinary::parse(&data).unwrap();
    let plan = goelf::tls::plan(&bin).unwrap();
    let mut points = vec![&plan.write_entry, &plan.read_entry];
    points.extend(&plan.read_returns);
    points.extend(&plan.keylog_entry);
    // It serves HTTP/2 (net/http): the --h2-hooks points follow.
    let h2 = goelf::h2::plan(&bin).unwrap();
    assert!(!h2.is_empty(), "net/http's HTTP/2 is linked");
    points.extend(&h2.sent_field_entries);
    points.extend(&h2.received_block_returns);
    let printed: Vec<&str> = text.lines().filter(|l| l.starts_with("probe:")).collect();
    assert_eq!(printed.len(), points.len(), "{text}");
    for (line, p) in printed.iter().zip(points) {
        let want = format!("vaddr {:#x} file offset {:#x}", p.vaddr, p.file_offset);
        assert!(line.ends_with(&want), "{line:?} should end with {want:?}");
    }
}

/// `--dry-run` says how Reads are captured per Go release: at Read's copy into b on amd64 (the
/// analysis proved its destination is b and c on the stack there), at the RETs alone or
/// through entry and RETs when asked (`--read-path`) or not proven (arm64), with the probes
/// listed to match.
#[test]
fn dry_run_says_how_reads_are_captured() {
    let dry_run = |binary: &std::path::Path, extra: &[&str]| {
        let out = Command::new(TLSTAP).args(["gotls", "--dry-run", "-e"]).arg(binary).args(extra).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let count = |text: &str, what: &str| text.lines().filter(|l| l.starts_with(&format!("probe:    {what}"))).count();
    for (version, variant) in [("1.15", "exe"), ("1.19", "exe"), ("1.27", "pie-strip")] {
        let binary = fixture(version, variant, "tlsfixture");
        let text = dry_run(&binary, &[]);
        assert!(text.contains("reads:    at the copy into b (1 probe hit per Read, on a CALL"), "go{version}:\n{text}");
        let reads = ["read copy", "read entry", "read return"].map(|what| count(&text, what));
        assert_eq!(reads, [1, 0, 0], "go{version}:\n{text}");
        // Writes at their stack check's branch (emulated), not their body start.
        assert_eq!([count(&text, "write check"), count(&text, "write entry")], [1, 0], "go{version}:\n{text}");
        let text = dry_run(&binary, &["--read-path", "return"]);
        assert!(
            text.contains("reads:    at return alone (1 probe hit per Read, single-stepped: --read-path)"),
            "{text}"
        );
        let reads = ["read copy", "read entry", "read return"].map(|what| count(&text, what));
        assert!(reads[0] == 0 && reads[1] == 0 && reads[2] >= 1, "go{version}:\n{text}");
        let text = dry_run(&binary, &["--read-path", "entry"]);
        assert!(text.contains("reads:    entry and return (2 probe hits per Read: --read-path)"), "{text}");
        let reads = ["read copy", "read entry", "read return"].map(|what| count(&text, what));
        assert!(reads[0] == 0 && reads[1] == 1 && reads[2] >= 1, "go{version}:\n{text}");
        assert_eq!([count(&text, "write check"), count(&text, "write entry")], [0, 1], "go{version}:\n{text}");
    }
    let text = dry_run(&fixture_for_arch("1.27", "pie", "tlsfixture", "arm64"), &[]);
    assert!(text.contains("reads:    entry and return (2 probe hits per Read: arm64 code is not analysed"), "{text}");
    assert_eq!(count(&text, "read entry"), 1, "{text}");
}
