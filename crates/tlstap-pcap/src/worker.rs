//! pcap mode's thread: owns the TC capture, reads its ring, joins chunks, holds packets in the
//! reorder window, decides flow ownership, and writes the file. The main thread talks to it
//! only through [`Msg`]s (secrets, processes, hooked binaries, side-stream lines, finish).
//! Must stay true: the capture is detached and everything pending is written before the
//! finish reply; a failure ends the thread (so the sender notices) with its reason recorded.

use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::sync::Arc;
use std::time::Duration;

use tlstap_bpf::clock::monotonic_ns;
use tlstap_bpf::packets::{self as bpf_packets, PacketCapture, PacketOptions, TcAttach};
use tlstap_core::event::LossCause;

use super::filter::PacketFilter;
use super::flows::{Flows, Owner};
use super::iface::Interface;
use super::packet::parse_tcp;
use super::procfs::{Hooked, Lookup, SocketIndex};
use super::window::{Assembler, Packet, Window};
use super::writer::{OwnedSecret, PacketWriter};

/// How long a packet is held for late packets and late secrets.
const HOLD_NS: u64 = 1_000_000_000;
/// At most this much packet data is held (a burst beyond it is released early).
const MAX_HELD_BYTES: usize = 256 << 20;
const POLL: Duration = Duration::from_millis(50);
/// Sockets are looked up at most this often for new flows, and for older undecided ones.
const SCAN_FRESH_NS: u64 = 5_000_000;
const SCAN_AGAIN_NS: u64 = 200_000_000;

/// From the main thread.
#[derive(Debug)]
pub enum Msg {
    Secret(OwnedSecret),
    /// A hooked process was seen in a probe; with its connection's endpoints when BPF knew them.
    Process {
        pid: u32,
        comm: String,
        conn: Option<(SocketAddr, SocketAddr)>,
    },
    Binary {
        path: PathBuf,
        hooked: bool,
    },
    /// A rendered JSON line for the side stream.
    Side(Vec<u8>),
    /// Stop capturing, write everything, reply with the totals.
    Finish(Sender<Result<Totals, String>>),
    /// End the thread.
    Stop,
}

/// What the capture did, for the exit summary and the stats record.
#[derive(Debug, Clone)]
pub struct Totals {
    pub packets: u64,
    pub bytes: u64,
    pub restamped: u64,
    /// (cause, packets) of packets lost between the kernel and the file.
    pub lost: Vec<(LossCause, u64)>,
    pub attach: TcAttach,
}

/// Everything the thread needs, prepared (and checked) by the main thread.
#[derive(Debug)]
pub struct Setup {
    pub iface: Interface,
    pub writer: PacketWriter,
    pub filter: Option<PacketFilter>,
    pub all: bool,
    pub pid: Option<u32>,
    pub uid: Option<u32>,
    pub ringbuf_bytes: u32,
    pub wall_offset: u64,
    pub features: tlstap_bpf::KernelFeatures,
    pub btf_file: Option<std::path::PathBuf>,
}

/// Chunks from the ring callback, joined.
#[derive(Debug, Default)]
struct Incoming {
    assembler: Assembler,
    arrived: Vec<Packet>,
    decode_errors: u64,
}

/// The thread's body. Reports readiness (or why it could not start) on `ready` first.
pub fn run(setup: Setup, rx: &Receiver<Msg>, ready: Sender<Result<(), String>>) -> Result<(), String> {
    let Setup { iface, writer, filter, all, pid, uid, ringbuf_bytes, wall_offset, features, btf_file } = setup;
    let opts = PacketOptions {
        ifindex: iface.index,
        ringbuf_bytes,
        ingress: !iface.link.loopback,
        egress: true,
        tcp_only: !all,
        l2_len: iface.link.l2_len,
        features,
        btf_file,
    };
    let mut storage = MaybeUninit::uninit();
    let capture = match PacketCapture::start(&mut storage, &opts) {
        Ok(capture) => capture,
        Err(err) => {
            let msg = format!("{:#}", anyhow::Error::from(err));
            let _ = ready.send(Err(msg.clone()));
            return Err(msg);
        }
    };
    let attach = capture.attach_kind();
    let incoming = RefCell::new(Incoming::default());
    let ring = capture
        .reader(|record: &[u8]| {
            let mut inc = incoming.borrow_mut();
            match bpf_packets::decode(record) {
                Ok(chunk) => {
                    if let Some(packet) = inc.assembler.push(&chunk) {
                        inc.arrived.push(packet);
                    }
                }
                Err(_) => inc.decode_errors += 1,
            }
            0
        })
        .map_err(|e| format!("opening the packet ring buffer: {e}"))?;
    let _ = ready.send(Ok(()));

    let mut core = Core {
        window: Window::new(HOLD_NS, MAX_HELD_BYTES),
        flows: Flows::default(),
        hooked: Hooked::new(Path::new("/proc"), pid, uid),
        index: SocketIndex::default(),
        last_scan: 0,
        last_expiry: 0,
        filter,
        all,
        l2_len: iface.link.l2_len as usize,
        wall_offset,
        writer,
    };
    let finish = loop {
        ring.poll(POLL).map_err(|err| format!("reading the packet ring buffer: {err}"))?;
        core.arrive(&incoming);
        let mut finish = None;
        while finish.is_none() {
            match rx.try_recv() {
                Ok(Msg::Finish(reply)) => finish = Some(Some(reply)),
                Ok(Msg::Stop) | Err(TryRecvError::Disconnected) => finish = Some(None),
                Ok(msg) => core.on_msg(msg).map_err(|e| format!("writing the side stream: {e}"))?,
                Err(TryRecvError::Empty) => break,
            }
        }
        if let Some(finish) = finish {
            break finish;
        }
        let now = monotonic_ns();
        // Unfinished packets lost chunks, already counted in BPF (ring full, load fault).
        incoming.borrow_mut().assembler.expire(now.saturating_sub(HOLD_NS));
        core.tick(Some(now)).map_err(|e| format!("writing the pcapng file: {e}"))?;
    };

    // Packets already in the ring are part of the capture; then the hooks go.
    let _ = ring.consume();
    core.arrive(&incoming);
    let losses = capture.losses().map_err(|e| format!("{:#}", anyhow::Error::from(e)));
    drop(ring);
    drop(capture);
    core.tick(None)
        .and_then(|()| core.writer.write_secrets())
        .and_then(|()| core.writer.flush())
        .map_err(|e| format!("writing the pcapng file: {e}"))?;
    let inc = incoming.borrow();
    let totals = losses.map(|losses| {
        let mut lost: Vec<(LossCause, u64)> = losses.iter().map(|(cause, packets, _)| (*cause, *packets)).collect();
        lost.push((LossCause::PacketDecodeError, inc.decode_errors + inc.assembler.out_of_place));
        Totals {
            packets: core.writer.packets,
            bytes: core.writer.bytes,
            restamped: core.writer.restamped,
            lost,
            attach,
        }
    });
    let Some(reply) = finish else { return Ok(()) };
    let _ = reply.send(totals);
    // Serve the last side-stream lines (the stats record) until the main thread is done.
    while let Ok(msg) = rx.recv() {
        match msg {
            Msg::Stop => break,
            Msg::Side(_) | Msg::Secret(_) => core
                .on_msg(msg)
                .and_then(|()| core.writer.write_secrets())
                .and_then(|()| core.writer.flush())
                .map_err(|e| e.to_string())?,
            _ => {}
        }
    }
    Ok(())
}

/// The thread's state between polls.
struct Core {
    window: Window,
    flows: Flows,
    hooked: Hooked,
    index: SocketIndex,
    last_scan: u64,
    last_expiry: u64,
    filter: Option<PacketFilter>,
    all: bool,
    l2_len: usize,
    wall_offset: u64,
    writer: PacketWriter,
}

impl Core {
    /// Moves packets from the ring callback into the window, noting their flows.
    fn arrive(&mut self, incoming: &RefCell<Incoming>) {
        for packet in std::mem::take(&mut incoming.borrow_mut().arrived) {
            if let Some(tcp) = parse_tcp(&packet.data, self.l2_len) {
                self.flows.observe(&tcp, packet.ts_ns, packet.syn_pid);
                // Checked now, while the process surely lives: it is sending its first SYN.
                if let Some(owner) = (packet.syn_pid != 0).then(|| self.hooked.owner_of(packet.syn_pid)).flatten() {
                    self.flows.claim(tcp.src, tcp.dst, owner, packet.ts_ns);
                }
            }
            self.window.push(packet);
        }
    }

    fn on_msg(&mut self, msg: Msg) -> std::io::Result<()> {
        match msg {
            Msg::Secret(secret) => {
                self.hooked.reported(secret.pid, "");
                self.writer.secret(secret);
            }
            Msg::Process { pid, comm, conn } => {
                self.hooked.reported(pid, &comm);
                if let Some((local, remote)) = conn {
                    self.flows.claim(local, remote, Owner { pid, comm: Arc::from(comm.as_str()) }, monotonic_ns());
                }
            }
            Msg::Binary { path, hooked: true } => self.hooked.add_binary(&path),
            Msg::Binary { path, hooked: false } => self.hooked.remove_binary(&path),
            Msg::Side(line) => self.writer.side_record(&line)?,
            Msg::Finish(_) | Msg::Stop => {}
        }
        Ok(())
    }

    /// Looks sockets up when flows want it, releases due packets (all when `now` is None).
    fn tick(&mut self, now: Option<u64>) -> std::io::Result<()> {
        let at = now.unwrap_or_else(monotonic_ns);
        let since = at.saturating_sub(self.last_scan);
        let fresh = self.flows.fresh() > 0 && since >= SCAN_FRESH_NS;
        if fresh || (now.is_none() || since >= SCAN_AGAIN_NS) && self.flows.undecided() > 0 {
            self.index = SocketIndex::scan(Path::new("/proc"), &self.hooked.processes());
            self.flows.decide(&Lookup { index: &self.index, hooked: &self.hooked });
            self.last_scan = at;
        }
        let mut wrote = false;
        while let Some(packet) = self.window.pop_due(now) {
            wrote |= self.release(&packet)?;
        }
        if at.saturating_sub(self.last_expiry) > 10_000_000_000 {
            self.flows.expire_idle(at);
            self.last_expiry = at;
        }
        if wrote || now.is_none() {
            self.writer.flush()?;
        }
        Ok(())
    }

    /// Writes a packet leaving the window if it is wanted. Returns whether it was written.
    fn release(&mut self, packet: &Packet) -> std::io::Result<bool> {
        let tcp = parse_tcp(&packet.data, self.l2_len);
        let lookup = Lookup { index: &self.index, hooked: &self.hooked };
        let owner = tcp.and_then(|t| self.flows.owner_at_release(&t, &lookup));
        let wanted = (self.all || owner.is_some())
            && self.filter.as_ref().is_none_or(|f| f.matches(&packet.data, packet.orig_len));
        if wanted {
            self.writer.packet(packet, packet.ts_ns.saturating_add(self.wall_offset), owner.as_ref())?;
        }
        Ok(wanted)
    }
}
