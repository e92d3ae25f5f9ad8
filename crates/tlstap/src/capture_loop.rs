//! The capture loop. Data flows one way:
//!
//! ```text
//! ring ─ records ──────────► Intake ─► Pipeline ─► sinks
//!      └ process events ───► queue (owned here) ─► Discovery ─► Outcomes ─► written here
//! ```
//!
//! The ring callback ([`Intake`](crate::intake::Intake)) writes data, secrets and Go's header
//! reports through the pipeline, and queues process events and the first output error. After
//! each poll the loop takes the queue: process events go to discovery, which attaches and
//! detaches probes and returns what it did; the loop writes that to the sinks (and, under -v,
//! to stderr). Nothing writes back into the pipeline from elsewhere.

use std::cell::RefCell;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use tlstap_bpf::wire::ProcessEvent;
use tlstap_bpf::{Capture, RingReader};

use crate::discovery::{Discovery, Outcome};
use crate::intake::FromRing;
use crate::pipeline::Pipeline;
use crate::system;

/// How long one ring-buffer poll waits before the loop checks for signals and stale calls.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// How often BPF's Read slots of exited processes are freed (a scan of 2 MiB: well under a
/// millisecond).
const READ_SLOT_SWEEP_EVERY: Duration = Duration::from_secs(5);

/// What the loop reads and writes.
pub struct Loop<'l, 'r, 'c> {
    pub ring: &'l RingReader<'r>,
    pub capture: &'l mut Capture<'c>,
    /// Shared with the ring callback, which borrows it only inside `ring.poll`/`consume`: the
    /// loop never holds a borrow across those calls.
    pub pipeline: &'l RefCell<Pipeline>,
    /// The callback's queue, in ring order.
    pub from_ring: Receiver<FromRing>,
    /// None when one binary was named (-e, --pid): it is hooked once, before the loop.
    pub discovery: Option<&'l mut Discovery>,
    pub verbose: bool,
}

impl Loop<'_, '_, '_> {
    /// Polls the ring buffer until `stop` (a signal) or an output error, then drains what is
    /// left. However it ends, every process BPF held (--catch-exec) is continued.
    pub fn run(mut self, stop: &AtomicBool) -> Result<()> {
        let outcome = self.poll_until_stopped(stop);
        if outcome.is_err() {
            // An output error ends the capture early: a process held by --catch-exec must not
            // stay stopped, whether its exec record was queued already or still waits in the
            // ring (the callback still queues process events after an output error).
            self.capture.stop_process_reports();
            let _ = self.ring.consume();
            for message in self.from_ring.try_iter() {
                if let FromRing::Process(process) = message {
                    continue_if_held(self.capture, &process);
                }
            }
        }
        outcome
    }

    fn poll_until_stopped(&mut self, stop: &AtomicBool) -> Result<()> {
        let mut stopping = false;
        let mut loss_report = LossReport::new();
        let mut last_slot_sweep = Instant::now();
        // Outside the host's PID namespace /proc cannot tell whether a host process ID is
        // alive, and a live Read's slot must never go: no sweep there.
        let sweep_slots = system::in_host_pid_namespace();
        loop {
            if !stopping && stop.load(Ordering::Relaxed) {
                // No new process may be held after the final read below, which continues the
                // held ones: stop the exec reports first.
                self.capture.stop_process_reports();
                stopping = true;
            }
            // Data records do not wake the reader until 256 KiB wait (the BPF side's
            // WAKEUP_BYTES), and libbpf's poll reads nothing when it times out: read after
            // every poll.
            let ring = self.ring;
            let polled = if stopping { ring.consume() } else { ring.poll(POLL_INTERVAL).and_then(|()| ring.consume()) };
            // Before the poll's own result: a failed output also fails the poll (the callback
            // returned -1), and the output's error is the one to report.
            let mut outcomes = self.take_queue()?;
            polled.context("reading the ring buffer")?;
            // Events already in the ring when the signal came are part of the capture; at the
            // end, every binary is released.
            let now = if stopping { None } else { Some(Instant::now()) };
            if let Some(discovery) = self.discovery.as_deref_mut() {
                outcomes.extend(discovery.release_idle(now, self.capture));
            }
            let mut pipeline = self.pipeline.borrow_mut();
            write_outcomes(&mut pipeline, &outcomes, self.verbose)?;
            pipeline.tick(now)?;
            drop(pipeline);
            if stopping {
                return Ok(());
            }
            loss_report.maybe_report(self.capture);
            if sweep_slots && last_slot_sweep.elapsed() >= READ_SLOT_SWEEP_EVERY {
                last_slot_sweep = Instant::now();
                let freed = self.capture.free_dead_read_slots(system::process_exists);
                if self.verbose && freed > 0 {
                    eprintln!("tlstap: freed {freed} BPF Read slots held by processes that exited inside a Read");
                }
            }
        }
    }

    /// Hands what the callback queued to discovery, in ring order, and returns what discovery
    /// did. Held processes are continued here, so this runs even when stopping. An output
    /// error ends it at once; what is still queued behind it is continued by [`Loop::run`].
    fn take_queue(&mut self) -> io::Result<Vec<Outcome>> {
        let mut outcomes = Vec::new();
        for message in self.from_ring.try_iter() {
            match (message, self.discovery.as_deref_mut()) {
                (FromRing::OutputFailed(err), _) => return Err(err),
                (FromRing::Process(process), Some(discovery)) => {
                    outcomes.extend(discovery.on_process(&process, self.capture));
                }
                (FromRing::Process(process), None) => continue_if_held(self.capture, &process),
            }
        }
        Ok(outcomes)
    }
}

/// Writes what discovery did: its events to the sinks, its lines to stderr under -v.
pub fn write_outcomes(pipeline: &mut Pipeline, outcomes: &[Outcome], verbose: bool) -> io::Result<()> {
    for outcome in outcomes {
        if let Some(line) = outcome.verbose_line().filter(|_| verbose) {
            eprintln!("{line}");
        }
        if let Some(event) = outcome.event() {
            pipeline.write(&event)?;
        }
    }
    Ok(())
}

fn continue_if_held(capture: &mut Capture<'_>, process: &ProcessEvent) {
    if process.held {
        system::continue_process(process.pid);
        capture.release_held(process.pid);
    }
}

/// While capturing, tells a person at a terminal when events are being lost (every few
/// seconds, only when the count grew). Silent when stderr is a file or pipe.
struct LossReport {
    enabled: bool,
    last: Instant,
    reported: u64,
}

impl LossReport {
    const EVERY: Duration = Duration::from_secs(5);

    fn new() -> Self {
        LossReport { enabled: std::io::IsTerminal::is_terminal(&io::stderr()), last: Instant::now(), reported: 0 }
    }

    fn maybe_report(&mut self, capture: &Capture<'_>) {
        if !self.enabled || self.last.elapsed() < Self::EVERY {
            return;
        }
        self.last = Instant::now();
        let Ok(losses) = capture.losses() else { return };
        let total: u64 = losses.by_cause.iter().map(|(_, calls, _)| calls).sum();
        if total > self.reported {
            let parts: Vec<String> =
                losses.by_cause.iter().filter(|(_, n, _)| *n > 0).map(|(c, n, _)| format!("{c}={n}")).collect();
            eprintln!("tlstap: {total} calls lost so far ({})", parts.join(", "));
            self.reported = total;
        }
    }
}
