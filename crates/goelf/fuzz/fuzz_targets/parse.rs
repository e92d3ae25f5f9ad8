//! Fuzz target: goelf must never panic, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(bin) = goelf::GoBinary::parse(data) else {
        return;
    };
    let _ = goelf::tls::plan(&bin);
    let _ = bin.functions_named(&["runtime.main", goelf::tls::CONN_READ]);
    for f in bin.functions().iter().take(64) {
        let _ = bin.ret_addresses(f);
        let _ = bin.file_offset(f.vaddr);
    }
});
