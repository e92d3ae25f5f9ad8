//! No panics on damaged input: truncations and byte mutations of real fixtures, aimed at
//! the structures goelf reads (ELF/program/section headers, build info, pclntab header and
//! tables, moduledata, the code of crypto/tls.(*Conn).Read), with a deterministic PRNG.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test/tool code: panics are failures

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use common::*;
use goelf::{tls, GoBinary, SymbolSource};

/// xorshift64*: deterministic, seedable, no dependencies.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// What a caller does with a parsed binary (`deep`: every other query too).
fn exercise(data: &[u8], deep: bool) {
    let Ok(bin) = GoBinary::parse(data) else {
        return;
    };
    let _ = tls::plan(&bin);
    if deep {
        let _ = bin.functions_named(&["runtime.main", "main.main"]);
        if let Some(f) = bin.function(tls::CONN_READ) {
            let _ = bin.ret_addresses(&f);
            let _ = bin.file_offset(f.vaddr.wrapping_add(f.size));
        }
        for source in [SymbolSource::Symtab, SymbolSource::Pclntab] {
            for f in bin.functions_from(source).iter().take(2000) {
                let _ = bin.code_file_offset(f.vaddr);
            }
        }
    }
}

/// Byte ranges worth mutating: (start, len) in file offsets.
fn hot_regions(data: &[u8]) -> Vec<(usize, usize)> {
    let mut regions = vec![(0, 0x400.min(data.len()))];
    let bin = GoBinary::parse(data).expect("fixture parses");
    let info = bin.info();
    let mut add = |vaddr: Option<u64>, len: usize| {
        if let Some(off) = vaddr.and_then(|v| bin.file_offset(v).ok()) {
            regions.push((off as usize, len));
        }
    };
    add(info.pclntab_vaddr, 0x400);
    add(info.pclntab_vaddr.map(|v| v + 0x400), 0x4000);
    if let Some(f) = bin.function(tls::CONN_READ) {
        add(Some(f.vaddr), f.size as usize);
    }
    use object::{Object, ObjectSection};
    let file = object::File::parse(data).unwrap();
    for name in [".go.buildinfo", ".go.module", ".noptrdata", ".shstrtab", ".rela", ".dynamic"] {
        if let Some((off, size)) = file.section_by_name(name).and_then(|s| s.file_range()) {
            regions.push((off as usize, (size as usize).min(0x800)));
        }
    }
    let shoff = u64::from_le_bytes(data[0x28..0x30].try_into().unwrap()) as usize;
    if shoff < data.len() {
        regions.push((shoff, data.len() - shoff));
    }
    regions.retain(|&(s, l)| l > 0 && s + l <= data.len());
    regions
}

fn fuzz_fixture(version: &str, variant: &str, arch: &str, seed: u64, cases: usize, budget: Duration) {
    let path = fixture(version, variant, "tlsfixture", arch);
    let mut data = std::fs::read(&path).unwrap();
    let regions = hot_regions(&data);
    let mut rng = Rng(seed);
    let start = Instant::now();
    let mut failures = Vec::new();

    // Truncations: every length in the headers, then random ones.
    let len = data.len();
    let cuts: Vec<usize> = (0..0x140).chain((0..200).map(|_| rng.below(len))).collect();
    for cut in cuts {
        if catch_unwind(AssertUnwindSafe(|| exercise(&data[..cut], false))).is_err() {
            failures.push(format!("truncate to {cut}"));
        }
    }

    let truncated_in = start.elapsed();
    // Mutations: 1–4 bytes, 80% inside a hot region, restored after each case.
    let mut done = 0;
    while done < cases && start.elapsed() < budget {
        let (rs, rl) = if rng.below(5) == 0 { (0, len) } else { regions[rng.below(regions.len())] };
        let edits: Vec<(usize, u8)> = (0..1 + rng.below(4))
            .map(|_| {
                let at = rs + rng.below(rl);
                let value = match rng.below(4) {
                    0 => 0,
                    1 => 0xff,
                    2 => data[at] ^ (1 << rng.below(8)),
                    _ => rng.next() as u8,
                };
                (at, value)
            })
            .collect();
        let saved: Vec<u8> = edits.iter().map(|&(at, _)| data[at]).collect();
        for &(at, v) in &edits {
            data[at] = v;
        }
        let deep = done % 50 == 0;
        if catch_unwind(AssertUnwindSafe(|| exercise(&data, deep))).is_err() {
            failures.push(format!("seed {seed:#x} case {done}: edits {edits:x?}"));
        }
        for (&(at, _), &old) in edits.iter().zip(&saved).rev() {
            data[at] = old;
        }
        done += 1;
    }
    eprintln!(
        "{}: truncations in {truncated_in:?}, {done} mutations in {:?}",
        path.display(),
        start.elapsed() - truncated_in
    );
    assert!(done >= cases / 4, "only {done} mutation cases ran in the time budget");
    assert!(failures.is_empty(), "{} panics:\n{}", failures.len(), failures.join("\n"));
}

// Case counts are sized for an unoptimised test build (~4–10 ms per case): about 3,300
// mutations and 1,300 truncations in all, each test bounded by a time budget.

#[test]
fn mutated_go1_27_stripped_exe() {
    if skip_fixtures() {
        return;
    }
    fuzz_fixture("1.27", "exe-sw", "amd64", 0x5eed_0001, 2000, Duration::from_secs(12));
}

#[test]
fn mutated_go1_27_stripped_pie() {
    if skip_fixtures() {
        return;
    }
    fuzz_fixture("1.27", "pie-strip", "amd64", 0x5eed_0002, 500, Duration::from_secs(6));
}

#[test]
fn mutated_go1_15_and_arm64() {
    if skip_fixtures() {
        return;
    }
    fuzz_fixture("1.15", "exe", "amd64", 0x5eed_0003, 400, Duration::from_secs(4));
    fuzz_fixture("1.21", "pie-strip", "arm64", 0x5eed_0004, 400, Duration::from_secs(4));
}
