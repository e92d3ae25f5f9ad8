//! Resolves what to hook: the binary's path, its analysis by goelf, and the probe points
//! tlstap-bpf attaches. Reads the binary file; touches no kernel state.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use goelf::tls::{ReadCapture, TlsPlan};
use goelf::{Abi, Arch, GoBinary};
use tlstap_bpf::{BinaryConfig, ConnLayout, H2Layout, ProbeKind, ProbeSpec};

use crate::cli::ReadPath;

/// Which probes to attach.
#[derive(Debug, Clone, Copy)]
pub struct ProbeSet {
    /// `(*Conn).Write` entry, `(*Conn).Read` entry and RETs.
    pub data: bool,
    /// `(*Config).writeKeyLog` entry.
    pub secrets: bool,
    /// Go's HTTP/2 header paths (--h2-hooks), where the binary has them.
    pub h2_headers: bool,
    /// The cheapest way of capturing Reads to use where proven (testing takes dearer ones).
    pub cheapest_read_path: ReadPath,
}

/// The longest an analysis may take (the largest real Go binaries take well under a second).
pub const ANALYSIS_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// A Go binary ready to be hooked.
#[derive(Debug)]
pub struct Target {
    /// The file that was analysed, held open: probes are attached through it
    /// ([`Target::attach_path`]), so they land on the very inode whose offsets were computed,
    /// whatever has been renamed over its path or has reused its process ID since.
    file: std::fs::File,
    /// The path it was opened by (for --pid, /proc/PID/exe: valid in any mount namespace).
    pub path: PathBuf,
    /// The path shown to people (for --pid, where /proc/PID/exe points).
    pub shown_path: PathBuf,
    pub go_version: String,
    pub abi: Abi,
    pub arch: Arch,
    pub pie: bool,
    pub has_symtab: bool,
    pub plan: TlsPlan,
    /// Go's HTTP/2 header paths (empty without net/http's or x/net's HTTP/2).
    pub h2: goelf::h2::H2Plan,
    /// Where the socket of a tls.Conn is; None when the binary's type data was unreadable.
    pub conn_layout: Option<ConnLayout>,
    /// Stack ABI on amd64: how far below the FS base g is (0: the usual 8).
    pub g_below_fs: u32,
    /// The lowest address of an executable segment (kernels without uprobe cookies).
    pub exec_vaddr: u64,
}

impl Target {
    /// Reads `path` (e.g. /proc/PID/exe) and analyses it, naming it `name` in messages. Bounded
    /// like host-wide analysis ([`Target::analyze_file_within_deadline`]): a file crafted to be
    /// slow to analyse gets one error line, never a tlstap that hangs before capturing.
    pub fn analyze_named(path: &Path, name: &Path) -> Result<Target> {
        let file = std::fs::File::open(path).with_context(|| format!("cannot read {}", name.display()))?;
        Target::analyze_file_within_deadline(file, path, name)
    }

    /// [`Target::analyze_file`] on a thread of its own, given up after [`ANALYSIS_DEADLINE`]: a
    /// file crafted to be slow to analyse costs that much once, never the capture. (The
    /// thread then finishes on its own; analysis is bounded, so it does.)
    pub fn analyze_file_within_deadline(file: std::fs::File, path: &Path, name: &Path) -> Result<Target> {
        let (tx, rx) = std::sync::mpsc::channel();
        let (path_owned, name_owned) = (path.to_path_buf(), name.to_path_buf());
        std::thread::Builder::new()
            .name("tlstap-analysis".to_string())
            .spawn(move || {
                // Testing only: an analysis that takes this long.
                if let Some(ms) = std::env::var("TLSTAP_TEST_ANALYSIS_DELAY_MS").ok().and_then(|v| v.parse().ok()) {
                    std::thread::sleep(std::time::Duration::from_millis(ms));
                }
                let _ = tx.send(Target::analyze_file(file, &path_owned, &name_owned));
            })
            .context("starting an analysis thread")?;
        let deadline = std::env::var("TLSTAP_TEST_ANALYSIS_DEADLINE_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map_or(ANALYSIS_DEADLINE, std::time::Duration::from_millis);
        match rx.recv_timeout(deadline) {
            Ok(result) => result,
            Err(_) => bail!("{}: its analysis took over {deadline:?}: not hooked", name.display()),
        }
    }

    /// Analyses the open `file` (opened by `path`), naming it `name` in messages.
    pub fn analyze_file(file: std::fs::File, path: &Path, name: &Path) -> Result<Target> {
        // SAFETY: the map is read-only and private to this function. A binary being rewritten
        // while it is analysed could change under the map; goelf checks every length and
        // offset it reads, so changed bytes give a wrong or failed analysis, not a crash beyond
        // what any reader of a truncated file risks (SIGBUS on a file shrunk meanwhile).
        let map = unsafe { memmap2::Mmap::map(&file) }.with_context(|| format!("cannot read {}", name.display()))?;
        let data: &[u8] = &map;
        let bin = GoBinary::parse(data).with_context(|| format!("{} cannot be hooked", name.display()))?;
        let plan = goelf::tls::plan(&bin).with_context(|| format!("{} cannot be hooked", name.display()))?;
        let info = bin.info();
        // Without the layout, data is still captured; connections then show as unknown.
        let conn_layout = goelf::types::conn_layout(&bin).ok().and_then(|l| {
            Some(ConnLayout {
                tcp_conn_type: l.tcp_conn_type,
                unix_conn_type: l.unix_conn_type.unwrap_or(0),
                tls_conn_conn: u32::try_from(l.tls_conn_conn).ok()?,
                net_conn_fd: u32::try_from(l.net_conn_fd).ok()?,
                net_fd_sysfd: u32::try_from(l.net_fd_sysfd).ok()?,
            })
        });
        // Without them, HTTP/2 is still decoded from the wire.
        let h2 = goelf::h2::plan(&bin).unwrap_or_else(|_| goelf::h2::H2Plan::default());
        let g_below_fs = goelf::types::g_below_fs(&bin).and_then(|v| u32::try_from(v).ok()).unwrap_or(0);
        Ok(Target {
            file,
            path: path.to_path_buf(),
            shown_path: name.to_path_buf(),
            go_version: info.go_version.raw.clone(),
            abi: info.abi,
            arch: info.arch,
            pie: info.pie,
            has_symtab: info.has_symtab,
            plan,
            h2,
            conn_layout,
            g_below_fs,
            exec_vaddr: bin.exec_segment_vaddr().unwrap_or(0),
        })
    }

    /// The path to attach probes through: the analysed file's own descriptor (the kernel
    /// resolves it to that inode, never to whatever is at `path` now; any bytes of a name work).
    pub fn attach_path(&self) -> PathBuf {
        use std::os::fd::AsRawFd as _;
        PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
    }

    /// Fails when this build of tlstap cannot run probes on the target.
    pub fn check_runnable(&self) -> Result<()> {
        let host = if cfg!(target_arch = "x86_64") { Arch::Amd64 } else { Arch::Arm64 };
        if self.arch != host {
            bail!(
                "{} is built for {}, but this tlstap runs on {}: run a tlstap built for {}",
                self.path.display(),
                self.arch.goarch(),
                host.goarch(),
                self.arch.goarch()
            );
        }
        Ok(())
    }

    /// The uprobes of the wanted probe set, with the cookie information BPF needs.
    pub fn probes(&self, set: ProbeSet) -> Result<Vec<ProbeSpec>> {
        let stack_abi = self.abi == Abi::Stack;
        let spec = |p: &goelf::tls::ProbePoint, kind| ProbeSpec {
            file_offset: p.file_offset,
            vaddr: p.vaddr,
            kind,
            stack_abi,
        };
        let mut probes: Vec<ProbeSpec> = Vec::new();
        if set.data {
            probes.extend(self.data_points(set).into_iter().map(|(_, p, kind)| spec(p, kind)));
        }
        if set.secrets {
            let keylog = self.plan.keylog_entry.as_ref().with_context(|| {
                format!(
                    "{} has no crypto/tls.(*Config).writeKeyLog: its TLS secrets cannot be captured",
                    self.path.display()
                )
            })?;
            probes.push(spec(keylog, ProbeKind::Keylog));
        }
        if set.h2_headers {
            probes.extend(self.h2.sent_field_entries.iter().map(|p| spec(p, ProbeKind::H2SentField)));
            probes.extend(self.h2.received_block_returns.iter().map(|p| spec(p, ProbeKind::H2ReceivedBlock)));
        }
        Ok(probes)
    }

    /// The Write and Read probe points of `set`, with a label for people and their kind: the
    /// one place that decides them, for attaching and for `--dry-run` alike.
    pub fn data_points(&self, set: ProbeSet) -> Vec<(&'static str, &goelf::tls::ProbePoint, ProbeKind)> {
        let plan = &self.plan;
        let mut points = vec![match self.write_check(set) {
            Some(check) => ("write check", check, ProbeKind::WriteCheck),
            None => ("write entry", &plan.write_entry, ProbeKind::WriteEntry),
        }];
        match (self.read_path(set), &plan.read_capture) {
            (ReadPath::Copy, ReadCapture::AtCopy { site, .. }) => points.push(("read copy", site, ProbeKind::ReadCopy)),
            (ReadPath::Return, _) => {
                points.extend(plan.read_returns.iter().map(|p| ("read return", p, ProbeKind::ReadReturnAlone)));
            }
            _ => {
                points.push(("read entry", &plan.read_entry, ProbeKind::ReadEntry));
                points.extend(plan.read_returns.iter().map(|p| ("read return", p, ProbeKind::ReadReturn)));
            }
        }
        points
    }

    /// Where Writes are probed: at the stack check's branch where the binary has one that can
    /// be (the cheaper probe), unless the probes of before issue 16 are asked for
    /// (`--read-path entry`, which takes Write's body start too).
    pub fn write_check(&self, set: ProbeSet) -> Option<&goelf::tls::ProbePoint> {
        self.plan.write_check.as_ref().filter(|_| set.cheapest_read_path < ReadPath::Entry)
    }

    /// How Reads are captured: the cheapest path the analysis proved, of those the probe set
    /// allows (entry and RETs always works).
    pub fn read_path(&self, set: ProbeSet) -> ReadPath {
        let capture = &self.plan.read_capture;
        let proven = |path: &ReadPath| match path {
            ReadPath::Copy => matches!(capture, ReadCapture::AtCopy { .. }),
            ReadPath::Return => {
                matches!(capture, ReadCapture::AtCopy { returns_proven: true, .. } | ReadCapture::AtReturn { .. })
            }
            ReadPath::Entry => true,
        };
        [ReadPath::Copy, ReadPath::Return, ReadPath::Entry]
            .into_iter()
            .filter(|path| *path >= set.cheapest_read_path)
            .find(proven)
            .unwrap_or(ReadPath::Entry)
    }

    /// What BPF needs to know about the binary beyond its probe offsets.
    pub fn bpf_config(&self) -> BinaryConfig {
        let h2_layout = self.h2.layout.and_then(|l| {
            Some(H2Layout {
                meta_fields: u32::try_from(l.fields).ok()?,
                meta_headers: u32::try_from(l.headers).ok()?,
                stream_id: u32::try_from(l.stream_id).ok()?,
                field_size: u32::try_from(l.field_size).ok()?,
            })
        });
        BinaryConfig {
            conn_layout: self.conn_layout,
            h2_layout,
            g_below_fs: self.g_below_fs,
            exec_vaddr: self.exec_vaddr,
            read_copy_depth: match self.plan.read_capture {
                // A Go frame is far smaller than 4 GiB: goelf's analysis bounds functions at 8 MiB.
                ReadCapture::AtCopy { depth, .. } => u32::try_from(depth).unwrap_or(0),
                _ => 0,
            },
        }
    }

    pub fn abi_name(&self) -> &'static str {
        match self.abi {
            Abi::Register => "register",
            Abi::Stack => "stack",
        }
    }
}

/// The binary of a running process, as the kernel sees it (works across mount namespaces).
pub fn binary_of_pid(pid: u32) -> Result<PathBuf> {
    let exe = PathBuf::from(format!("/proc/{pid}/exe"));
    std::fs::metadata(&exe).with_context(|| format!("no process {pid} (or its binary cannot be read)"))?;
    Ok(exe)
}
