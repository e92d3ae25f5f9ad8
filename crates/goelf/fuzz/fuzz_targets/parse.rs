//! Fuzz target: everything a hostile binary drives in goelf when tlstap analyses it (see
//! crates/tlstap/src/target.rs) must end without a panic, in bounded time and memory. The
//! time and memory bounds are libFuzzer's (-timeout, -rss_limit_mb, -malloc_limit_mb) and
//! the process's RLIMIT_AS (set by scripts/fuzz.sh with prlimit): a timeout or an OOM is a
//! failure like a crash.
#![no_main]

use goelf::types::TypeData;
use goelf::{h2, tls, types, GoBinary, SymbolSource};
use libfuzzer_sys::fuzz_target;

/// Typelink descriptors inspected per input: enough to reach every reader of the type
/// data (names, package paths, elements, fields) without making each run a full walk.
const TYPES_INSPECTED: usize = 256;

fuzz_target!(|data: &[u8]| {
    let Ok(bin) = GoBinary::parse(data) else {
        return;
    };
    let info = bin.info();
    let _ = info.setting("-buildmode");
    // What tlstap's analysis calls, in its order.
    let _ = tls::plan(&bin);
    let _ = types::conn_layout(&bin);
    let _ = h2::plan(&bin);
    let _ = types::g_below_fs(&bin);
    let _ = bin.exec_segment_vaddr();
    let _ = bin.relative_relocation_counts();
    // Every function from both sources: lookups, offsets and every function's RETs (the
    // decoder is the costliest reader of attacker-chosen sizes). Functions of a real binary
    // do not overlap, so their code adds up to less than the file; overlapping ones (a
    // crafted file) would make this loop, which tlstap never runs, quadratic: it stops
    // decoding once as many bytes as the file holds have been decoded.
    for source in [SymbolSource::Symtab, SymbolSource::Pclntab] {
        let _ = bin.functions_named_from(source, &[tls::CONN_READ, tls::CONN_WRITE, "main.main"]);
        let mut decode_budget = data.len() as u64;
        for f in bin.functions_from(source) {
            if f.size <= decode_budget {
                decode_budget -= f.size;
                let _ = bin.ret_addresses(&f);
            }
            let _ = bin.file_offset(f.vaddr);
            let _ = bin.file_offset(f.vaddr.wrapping_add(f.size));
        }
    }
    // The type-data readers, on the descriptors the file lists.
    if let Ok(td) = TypeData::load(&bin) {
        let _ = td.pointer_type("*tls.Conn", "crypto/tls");
        for &addr in td.typelinks().iter().take(TYPES_INSPECTED) {
            let _ = td.type_string(addr);
            let _ = td.pkg_path(addr);
            let _ = td.size(addr);
            let _ = td.field(addr, "conn");
            if let Ok(elem) = td.elem(addr) {
                let _ = td.type_string(elem);
                let _ = td.field(elem, "fd");
            }
        }
    }
});
