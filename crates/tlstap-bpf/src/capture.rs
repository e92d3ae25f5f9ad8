//! Loading tlstap's BPF object, attaching it to Go binaries and reading its loss counters.
//! Kernel state is owned: the object and every link are released when [`Capture`] drops
//! (links first, as fields drop in declaration order).

use std::collections::HashMap;
use std::mem::{size_of, MaybeUninit};
use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};

use libbpf_rs::skel::{OpenSkel as _, SkelBuilder as _};
use libbpf_rs::{Link, MapCore as _, MapFlags, OpenObject, UprobeMultiOpts, UprobeOpts};

use tlstap_core::event::LossCause;

use crate::features::{Feature, KernelFeatures};
use crate::ring::RingReader;
use crate::skel::types::{
    tlstap_binary_cfg, tlstap_binary_file, tlstap_binary_flags, tlstap_cookie_bits, tlstap_loss_cause,
    tlstap_probe_kind,
};
use crate::skel::{TlstapSkel, TlstapSkelBuilder};
use crate::slots::ReadSlots;

/// What the BPF side needs before load.
#[derive(Debug, Clone)]
pub struct CaptureOptions {
    /// Ring buffer size in bytes: a power of two, a multiple of the page size.
    pub ringbuf_bytes: u32,
    /// Capture only this process (tgid), filtered in BPF.
    pub pid: Option<u32>,
    /// Capture only processes of this user id, filtered in BPF.
    pub uid: Option<u32>,
    /// What the kernel can do (probed), less what tests disable: decides every path.
    pub features: KernelFeatures,
    /// A BTF file of the running kernel, for kernels without their own (`--btf`).
    pub btf_file: Option<PathBuf>,
    /// Attach empty programs instead (benchmarks: the cost of the traps alone).
    pub null_probes: bool,
    /// How many slots for Reads in flight BPF uses (a power of two; None: all of them); fewer
    /// push more Reads to the hash map behind them (tests).
    pub read_slots: Option<u32>,
    /// Capture only processes with this command name (at most 15 bytes), filtered in BPF.
    pub comm: Option<String>,
    /// Report process exec and exit (discovery of new processes).
    pub report_processes: bool,
    /// Stop each exec'd process until userspace continues it (needs `report_processes`).
    pub catch_exec: bool,
    /// Load the HTTP/2 header hooks' programs (probes of kinds `H2SentField` and
    /// `H2ReceivedBlock`), and tag data records with their goroutine. Needs uprobe cookies and
    /// the ring buffer ([`h2_hooks_supported`]).
    pub h2_hooks: bool,
}

/// Whether the kernel can run the HTTP/2 header hooks: their programs learn their role from the
/// cookie and write to the ring buffer (no per-role or perf-buffer variants exist).
pub fn h2_hooks_supported(features: &KernelFeatures) -> bool {
    features.has(Feature::Cookies) && features.has(Feature::RingBuffer)
}

/// Which probe program path an attach point takes; the low byte of its cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    WriteEntry,
    ReadEntry,
    ReadReturn,
    /// A RET of `(*Conn).Read` capturing the call alone (goelf's `ReadCapture::AtReturn`).
    ReadReturnAlone,
    /// The `JBE` of `(*Conn).Write`'s stack check (goelf's `TlsPlan::write_check`).
    WriteCheck,
    /// `(*Conn).Read`'s call of runtime.memmove into b (goelf's `ReadCapture::AtCopy`; its
    /// depth goes in [`BinaryConfig::read_copy_depth`]).
    ReadCopy,
    Keylog,
    /// hpack `(*Encoder).WriteField` entry (--h2-hooks).
    H2SentField,
    /// Each RET of http2 `(*Framer).readMetaFrame` (--h2-hooks).
    H2ReceivedBlock,
}

impl ProbeKind {
    fn cookie_kind(self) -> u64 {
        let kind = match self {
            ProbeKind::WriteEntry => tlstap_probe_kind::TLSTAP_PROBE_WRITE_ENTRY,
            ProbeKind::ReadEntry => tlstap_probe_kind::TLSTAP_PROBE_READ_ENTRY,
            ProbeKind::ReadReturn => tlstap_probe_kind::TLSTAP_PROBE_READ_RET,
            ProbeKind::ReadReturnAlone => tlstap_probe_kind::TLSTAP_PROBE_READ_RET_ALONE,
            ProbeKind::ReadCopy => tlstap_probe_kind::TLSTAP_PROBE_READ_COPY,
            ProbeKind::WriteCheck => tlstap_probe_kind::TLSTAP_PROBE_WRITE_CHECK,
            ProbeKind::Keylog => tlstap_probe_kind::TLSTAP_PROBE_KEYLOG,
            ProbeKind::H2SentField => tlstap_probe_kind::TLSTAP_PROBE_H2_SENT_FIELD,
            ProbeKind::H2ReceivedBlock => tlstap_probe_kind::TLSTAP_PROBE_H2_RECEIVED_BLOCK,
        };
        u64::from(kind.0)
    }

    /// A header hook, run by the h2 programs rather than the capture's.
    fn is_h2(self) -> bool {
        matches!(self, ProbeKind::H2SentField | ProbeKind::H2ReceivedBlock)
    }
}

/// One uprobe: a file offset in the binary that is a decoded instruction boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeSpec {
    pub file_offset: u64,
    /// The instruction's virtual address in the file's view (BPF derives a PIE's load bias
    /// from it and the instruction pointer).
    pub vaddr: u64,
    pub kind: ProbeKind,
    /// The binary passes arguments on the stack (Go ABI0) rather than in registers.
    pub stack_abi: bool,
}

impl ProbeSpec {
    fn cookie(&self, binary_index: u32) -> u64 {
        let bits = |b: tlstap_cookie_bits| u64::from(b.0);
        let abi = if self.stack_abi { bits(tlstap_cookie_bits::TLSTAP_COOKIE_STACK_ABI) } else { 0 };
        // A vaddr beyond 32 bits cannot be carried; BPF then skips connection resolution.
        let vaddr = u32::try_from(self.vaddr).map_or(0, u64::from);
        self.kind.cookie_kind()
            | abi
            | u64::from(binary_index) << bits(tlstap_cookie_bits::TLSTAP_COOKIE_BINARY_SHIFT)
            | vaddr << bits(tlstap_cookie_bits::TLSTAP_COOKIE_VADDR_SHIFT)
    }
}

/// Where the socket of a `tls.Conn` is, in one binary's own struct layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLayout {
    /// Virtual addresses of the `*net.TCPConn` / `*net.UnixConn` type descriptors (0: absent).
    pub tcp_conn_type: u64,
    pub unix_conn_type: u64,
    /// Offset of `tls.Conn.conn` (a `net.Conn` interface).
    pub tls_conn_conn: u32,
    /// Offset of `conn.fd` (`*netFD`) in `net.TCPConn`/`net.UnixConn`.
    pub net_conn_fd: u32,
    /// Offset of `netFD.pfd.Sysfd`.
    pub net_fd_sysfd: u32,
}

/// Where the header fields of a `*MetaHeadersFrame` are, in one binary's own layout (its type
/// data); a `hpack.HeaderField` has its Name at 0 and Value at 16 (checked by the analysis).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct H2Layout {
    /// Offset of `MetaHeadersFrame.Fields`.
    pub meta_fields: u32,
    /// Offset of the `*HeadersFrame` embedded in `MetaHeadersFrame`.
    pub meta_headers: u32,
    /// Offset of `StreamID` in `HeadersFrame`.
    pub stream_id: u32,
    /// Size of `hpack.HeaderField`.
    pub field_size: u32,
}

/// What BPF needs to know about a hooked binary beyond its probe offsets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BinaryConfig {
    /// None: connections of this binary are reported as unknown.
    pub conn_layout: Option<ConnLayout>,
    /// None: received header blocks are not reported.
    pub h2_layout: Option<H2Layout>,
    /// Stack ABI on amd64: g is this far below the FS base (0: the usual 8).
    pub g_below_fs: u32,
    /// The lowest address of an executable segment (kernels without cookies: BPF derives a
    /// PIE's load bias from it and the kernel's `mm->start_code`).
    pub exec_vaddr: u64,
    /// At the [`ProbeKind::ReadCopy`] probe: how far SP is below its value at Read's entry.
    pub read_copy_depth: u32,
}

impl BinaryConfig {
    fn to_wire(self) -> tlstap_binary_cfg {
        let layout = self.conn_layout;
        let h2 = self.h2_layout;
        let mut flags = 0;
        if layout.is_some() {
            flags |= tlstap_binary_flags::TLSTAP_BINARY_CONN_LAYOUT.0;
        }
        if h2.is_some() {
            flags |= tlstap_binary_flags::TLSTAP_BINARY_H2_LAYOUT.0;
        }
        tlstap_binary_cfg {
            tcp_conn_type: layout.map_or(0, |l| l.tcp_conn_type),
            unix_conn_type: layout.map_or(0, |l| l.unix_conn_type),
            tls_conn_conn: layout.map_or(0, |l| l.tls_conn_conn),
            net_conn_fd: layout.map_or(0, |l| l.net_conn_fd),
            net_fd_sysfd: layout.map_or(0, |l| l.net_fd_sysfd),
            g_below_fs: self.g_below_fs,
            flags,
            h2_meta_fields: h2.map_or(0, |l| l.meta_fields),
            h2_meta_headers: h2.map_or(0, |l| l.meta_headers),
            h2_stream_id: h2.map_or(0, |l| l.stream_id),
            h2_field_size: h2.map_or(0, |l| l.field_size),
            read_copy_depth: self.read_copy_depth,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("opening the BPF object")]
    Open(#[source] libbpf_rs::Error),
    #[error("loading the BPF programs into the kernel{hint}")]
    Load {
        hint: &'static str,
        #[source]
        source: libbpf_rs::Error,
    },
    #[error("attaching {probes} uprobes to {}", binary.display())]
    Attach {
        binary: PathBuf,
        probes: usize,
        #[source]
        source: libbpf_rs::Error,
    },
    #[error("reading the BPF loss counters")]
    Counters(#[source] libbpf_rs::Error),
    #[error("storing the configuration of {}", binary.display())]
    Configure {
        binary: PathBuf,
        #[source]
        source: libbpf_rs::Error,
    },
    #[error("more than {0} binaries hooked at once")]
    TooManyBinaries(u32),
    #[error("attaching to the sched_process_exec/exit tracepoints")]
    Tracepoint(#[source] libbpf_rs::Error),
    #[error("opening the ring buffer")]
    RingBuffer(#[source] std::io::Error),
    #[error("mapping the slots for Reads in flight")]
    ReadSlots(#[source] std::io::Error),
    #[error("reading {}", binary.display())]
    Stat {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{} has the inode number of {}, hooked already: on kernels without uprobe cookies binaries are told apart by it",
        binary.display(), other.display()
    )]
    SameInode { binary: PathBuf, other: PathBuf },
}

/// How probes are attached, by what the kernel has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachPath {
    /// One uprobe_multi link per binary, the role in each offset's cookie (≥ 6.6).
    Multi,
    /// A perf-event link per offset, the role in its cookie (≥ 5.15).
    PerOffset,
    /// A perf-event link per offset, a program per role, the binary found by inode.
    PerRole,
}

impl AttachPath {
    pub fn for_features(features: &KernelFeatures) -> Self {
        // uprobe_multi links carry their roles in cookies only, and their program is modern
        // (every kernel with uprobe_multi has bpf_loop and fetch atomics; tests that disable
        // either take the per-offset path, which has a legacy program).
        let multi = features.has(Feature::UprobeMulti) && !features.legacy_programs();
        match (features.has(Feature::Cookies), multi) {
            (true, true) => AttachPath::Multi,
            (true, false) => AttachPath::PerOffset,
            (false, _) => AttachPath::PerRole,
        }
    }
}

/// Bytes and calls lost, by cause, as counted in BPF.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LossCounts {
    /// (cause, calls affected, bytes missing)
    pub by_cause: Vec<(LossCause, u64, u64)>,
}

/// The cause a BPF loss counter counts (events.h `enum tlstap_loss_cause`).
pub fn loss_cause(cause: tlstap_loss_cause) -> Option<LossCause> {
    Some(match cause {
        tlstap_loss_cause::TLSTAP_LOSS_RINGBUF_FULL => LossCause::RingbufFull,
        tlstap_loss_cause::TLSTAP_LOSS_READ_FAULT => LossCause::ReadFault,
        tlstap_loss_cause::TLSTAP_LOSS_NO_ENTRY => LossCause::NoEntryState,
        tlstap_loss_cause::TLSTAP_LOSS_MAP_FULL => LossCause::MapFull,
        tlstap_loss_cause::TLSTAP_LOSS_CALL_TOO_LARGE => LossCause::CallTooLarge,
        _ => return None,
    })
}

/// The loaded BPF object and every link attached from it.
pub struct Capture<'obj> {
    /// Uprobe links by binary index; dropping a binary's links detaches it.
    links: HashMap<u32, Vec<Link>>,
    /// The exec/exit tracepoint links, when processes are reported: attached by `reader`
    /// (a perf buffer not yet opened refuses records, which would count as loss and let a
    /// held process go unhooked), cleared by `stop_process_reports`.
    _process_links: Vec<Link>,
    /// Processes are to be reported once a reader exists.
    report_processes: bool,
    /// Indexes in the `binaries` map released by detach, reused first.
    free_binaries: Vec<u32>,
    skel: TlstapSkel<'obj>,
    attach_path: AttachPath,
    /// Records come through perf buffers (no ring buffer).
    perf_output: bool,
    /// Inode number of each binary hooked on the PerRole path, by binary index.
    inodes: HashMap<u32, (u64, PathBuf)>,
    /// Per-CPU perf buffer size in pages (a power of two).
    perf_pages: usize,
    /// The per-offset program is the legacy one (features.h).
    legacy: bool,
    null_probes: bool,
    /// The h2 header hooks' programs are loaded.
    h2_hooks: bool,
    /// Where the list of processes held by --catch-exec is pinned (removed on drop).
    held_pin: Option<PathBuf>,
    /// Index of the next binary in the `binaries` map.
    next_binary: u32,
    /// BPF's slots for Reads in flight, for freeing those of dead processes.
    read_slots: ReadSlots,
}

/// An attached binary; give it back to [`Capture::detach`].
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct BinaryHandle {
    index: u32,
    /// Probe points attached.
    pub probes: usize,
}

/// Capacity of the `binaries` map (tlstap.bpf.c).
const MAX_BINARIES: u32 = 4096;

impl std::fmt::Debug for Capture<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture").field("binaries", &self.links.len()).finish_non_exhaustive()
    }
}

impl<'obj> Capture<'obj> {
    /// Opens and loads the BPF object. `storage` holds libbpf's object for the capture's life.
    pub fn load(storage: &'obj mut MaybeUninit<OpenObject>, opts: &CaptureOptions) -> Result<Self, Error> {
        let mut builder = TlstapSkelBuilder::default();
        if let Some(btf) = &opts.btf_file {
            builder.object_builder_mut().btf_custom_path(btf).map_err(Error::Open)?;
        }
        let mut open = builder.open(storage).map_err(Error::Open)?;
        let features = &opts.features;
        let attach_path = AttachPath::for_features(features);
        // Only the programs of the attach path in use are loaded.
        let null = opts.null_probes;
        let multi = attach_path == AttachPath::Multi;
        let per_role = attach_path == AttachPath::PerRole;
        open.progs.go_tls_multi.set_autoload(multi && !null);
        // Modern programs use bpf_loop and fetch atomics, legacy ones neither (features.h).
        let (per_offset, legacy) = (attach_path == AttachPath::PerOffset && !null, features.legacy_programs());
        open.progs.go_tls_single.set_autoload(per_offset && !legacy);
        open.progs.go_tls_single_legacy.set_autoload(per_offset && legacy);
        for prog in [
            &mut open.progs.go_tls_write_nocookie,
            &mut open.progs.go_tls_read_entry_nocookie,
            &mut open.progs.go_tls_read_ret_nocookie,
            &mut open.progs.go_tls_read_ret_alone_nocookie,
            &mut open.progs.go_tls_read_copy_nocookie,
            &mut open.progs.go_tls_write_check_nocookie,
            &mut open.progs.go_tls_keylog_nocookie,
        ] {
            prog.set_autoload(per_role && !null);
        }
        let h2_hooks = opts.h2_hooks && !null && h2_hooks_supported(features);
        open.progs.go_h2_multi.set_autoload(h2_hooks && multi);
        open.progs.go_h2_single.set_autoload(h2_hooks && !multi);
        open.progs.go_tls_null_multi.set_autoload(multi && null);
        open.progs.go_tls_null_single.set_autoload(!multi && null);
        // Records go through the ring buffer or perf buffers; the other's maps are not made
        // (the programs' references to them sit on paths the verifier never takes).
        let perf_output = !features.has(Feature::RingBuffer);
        open.maps.events.set_autocreate(!perf_output).map_err(Error::Open)?;
        open.maps.perf_events.set_autocreate(perf_output).map_err(Error::Open)?;
        open.maps.perf_scratch.set_autocreate(perf_output).map_err(Error::Open)?;
        open.maps.events.set_max_entries(opts.ringbuf_bytes).map_err(Error::Open)?;
        let all_slots = open.maps.read_slots.max_entries();
        if let Some(rodata) = open.maps.rodata_data.as_deref_mut() {
            rodata.target_tgid = opts.pid.unwrap_or(0);
            rodata.target_uid = opts.uid.unwrap_or(u32::MAX);
            if let Some(comm) = &opts.comm {
                // The kernel keeps 15 bytes of a command name and a NUL.
                for (dst, src) in rodata.target_comm.iter_mut().zip(comm.bytes().take(15)) {
                    *dst = src as i8;
                }
            }
            // The slot count is a power of two: the mask keeps the low bits of a slot's hash.
            rodata.read_slot_mask = opts.read_slots.unwrap_or(all_slots).clamp(1, all_slots).next_power_of_two() - 1;
            rodata.report_processes = opts.report_processes;
            rodata.catch_exec = opts.report_processes && opts.catch_exec;
            rodata.use_perf_output = perf_output;
            rodata.h2_hooks = h2_hooks;
        }
        let skel = open.load().map_err(|source| Error::Load { hint: load_hint(&source), source })?;
        let read_slots = ReadSlots::map(&skel.maps.read_slots.as_fd(), skel.maps.read_slots.max_entries() as usize)
            .map_err(Error::ReadSlots)?;
        // The processes this run holds are listed in a pinned map, for a next run to continue
        // should this one be killed (SIGKILL) before it continued them. Without bpffs, only
        // this run's own continuing remains.
        let mut skel = skel;
        let held_pin = (opts.report_processes && opts.catch_exec && crate::held::ensure_bpffs())
            .then(|| crate::held::pin_path(std::process::id()))
            .filter(|path| skel.maps.held_processes.pin(path).is_ok());
        Ok(Capture {
            links: HashMap::new(),
            _process_links: Vec::new(),
            report_processes: opts.report_processes,
            free_binaries: Vec::new(),
            skel,
            attach_path,
            perf_output,
            inodes: HashMap::new(),
            perf_pages: perf_pages(opts.ringbuf_bytes),
            legacy: features.legacy_programs(),
            null_probes: opts.null_probes,
            h2_hooks,
            held_pin,
            next_binary: 0,
            read_slots,
        })
    }

    /// Attaches the probe program at every `probes` offset of `binary` (all processes running
    /// it, now and later). The handle detaches it again.
    pub fn attach(&mut self, binary: &Path, probes: &[ProbeSpec], config: BinaryConfig) -> Result<BinaryHandle, Error> {
        let index = match self.free_binaries.pop() {
            Some(index) => index,
            None if self.next_binary < MAX_BINARIES => {
                self.next_binary += 1;
                self.next_binary - 1
            }
            None => return Err(Error::TooManyBinaries(MAX_BINARIES)),
        };
        let result = self.attach_at(index, binary, probes, config);
        if result.is_err() {
            self.forget_inode(index);
            self.free_binaries.push(index);
        }
        result
    }

    fn attach_at(
        &mut self,
        index: u32,
        binary: &Path,
        probes: &[ProbeSpec],
        config: BinaryConfig,
    ) -> Result<BinaryHandle, Error> {
        let wire = config.to_wire();
        // SAFETY: tlstap_binary_cfg is repr(C), fully initialised above and, per events.h,
        // free of padding, so all of its bytes are initialised; the slice lives only here.
        let value = unsafe {
            std::slice::from_raw_parts((&wire as *const tlstap_binary_cfg).cast::<u8>(), size_of::<tlstap_binary_cfg>())
        };
        self.skel
            .maps
            .binaries
            .update(&index.to_ne_bytes(), value, MapFlags::ANY)
            .map_err(|source| Error::Configure { binary: binary.to_path_buf(), source })?;

        let error = |source| Error::Attach { binary: binary.to_path_buf(), probes: probes.len(), source };
        if self.attach_path == AttachPath::PerRole {
            self.register_inode(index, binary, probes, config)?;
        }
        let progs = &self.skel.progs;
        // Header hooks go to their own programs, and only when those are loaded.
        let (h2_probes, probes): (Vec<ProbeSpec>, Vec<ProbeSpec>) = probes.iter().partition(|p| p.kind.is_h2());
        let h2_probes = if self.h2_hooks { h2_probes } else { Vec::new() };
        if self.attach_path == AttachPath::Multi {
            let mut links = Vec::with_capacity(2);
            let prog = if self.null_probes { &progs.go_tls_null_multi } else { &progs.go_tls_multi };
            for (prog, probes) in [(prog, &probes), (&progs.go_h2_multi, &h2_probes)] {
                if probes.is_empty() {
                    continue;
                }
                let offsets = probes.iter().map(|p| p.file_offset as usize).collect();
                let cookies = probes.iter().map(|p| p.cookie(index)).collect();
                let opts = UprobeMultiOpts { offsets, cookies, ..Default::default() };
                links.push(prog.attach_uprobe_multi_with_opts(-1, binary, "", opts).map_err(error)?);
            }
            self.links.insert(index, links);
        } else {
            // All or nothing: links made before a failure drop with this vector.
            let mut links = Vec::with_capacity(probes.len() + h2_probes.len());
            for probe in probes.iter().chain(&h2_probes) {
                let prog = match (self.null_probes, self.attach_path, probe.kind) {
                    (_, _, ProbeKind::H2SentField | ProbeKind::H2ReceivedBlock) => &progs.go_h2_single,
                    (true, _, _) => &progs.go_tls_null_single,
                    (false, AttachPath::PerRole, ProbeKind::WriteEntry) => &progs.go_tls_write_nocookie,
                    (false, AttachPath::PerRole, ProbeKind::ReadEntry) => &progs.go_tls_read_entry_nocookie,
                    (false, AttachPath::PerRole, ProbeKind::ReadReturn) => &progs.go_tls_read_ret_nocookie,
                    (false, AttachPath::PerRole, ProbeKind::ReadReturnAlone) => &progs.go_tls_read_ret_alone_nocookie,
                    (false, AttachPath::PerRole, ProbeKind::ReadCopy) => &progs.go_tls_read_copy_nocookie,
                    (false, AttachPath::PerRole, ProbeKind::WriteCheck) => &progs.go_tls_write_check_nocookie,
                    (false, AttachPath::PerRole, ProbeKind::Keylog) => &progs.go_tls_keylog_nocookie,
                    (false, _, _) if self.legacy => &progs.go_tls_single_legacy,
                    (false, _, _) => &progs.go_tls_single,
                };
                // A kernel without cookies refuses a link that carries one (libbpf checks).
                let cookie = if self.attach_path == AttachPath::PerRole { 0 } else { probe.cookie(index) };
                let opts = UprobeOpts { cookie, ..Default::default() };
                let link = prog.attach_uprobe_with_opts(-1, binary, probe.file_offset as usize, opts).map_err(error)?;
                links.push(link);
            }
            self.links.insert(index, links);
        }
        Ok(BinaryHandle { index, probes: probes.len() + h2_probes.len() })
    }

    /// A thread that continues any process held at exec longer than `deadline` (--catch-exec),
    /// whatever holds up the capture loop. None if the map's descriptor cannot be shared.
    pub fn held_watchdog(&self, deadline: std::time::Duration) -> Option<crate::held::HeldWatchdog> {
        let map = libbpf_rs::MapHandle::try_from(&self.skel.maps.held_processes).ok()?;
        Some(crate::held::HeldWatchdog::start(map, deadline))
    }

    /// A process held at exec was continued: no later run need continue it.
    pub fn release_held(&self, pid: u32) {
        // Absent is fine: the map may have been full when BPF held it.
        let _ = self.skel.maps.held_processes.delete(&pid.to_ne_bytes());
    }

    /// Stops reporting (and holding) exec'd processes: the first step of shutting down, so that
    /// no process is stopped after the last ring-buffer read that would continue it.
    pub fn stop_process_reports(&mut self) {
        self.report_processes = false;
        self._process_links.clear();
    }

    /// Kernels without cookies: BPF finds the binary by its executable's inode number.
    fn register_inode(
        &mut self,
        index: u32,
        binary: &Path,
        probes: &[ProbeSpec],
        config: BinaryConfig,
    ) -> Result<(), Error> {
        use std::os::unix::fs::MetadataExt as _;
        let ino =
            std::fs::metadata(binary).map_err(|source| Error::Stat { binary: binary.to_path_buf(), source })?.ino();
        if let Some((_, other)) = self.inodes.iter().find(|(&i, (n, _))| i != index && *n == ino).map(|(_, v)| v) {
            return Err(Error::SameInode { binary: binary.to_path_buf(), other: other.clone() });
        }
        let stack_abi = probes.first().is_some_and(|p| p.stack_abi);
        let file = tlstap_binary_file {
            binary_index: index,
            cookie_flags: if stack_abi { tlstap_cookie_bits::TLSTAP_COOKIE_STACK_ABI.0 } else { 0 },
            exec_vaddr: config.exec_vaddr,
        };
        // SAFETY: tlstap_binary_file is repr(C), fully initialised above and, per events.h,
        // free of padding, so all of its bytes are initialised; the slice lives only here.
        let value = unsafe {
            std::slice::from_raw_parts(
                (&file as *const tlstap_binary_file).cast::<u8>(),
                size_of::<tlstap_binary_file>(),
            )
        };
        self.skel
            .maps
            .binary_files
            .update(&ino.to_ne_bytes(), value, MapFlags::ANY)
            .map_err(|source| Error::Configure { binary: binary.to_path_buf(), source })?;
        self.inodes.insert(index, (ino, binary.to_path_buf()));
        Ok(())
    }

    /// Detaches a binary's probes (its processes are no longer captured).
    pub fn detach(&mut self, handle: BinaryHandle) {
        if self.links.remove(&handle.index).is_some() {
            self.free_binaries.push(handle.index);
        }
        self.forget_inode(handle.index);
    }

    /// Removes what register_inode stored for the binary at `index`, if anything.
    fn forget_inode(&mut self, index: u32) {
        if let Some((ino, _)) = self.inodes.remove(&index) {
            // Gone already is fine: nothing else removes it.
            let _ = self.skel.maps.binary_files.delete(&ino.to_ne_bytes());
        }
    }

    /// A handle of its own on the ring buffer the records arrive in, so that reading it does
    /// not borrow the capture (which attaches and detaches meanwhile). Process reports start
    /// here, once there is somewhere for them to go; make the reader before attaching probes
    /// for the same reason.
    pub fn reader<'cb>(&mut self, callback: impl FnMut(&[u8]) -> i32 + 'cb) -> Result<RingReader<'cb>, Error> {
        let reader = if self.perf_output {
            RingReader::perf(&self.skel.maps.perf_events, self.perf_pages, callback)
        } else {
            RingReader::new(&self.skel.maps.events, callback)
        }
        .map_err(Error::RingBuffer)?;
        if self.report_processes && self._process_links.is_empty() {
            for prog in [&self.skel.progs.on_exec, &self.skel.progs.on_exit] {
                self._process_links.push(prog.attach().map_err(Error::Tracepoint)?);
            }
        }
        Ok(reader)
    }

    /// Frees BPF's Read slots held by processes that `alive` says are gone (they died inside
    /// a Read); returns how many. `alive` is asked about host process IDs, as BPF reports them.
    pub fn free_dead_read_slots(&self, alive: impl FnMut(u32) -> bool) -> usize {
        self.read_slots.free_dead(alive)
    }

    /// Sums the per-CPU loss counters.
    pub fn losses(&self) -> Result<LossCounts, Error> {
        let mut by_cause = Vec::new();
        for index in 0..tlstap_loss_cause::TLSTAP_LOSS__COUNT.0 {
            let key = index.to_ne_bytes();
            let calls = sum_percpu(self.skel.maps.loss_calls.lookup_percpu(&key, MapFlags::ANY));
            let bytes = sum_percpu(self.skel.maps.loss_bytes.lookup_percpu(&key, MapFlags::ANY));
            let Some(cause) = loss_cause(tlstap_loss_cause(index)) else { continue };
            by_cause.push((cause, calls.map_err(Error::Counters)?, bytes.map_err(Error::Counters)?));
        }
        Ok(LossCounts { by_cause })
    }
}

impl Drop for Capture<'_> {
    fn drop(&mut self) {
        // However the capture ends (an error returned early included): hold no new process,
        // then continue every one still held, then drop the list a next run would look at.
        self._process_links.clear();
        crate::held::continue_all(&self.skel.maps.held_processes);
        if let Some(path) = self.held_pin.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Per-CPU perf buffer pages: the ring buffer's size shared out among the CPUs, a power of two
/// of at least 64 KiB each.
fn perf_pages(ringbuf_bytes: u32) -> usize {
    let cpus = libbpf_rs::num_possible_cpus().unwrap_or(1).max(1);
    // SAFETY: sysconf has no preconditions; it returns -1 (then 4096 is assumed) on error.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096).max(1);
    (ringbuf_bytes as usize / page / cpus).max(65536 / page).max(1).next_power_of_two()
}

fn sum_percpu(values: libbpf_rs::Result<Option<Vec<Vec<u8>>>>) -> libbpf_rs::Result<u64> {
    Ok(values?
        .unwrap_or_default()
        .iter()
        .filter_map(|v| v.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_ne_bytes))
        .sum())
}

fn load_hint(err: &libbpf_rs::Error) -> &'static str {
    match err.kind() {
        // EPERM (bpf() forbidden) and EACCES (verifier) both land here. Capabilities were
        // checked before loading, so a refusal means the verifier, or a policy above them.
        libbpf_rs::ErrorKind::PermissionDenied | libbpf_rs::ErrorKind::InvalidInput => {
            " (the kernel refused them: its verifier rejected them, or bpf() is not allowed here, \
             as a container's seccomp profile or kernel lockdown can forbid it even to root; \
             TLSTAP_DEBUG=1 prints libbpf's log)"
        }
        _ => "",
    }
}

/// Routes libbpf's own messages: silent by default (errors reach the user through `Error`),
/// everything on stderr when TLSTAP_DEBUG=1.
pub fn configure_libbpf_logging() {
    if std::env::var_os("TLSTAP_DEBUG").is_some_and(|v| v == "1") {
        libbpf_rs::set_print(Some((libbpf_rs::PrintLevel::Debug, |_, msg: String| eprint!("{msg}"))));
    } else {
        libbpf_rs::set_print(None);
    }
}
