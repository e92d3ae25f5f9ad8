//! Compiles each BPF program (bpf/*.bpf.c listed in SOURCES) with clang for the target
//! architecture and generates its libbpf-rs skeleton (programs, maps and the Rust twins of
//! events.h's types) into OUT_DIR. Also compiles each for the other supported architecture, so
//! that a change that breaks the arm64 (or x86) build fails every build, not only a cross build
//! nobody runs.
#![allow(clippy::expect_used, clippy::unwrap_used)] // a build script reports failure by panicking

use std::env;
use std::path::PathBuf;
use std::process::Command;

use libbpf_cargo::SkeletonBuilder;

/// (source, skeleton name): the uprobe programs, and the TC packet capture of pcap mode.
const SOURCES: [(&str, &str); 2] = [("bpf/tlstap.bpf.c", "tlstap"), ("bpf/packets.bpf.c", "packets")];

fn main() {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let arch = match env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("x86_64") => "x86",
        Ok("aarch64") => "arm64",
        other => panic!("tlstap's BPF programs support x86_64 and aarch64, not {other:?}"),
    };
    // libbpf headers that match the libbpf linked in (vendored by libbpf-sys).
    let libbpf_include = env::var("DEP_BPF_INCLUDE").expect("libbpf-sys exports its headers");
    let clang_args = |arch: &str| {
        vec![
            format!("-D__TARGET_ARCH_{arch}"),
            format!("-I{libbpf_include}"),
            "-Ibpf".to_string(),
            "-O2".to_string(),
            "-g".to_string(),
            "-Wall".to_string(),
            "-Werror".to_string(),
        ]
    };

    let other = if arch == "x86" { "arm64" } else { "x86" };
    for (source, name) in SOURCES {
        SkeletonBuilder::new()
            .source(source)
            .clang_args(clang_args(arch))
            .build_and_generate(out_dir.join(format!("{name}.skel.rs")))
            .unwrap_or_else(|err| panic!("building {source}: {err:#}"));

        let status = Command::new("clang")
            .args(["-target", "bpf", "-c", source, "-o"])
            .arg(out_dir.join(format!("{name}.{other}.bpf.o")))
            .args(clang_args(other))
            .status()
            .expect("running clang");
        assert!(status.success(), "{source} does not compile for {other}");
    }

    println!("cargo:rerun-if-changed=bpf");
}
