//! Prints what goelf finds in the Go binaries named on the command line (a debugging aid).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test/tool code: panics are failures

use std::time::Instant;

fn main() {
    for path in std::env::args().skip(1) {
        let data = match std::fs::read(&path) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("{path}: {e}");
                continue;
            }
        };
        let t = Instant::now();
        let bin = match goelf::GoBinary::parse(&data) {
            Ok(b) => b,
            Err(e) => {
                println!("{path}: error: {e}");
                continue;
            }
        };
        let plan = goelf::tls::plan(&bin);
        let ms = t.elapsed().as_secs_f64() * 1e3;
        let i = bin.info();
        println!(
            "{path}: {} {} {:?} pie={} symtab={} stripped={:?} source={:?}",
            i.go_version, i.arch, i.abi, i.pie, i.has_symtab, i.stripped_kind, i.symbol_source
        );
        println!(
            "  pclntab {:?} at {:x?} text_start {:#x} from {:?}; relocs {:?}; {ms:.2} ms",
            i.pclntab_version,
            i.pclntab_vaddr.unwrap_or(0),
            i.text_start,
            i.text_start_source,
            bin.relative_relocation_counts()
        );
        println!("  settings {:?}", i.build_settings);
        match plan {
            Ok(p) => {
                println!(
                    "  write {:#x}/{:#x} read {:#x}/{:#x} rets {:x?}",
                    p.write_entry.vaddr,
                    p.write_entry.file_offset,
                    p.read_entry.vaddr,
                    p.read_entry.file_offset,
                    p.read_returns.iter().map(|r| r.vaddr).collect::<Vec<_>>()
                );
                println!("  read capture {:?}", p.read_capture);
                println!(
                    "  keylog {:x?} writeRecordLocked {:x?}",
                    p.keylog_entry.map(|k| k.vaddr),
                    p.write_record_entry.map(|k| k.vaddr)
                );
            }
            Err(e) => println!("  plan: {e}"),
        }
    }
}
