//! `tlstap gotls`: resolve the request, then run the capture until a signal. The capture loop
//! drains the ring buffer, reassembles calls and feeds the sink; at the end it detaches every
//! probe, writes the totals and prints a one-line summary to stderr.

use std::collections::BTreeMap;
use std::io;
use std::mem::MaybeUninit;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use tlstap_bpf::{Capture, CaptureOptions};
use tlstap_core::event::{AttachEvent, Event, Stats};
use tlstap_core::sink::Sink;

use crate::cli::{Format, GotlsArgs, Mode};
use crate::output::{open_keylog_sink, open_sink};
use crate::pipeline::Pipeline;
use crate::system::{self, Kernel};
use crate::target::{binary_of_pid, ProbeSet, Target};

/// How long one ring-buffer poll waits before the loop checks for signals and stale calls.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// What `gotls` was asked to do, resolved and validated.
#[derive(Debug)]
struct Request {
    binary: PathBuf,
    /// Capture plaintext (Read/Write probes).
    data: bool,
    /// Capture TLS secrets (writeKeyLog probe); with a file when `keylog_file` is set.
    secrets: bool,
    keylog_file: Option<PathBuf>,
    pid: Option<u32>,
    uid: Option<u32>,
    format: Format,
    output: Option<PathBuf>,
    ringbuf_bytes: u32,
    dry_run: bool,
    null_probes: bool,
}

impl Request {
    fn resolve(args: GotlsArgs) -> Result<Request> {
        let data = match args.mode {
            Mode::Text => true,
            Mode::Keylog if args.keylog_file.is_none() => bail!("-m keylog needs -k/--keylogfile FILE"),
            Mode::Keylog => false,
            Mode::Pcap => bail!("-m pcap is not implemented yet; use -m text or -m keylog"),
        };
        if args.pcap_file.is_some() || args.ifname.is_some() {
            bail!("--pcapfile and --ifname belong to -m pcap, which is not implemented yet");
        }
        let binary = match (args.elfpath, args.pid) {
            (Some(path), _) => path,
            (None, Some(pid)) => binary_of_pid(pid)?,
            (None, None) => bail!("no target: give --elfpath BINARY or --pid PID"),
        };
        let ringbuf_bytes = args
            .ringbuf_mib
            .checked_mul(1024 * 1024)
            .filter(|b| b.is_power_of_two())
            .with_context(|| format!("--ringbuf-mb {} must be a power of two below 4096", args.ringbuf_mib))?;
        Ok(Request {
            binary,
            data,
            secrets: args.mode == Mode::Keylog || args.keylog_file.is_some(),
            keylog_file: args.keylog_file,
            pid: args.pid,
            uid: args.uid,
            format: if args.hex { Format::Hex } else { args.format },
            output: args.output,
            ringbuf_bytes,
            dry_run: args.dry_run,
            null_probes: args.null_probes,
        })
    }
}

pub fn gotls(args: GotlsArgs) -> Result<()> {
    let request = Request::resolve(args)?;
    let target = Target::analyze(&request.binary)?;
    if request.dry_run {
        print_plan(&target);
        return Ok(());
    }
    target.check_runnable()?;
    system::check_privileges()?;
    let kernel = Kernel::detect()?;
    let mut sinks = vec![open_sink(request.format, request.output.as_deref())?];
    if let Some(path) = &request.keylog_file {
        sinks.push(open_keylog_sink(path)?);
    }
    capture(&request, &target, kernel, sinks)
}

fn print_plan(target: &Target) {
    println!("binary:   {}", target.path.display());
    println!("go:       {}", target.go_version);
    println!("arch:     {}", target.arch.goarch());
    println!("abi:      {}", target.abi_name());
    println!("pie:      {}", if target.pie { "yes" } else { "no" });
    println!("symbols:  {}", if target.has_symtab { ".symtab" } else { ".gopclntab (stripped)" });
    let plan = &target.plan;
    let mut points = vec![("write entry", &plan.write_entry), ("read entry", &plan.read_entry)];
    points.extend(plan.read_returns.iter().map(|p| ("read return", p)));
    points.extend(plan.keylog_entry.iter().map(|p| ("keylog", p)));
    for (what, p) in points {
        println!("probe:    {what:<12} {} vaddr {:#x} file offset {:#x}", p.symbol, p.vaddr, p.file_offset);
    }
}

fn capture(request: &Request, target: &Target, kernel: Kernel, sinks: Vec<Box<dyn Sink>>) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second Ctrl-C ends tlstap at once, should the orderly stop hang.
        signal_hook::flag::register_conditional_shutdown(signal, 1, Arc::clone(&stop)).context("installing signal handlers")?;
        signal_hook::flag::register(signal, Arc::clone(&stop)).context("installing signal handlers")?;
    }

    let options = CaptureOptions {
        ringbuf_bytes: request.ringbuf_bytes,
        pid: request.pid,
        uid: request.uid,
        uprobe_multi: kernel.has_uprobe_multi(),
        null_probes: request.null_probes,
    };
    tlstap_bpf::configure_libbpf_logging();
    let mut storage = MaybeUninit::uninit();
    let mut capture = Capture::load(&mut storage, &options)?;
    let probes = target.probes(ProbeSet { data: request.data, secrets: request.secrets })?;
    let attached = capture.attach(&target.path, &probes, target.bpf_config())?;

    let mut pipeline = Pipeline::new(sinks);
    let attach = AttachEvent { binary: &target.path, go_version: &target.go_version, abi: target.abi_name(), probes: attached };
    pipeline.write(&Event::Attach(attach)).and_then(|()| pipeline.tick(None)).or_else(quiet_if_broken_pipe)?;

    let outcome = drain_until_stopped(&capture, &mut pipeline, &stop);
    let losses = capture.losses()?;
    drop(capture); // detach every probe before the summary
    if let Err(err) = outcome {
        return err.downcast::<io::Error>().map_or_else(Err, |e| quiet_if_broken_pipe(e).map_err(Into::into));
    }

    let mut stats = Stats { events: pipeline.events, bytes: pipeline.bytes, ..Stats::default() };
    for (cause, calls, _bytes) in losses.by_cause {
        stats.lost_by_cause.insert(cause, calls);
    }
    stats.lost_by_cause.insert("decode_error", pipeline.decode_errors);
    stats.lost = stats.lost_by_cause.values().sum();
    pipeline.write(&Event::Stats(&stats)).and_then(|()| pipeline.tick(None)).or_else(quiet_if_broken_pipe)?;
    eprintln!("{}", summary(&stats, pipeline.secrets, pipeline.order_gaps()));
    Ok(())
}

/// Polls the ring buffer until a signal (or an output error), then drains what is left.
fn drain_until_stopped(capture: &Capture<'_>, pipeline: &mut Pipeline, stop: &AtomicBool) -> Result<()> {
    let pipeline = std::cell::RefCell::new(pipeline);
    let mut builder = libbpf_rs::RingBufferBuilder::new();
    builder
        .add(capture.events_map(), |record: &[u8]| pipeline.borrow_mut().on_record(record))
        .context("opening the ring buffer")?;
    let ring = builder.build().context("opening the ring buffer")?;
    while !stop.load(Ordering::Relaxed) {
        if let Err(err) = ring.poll(POLL_INTERVAL) {
            pipeline.borrow_mut().take_error()?;
            if err.kind() != libbpf_rs::ErrorKind::Interrupted {
                return Err(err).context("reading the ring buffer");
            }
        }
        pipeline.borrow_mut().tick(Some(Instant::now()))?;
    }
    // Events already in the ring when the signal came are part of the capture.
    let drained = ring.consume();
    let mut p = pipeline.borrow_mut();
    p.take_error()?;
    drained.context("reading the ring buffer")?;
    Ok(p.tick(None)?)
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
    line
}

/// A closed output (`tlstap … | head`) ends the capture without an error.
fn quiet_if_broken_pipe(err: io::Error) -> Result<()> {
    if err.kind() == io::ErrorKind::BrokenPipe {
        Ok(())
    } else {
        Err(err).context("writing the output")
    }
}
