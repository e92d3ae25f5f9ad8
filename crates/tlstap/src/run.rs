//! `tlstap gotls`: resolve the request (request.rs), set the capture up, run its loop
//! (capture_loop.rs) until a signal; at the end detach every probe, write the totals and print
//! a one-line summary to stderr.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::mem::MaybeUninit;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use tlstap_bpf::{Capture, CaptureOptions, KernelFeatures};
use tlstap_core::event::{Event, LossCause, Stats};
use tlstap_core::sink::Sink;
use tlstap_pcap::PcapMode;

use crate::capture_loop::{write_outcomes, Loop};
use crate::cli::GotlsArgs;
use crate::cli::ReadPath;
use crate::discovery::{Discovery, Outcome};
use crate::intake::Intake;
use crate::output::{open_keylog_sink, open_sink};
use crate::pipeline::Pipeline;
use crate::request::{Request, Scope};
use crate::system;
use crate::target::{ProbeSet, Target};
use goelf::tls::ReadCapture;

/// --catch-exec: the longest a process stays stopped at exec, whatever holds tlstap up (a
/// watchdog thread continues it then, hooked or not). Generous: analysing a large binary on
/// a slow machine takes seconds.
const HELD_DEADLINE: Duration = Duration::from_secs(10);

pub fn gotls(args: GotlsArgs) -> Result<()> {
    let request = Request::resolve(args)?;
    let target = match &request.scope {
        Scope::Binary(path) => {
            // /proc/PID/exe (--pid) is attached through, and shown as the file it points to.
            let shown = std::fs::read_link(path).ok().filter(|_| path.starts_with("/proc"));
            Some(Target::analyze_named(path, shown.as_deref().unwrap_or(path))?)
        }
        Scope::Host => None,
    };
    if let Some(target) = &target {
        if request.dry_run {
            // Probing the kernel loads test programs: root only. Without, the plan says so.
            let features = system::check_privileges().ok().map(|()| kernel_features(&request));
            return print_plan(target, request.probe_set(), features.as_ref()).map_err(output_error);
        }
        target.check_runnable()?;
    }
    system::check_privileges()?;
    // A tlstap killed with SIGKILL in pcap mode left its clsact filters running: remove them.
    let records = std::path::Path::new(tlstap_bpf::tc_record::RECORD_DIR);
    for line in tlstap_bpf::tc_record::remove_leftovers(records) {
        eprintln!("tlstap: {line}");
    }
    // A tlstap killed with SIGKILL during --catch-exec left processes stopped: continue them.
    let continued = tlstap_bpf::continue_stranded_processes();
    if continued > 0 {
        eprintln!("tlstap: continued {continued} processes a killed tlstap had left stopped at exec (--catch-exec)");
    }
    let features = kernel_features(&request);
    if let Some(missing) = features.missing_required(request.btf_file.as_deref()) {
        bail!(missing);
    }
    if request.verbose {
        for line in features.paths() {
            eprintln!("tlstap: kernel path: {line}");
        }
    }
    let pcap = request
        .pcap
        .as_ref()
        .map(|p| PcapMode::start(p, request.ringbuf_bytes, features, request.btf_file.as_deref()))
        .transpose()?;
    let mut sinks = match &pcap {
        Some(pcap) => vec![pcap.sink()],
        None => vec![open_sink(request.format, request.output.as_deref())?],
    };
    if let Some(path) = &request.keylog_file {
        sinks.push(open_keylog_sink(path)?);
    }
    capture(&request, target.as_ref(), features, sinks, pcap)
}

/// What the running kernel can do, less what the request disables.
fn kernel_features(request: &Request) -> KernelFeatures {
    KernelFeatures::probe().without(&request.disabled_features)
}

fn print_plan(target: &Target, set: ProbeSet, features: Option<&KernelFeatures>) -> io::Result<()> {
    use std::io::Write as _;
    let mut out = io::stdout().lock();
    writeln!(out, "binary:   {}", target.shown_path.display())?;
    writeln!(out, "go:       {}", target.go_version)?;
    writeln!(out, "arch:     {}", target.arch.goarch())?;
    writeln!(out, "abi:      {}", target.abi_name())?;
    writeln!(out, "pie:      {}", if target.pie { "yes" } else { "no" })?;
    writeln!(out, "symbols:  {}", if target.has_symtab { ".symtab" } else { ".gopclntab (stripped)" })?;
    let conn = match &target.conn_layout {
        Some(l) => format!(
            "tls.Conn.conn +{}, conn.fd +{}, netFD.pfd.Sysfd +{}, *net.TCPConn type {:#x}",
            l.tls_conn_conn, l.net_conn_fd, l.net_fd_sysfd, l.tcp_conn_type
        ),
        None => "unknown (connections will show as unknown)".to_string(),
    };
    writeln!(out, "conn:     {conn}")?;
    let plan = &target.plan;
    // How Reads are captured, and why not more cheaply where they are not.
    let path = target.read_path(set);
    let why = match &plan.read_capture {
        ReadCapture::EntryAndReturn { why } | ReadCapture::AtReturn { why } => why.clone(),
        _ => "--read-path".to_string(),
    };
    let reads = match path {
        ReadPath::Copy => "at the copy into b (1 probe hit per Read, on a CALL the kernel emulates)".to_string(),
        ReadPath::Return => format!("at return alone (1 probe hit per Read, single-stepped: {why})"),
        ReadPath::Entry => format!("entry and return (2 probe hits per Read: {why})"),
    };
    writeln!(out, "reads:    {reads}")?;
    let mut points: Vec<(&str, &goelf::tls::ProbePoint)> =
        target.data_points(set).into_iter().map(|(what, p, _)| (what, p)).collect();
    points.extend(plan.keylog_entry.iter().map(|p| ("keylog", p)));
    // --h2-hooks: Go's HTTP/2 header paths, where the binary has them.
    points.extend(target.h2.sent_field_entries.iter().map(|p| ("h2 sent", p)));
    points.extend(target.h2.received_block_returns.iter().map(|p| ("h2 received", p)));
    if let Some(l) = &target.h2.layout {
        writeln!(
            out,
            "h2:       MetaHeadersFrame.Fields +{}, *HeadersFrame +{}, StreamID +{}, HeaderField {} bytes",
            l.fields, l.headers, l.stream_id, l.field_size
        )?;
    }
    for (what, p) in points {
        writeln!(out, "probe:    {what:<12} {} vaddr {:#x} file offset {:#x}", p.symbol, p.vaddr, p.file_offset)?;
    }
    match features {
        Some(features) => {
            for line in features.paths() {
                writeln!(out, "kernel:   {line}")?;
            }
            if let Some(missing) = features.missing_required(None) {
                writeln!(out, "kernel:   cannot capture here: {missing}")?;
            }
        }
        None => writeln!(out, "kernel:   not probed (needs root: the probes load test programs)")?,
    }
    out.flush()
}

fn capture(
    request: &Request,
    target: Option<&Target>,
    features: KernelFeatures,
    sinks: Vec<Box<dyn Sink>>,
    mut pcap: Option<PcapMode>,
) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second Ctrl-C ends tlstap at once, should the orderly stop hang.
        signal_hook::flag::register_conditional_shutdown(signal, 1, Arc::clone(&stop))
            .context("installing signal handlers")?;
        signal_hook::flag::register(signal, Arc::clone(&stop)).context("installing signal handlers")?;
    }

    let options = CaptureOptions {
        ringbuf_bytes: request.ringbuf_bytes,
        pid: request.pid,
        uid: request.uid,
        features,
        btf_file: request.btf_file.clone(),
        null_probes: request.null_probes,
        read_slots: request.read_slots,
        comm: request.comm.clone(),
        report_processes: target.is_none(),
        catch_exec: request.catch_exec,
        h2_hooks: request.h2_hooks,
    };
    if request.h2_hooks && !tlstap_bpf::h2_hooks_supported(&options.features) {
        bail!("--h2-hooks needs uprobe cookies and the BPF ring buffer, which this kernel lacks (Linux 5.15 or later has both)");
    }
    tlstap_bpf::configure_libbpf_logging();
    let mut storage = MaybeUninit::uninit();
    let mut capture = Capture::load(&mut storage, &options)?;
    // --catch-exec: whatever holds up the loop below, no process stays stopped past a deadline.
    let watchdog = if options.report_processes && options.catch_exec {
        let ms = std::env::var("TLSTAP_TEST_HELD_DEADLINE_MS").ok().and_then(|v| v.parse().ok());
        capture.held_watchdog(ms.map_or(HELD_DEADLINE, Duration::from_millis))
    } else {
        None
    };
    // The reader exists before any probe is attached: perf buffers (kernels without a ring
    // buffer) drop what BPF sends before they are opened, where a ring buffer keeps it.
    // The callback writes records through the pipeline and queues process events (and an
    // output error) for the loop; the loop writes everything else (see capture_loop.rs).
    let pipeline = RefCell::new(Pipeline::new(sinks, request.view));
    let (to_loop, from_ring) = std::sync::mpsc::channel();
    let mut intake = Intake::new(&pipeline, to_loop);
    let ring = capture.reader(move |record: &[u8]| intake.on_record(record))?;
    let probe_set = request.probe_set();
    let mut discovery = match target {
        Some(target) => {
            let probes = target.probes(probe_set)?;
            // Testing only: a window between analysis and attach, in which a test swaps the file.
            if let Some(ms) = std::env::var("TLSTAP_TEST_ATTACH_DELAY_MS").ok().and_then(|v| v.parse().ok()) {
                eprintln!("tlstap: analysed; attaching in {ms} ms (TLSTAP_TEST_ATTACH_DELAY_MS)");
                std::thread::sleep(std::time::Duration::from_millis(ms));
            }
            let handle = capture
                .attach(&target.attach_path(), &probes, target.bpf_config())
                .with_context(|| format!("cannot hook {}", tlstap_core::names::escape_path(&target.shown_path)))?;
            let attached = Outcome::Attached {
                binary: target.shown_path.clone(),
                go_version: target.go_version.clone(),
                abi: target.abi_name(),
                probes: handle.probes,
                after_exec: None,
            };
            write_outcomes(&mut pipeline.borrow_mut(), &[attached], request.verbose).map_err(output_error)?;
            None
        }
        None => {
            let mut discovery = Discovery::new(probe_set, request.comm.clone(), request.uid, request.linger);
            let outcomes = discovery.scan(&mut capture)?;
            write_outcomes(&mut pipeline.borrow_mut(), &outcomes, request.verbose).map_err(output_error)?;
            if request.verbose {
                eprintln!("tlstap: {} Go TLS binaries hooked; watching for new processes", discovery.hooked_binaries());
            }
            Some(discovery)
        }
    };
    // Live: say so, on stderr for people and in the output for scripts (JSON Lines: a ready
    // record), so that nobody has to guess when traffic starts being captured.
    let (binaries, processes) = match (&discovery, target) {
        (Some(d), _) => (d.hooked_binaries(), d.hooked_processes()),
        (None, Some(t)) => (1, crate::system::processes_running(&t.attach_path())),
        (None, None) => (0, 0),
    };
    pipeline.borrow_mut().write(&Event::Ready { binaries, processes }).map_err(output_error)?;
    pipeline.borrow_mut().tick(None).map_err(output_error)?;
    let watching = if discovery.is_some() { "; watching for new processes" } else { "" };
    eprintln!(
        "tlstap: ready: binaries hooked: {binaries}, processes running them: {processes}{watching}; Ctrl-C stops"
    );

    let capture_loop = Loop {
        ring: &ring,
        capture: &mut capture,
        pipeline: &pipeline,
        from_ring,
        discovery: discovery.as_mut(),
        verbose: request.verbose,
    };
    let outcome = capture_loop.run(&stop);
    let losses = capture.losses()?;
    let forced = watchdog.map_or(0, tlstap_bpf::HeldWatchdog::finish);
    if forced > 0 {
        eprintln!(
            "tlstap: {forced} processes were continued after being held {HELD_DEADLINE:?} unhooked (--catch-exec)"
        );
    }
    drop(capture); // detach every probe before the summary
    drop(ring);
    let mut pipeline = pipeline.into_inner();
    if let Err(err) = outcome {
        return Err(err.downcast::<io::Error>().map_or_else(|other| other, output_error));
    }

    let mut stats = Stats {
        events: pipeline.events,
        bytes: pipeline.bytes,
        binaries_not_hooked: discovery.as_ref().map_or(0, Discovery::binaries_not_hooked),
        ..Stats::default()
    };
    for (cause, calls, _bytes) in losses.by_cause {
        stats.lost_by_cause.insert(cause, calls);
    }
    stats.lost_by_cause.insert(LossCause::DecodeError, pipeline.decode_errors);
    stats.lost_by_cause.insert(LossCause::SecretTooLong, pipeline.secrets_cut);
    let (evicted, late) = pipeline.reassembly_losses();
    stats.lost_by_cause.insert(LossCause::ReassemblyFull, evicted);
    stats.lost_by_cause.insert(LossCause::LateChunk, late);
    let pcap_summary = pcap.as_mut().map(|p| p.finish(&mut stats)).transpose()?.unwrap_or_default();
    stats.lost = stats.lost_by_cause.values().sum();
    pipeline
        .finish_http()
        .and_then(|()| pipeline.write(&Event::Stats(&stats)))
        .and_then(|()| pipeline.tick(None))
        .map_err(output_error)?;
    let mut line = summary(&stats, pipeline.secrets, pipeline.order_gaps());
    if pipeline.http_exchanges() > 0 {
        line.push_str(&format!(", {} HTTP exchanges", pipeline.http_exchanges()));
    }
    eprintln!("{line}{pcap_summary}");
    if stats.lost_by_cause.get(&LossCause::RingbufFull).is_some_and(|&n| n > 0) {
        eprintln!(
            "tlstap: the ring buffer ({} MiB) filled up: a larger --ringbuf-mb absorbs longer bursts and bigger calls; \
             when the CPUs are saturated, tlstap keeps up at a higher priority (nice, and its autogroup: see README)",
            request.ringbuf_bytes >> 20
        );
    }
    Ok(())
}

fn summary(stats: &Stats, secrets: u64, order_gaps: u64) -> String {
    let mut line = format!("tlstap: {} events, {} bytes, {} lost", stats.events, stats.bytes, stats.lost);
    let causes: BTreeMap<_, _> = stats.lost_by_cause.iter().filter(|(_, &n)| n > 0).collect();
    if !causes.is_empty() {
        let parts: Vec<String> = causes.iter().map(|(cause, n)| format!("{cause}={n}")).collect();
        line.push_str(&format!(" ({})", parts.join(", ")));
    }
    if secrets > 0 {
        line.push_str(&format!(", {secrets} secrets"));
    }
    if order_gaps > 0 {
        line.push_str(&format!(", {order_gaps} calls released past a gap"));
    }
    if stats.binaries_not_hooked > 0 {
        line.push_str(&format!(", {} Go TLS binaries not hooked (-v says why)", stats.binaries_not_hooked));
    }
    line
}

/// An error of the output, said as one. A closed output (`tlstap … | head`) is one too: it ends
/// the capture, and `main` ends it quietly (the one place that decides so).
fn output_error(err: io::Error) -> anyhow::Error {
    anyhow::Error::new(err).context("writing the output")
}
