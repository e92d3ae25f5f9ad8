//! Writes the crafted seeds of the goelf fuzz target into a directory (scripts/fuzz.sh):
//! small Go-like files that parse and plan (every pclntab layout, with and without
//! `.symtab`), and the hostile shapes of tests/crafted.rs at fuzz-friendly sizes (an INT3
//! Read, a symbol claiming 4 GB, duplicate symbols, many RELA and RELR relocations).
//! Generated, not committed: the builder is the tests' own (included by path).
//!
//! Usage: `cargo run -p goelf --example fuzz-seeds -- DIR`
#![allow(clippy::unwrap_used, clippy::expect_used)] // tool code: a failure stops it

#[path = "../tests/common/synth.rs"]
mod synth;

use goelf::{tls, PclntabVersion};
use synth::{Synth, BASE, CODE};

fn pair(read: Vec<u8>, symbols: bool) -> Synth {
    let mut s = Synth::new(vec![
        ("main.main".into(), vec![0xe8, 0, 0, 0, 0, 0xc3]), // call next; ret
        (tls::CONN_WRITE.into(), vec![0x31, 0xc0, 0xc3]),
        (tls::CONN_READ.into(), read),
    ]);
    if symbols {
        s.symbols = (0..s.funcs.len()).map(|i| (s.funcs[i].0.clone(), s.entry(i), s.funcs[i].1.len() as u64)).collect();
    }
    s
}

fn main() {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).expect("usage: fuzz-seeds DIR"));
    std::fs::create_dir_all(&dir).unwrap();
    let read = vec![0x48, 0x85, 0xc0, 0x74, 0x01, 0xc3, 0x90, 0xc3]; // test; je +1; ret; nop; ret
    let mut seeds: Vec<(&str, Synth)> = Vec::new();
    for (name, version, text_start) in [
        ("go12", PclntabVersion::V12, 0),
        ("go116", PclntabVersion::V116, 0),
        ("go118", PclntabVersion::V118, BASE + CODE as u64),
        ("go120", PclntabVersion::V120, BASE + CODE as u64),
    ] {
        let mut s = pair(read.clone(), false);
        s.pclntab = Some((version, text_start));
        seeds.push((name, s));
    }
    let mut s = pair(read.clone(), false);
    s.pclntab = Some((PclntabVersion::V120, 0));
    s.moduledata = true;
    seeds.push(("go126-moduledata", s));
    seeds.push(("symtab", pair(read.clone(), true)));
    let mut s = pair(vec![0xcc; 8 << 10], true);
    s.go_version = "go1.21.13".into();
    seeds.push(("int3-read", s));
    let mut s = pair(read.clone(), true);
    s.symbols[2].2 = 4 << 30;
    seeds.push(("claims-4gb", s));
    let mut s = pair(vec![0x90; 4096], true);
    let at = s.entry(2);
    s.symbols.extend((0..32).map(|k| (tls::CONN_READ.to_string(), at + k, 4000 + k)));
    seeds.push(("duplicates", s));
    let mut s = pair(read.clone(), false);
    s.moduledata = true;
    s.relocs = 500;
    s.relr_words = 64;
    seeds.push(("relocations", s));
    for (name, s) in seeds {
        std::fs::write(dir.join(format!("crafted-{name}")), s.build()).unwrap();
    }
}
