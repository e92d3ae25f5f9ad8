//! Pcap mode (`-m pcap -i IFACE -w FILE [--all] [FILTER…]`): the hooked processes' TCP
//! connections as captured on an interface, with their TLS secrets embedded, in a pcapng file
//! Wireshark decrypts as it is. This crate root is the mode's face to the command: it takes the
//! request, starts the packet thread ([`worker`]) and gives the capture loop a [`Sink`] that forwards
//! secrets, processes and hooked binaries to it; [`PcapMode::finish`] ends it with its totals.
//! It must not print plaintext: in this mode data events only tell which process is whose.

mod filter;
mod flows;
mod iface;
mod packet;
mod procfs;
mod window;
mod worker;
mod writer;

use std::collections::HashSet;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use anyhow::{anyhow, bail, Context as _, Result};
use tlstap_bpf::packets::TcAttach;
use tlstap_core::event::{Event, Stats};
use tlstap_core::secret_file::{open_secret_file, OpenMode};
use tlstap_core::sink::{JsonlSink, Sink};

use filter::PacketFilter;
use iface::Interface;
use worker::{Msg, Setup, Totals};
use writer::{OwnedSecret, PacketWriter};

/// Pcap mode's own options (the command line checks and builds them).
#[derive(Debug, Clone)]
pub struct PcapRequest {
    /// Interface to capture on.
    pub ifname: String,
    /// The pcapng file (created 0600).
    pub file: PathBuf,
    /// Every packet the filter passes, not only the hooked processes' connections.
    pub all: bool,
    /// A tcpdump filter expression.
    pub filter: Option<String>,
    /// The JSON Lines side stream: `Some(None)` is stdout.
    pub side: Option<Option<PathBuf>>,
    /// Only this process's connections.
    pub pid: Option<u32>,
    /// Only this user's processes' connections.
    pub uid: Option<u32>,
}

/// The running packet thread.
#[derive(Debug)]
pub struct PcapMode {
    tx: Option<SyncSender<Msg>>,
    thread: Option<JoinHandle<Result<(), String>>>,
    /// Why the thread ended early, once it has.
    failure: Arc<Mutex<Option<String>>>,
    side: bool,
    file: PathBuf,
}

impl PcapMode {
    /// Checks the interface and filter, creates the file (0600), and starts capturing packets
    /// (returns once the TC program is attached).
    pub fn start(
        request: &PcapRequest,
        ringbuf_bytes: u32,
        features: tlstap_bpf::KernelFeatures,
        btf_file: Option<&Path>,
    ) -> Result<PcapMode> {
        tlstap_bpf::configure_libbpf_logging();
        let iface = Interface::resolve(&request.ifname)?;
        let filter = request.filter.as_deref().map(|f| PacketFilter::compile(f, iface.link.dlt)).transpose()?;
        let side: Option<Box<dyn Write + Send>> = match &request.side {
            None => None,
            Some(None) => Some(Box::new(io::stdout())),
            // Secrets go there too: created as secret files are.
            Some(Some(path)) => Some(Box::new(
                open_secret_file(path, OpenMode::Truncate)
                    .with_context(|| format!("cannot create {}", path.display()))?,
            )),
        };
        let path = &request.file;
        let file = open_secret_file(path, OpenMode::Truncate)
            .with_context(|| format!("cannot open pcap file {}", path.display()))?;
        let writer = PacketWriter::new(file, iface.link.linktype, &iface.name, side)
            .with_context(|| format!("writing {}", path.display()))?;
        let setup = Setup {
            iface,
            writer,
            filter,
            all: request.all,
            pid: request.pid,
            uid: request.uid,
            ringbuf_bytes,
            wall_offset: tlstap_bpf::clock::monotonic_to_wall_offset(),
            features,
            btf_file: btf_file.map(Path::to_path_buf),
        };
        let (tx, rx) = channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let failure = Arc::new(Mutex::new(None));
        let thread_failure = Arc::clone(&failure);
        let thread = std::thread::Builder::new()
            .name("tlstap-pcap".to_string())
            .spawn(move || {
                let result = worker::run(setup, &rx, ready_tx);
                // Recorded before the channel closes, so a sender that fails finds the reason.
                if let (Err(reason), Ok(mut slot)) = (&result, thread_failure.lock()) {
                    *slot = Some(reason.clone());
                }
                drop(rx);
                result
            })
            .context("starting the packet capture thread")?;
        let started = ready_rx.recv().map_err(|_| String::new()).and_then(|r| r);
        if let Err(reason) = started {
            let reason = thread.join().ok().and_then(Result::err).filter(|_| reason.is_empty()).unwrap_or(reason);
            bail!("capturing packets on {}: {reason}", request.ifname);
        }
        Ok(PcapMode { tx: Some(tx), thread: Some(thread), failure, side: request.side.is_some(), file: path.clone() })
    }

    /// The sink the capture loop feeds (in place of the text/jsonl sink).
    pub fn sink(&self) -> Box<dyn Sink> {
        Box::new(Forwarder {
            tx: self.tx.clone(),
            failure: Arc::clone(&self.failure),
            side: self.side,
            seen: HashSet::new(),
        })
    }

    /// Stops capturing and writes everything pending; adds the packet losses to `stats` and
    /// returns the summary's pcap part. The side stream stays open for the stats record.
    pub fn finish(&mut self, stats: &mut Stats) -> Result<String> {
        let (reply_tx, reply_rx) = mpsc::channel();
        let sent = self.tx.as_ref().is_some_and(|tx| tx.send(Msg::Finish(reply_tx)).is_ok());
        let totals: Option<Result<Totals, String>> = if sent { reply_rx.recv().ok() } else { None };
        let totals = match totals {
            Some(Ok(totals)) => totals,
            Some(Err(reason)) => bail!("finishing {}: {reason}", self.file.display()),
            None => return Err(self.failure()).with_context(|| format!("writing {}", self.file.display())),
        };
        for (cause, packets) in &totals.lost {
            stats.lost_by_cause.insert(*cause, *packets);
        }
        let mut line = format!(", {} packets ({} bytes) to {}", totals.packets, totals.bytes, self.file.display());
        if totals.restamped > 0 {
            line.push_str(&format!(" ({} restamped to keep time order)", totals.restamped));
        }
        if let TcAttach::Clsact { .. } = totals.attach {
            line.push_str(" via clsact");
        }
        Ok(line)
    }

    /// Why the thread ended, once it has.
    fn failure(&mut self) -> anyhow::Error {
        self.tx = None;
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(Err(reason))) => anyhow!("the packet capture stopped: {reason}"),
            Some(Err(_)) => anyhow!("the packet capture thread panicked"),
            _ => anyhow!("the packet capture stopped"),
        }
    }
}

impl Drop for PcapMode {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Msg::Stop);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Messages waiting for the packet thread at most.
const CHANNEL_MAX: usize = 16_384;

/// The capture loop's channel to the packet thread. Bounded: a packet thread that falls behind
/// (a slow disk) holds the capture loop back, and the loss shows where it then happens, counted
/// in BPF, rather than as memory. A full channel blocks the sender; it never drops a message.
fn channel() -> (SyncSender<Msg>, mpsc::Receiver<Msg>) {
    mpsc::sync_channel(CHANNEL_MAX)
}

/// Forwards what the capture loop sees to the packet thread.
struct Forwarder {
    tx: Option<SyncSender<Msg>>,
    failure: Arc<Mutex<Option<String>>>,
    side: bool,
    /// (pid, connection) pairs already forwarded.
    seen: HashSet<(u32, Option<(SocketAddr, SocketAddr)>)>,
}

impl Forwarder {
    fn send(&mut self, msg: Msg) -> io::Result<()> {
        let sent = self.tx.as_ref().is_some_and(|tx| tx.send(msg).is_ok());
        if sent {
            Ok(())
        } else {
            self.tx = None;
            let reason = self.failure.lock().ok().and_then(|f| f.clone()).unwrap_or_else(|| "it ended".to_string());
            Err(io::Error::other(format!("the packet capture stopped: {reason}")))
        }
    }

    fn side_line(&mut self, event: &Event<'_>) -> io::Result<()> {
        if self.side {
            let mut line = Vec::new();
            JsonlSink::new(&mut line).write_event(event)?;
            self.send(Msg::Side(line))?;
        }
        Ok(())
    }
}

impl Sink for Forwarder {
    fn write_event(&mut self, event: &Event<'_>) -> io::Result<()> {
        match event {
            Event::Secret(s) => {
                // Secrets show in the JSONL side stream too, as in every mode that captures them.
                self.side_line(event)?;
                self.send(Msg::Secret(OwnedSecret {
                    ts_ns: s.ts_ns,
                    pid: s.pid,
                    label: s.label.to_string(),
                    client_random: s.client_random.to_vec(),
                    secret: s.secret.to_vec(),
                }))
            }
            Event::Data(d) => {
                let conn = d.conn.and_then(|c| Some((c.local?, c.remote?)));
                if self.seen.len() >= 65_536 {
                    self.seen.clear();
                }
                if self.seen.insert((d.pid, conn)) {
                    self.send(Msg::Process { pid: d.pid, comm: d.comm.to_string(), conn })?;
                }
                Ok(())
            }
            Event::Attach(a) => {
                self.send(Msg::Binary { path: a.binary.to_path_buf(), hooked: true })?;
                self.side_line(event)
            }
            Event::Detach { binary } => {
                self.send(Msg::Binary { path: binary.to_path_buf(), hooked: false })?;
                self.side_line(event)
            }
            Event::Stats(_) | Event::Ready { .. } => self.side_line(event),
            #[allow(unreachable_patterns)] // events added later are not pcap mode's business
            _ => Ok(()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use tlstap_core::event::SecretEvent;

    use super::*;

    fn forwarder(tx: SyncSender<Msg>, failure: &Arc<Mutex<Option<String>>>) -> Forwarder {
        Forwarder { tx: Some(tx), failure: Arc::clone(failure), side: false, seen: HashSet::new() }
    }

    /// Writes secret `n` (its pid) through the sink, as the capture loop does.
    fn write_secret(sink: &mut Forwarder, n: u32) -> io::Result<()> {
        let event = SecretEvent { ts_ns: 1, pid: n, label: "CLIENT_RANDOM", client_random: &[1; 32], secret: &[2; 48] };
        sink.write_event(&Event::Secret(event))
    }

    fn wait_until(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done() {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// A packet thread that stops taking messages holds the sender back once CHANNEL_MAX wait
    /// (the channel is bounded), and every message still arrives, in order, once it goes on
    /// (back-pressure loses nothing).
    #[test]
    fn a_stalled_packet_thread_holds_the_sender_back_and_loses_nothing() {
        let (tx, rx) = channel();
        let failure = Arc::new(Mutex::new(None));
        let mut sink = forwarder(tx, &failure);
        let written = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&written);
        let total = CHANNEL_MAX as u32 + 100;
        let sender = std::thread::spawn(move || {
            for n in 0..total {
                write_secret(&mut sink, n).unwrap();
                counter.fetch_add(1, Ordering::SeqCst);
            }
        });
        wait_until("the channel takes CHANNEL_MAX messages", || written.load(Ordering::SeqCst) >= CHANNEL_MAX);
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(written.load(Ordering::SeqCst), CHANNEL_MAX, "a full channel blocks the sender");
        let mut got = Vec::new();
        while got.len() < total as usize {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(Msg::Secret(secret)) => got.push(secret.pid),
                Ok(other) => panic!("unexpected message {other:?}"),
                Err(err) => panic!("after {} messages: {err}", got.len()),
            }
        }
        sender.join().unwrap();
        assert_eq!(got, (0..total).collect::<Vec<_>>(), "every message, in order");
        assert!(rx.try_recv().is_err(), "nothing more");
    }

    /// A packet thread that ended while the sender waited on a full channel is an error with
    /// its reason, not a message silently dropped.
    #[test]
    fn a_packet_thread_gone_while_the_channel_is_full_is_an_error() {
        let (tx, rx) = channel();
        let failure = Arc::new(Mutex::new(None));
        let mut sink = forwarder(tx, &failure);
        for n in 0..CHANNEL_MAX as u32 {
            write_secret(&mut sink, n).unwrap();
        }
        let blocked = std::thread::spawn(move || write_secret(&mut sink, u32::MAX));
        std::thread::sleep(Duration::from_millis(200));
        assert!(!blocked.is_finished(), "the sender waits on a full channel");
        *failure.lock().unwrap() = Some("disk full".to_string());
        drop(rx);
        let err = blocked.join().unwrap().unwrap_err();
        assert_eq!(err.to_string(), "the packet capture stopped: disk full");
    }
}
