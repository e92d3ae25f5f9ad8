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
use tlstap_bpf::wire::{self, Record};
use tlstap_bpf::{Capture, CaptureOptions};
use tlstap_core::event::{AttachEvent, DataEvent, Event, Stats};
use tlstap_core::reassembly::{Call, Reassembler};
use tlstap_core::sink::Sink;

use crate::cli::{Format, GotlsArgs, Mode};
use crate::output::open_sink;
use crate::system::{self, Kernel};
use crate::target::{binary_of_pid, Target};

/// How long one ring-buffer poll waits before the loop checks for signals and stale calls.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// What `gotls` was asked to do, resolved and validated.
#[derive(Debug)]
struct Request {
    binary: PathBuf,
    pid: Option<u32>,
    uid: Option<u32>,
    format: Format,
    output: Option<PathBuf>,
    ringbuf_bytes: u32,
    dry_run: bool,
}

impl Request {
    fn resolve(args: GotlsArgs) -> Result<Request> {
        match args.mode {
            Mode::Text => {}
            Mode::Keylog | Mode::Pcap => bail!("mode {:?} is not implemented yet; use -m text", args.mode),
        }
        if args.keylog_file.is_some() || args.pcap_file.is_some() || args.ifname.is_some() {
            bail!("--keylogfile, --pcapfile and --ifname are not implemented yet");
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
            pid: args.pid,
            uid: args.uid,
            format: if args.hex { Format::Hex } else { args.format },
            output: args.output,
            ringbuf_bytes,
            dry_run: args.dry_run,
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
    let sink = open_sink(request.format, request.output.as_deref())?;
    capture(&request, &target, kernel, sink)
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
    for (what, p) in points {
        println!("probe:    {what:<12} {} vaddr {:#x} file offset {:#x}", p.symbol, p.vaddr, p.file_offset);
    }
}

fn capture(request: &Request, target: &Target, kernel: Kernel, mut sink: Box<dyn Sink>) -> Result<()> {
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
    };
    tlstap_bpf::configure_libbpf_logging();
    let mut storage = MaybeUninit::uninit();
    let mut capture = Capture::load(&mut storage, &options)?;
    let probes = capture.attach(&target.path, &target.probes())?;
    sink.write_event(&Event::Attach(AttachEvent {
        binary: &target.path,
        go_version: &target.go_version,
        abi: target.abi_name(),
        probes,
    }))?;
    sink.flush()?;

    let mut pipeline = Pipeline::new(sink);
    let outcome = drain_until_stopped(&capture, &mut pipeline, &stop);
    let losses = capture.losses()?;
    drop(capture); // detach every probe before the summary
    if let Err(err) = outcome {
        return quiet_if_broken_pipe(err);
    }

    let mut stats = Stats { events: pipeline.events, bytes: pipeline.bytes, ..Stats::default() };
    for (cause, calls, _bytes) in losses.by_cause {
        stats.lost_by_cause.insert(cause, calls);
    }
    stats.lost_by_cause.insert("decode_error", pipeline.decode_errors);
    stats.lost = stats.lost_by_cause.values().sum();
    let finish = pipeline.sink.write_event(&Event::Stats(&stats)).and_then(|()| pipeline.sink.flush());
    if let Err(err) = finish {
        return quiet_if_broken_pipe(err.into());
    }
    eprintln!("{}", summary(&stats));
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
            if err.kind() != libbpf_rs::ErrorKind::Interrupted {
                pipeline.borrow_mut().take_error()?;
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
    p.tick(None)
}

/// Everything between a ring record and the sink.
struct Pipeline {
    sink: Box<dyn Sink>,
    reassembler: Reassembler,
    wall_offset: u64,
    events: u64,
    bytes: u64,
    decode_errors: u64,
    /// Set when the sink failed; stops the ring-buffer callback.
    error: Option<io::Error>,
    /// Something was written since the last flush.
    dirty: bool,
}

impl Pipeline {
    fn new(sink: Box<dyn Sink>) -> Self {
        Pipeline {
            sink,
            reassembler: Reassembler::new(),
            wall_offset: system::monotonic_to_wall_offset(),
            events: 0,
            bytes: 0,
            decode_errors: 0,
            error: None,
            dirty: false,
        }
    }

    /// The ring-buffer callback: a negative return stops the current poll.
    fn on_record(&mut self, record: &[u8]) -> i32 {
        if self.error.is_some() {
            return -1;
        }
        let chunk = match wire::decode(record) {
            Ok(Record::Data(chunk)) => chunk,
            Err(_) => {
                self.decode_errors += 1;
                return 0;
            }
        };
        let Pipeline { sink, reassembler, wall_offset, events, bytes, dirty, .. } = self;
        let result = reassembler.push(chunk, Instant::now(), |call| {
            *events += 1;
            *bytes += call.data.len() as u64;
            *dirty = true;
            write_call(sink.as_mut(), *wall_offset, &call)
        });
        match result {
            Ok(()) => 0,
            Err(err) => {
                self.error = Some(err);
                -1
            }
        }
    }

    /// Between polls: emit calls whose remaining chunks are lost (all pending ones when
    /// `now` is None) and flush what was written.
    fn tick(&mut self, now: Option<Instant>) -> Result<()> {
        self.take_error()?;
        let Pipeline { sink, reassembler, wall_offset, events, bytes, dirty, .. } = self;
        reassembler.flush_stale(now, |call| {
            *events += 1;
            *bytes += call.data.len() as u64;
            *dirty = true;
            write_call(sink.as_mut(), *wall_offset, &call)
        })?;
        if self.dirty {
            self.sink.flush()?;
            self.dirty = false;
        }
        Ok(())
    }

    fn take_error(&mut self) -> Result<()> {
        match self.error.take() {
            Some(err) => Err(err.into()),
            None => Ok(()),
        }
    }
}

fn write_call(sink: &mut dyn Sink, wall_offset: u64, call: &Call<'_>) -> io::Result<()> {
    let comm = call.meta.comm();
    sink.write_event(&Event::Data(DataEvent {
        ts_ns: call.meta.ts_ns.saturating_add(wall_offset),
        pid: call.meta.pid,
        tid: call.meta.tid,
        comm: &comm,
        direction: call.meta.direction,
        len: call.meta.call_len,
        data: call.data,
        truncated: call.truncated,
        conn: None,
    }))
}

fn summary(stats: &Stats) -> String {
    let mut line = format!("tlstap: {} events, {} bytes, {} lost", stats.events, stats.bytes, stats.lost);
    let causes: BTreeMap<_, _> = stats.lost_by_cause.iter().filter(|(_, &n)| n > 0).collect();
    if !causes.is_empty() {
        let parts: Vec<String> = causes.iter().map(|(cause, n)| format!("{cause}={n}")).collect();
        line.push_str(&format!(" ({})", parts.join(", ")));
    }
    line
}

/// A closed stdout (`tlstap … | head`) ends the capture without an error.
fn quiet_if_broken_pipe(err: anyhow::Error) -> Result<()> {
    let broken = err.chain().any(|e| e.downcast_ref::<io::Error>().is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe));
    if broken {
        Ok(())
    } else {
        Err(err)
    }
}
