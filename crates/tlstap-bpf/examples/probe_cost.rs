//! The cost of one uprobe hit by the kind of instruction probed (issue 16), for bench/run: a
//! null BPF program (tlstap's `--null-probes` one) attached at the first instruction of each
//! `k_*` function of bench/probecost/kinds.c (or at its `p_*` label), which is then timed
//! calling it N times.
//!
//! `probe_cost KINDS_BINARY N`: one line per kind, `kind ns_per_call_unprobed ns_per_call_probed`
//! (medians of three runs each). Needs root (BPF), like tlstap.
#![allow(clippy::print_stdout)] // a tool whose output is its result

use std::mem::MaybeUninit;
use std::path::Path;
use std::process::Command;

use object::{Object as _, ObjectSegment as _, ObjectSymbol as _};
use tlstap_bpf::{BinaryConfig, Capture, CaptureOptions, KernelFeatures, ProbeKind, ProbeSpec};

const KINDS: [&str; 11] = ["push", "ret", "nop", "nop3", "nop5", "mov", "cmp", "sub", "jmp", "call", "jbe"];

fn main() {
    if let Err(err) = run() {
        eprintln!("probe_cost: {err}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(binary), Some(n)) = (args.get(1), args.get(2)) else {
        return Err("usage: probe_cost KINDS_BINARY N".into());
    };
    let binary = Path::new(binary);
    let data = std::fs::read(binary).map_err(|e| format!("{}: {e}", binary.display()))?;
    let file = object::File::parse(&*data).map_err(|e| format!("{}: {e}", binary.display()))?;
    let opts = CaptureOptions {
        ringbuf_bytes: 1 << 20,
        pid: None,
        uid: None,
        features: KernelFeatures::probe(),
        btf_file: None,
        null_probes: true,
        read_slots: None,
        comm: None,
        report_processes: false,
        catch_exec: false,
        h2_hooks: false,
    };
    let mut storage = MaybeUninit::uninit();
    let mut capture = Capture::load(&mut storage, &opts).map_err(|e| format!("loading BPF: {e}"))?;
    for kind in KINDS {
        // The probe goes at the function's p_KIND label where it has one, else its start.
        let (vaddr, file_offset) =
            symbol_offset(&file, &format!("p_{kind}")).or_else(|_| symbol_offset(&file, &format!("k_{kind}")))?;
        let unprobed = median_run(binary, kind, n)?;
        let probe = ProbeSpec { file_offset, vaddr, kind: ProbeKind::WriteEntry, stack_abi: false };
        let handle = capture.attach(binary, &[probe], BinaryConfig::default()).map_err(|e| format!("attach: {e}"))?;
        let probed = median_run(binary, kind, n)?;
        capture.detach(handle);
        println!("{kind} {unprobed:.1} {probed:.1}");
    }
    Ok(())
}

/// The virtual address and file offset of symbol `name`.
fn symbol_offset(file: &object::File<'_>, name: &str) -> Result<(u64, u64), String> {
    let vaddr = file.symbols().find(|s| s.name() == Ok(name)).map(|s| s.address()).ok_or(format!("no {name}"))?;
    let segment = file
        .segments()
        .find(|s| (s.address()..s.address() + s.size()).contains(&vaddr))
        .ok_or(format!("{name} is in no segment"))?;
    Ok((vaddr, vaddr - segment.address() + segment.file_range().0))
}

/// Median nanoseconds per call of three runs of `kinds KIND N`.
fn median_run(binary: &Path, kind: &str, n: &str) -> Result<f64, String> {
    let mut runs = Vec::new();
    for _ in 0..3 {
        let out = Command::new(binary).args([kind, n]).output().map_err(|e| format!("{}: {e}", binary.display()))?;
        let text = String::from_utf8_lossy(&out.stdout);
        runs.push(text.trim().parse::<f64>().map_err(|_| format!("kinds {kind}: {text:?}"))?);
    }
    runs.sort_by(f64::total_cmp);
    Ok(runs[1])
}
