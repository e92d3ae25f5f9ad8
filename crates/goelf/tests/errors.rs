//! Inputs goelf must refuse, each with the right reason: not ELF, truncated, 32-bit, other
//! architectures, C programs, gccgo-like objects, c-shared libraries, Go without crypto/tls.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test/tool code: panics are failures

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;
use goelf::{tls, Error, GoBinary};

fn parse_err(data: &[u8]) -> Error {
    GoBinary::parse(data).expect_err("parse should fail")
}

/// A minimal 64-byte ELF header with the given class and machine (little-endian).
fn elf_header(class: u8, machine: u16) -> Vec<u8> {
    let mut h = vec![0u8; 64];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = class;
    h[5] = 1; // little-endian
    h[6] = 1; // version
    h[16] = 2; // ET_EXEC
    h[18..20].copy_from_slice(&machine.to_le_bytes());
    h
}

#[test]
fn not_elf() {
    for data in [&b""[..], b"\x7fEL", b"#!/bin/sh\necho hi\n", &[0u8; 4096]] {
        assert_eq!(parse_err(data), Error::NotElf, "{data:?}");
    }
}

#[test]
fn crafted_32_bit_and_foreign_arch_headers() {
    assert!(matches!(parse_err(&elf_header(1, 3)), Error::Bits32 { .. }));
    assert!(matches!(parse_err(&elf_header(1, 40)), Error::Bits32 { .. }));
    let e = parse_err(&elf_header(2, 243));
    assert!(matches!(&e, Error::UnsupportedArch(name) if name.contains("riscv64")), "{e}");
    assert!(matches!(parse_err(&elf_header(2, 21)), Error::UnsupportedArch(_)));
    // A truncated header after a valid class/machine is malformed, not a panic.
    assert!(matches!(parse_err(&elf_header(2, 62)[..40]), Error::Malformed(_)));
}

#[test]
fn truncated_go_binary() {
    if skip_fixtures() {
        return;
    }
    let data = std::fs::read(fixture("1.27", "exe-sw", "tlsfixture", "amd64")).unwrap();
    for len in [20, 64, 100, 0x200, 0x1000, data.len() / 3, data.len() / 2] {
        let e = parse_err(&data[..len]);
        assert!(matches!(e, Error::Malformed(_) | Error::NotGo(_)), "len {len}: {e:?}");
    }
}

#[test]
fn go_without_crypto_tls() {
    if skip_fixtures() {
        return;
    }
    for version in ["1.15", "1.27"] {
        let data = std::fs::read(fixture(version, "exe", "notls", "amd64")).unwrap();
        let bin = GoBinary::parse(&data).unwrap();
        let e = tls::plan(&bin).unwrap_err();
        assert!(
            matches!(&e, Error::NoCryptoTls { missing, version: v } if *missing == tls::CONN_WRITE && v.starts_with(&format!("go{version}"))),
            "{e:?}"
        );
    }
}

/// Builds testdata/go/notls for another GOARCH with the Go 1.27 toolchain.
fn go_build_notls(goarch: &str) -> PathBuf {
    let root = goroot("1.27");
    let dir = tempdir(&format!("notls-{goarch}"));
    let out = dir.join("notls");
    let src = repo_root().join("testdata/go/notls/main.go");
    let cache = std::env::var("HOME").map(|h| PathBuf::from(h).join(".cache/tlstap/gocache/goelf-tests")).unwrap();
    run(Command::new(root.join("bin/go"))
        .args(["build", "-trimpath", "-o"])
        .arg(&out)
        .arg(&src)
        .env("GOROOT", &root)
        .env("GOARCH", goarch)
        .env("GOOS", "linux")
        .env("CGO_ENABLED", "0")
        .env("GO111MODULE", "off")
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "")
        .env("GOCACHE", cache));
    out
}

#[test]
fn real_32_bit_and_riscv64_go_binaries() {
    if skip_fixtures() {
        return;
    }
    let data = std::fs::read(go_build_notls("386")).unwrap();
    assert!(matches!(parse_err(&data), Error::Bits32 { .. }));
    let data = std::fs::read(go_build_notls("riscv64")).unwrap();
    assert!(matches!(parse_err(&data), Error::UnsupportedArch(_)));
}

fn cc(name: &str, source: &str, extra: &[&str]) -> Vec<u8> {
    let dir = tempdir(name);
    let c = dir.join("prog.c");
    std::fs::write(&c, source).unwrap();
    let out = dir.join("prog");
    run(Command::new("cc").arg("-O1").args(extra).arg("-o").arg(&out).arg(&c));
    std::fs::read(out).unwrap()
}

#[test]
fn c_program_is_not_go() {
    let data = cc("c-prog", "#include <stdio.h>\nint main(void){puts(\"hi\");return 0;}\n", &[]);
    assert!(matches!(parse_err(&data), Error::NotGo(_)));
    let stripped = cc("c-prog-s", "int main(void){return 0;}\n", &["-s"]);
    assert!(matches!(parse_err(&stripped), Error::NotGo(_)));
}

#[test]
fn gccgo_markers() {
    // gccgo puts export data in a .go_export section.
    let src = "__attribute__((section(\".go_export\"))) const char exp[] = \"v3;\\n\";\n\
               int main(void){return exp[0];}\n";
    let e = parse_err(&cc("gccgo-export", src, &[]));
    assert!(matches!(&e, Error::Gccgo(why) if why.contains(".go_export")), "{e:?}");
    // gccgo runtime helpers are named __go_*.
    let src = "void __go_runtime_error(void){}\nint main(void){__go_runtime_error();return 0;}\n";
    let e = parse_err(&cc("gccgo-syms", src, &[]));
    assert!(matches!(&e, Error::Gccgo(why) if why.contains("__go_")), "{e:?}");
}

#[test]
fn c_shared_library() {
    if skip_fixtures() {
        return;
    }
    let root = goroot("1.27");
    let dir = tempdir("cshared");
    let src = dir.join("lib.go");
    std::fs::write(&src, "package main\n\nimport \"C\"\nimport \"crypto/tls\"\n\n//export Dial\nfunc Dial() { _, _ = tls.Dial(\"tcp\", \"x:1\", nil) }\n\nfunc main() {}\n").unwrap();
    let out = dir.join("lib.so");
    let cache = std::env::var("HOME").map(|h| PathBuf::from(h).join(".cache/tlstap/gocache/goelf-tests")).unwrap();
    run(Command::new(root.join("bin/go"))
        .args(["build", "-buildmode=c-shared", "-o"])
        .arg(&out)
        .arg(&src)
        .env("GOROOT", &root)
        .env("CGO_ENABLED", "1")
        .env("GO111MODULE", "off")
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "")
        .env("GOCACHE", cache));
    let e = parse_err(&std::fs::read(out).unwrap());
    assert!(matches!(&e, Error::CShared(why) if why.contains("c-shared")), "{e:?}");
}

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("goelf-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}
