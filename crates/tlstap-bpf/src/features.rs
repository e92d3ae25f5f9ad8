//! What the running kernel's BPF can do, asked of the kernel itself: libbpf's helper and map
//! probes, and a trial load where libbpf has none. Never inferred from the release number
//! (RHEL 9's 5.14 carries a 6.x BPF subsystem; RHEL 8's 4.18 has ring buffers from 8.2 on).
//! From what is there, [`KernelFeatures::paths`] picks the path tlstap takes for each job.
//!
//! Must stay true: a probe that cannot tell says "absent" (a fallback path always works where
//! the faster one would), and the only features without a fallback are the ones
//! [`KernelFeatures::missing_required`] names.

use std::ffi::CString;
use std::fmt;
use std::io;
use std::os::fd::{FromRawFd as _, OwnedFd};
use std::path::Path;

use libbpf_sys as sys;

/// A kernel feature one of tlstap's paths needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Feature {
    /// The kernel's own BTF (/sys/kernel/btf/vmlinux), for CO-RE relocations.
    KernelBtf,
    /// bpf_probe_read_user (5.5): how every argument and payload is read.
    ProbeReadUser,
    /// Bounded loops in programs (5.3): the chunked copy where bpf_loop is missing.
    BoundedLoops,
    /// BPF_MAP_TYPE_RINGBUF (5.8); else per-CPU perf buffers.
    RingBuffer,
    /// Atomics that return a value: fetch-add, compare-and-swap, exchange (5.12).
    FetchAtomics,
    /// bpf_get_attach_cookie in uprobes (5.15); else a program per probe role.
    Cookies,
    /// The bpf_loop helper (5.17); else a bounded loop.
    BpfLoop,
    /// BPF_TRACE_UPROBE_MULTI links (6.6); else one perf-event link per offset.
    UprobeMulti,
    /// tcx links for TC programs (6.6); else a clsact qdisc. Tried at attach in pcap mode.
    Tcx,
}

impl Feature {
    /// Every feature, in the order they are reported.
    pub const ALL: [Feature; 9] = [
        Feature::KernelBtf,
        Feature::ProbeReadUser,
        Feature::BoundedLoops,
        Feature::RingBuffer,
        Feature::FetchAtomics,
        Feature::Cookies,
        Feature::BpfLoop,
        Feature::UprobeMulti,
        Feature::Tcx,
    ];

    /// The name used by `-v`, `--dry-run` and the hidden `--disable-feature` flag.
    pub fn name(self) -> &'static str {
        match self {
            Feature::KernelBtf => "btf",
            Feature::ProbeReadUser => "probe-read-user",
            Feature::BoundedLoops => "bounded-loops",
            Feature::RingBuffer => "ringbuf",
            Feature::FetchAtomics => "fetch-atomics",
            Feature::Cookies => "cookies",
            Feature::BpfLoop => "bpf-loop",
            Feature::UprobeMulti => "uprobe-multi",
            Feature::Tcx => "tcx",
        }
    }

    /// The feature of this name, if any.
    pub fn from_name(name: &str) -> Option<Feature> {
        Feature::ALL.into_iter().find(|f| f.name() == name)
    }

    fn index(self) -> usize {
        Feature::ALL.iter().position(|&f| f == self).unwrap_or(0)
    }

    /// Where a kernel first had it upstream (distributions backport: only a guide).
    fn upstream(self) -> &'static str {
        match self {
            Feature::KernelBtf => "5.2 with CONFIG_DEBUG_INFO_BTF",
            Feature::ProbeReadUser => "5.5",
            Feature::BoundedLoops => "5.3",
            Feature::RingBuffer => "5.8",
            Feature::FetchAtomics => "5.12",
            Feature::Cookies => "5.15",
            Feature::BpfLoop => "5.17",
            Feature::UprobeMulti | Feature::Tcx => "6.6",
        }
    }
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which of [`Feature::ALL`] the kernel has (or is allowed to be used: see `without`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelFeatures {
    /// Why not even a trivial program loads (bpf() forbidden: seccomp, lockdown), if so: then
    /// no probe can tell what the kernel has, and the real load says why it fails.
    refused: Option<i32>,
    present: [bool; Feature::ALL.len()],
    /// Features present but disabled (tests force every fallback on a new kernel).
    disabled: [bool; Feature::ALL.len()],
}

/// Where the kernel's BTF comes from.
pub const KERNEL_BTF_PATH: &str = "/sys/kernel/btf/vmlinux";

impl KernelFeatures {
    /// Asks the running kernel. Needs the rights to load BPF programs (root); without them
    /// every probe says absent.
    pub fn probe() -> Self {
        let trivial = [insn(MOV64_IMM, 0, 0, 0, 0), insn(EXIT, 0, 0, 0, 0)];
        let refused =
            trial_load(sys::BPF_PROG_TYPE_SOCKET_FILTER, 0, &trivial).err().map(|e| e.raw_os_error().unwrap_or(0));
        let mut present = [false; Feature::ALL.len()];
        for feature in Feature::ALL {
            present[feature.index()] = match feature {
                Feature::KernelBtf => Path::new(KERNEL_BTF_PATH).exists(),
                Feature::ProbeReadUser => helper_supported(sys::BPF_PROG_TYPE_KPROBE, sys::BPF_FUNC_probe_read_user),
                Feature::BoundedLoops => trial_load(sys::BPF_PROG_TYPE_SOCKET_FILTER, 0, &bounded_loop_insns()).is_ok(),
                Feature::RingBuffer => map_type_supported(sys::BPF_MAP_TYPE_RINGBUF),
                Feature::FetchAtomics => trial_load(sys::BPF_PROG_TYPE_SOCKET_FILTER, 0, &cmpxchg_insns()).is_ok(),
                Feature::Cookies => helper_supported(sys::BPF_PROG_TYPE_KPROBE, sys::BPF_FUNC_get_attach_cookie),
                Feature::BpfLoop => helper_supported(sys::BPF_PROG_TYPE_KPROBE, sys::BPF_FUNC_loop),
                Feature::UprobeMulti => uprobe_multi_supported(),
                Feature::Tcx => tcx_supported(),
            };
        }
        KernelFeatures { refused, present, disabled: [false; Feature::ALL.len()] }
    }

    /// A set with exactly `present` (tests and plans).
    pub fn with(present: &[Feature]) -> Self {
        let mut set = KernelFeatures {
            refused: None,
            present: [false; Feature::ALL.len()],
            disabled: [false; Feature::ALL.len()],
        };
        for f in present {
            set.present[f.index()] = true;
        }
        set
    }

    /// The same kernel with `features` treated as absent: their fallbacks are taken.
    pub fn without(mut self, features: &[Feature]) -> Self {
        for f in features {
            self.disabled[f.index()] = true;
        }
        self
    }

    /// Whether tlstap may use `feature`: the kernel has it and it is not disabled.
    pub fn has(&self, feature: Feature) -> bool {
        self.present[feature.index()] && !self.disabled[feature.index()]
    }

    /// Whether the legacy variant of the programs is loaded (bpf/features.h): without
    /// bpf_loop or without fetch atomics, it uses neither.
    pub fn legacy_programs(&self) -> bool {
        !self.has(Feature::BpfLoop) || !self.has(Feature::FetchAtomics)
    }

    /// The features tlstap cannot do without and this kernel lacks, and how to get each.
    /// `btf_file`: a BTF file given in place of the kernel's own.
    pub fn missing_required(&self, btf_file: Option<&Path>) -> Option<MissingFeatures> {
        if self.refused.is_some() {
            return None; // nothing was learnt: the load itself will say why bpf() fails
        }
        let mut missing = Vec::new();
        if !self.has(Feature::KernelBtf) && btf_file.is_none() {
            missing.push(Feature::KernelBtf);
        }
        if !self.has(Feature::ProbeReadUser) {
            missing.push(Feature::ProbeReadUser);
        }
        // Only the legacy programs loop on their own (the modern ones have bpf_loop).
        if !self.has(Feature::BoundedLoops) && self.legacy_programs() {
            missing.push(Feature::BoundedLoops);
        }
        (!missing.is_empty()).then_some(MissingFeatures(missing))
    }

    /// The path taken for each job, and why: one line each, for `-v` and `--dry-run`.
    pub fn paths(&self) -> Vec<String> {
        if let Some(errno) = self.refused {
            let why = io::Error::from_raw_os_error(errno);
            return vec![format!("not probed: not even a trivial BPF program loads here ({why})")];
        }
        let why = |f: Feature| {
            if self.has(f) {
                format!("{f}: yes")
            } else if self.present[f.index()] {
                format!("{f}: disabled")
            } else {
                format!("{f}: no, {} upstream", f.upstream())
            }
        };
        let pick = |f: Feature, yes: &str, no: &str| format!("{} ({})", if self.has(f) { yes } else { no }, why(f));
        // bpf_loop and fetch atomics come together: the legacy programs have neither.
        let legacy = |f: Feature, yes: &str, no: &str| {
            if !self.legacy_programs() {
                pick(f, yes, no)
            } else if self.has(f) {
                format!(
                    "{no} ({}; the legacy programs, {})",
                    why(f),
                    if f == Feature::BpfLoop { "no fetch atomics" } else { "no bpf_loop" }
                )
            } else {
                format!("{no} ({})", why(f))
            }
        };
        vec![
            format!("records:     {}", pick(Feature::RingBuffer, "ring buffer", "perf buffers, per CPU")),
            format!("large calls: {}", legacy(Feature::BpfLoop, "bpf_loop", "bounded loops, 1 GiB per call")),
            format!("probe roles: {}", pick(Feature::Cookies, "attach cookies", "a program per role, binary by inode")),
            format!(
                "counters:    {}",
                legacy(Feature::FetchAtomics, "atomics", "per-CPU and plain; Reads in a hash map")
            ),
            // uprobe_multi links carry each probe's role in its cookie only, and their
            // program is a modern one (capture.rs, AttachPath).
            if !self.has(Feature::Cookies) {
                format!("attach:      a link per offset (no cookies; {})", why(Feature::UprobeMulti))
            } else if self.legacy_programs() {
                format!("attach:      a link per offset (legacy programs; {})", why(Feature::UprobeMulti))
            } else {
                format!("attach:      {}", pick(Feature::UprobeMulti, "uprobe_multi link", "a link per offset"))
            },
            format!("pcap attach: {}", pick(Feature::Tcx, "tcx link", "clsact qdisc")),
            format!("btf:         {}", pick(Feature::KernelBtf, KERNEL_BTF_PATH, "--btf FILE")),
        ]
    }
}

/// Features tlstap needs that the kernel lacks: displayed as the one line a user sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingFeatures(pub Vec<Feature>);

impl fmt::Display for MissingFeatures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for feature in &self.0 {
            if !first {
                f.write_str("; ")?;
            }
            first = false;
            match feature {
                Feature::KernelBtf => write!(
                    f,
                    "this kernel has no BTF ({KERNEL_BTF_PATH} is missing): give one for this exact kernel with \
                     --btf FILE (e.g. from BTFHub, or `pahole --btf_encode_detached` of its debug vmlinux)"
                )?,
                other => write!(
                    f,
                    "this kernel's BPF lacks {} (upstream {}), which tlstap needs",
                    other.name(),
                    other.upstream()
                )?,
            }
        }
        Ok(())
    }
}

impl std::error::Error for MissingFeatures {}

fn helper_supported(prog_type: sys::bpf_prog_type, helper: sys::bpf_func_id) -> bool {
    // SAFETY: a query: libbpf loads and unloads a tiny program of its own; opts may be null.
    unsafe { sys::libbpf_probe_bpf_helper(prog_type, helper, std::ptr::null()) == 1 }
}

fn map_type_supported(map_type: sys::bpf_map_type) -> bool {
    // SAFETY: a query: libbpf creates and closes a small map; opts may be null.
    unsafe { sys::libbpf_probe_bpf_map_type(map_type, std::ptr::null()) == 1 }
}

/// One BPF instruction.
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> sys::bpf_insn {
    let mut insn = sys::bpf_insn { code, off, imm, ..Default::default() };
    insn.set_dst_reg(dst);
    insn.set_src_reg(src);
    insn
}

const EXIT: u8 = (sys::BPF_JMP | sys::BPF_EXIT) as u8;
const MOV64_IMM: u8 = (sys::BPF_ALU64 | sys::BPF_MOV | sys::BPF_K) as u8;

/// r0 = 0; loop: r0 += 1; if r0 < 4 goto loop; exit. A back edge: refused before 5.3.
fn bounded_loop_insns() -> Vec<sys::bpf_insn> {
    vec![
        insn(MOV64_IMM, 0, 0, 0, 0),
        insn((sys::BPF_ALU64 | sys::BPF_ADD | sys::BPF_K) as u8, 0, 0, 0, 1),
        insn((sys::BPF_JMP | sys::BPF_JLT | sys::BPF_K) as u8, 0, 0, -2, 4),
        insn(MOV64_IMM, 0, 0, 0, 0),
        insn(EXIT, 0, 0, 0, 0),
    ]
}

/// A compare-and-swap on the stack: an instruction the kernel knows from 5.12.
fn cmpxchg_insns() -> Vec<sys::bpf_insn> {
    let stx_dw = (sys::BPF_STX | sys::BPF_DW | sys::BPF_MEM) as u8;
    let atomic_dw = (sys::BPF_STX | sys::BPF_DW | sys::BPF_ATOMIC) as u8;
    vec![
        insn(MOV64_IMM, 0, 0, 0, 0),
        insn(stx_dw, 10, 0, -8, 0),  // *(u64 *)(r10 - 8) = r0
        insn(MOV64_IMM, 1, 0, 0, 1), // r1 = 1
        insn(atomic_dw, 10, 1, -8, sys::BPF_CMPXCHG as i32),
        insn(MOV64_IMM, 0, 0, 0, 0),
        insn(EXIT, 0, 0, 0, 0),
    ]
}

/// Loads `insns` as a program of `prog_type`; the descriptor closes when dropped.
fn trial_load(
    prog_type: sys::bpf_prog_type,
    attach: sys::bpf_attach_type,
    insns: &[sys::bpf_insn],
) -> io::Result<OwnedFd> {
    let license = c"GPL";
    let mut opts = sys::bpf_prog_load_opts {
        sz: size_of::<sys::bpf_prog_load_opts>() as _,
        expected_attach_type: attach,
        ..Default::default()
    };
    // SAFETY: `insns` and `license` outlive the call; `opts` carries its own size as libbpf's
    // ABI requires and no pointers; libbpf copies what it needs.
    let fd = unsafe {
        sys::bpf_prog_load(prog_type, std::ptr::null(), license.as_ptr(), insns.as_ptr(), insns.len() as _, &mut opts)
    };
    if fd < 0 {
        return Err(io::Error::from_raw_os_error(-fd));
    }
    // SAFETY: a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// libbpf's own test (not exported): a uprobe_multi program loads, and a link on "/" (a
/// directory) fails with EBADF rather than EINVAL (unknown attach type) or EPERM.
fn uprobe_multi_supported() -> bool {
    let insns = [insn(MOV64_IMM, 0, 0, 0, 0), insn(EXIT, 0, 0, 0, 0)];
    let Ok(prog) = trial_load(sys::BPF_PROG_TYPE_KPROBE, sys::BPF_TRACE_UPROBE_MULTI, &insns) else {
        return false;
    };
    let Ok(path) = CString::new("/") else { return false };
    let offset: std::os::raw::c_ulong = 0;
    let mut opts = sys::bpf_link_create_opts { sz: size_of::<sys::bpf_link_create_opts>() as _, ..Default::default() };
    opts.__bindgen_anon_1.uprobe_multi = sys::bpf_link_create_opts__bindgen_ty_1__bindgen_ty_3 {
        cnt: 1,
        path: path.as_ptr(),
        offsets: &offset,
        ..Default::default()
    };
    use std::os::fd::AsRawFd as _;
    // SAFETY: every pointer in `opts` (path, offset) outlives the call; the kernel refuses
    // the link (a directory has no code), so no descriptor is made; one made is closed below.
    let fd = unsafe { sys::bpf_link_create(prog.as_raw_fd(), 0, sys::BPF_TRACE_UPROBE_MULTI, &opts) };
    if fd >= 0 {
        // SAFETY: a new descriptor that nothing else owns; closed at once.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
        return true;
    }
    -fd == libc::EBADF
}

/// A tcx link on interface 0 fails with ENXIO or ENODEV where tcx exists, EINVAL where the
/// attach type is unknown.
fn tcx_supported() -> bool {
    let insns = [insn(MOV64_IMM, 0, 0, 0, 0), insn(EXIT, 0, 0, 0, 0)];
    let Ok(prog) = trial_load(sys::BPF_PROG_TYPE_SCHED_CLS, sys::BPF_TCX_INGRESS, &insns) else {
        return false;
    };
    use std::os::fd::AsRawFd as _;
    let opts = sys::bpf_link_create_opts { sz: size_of::<sys::bpf_link_create_opts>() as _, ..Default::default() };
    // SAFETY: `opts` carries its own size and no pointers; interface 0 does not exist, so no
    // link is made; one made is closed below.
    let fd = unsafe { sys::bpf_link_create(prog.as_raw_fd(), 0, sys::BPF_TCX_INGRESS, &opts) };
    if fd >= 0 {
        // SAFETY: a new descriptor that nothing else owns; closed at once.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
        return true;
    }
    matches!(-fd, libc::ENXIO | libc::ENODEV)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for f in Feature::ALL {
            assert_eq!(Feature::from_name(f.name()), Some(f));
        }
        assert_eq!(Feature::from_name("warp-drive"), None);
    }

    #[test]
    fn disabled_features_take_their_fallbacks() {
        let all = KernelFeatures::with(&Feature::ALL);
        assert!(all.has(Feature::BpfLoop));
        let old = all.without(&[Feature::BpfLoop, Feature::RingBuffer]);
        assert!(!old.has(Feature::BpfLoop) && !old.has(Feature::RingBuffer) && old.has(Feature::Cookies));
        let paths = old.paths().join("\n");
        assert!(paths.contains("perf buffers, per CPU (ringbuf: disabled)"), "{paths}");
        assert!(paths.contains("bounded loops, 1 GiB per call (bpf-loop: disabled)"), "{paths}");
        assert!(paths.contains("attach cookies (cookies: yes)"), "{paths}");
    }

    #[test]
    fn what_is_required_is_named() {
        let none = KernelFeatures::with(&[]);
        let missing = none.missing_required(None).map(|m| m.to_string()).unwrap_or_default();
        assert!(missing.contains("--btf FILE"), "{missing}");
        assert!(missing.contains("lacks bounded-loops (upstream 5.3)"), "{missing}");
        let with_btf_file = none.missing_required(Some(Path::new("x.btf"))).map(|m| m.0);
        assert_eq!(with_btf_file, Some(vec![Feature::ProbeReadUser, Feature::BoundedLoops]));
        let v5_10 = KernelFeatures::with(&[
            Feature::KernelBtf,
            Feature::ProbeReadUser,
            Feature::BoundedLoops,
            Feature::RingBuffer,
        ]);
        assert_eq!(v5_10.missing_required(None), None);
        let paths = v5_10.paths().join("\n");
        assert!(paths.contains("a program per role, binary by inode (cookies: no, 5.15 upstream)"), "{paths}");
    }
}
