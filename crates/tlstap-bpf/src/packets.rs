//! pcap mode's packet capture: loads bpf/packets.bpf.c, attaches it to one interface (tcx links
//! on kernels ≥ 6.6, else clsact filters; a clsact qdisc created here is removed again), decodes
//! its ring records (length-checked) and reads its loss counters. Kernel state is owned:
//! dropping [`PacketCapture`] detaches everything before the object is unloaded.
//! Knows nothing of flows, processes or files: that is the binary's pcap mode.

use crate::features::{Feature, KernelFeatures};
use crate::tc_record::{FilterRecord, TcAdditions, TcRecord, RECORD_DIR};
use std::io;
use std::mem::{size_of, MaybeUninit};
use std::os::fd::AsFd as _;
use std::path::Path;
use std::ptr::NonNull;

use libbpf_rs::skel::{OpenSkel as _, SkelBuilder as _};
use libbpf_rs::{AsRawLibbpf as _, Link, MapCore as _, MapFlags, OpenObject, TcHook, TC_EGRESS, TC_INGRESS};

use crate::packets_skel::types::{
    tlstap_packet_dir, tlstap_packet_hdr, tlstap_packet_limits, tlstap_packet_loss_cause, tlstap_record_kind,
};
use crate::packets_skel::{PacketsSkel, PacketsSkelBuilder};
use crate::ring::RingReader;
use crate::wire::DecodeError;
use tlstap_core::event::LossCause;

/// Size of a packet record's header, asserted against events.h's stated layout.
pub const PACKET_HDR_LEN: usize = size_of::<tlstap_packet_hdr>();
const _: () = assert!(PACKET_HDR_LEN == 48, "events.h: struct tlstap_packet_hdr must be 48 bytes");

/// Most bytes of one packet BPF copies (events.h `TLSTAP_PACKET_CAPTURE_MAX`).
pub const CAPTURE_MAX: u32 = tlstap_packet_limits::TLSTAP_PACKET_CAPTURE_MAX.0;

/// What the packet program needs before load.
#[derive(Debug, Clone)]
pub struct PacketOptions {
    pub ifindex: u32,
    /// Ring buffer size in bytes: a power of two, a multiple of the page size.
    pub ringbuf_bytes: u32,
    pub ingress: bool,
    pub egress: bool,
    /// Copy only TCP over IPv4/IPv6 (other packets can belong to no TLS connection).
    pub tcp_only: bool,
    /// Bytes before the IP header: 14 on Ethernet (and `lo`), 0 on raw-IP interfaces.
    pub l2_len: u32,
    /// What the kernel can do: tcx or clsact, bpf_loop or a bounded loop, atomics or not.
    pub features: KernelFeatures,
    /// A BTF file of the running kernel, for kernels without their own (`--btf`).
    pub btf_file: Option<std::path::PathBuf>,
}

/// How the program was attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcAttach {
    /// tcx links (kernel ≥ 6.6): no qdisc involved.
    Tcx,
    /// clsact filters; `created_qdisc` when the clsact qdisc was made here (and goes again).
    Clsact { created_qdisc: bool },
}

#[derive(Debug, thiserror::Error)]
pub enum PacketError {
    #[error("opening the packet capture BPF object")]
    Open(#[source] libbpf_rs::Error),
    #[error("pcap mode needs a BPF ring buffer (Linux 5.8; RHEL 8.2), which this kernel lacks")]
    NoRingBuffer,
    #[error("loading the packet capture BPF program into the kernel")]
    Load(#[source] libbpf_rs::Error),
    #[error("attaching the packet capture to interface index {ifindex} (tcx: {tcx}; clsact)")]
    Attach {
        ifindex: u32,
        tcx: io::Error,
        #[source]
        source: io::Error,
    },
    #[error("reading the packet loss counters")]
    Counters(#[source] libbpf_rs::Error),
}

/// The cause a packet loss counter counts (events.h `enum tlstap_packet_loss_cause`).
pub fn packet_loss_cause(cause: tlstap_packet_loss_cause) -> Option<LossCause> {
    Some(match cause {
        tlstap_packet_loss_cause::TLSTAP_PACKET_LOSS_RINGBUF_FULL => LossCause::PacketRingbufFull,
        tlstap_packet_loss_cause::TLSTAP_PACKET_LOSS_LOAD_FAULT => LossCause::PacketLoadFault,
        tlstap_packet_loss_cause::TLSTAP_PACKET_LOSS_TRUNCATED => LossCause::PacketTruncated,
        _ => return None,
    })
}

/// A clsact filter of ours; detached when dropped.
struct ClsactFilter(TcHook);

impl Drop for ClsactFilter {
    fn drop(&mut self) {
        let _ = self.0.detach();
    }
}

/// A clsact qdisc this capture created; destroyed (with any filter left on it) when dropped.
struct ClsactQdisc(libbpf_sys::bpf_tc_hook);

impl Drop for ClsactQdisc {
    fn drop(&mut self) {
        // SAFETY: the hook struct is fully initialised (see `clsact_hook`) and lives across the
        // call; libbpf only reads it.
        unsafe { libbpf_sys::bpf_tc_hook_destroy(&mut self.0) };
    }
}

/// The loaded packet program and its attachments. Fields drop in declaration order: links and
/// filters first, then the qdisc, then the object.
pub struct PacketCapture<'obj> {
    links: Vec<Link>,
    filters: Vec<ClsactFilter>,
    _qdisc: Option<ClsactQdisc>,
    /// What the filters and qdisc are, written down while they exist (tc_record).
    _record: Option<TcRecord>,
    skel: PacketsSkel<'obj>,
    attach: TcAttach,
}

impl std::fmt::Debug for PacketCapture<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PacketCapture").field("attach", &self.attach).finish_non_exhaustive()
    }
}

impl<'obj> PacketCapture<'obj> {
    /// Loads the program and attaches it to the interface. `storage` holds libbpf's object for
    /// the capture's life.
    pub fn start(storage: &'obj mut MaybeUninit<OpenObject>, opts: &PacketOptions) -> Result<Self, PacketError> {
        if !opts.features.has(Feature::RingBuffer) {
            return Err(PacketError::NoRingBuffer);
        }
        let mut builder = PacketsSkelBuilder::default();
        if let Some(btf) = &opts.btf_file {
            builder.object_builder_mut().btf_custom_path(btf).map_err(PacketError::Open)?;
        }
        let mut open = builder.open(storage).map_err(PacketError::Open)?;
        open.maps.packets.set_max_entries(opts.ringbuf_bytes).map_err(PacketError::Open)?;
        let syn_pids = syn_pids_supported();
        if let Some(rodata) = open.maps.rodata_data.as_deref_mut() {
            rodata.tcp_only = opts.tcp_only;
            rodata.l2_len = opts.l2_len;
            rodata.syn_pids = syn_pids;
        }
        // One pair of programs: modern (bpf_loop, fetch atomics) or legacy (features.h).
        let legacy = opts.features.legacy_programs();
        for (prog, legacy_prog) in [
            (&mut open.progs.tlstap_ingress, false),
            (&mut open.progs.tlstap_egress, false),
            (&mut open.progs.tlstap_ingress_legacy, true),
            (&mut open.progs.tlstap_egress_legacy, true),
        ] {
            prog.set_autoload(legacy_prog == legacy);
        }
        let skel = open.load().map_err(PacketError::Load)?;
        let mut capture = PacketCapture {
            links: Vec::new(),
            filters: Vec::new(),
            _qdisc: None,
            _record: None,
            skel,
            attach: TcAttach::Tcx,
        };
        let tcx =
            if opts.features.has(Feature::Tcx) { capture.attach_tcx(opts) } else { Err(io::Error::other("not tried")) };
        if let Err(tcx) = tcx {
            capture.links.clear();
            capture.attach_clsact(opts).map_err(|source| PacketError::Attach { ifindex: opts.ifindex, tcx, source })?;
        }
        Ok(capture)
    }

    fn programs(&self, opts: &PacketOptions) -> Vec<(&libbpf_rs::ProgramMut<'obj>, bool)> {
        let progs = &self.skel.progs;
        let (ingress, egress) = if !opts.features.legacy_programs() {
            (&progs.tlstap_ingress, &progs.tlstap_egress)
        } else {
            (&progs.tlstap_ingress_legacy, &progs.tlstap_egress_legacy)
        };
        let mut out = Vec::new();
        if opts.ingress {
            out.push((ingress, true));
        }
        if opts.egress {
            out.push((egress, false));
        }
        out
    }

    fn attach_tcx(&mut self, opts: &PacketOptions) -> io::Result<()> {
        let ifindex = i32::try_from(opts.ifindex).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let mut links = Vec::new();
        for (prog, _) in self.programs(opts) {
            let tcx_opts =
                libbpf_sys::bpf_tcx_opts { sz: size_of::<libbpf_sys::bpf_tcx_opts>() as _, ..Default::default() };
            // SAFETY: the program pointer comes from a loaded program that outlives the call;
            // `tcx_opts` is initialised with its own size as libbpf's ABI requires; libbpf only
            // reads both.
            let ptr =
                unsafe { libbpf_sys::bpf_program__attach_tcx(prog.as_libbpf_object().as_ptr(), ifindex, &tcx_opts) };
            let ptr = NonNull::new(ptr).ok_or_else(io::Error::last_os_error)?;
            // SAFETY: libbpf returned a valid, newly created link that nothing else owns.
            links.push(unsafe { Link::from_ptr(ptr) });
        }
        self.links = links;
        self.attach = TcAttach::Tcx;
        Ok(())
    }

    fn attach_clsact(&mut self, opts: &PacketOptions) -> io::Result<()> {
        let ifindex = i32::try_from(opts.ifindex).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let mut qdisc = clsact_hook(ifindex);
        // SAFETY: `qdisc` is fully initialised with its own size; libbpf reads it only.
        let created = match unsafe { libbpf_sys::bpf_tc_hook_create(&mut qdisc) } {
            0 => true,
            err if -err == libc::EEXIST => false,
            err => return Err(io::Error::from_raw_os_error(-err)),
        };
        // Lazily: a ClsactQdisc made and dropped would destroy the qdisc that was there.
        let qdisc = created.then(|| ClsactQdisc(qdisc));
        let mut filters = Vec::new();
        let mut recorded = Vec::new();
        for (prog, ingress) in self.programs(opts) {
            let mut hook = TcHook::new(prog.as_fd());
            hook.ifindex(ifindex).attach_point(if ingress { TC_INGRESS } else { TC_EGRESS }).replace(false);
            let mut hook = hook.attach().map_err(io::Error::other)?;
            let prog_id = hook.query().map_err(io::Error::other)?;
            recorded.push(FilterRecord { ingress, handle: hook.get_handle(), priority: hook.get_priority(), prog_id });
            filters.push(ClsactFilter(hook));
        }
        // Should tlstap be killed, the next one removes them (a failure here drops them now).
        let additions = TcAdditions { ifindex, created_qdisc: created, filters: recorded };
        let record = TcRecord::write(Path::new(RECORD_DIR), &additions)?;
        // Filters before the qdisc: a failure above drops them, then the qdisc, in that order.
        self.filters = filters;
        self._qdisc = qdisc;
        self._record = Some(record);
        self.attach = TcAttach::Clsact { created_qdisc: created };
        Ok(())
    }

    /// How the program is attached.
    pub fn attach_kind(&self) -> TcAttach {
        self.attach
    }

    /// A reader of the ring buffer the packet records arrive in.
    pub fn reader<'cb>(&self, callback: impl FnMut(&[u8]) -> i32 + 'cb) -> std::io::Result<RingReader<'cb>> {
        RingReader::new(&self.skel.maps.packets, callback)
    }

    /// Packets lost in BPF, by cause: (cause, packets, bytes).
    pub fn losses(&self) -> Result<Vec<(LossCause, u64, u64)>, PacketError> {
        let mut out = Vec::new();
        for index in 0..tlstap_packet_loss_cause::TLSTAP_PACKET_LOSS__COUNT.0 {
            let key = index.to_ne_bytes();
            let maps = &self.skel.maps;
            let packets = sum_percpu(maps.packet_loss_packets.lookup_percpu(&key, MapFlags::ANY));
            let bytes = sum_percpu(maps.packet_loss_bytes.lookup_percpu(&key, MapFlags::ANY));
            let Some(cause) = packet_loss_cause(tlstap_packet_loss_cause(index)) else { continue };
            out.push((cause, packets.map_err(PacketError::Counters)?, bytes.map_err(PacketError::Counters)?));
        }
        Ok(out)
    }
}

/// Whether TC programs may call bpf_get_current_pid_tgid (kernel ≥ 6.10), asked of the kernel.
fn syn_pids_supported() -> bool {
    // SAFETY: a pure query: libbpf loads and unloads a tiny probe program; no pointers passed.
    let probed = unsafe {
        libbpf_sys::libbpf_probe_bpf_helper(
            libbpf_sys::BPF_PROG_TYPE_SCHED_CLS,
            libbpf_sys::BPF_FUNC_get_current_pid_tgid,
            std::ptr::null(),
        )
    };
    probed == 1
}

/// The clsact qdisc of an interface, as libbpf names it (both directions).
fn clsact_hook(ifindex: i32) -> libbpf_sys::bpf_tc_hook {
    libbpf_sys::bpf_tc_hook {
        sz: size_of::<libbpf_sys::bpf_tc_hook>() as _,
        ifindex,
        attach_point: libbpf_sys::BPF_TC_INGRESS | libbpf_sys::BPF_TC_EGRESS,
        ..Default::default()
    }
}

fn sum_percpu(values: libbpf_rs::Result<Option<Vec<Vec<u8>>>>) -> libbpf_rs::Result<u64> {
    Ok(values?
        .unwrap_or_default()
        .iter()
        .filter_map(|v| v.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_ne_bytes))
        .sum())
}

/// One chunk of one packet, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketChunk<'a> {
    /// CLOCK_MONOTONIC, as BPF took it at the hook.
    pub ts_ns: u64,
    pub packet_id: u64,
    pub ingress: bool,
    /// The packet's length on the wire.
    pub packet_len: u32,
    /// Bytes of it captured (all chunks together).
    pub cap_len: u32,
    pub offset: u32,
    pub payload: &'a [u8],
    /// The process of a connect()'s first SYN (see events.h), else 0.
    pub syn_pid: u32,
}

/// Decodes one record of the packet ring.
pub fn decode(record: &[u8]) -> Result<PacketChunk<'_>, DecodeError> {
    if record.len() < PACKET_HDR_LEN {
        return Err(DecodeError::Short(record.len()));
    }
    // SAFETY: the record holds at least PACKET_HDR_LEN bytes (checked above); the struct is
    // repr(C) of integers, valid for every bit pattern; read_unaligned makes no alignment
    // assumption.
    let hdr: tlstap_packet_hdr = unsafe { std::ptr::read_unaligned(record.as_ptr().cast()) };
    if hdr.kind != tlstap_record_kind::TLSTAP_RECORD_PACKET.0 {
        return Err(DecodeError::UnknownKind(hdr.kind));
    }
    let end = PACKET_HDR_LEN + hdr.chunk_len as usize;
    let payload = record
        .get(PACKET_HDR_LEN..end)
        .filter(|_| {
            hdr.chunk_off.checked_add(hdr.chunk_len).is_some_and(|e| e <= hdr.cap_len) && hdr.cap_len <= hdr.packet_len
        })
        .ok_or(DecodeError::PayloadPastEnd { payload: hdr.chunk_len, record: record.len() })?;
    Ok(PacketChunk {
        ts_ns: hdr.ts_ns,
        packet_id: hdr.packet_id,
        ingress: hdr.direction == tlstap_packet_dir::TLSTAP_PACKET_INGRESS.0,
        packet_len: hdr.packet_len,
        cap_len: hdr.cap_len,
        offset: hdr.chunk_off,
        payload,
        syn_pid: hdr.syn_pid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(chunk_off: u32, payload: &[u8], cap_len: u32, extra: usize) -> Vec<u8> {
        let hdr = tlstap_packet_hdr {
            kind: tlstap_record_kind::TLSTAP_RECORD_PACKET.0,
            direction: tlstap_packet_dir::TLSTAP_PACKET_EGRESS.0,
            ts_ns: 7,
            packet_id: 9,
            packet_len: cap_len + 1,
            cap_len,
            chunk_off,
            chunk_len: payload.len() as u32,
            syn_pid: 0,
            _reserved: 0,
        };
        let mut out = vec![0u8; PACKET_HDR_LEN];
        // SAFETY: `out` has exactly PACKET_HDR_LEN bytes; write_unaligned has no alignment need.
        unsafe { std::ptr::write_unaligned(out.as_mut_ptr().cast(), hdr) };
        out.extend_from_slice(payload);
        out.resize(out.len() + extra, 0xee);
        out
    }

    #[test]
    fn decodes_a_chunk() {
        let rec = record(16_384, b"abc", 16_387, 5); // size-class records are longer
        let c = decode(&rec).unwrap();
        assert_eq!((c.ts_ns, c.packet_id, c.ingress, c.offset), (7, 9, false, 16_384));
        assert_eq!((c.packet_len, c.cap_len, c.payload), (16_388, 16_387, &b"abc"[..]));
    }

    fn clsact_on_lo() -> bool {
        let out = std::process::Command::new("tc").args(["qdisc", "show", "dev", "lo"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).contains("clsact")
    }

    /// Loads the program, attaches it to `lo` and sees a datagram of its own making, 40 KB so
    /// that it spans three chunks: with tcx (where the kernel has it), with a clsact qdisc it
    /// creates (and removes), with one that was there (and stays), and without bpf_loop and
    /// fetch atomics (the bounded loop and per-CPU ids). One test, so they never share `lo` at
    /// once. Needs root: skips without it.
    #[test]
    fn captures_on_lo_with_tcx_and_clsact() {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            // CI sets TLSTAP_REQUIRE_PRIVILEGED: there a skipped BPF test is a failure.
            assert!(std::env::var_os("TLSTAP_REQUIRE_PRIVILEGED").is_none(), "needs root (TLSTAP_REQUIRE_PRIVILEGED)");
            eprintln!("SKIPPED: not root");
            return;
        }
        let tc = |args: &[&str]| assert!(std::process::Command::new("tc").args(args).status().unwrap().success());
        assert!(!clsact_on_lo(), "lo already has a clsact qdisc");
        let kernel = KernelFeatures::probe();
        let old = [Feature::Tcx, Feature::BpfLoop, Feature::FetchAtomics];
        for (features, preexisting) in [
            (kernel, false),
            (kernel.without(&[Feature::Tcx]), false),
            (kernel.without(&[Feature::Tcx]), true),
            (kernel.without(&old), false),
        ] {
            let tcx = features.has(Feature::Tcx);
            if preexisting {
                tc(&["qdisc", "add", "dev", "lo", "clsact"]);
            }
            let opts = PacketOptions {
                ifindex: 1,
                ringbuf_bytes: 1 << 20,
                ingress: false,
                egress: true,
                tcp_only: false,
                l2_len: 14,
                features,
                btf_file: None,
            };
            let mut storage = MaybeUninit::uninit();
            let capture = PacketCapture::start(&mut storage, &opts).unwrap();
            let expected = if tcx { TcAttach::Tcx } else { TcAttach::Clsact { created_qdisc: !preexisting } };
            assert_eq!(capture.attach_kind(), expected);
            let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let mut datagram = vec![b'.'; 40_000];
            datagram[40_000 - 18..].copy_from_slice(b"tlstap-packet-test");
            socket.send_to(&datagram, socket.local_addr().unwrap()).unwrap();
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let (mut seen, mut syn_pids) = (0, Vec::new());
            capture
                .reader(|r: &[u8]| {
                    let c = decode(r).unwrap();
                    seen += usize::from(c.payload.windows(18).any(|w| w == b"tlstap-packet-test"));
                    syn_pids.extend((c.syn_pid != 0).then_some(c.syn_pid));
                    0
                })
                .unwrap()
                .consume()
                .unwrap();
            assert_eq!(seen, 1, "the datagram's end once (egress only), {features:?}");
            if syn_pids_supported() {
                assert_eq!(syn_pids, [std::process::id()], "only the SYN names its process");
            }
            assert!(capture.losses().unwrap().iter().all(|l| l.1 == 0));
            drop(capture);
            assert_eq!(clsact_on_lo(), preexisting, "clsact after the capture, tcx {tcx}, preexisting {preexisting}");
            if preexisting {
                tc(&["qdisc", "del", "dev", "lo", "clsact"]);
            }
        }
    }

    #[test]
    fn rejects_malformed_records() {
        let rec = record(0, b"abcd", 4, 0);
        for len in 0..rec.len() {
            assert!(decode(&rec[..len]).is_err(), "len {len}");
        }
        assert!(decode(&record(2, b"abcd", 4, 0)).is_err(), "chunk past cap_len");
        let mut wrong = rec.clone();
        wrong[0] = 1;
        assert_eq!(decode(&wrong).unwrap_err(), DecodeError::UnknownKind(1));
    }
}
