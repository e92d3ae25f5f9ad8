//! Shared test support: locating Go fixtures through scripts/fixture.sh, and independent
//! oracles (section-header address mapping, instruction decoding) to check goelf against.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // shared by several test crates

pub mod alloc;
pub mod synth;

use std::path::PathBuf;
use std::process::Command;

/// Every Go version in the fixture matrix.
pub const VERSIONS: [&str; 9] = ["1.15", "1.19", "1.21", "1.22", "1.23", "1.24", "1.25", "1.26", "1.27"];

/// True when the caller explicitly asked to skip fixture-based tests.
pub fn skip_fixtures() -> bool {
    std::env::var("TLSTAP_SKIP_FIXTURES").is_ok_and(|v| v == "1")
}

/// The repository root (two levels above this crate).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Builds (or finds cached) a fixture with scripts/fixture.sh and returns its path.
/// Panics with the script's own message when it cannot: a missing fixture is a failure,
/// not a skip (set TLSTAP_SKIP_FIXTURES=1 to skip on purpose; callers check that first).
pub fn fixture(version: &str, variant: &str, program: &str, arch: &str) -> PathBuf {
    let script = repo_root().join("scripts/fixture.sh");
    assert!(
        script.exists(),
        "fixture script {} is missing; set TLSTAP_SKIP_FIXTURES=1 to skip fixture tests on purpose",
        script.display()
    );
    let out = Command::new("bash")
        .arg(&script)
        .args([version, variant, program, arch])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "scripts/fixture.sh {version} {variant} {program} {arch} failed ({}): {}\n\
         (set TLSTAP_SKIP_FIXTURES=1 to skip fixture tests on purpose)",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(path.is_file(), "scripts/fixture.sh printed {path:?}, which is not a file");
    path
}

/// A GOROOT from scripts/go-toolchain.sh (panics with its message if unavailable).
pub fn goroot(version: &str) -> PathBuf {
    let out = Command::new("bash")
        .arg(repo_root().join("scripts/go-toolchain.sh"))
        .arg(version)
        .output()
        .expect("run scripts/go-toolchain.sh");
    assert!(out.status.success(), "go-toolchain.sh {version}: {}", String::from_utf8_lossy(&out.stderr));
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// Independent mapping of a virtual address to file bytes via the section headers (the
/// library maps through program headers).
pub fn bytes_via_sections(data: &[u8], vaddr: u64, len: usize) -> Option<&[u8]> {
    use object::{Object, ObjectSection};
    let file = object::File::parse(data).ok()?;
    for s in file.sections() {
        let (addr, size) = (s.address(), s.size());
        if addr != 0 && vaddr >= addr && vaddr + len as u64 <= addr + size {
            let (off, _) = s.file_range()?;
            let start = (off + (vaddr - addr)) as usize;
            return data.get(start..start + len);
        }
    }
    None
}

/// Instruction start addresses of `code` at `vaddr` (amd64, full linear sweep).
pub fn amd64_instruction_starts(code: &[u8], vaddr: u64) -> Vec<(u64, iced_x86::Mnemonic)> {
    let mut d = iced_x86::Decoder::with_ip(64, code, vaddr, iced_x86::DecoderOptions::NONE);
    let mut out = Vec::new();
    while d.can_decode() {
        let i = d.decode();
        out.push((i.ip(), i.mnemonic()));
    }
    out
}

/// The instruction word at `addr` decodes as an arm64 RET.
pub fn arm64_is_ret(word: &[u8]) -> bool {
    use yaxpeax_arch::Decoder;
    let mut r = yaxpeax_arch::U8Reader::new(word);
    matches!(
        yaxpeax_arm::armv8::a64::InstDecoder::default().decode(&mut r).map(|i| i.opcode),
        Ok(yaxpeax_arm::armv8::a64::Opcode::RET)
    )
}
