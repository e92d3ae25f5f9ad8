//! Hostile files built to make the analysis slow or large (issue 15): duplicate symbols,
//! code sizes the file does not hold or that exceed any Go function, bodies of padding, many
//! relocations. Each must end quickly with an answer or an error, never a panic. The same
//! shapes seed the fuzzer (examples/fuzz-seeds.rs).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: panics are failures

mod common;

use common::synth::Synth;
use goelf::{h2, tls, types, Error, GoBinary, SymbolSource};

// Counts each test's allocations, for the tests that bound memory.
#[global_allocator]
static ALLOC: common::alloc::Counting = common::alloc::Counting;

const NOP: u8 = 0x90;

/// Write (a RET) and Read (`body` then a RET), in the function table and, if `symbols`,
/// in `.symtab` too.
fn tls_pair(body: Vec<u8>, symbols: bool) -> Synth {
    let mut read = body;
    read.push(0xc3);
    let mut s = Synth::new(vec![(tls::CONN_WRITE.into(), vec![0xc3]), (tls::CONN_READ.into(), read)]);
    if symbols {
        s.symbols = vec![
            (tls::CONN_WRITE.into(), s.entry(0), 1),
            (tls::CONN_READ.into(), s.entry(1), s.funcs[1].1.len() as u64),
        ];
    }
    s
}

/// Everything tlstap asks of a binary (crates/tlstap/src/target.rs).
fn analyse(data: &[u8]) -> Result<tls::TlsPlan, Error> {
    let bin = GoBinary::parse(data)?;
    let _ = types::conn_layout(&bin);
    let _ = h2::plan(&bin);
    let _ = types::g_below_fs(&bin);
    tls::plan(&bin)
}

#[test]
fn the_synthetic_pair_is_planned_from_either_source() {
    for symbols in [false, true] {
        let s = tls_pair(vec![NOP; 3], symbols);
        let plan = analyse(&s.build()).unwrap();
        assert_eq!(plan.read_returns.iter().map(|p| p.vaddr).collect::<Vec<_>>(), vec![s.entry(1) + 3]);
    }
}

/// A `.symtab` naming Read hundreds of times, each copy a large overlapping span: resolving
/// the name compared every copy with the best so far by decoding both (two spans of code
/// per copy, quadratic in effect). Go emits at most two functions per name (a body and its
/// ABI wrapper); copies beyond a few are ignored, so the first ones decide.
#[test]
fn duplicate_symbols_are_compared_a_bounded_number_of_times() {
    let body = 256 << 10;
    let mut s = tls_pair(vec![NOP; body], true);
    let read = s.entry(1);
    s.symbols.truncate(1);
    // Copy k starts k bytes in and is k bytes longer than the one before it, so without a
    // bound the size rule picks the last copy (after decoding all of them).
    for k in 0..64u64 {
        s.symbols.push((tls::CONN_READ.into(), read + k, (body as u64 - 64) + 2 * k));
    }
    let data = s.build();
    let bin = GoBinary::parse(&data).unwrap();
    assert_eq!(bin.info().symbol_source, SymbolSource::Symtab);
    let f = bin.function(tls::CONN_READ).unwrap();
    assert!(f.vaddr < read + 8, "Read resolved to copy {} of 64: every copy was decoded", f.vaddr - read);
}

/// Read's symbol claims 4 GB in a file of a few KiB: an error, without reading past the end.
#[test]
fn a_symbol_claiming_4_gb_is_not_mapped() {
    let mut s = tls_pair(vec![NOP; 16], true);
    s.symbols[1].2 = 4 << 30;
    let err = analyse(&s.build()).unwrap_err();
    assert!(matches!(err, Error::AddressNotMapped { .. }), "{err:?}");
}

/// Read's code really is 9 MiB (more than any Go function): refused, not decoded.
#[test]
fn a_function_larger_than_any_go_function_is_refused() {
    let s = tls_pair(vec![NOP; 9 << 20], true);
    let err = analyse(&s.build()).unwrap_err();
    assert!(err.to_string().contains("claims"), "{err}");
}

/// Read made of INT3 padding and nothing else: no RET, so no plan (and one linear sweep).
#[test]
fn a_read_made_of_int3_padding_has_no_return() {
    for symbols in [false, true] {
        let mut s = tls_pair(vec![0xcc; 1 << 20], symbols);
        s.funcs[1].1.pop(); // drop the RET
        if symbols {
            s.symbols[1].2 -= 1;
        }
        let err = analyse(&s.build()).unwrap_err();
        assert!(err.to_string().contains("no RET"), "{err}");
    }
}

/// A quarter of a million RELATIVE relocations (6 MiB of RELA): counted, and every reader
/// of pointers (the type data of a PIE) still ends.
#[test]
fn many_relocations_are_read_once() {
    let mut s = tls_pair(vec![NOP; 16], false);
    s.moduledata = true;
    s.relocs = 250_000;
    let data = s.build();
    let bin = GoBinary::parse(&data).unwrap();
    assert_eq!(bin.relative_relocation_counts(), (250_000, 0));
    let plan = analyse(&data);
    assert!(plan.is_ok(), "{plan:?}");
}

/// A 2 MiB DT_RELR table of bitmaps names 16 million relocated words; goelf only counts them
/// (diagnostics), and counted them by listing every address first: 128 MiB of memory.
#[test]
fn a_relr_table_is_counted_without_listing_it() {
    let mut s = tls_pair(vec![NOP; 16], false);
    s.relr_words = 1 << 18;
    let data = s.build();
    common::alloc::peak_reset();
    let live = common::alloc::peak_reset(); // the bytes held now
    let bin = GoBinary::parse(&data).unwrap();
    assert_eq!(bin.relative_relocation_counts(), (0, 1 + 63 * ((1 << 18) - 1)));
    let used = common::alloc::peak_reset().saturating_sub(live);
    assert!(used < 1 << 20, "parsing and counting the RELR table allocated {used} bytes at its peak");
}
