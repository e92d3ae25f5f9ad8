//! What `tlstap gotls` was asked to do: the command line resolved and checked (modes,
//! outputs, filters, scope) before anything is loaded. Parse, then resolve, then run.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use tlstap_bpf::Feature;
use tlstap_pcap::PcapRequest;

use crate::cli::{Format, GotlsArgs, Mode};
use crate::pipeline::View;
use crate::system;
use crate::target::binary_of_pid;

/// What to hook.
#[derive(Debug)]
pub(crate) enum Scope {
    /// One binary: every process running it, now and later.
    Binary(PathBuf),
    /// Every Go TLS process on the host, and new ones as they exec.
    Host,
}

/// What `gotls` was asked to do, resolved and validated.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) scope: Scope,
    pub(crate) comm: Option<String>,
    pub(crate) catch_exec: bool,
    /// Host-wide: how long a binary stays hooked after its last process exited.
    pub(crate) linger: Duration,
    pub(crate) verbose: bool,
    /// Capture plaintext (Read/Write probes).
    pub(crate) data: bool,
    /// --h2-hooks: Go's HTTP/2 header paths hooked too.
    pub(crate) h2_hooks: bool,
    /// Capture TLS secrets (writeKeyLog probe); with a file when `keylog_file` is set.
    pub(crate) secrets: bool,
    pub(crate) keylog_file: Option<PathBuf>,
    pub(crate) pid: Option<u32>,
    pub(crate) uid: Option<u32>,
    pub(crate) format: Format,
    pub(crate) output: Option<PathBuf>,
    /// Per call, or HTTP decoded.
    pub(crate) view: View,
    pub(crate) ringbuf_bytes: u32,
    pub(crate) dry_run: bool,
    pub(crate) null_probes: bool,
    pub(crate) read_slots: Option<u32>,
    pub(crate) read_path: crate::cli::ReadPath,
    /// Kernel features not to use though present (tests force their fallbacks).
    pub(crate) disabled_features: Vec<Feature>,
    /// `--btf`: the running kernel's BTF, where it has none of its own.
    pub(crate) btf_file: Option<PathBuf>,
    /// `-m pcap`: packets to a pcapng file (plaintext events only tell whose they are).
    pub(crate) pcap: Option<PcapRequest>,
}

/// Pcap mode's options, checked; None outside pcap mode (where they are refused).
fn pcap_request(args: &GotlsArgs) -> Result<Option<PcapRequest>> {
    if args.mode != Mode::Pcap {
        if args.pcap_file.is_some() || args.ifname.is_some() || args.all || !args.filter.is_empty() {
            bail!("-w/--pcapfile, -i/--ifname, --all and a FILTER belong to -m pcap");
        }
        return Ok(None);
    }
    let file = args.pcap_file.clone().context("-m pcap needs -w/--pcapfile FILE")?;
    let ifname = args.ifname.clone().context("-m pcap needs -i/--ifname IFACE")?;
    let side = match (args.format, args.hex) {
        (Format::Jsonl, false) => Some(args.output.clone()),
        _ if args.output.is_some() => bail!("in -m pcap, -o/--output is for the --format jsonl side stream"),
        _ => None,
    };
    let filter = (!args.filter.is_empty()).then(|| args.filter.join(" "));
    Ok(Some(PcapRequest { ifname, file, all: args.all, filter, side, pid: args.pid, uid: args.uid }))
}

impl Request {
    pub(crate) fn resolve(args: GotlsArgs) -> Result<Request> {
        let pcap = pcap_request(&args)?;
        if args.h2_hooks && args.mode != Mode::Text {
            bail!("--h2-hooks belongs to the HTTP view of -m text");
        }
        let data = match args.mode {
            Mode::Text | Mode::Pcap => true,
            Mode::Keylog if args.keylog_file.is_none() => bail!("-m keylog needs -k/--keylogfile FILE"),
            Mode::Keylog => false,
        };
        let scope = match (args.elfpath, args.pid) {
            (Some(path), _) => Scope::Binary(path),
            (None, Some(pid)) => Scope::Binary(binary_of_pid(pid)?),
            (None, None) if args.dry_run => bail!("--dry-run needs --elfpath BINARY or --pid PID"),
            (None, None) => Scope::Host,
        };
        if args.catch_exec && !matches!(scope, Scope::Host) {
            bail!("--catch-exec applies to host-wide capture (no --elfpath or --pid)");
        }
        // BPF names held processes by their host PIDs; in another PID namespace tlstap would
        // continue the wrong process, or none, and leave the held one stopped.
        if args.catch_exec && !system::in_host_pid_namespace() {
            bail!("--catch-exec needs tlstap in the host's PID namespace (run it on the host, or with --pid=host)");
        }
        let ringbuf_bytes = args
            .ringbuf_mib
            .checked_mul(1024 * 1024)
            .filter(|b| b.is_power_of_two() && *b <= 1 << 30)
            .with_context(|| format!("--ringbuf-mb {} must be a power of two up to 1024", args.ringbuf_mib))?;
        let mut disabled_features = args.disable_feature;
        if args.attach_per_offset {
            disabled_features.push(Feature::UprobeMulti);
        }
        if let Some(btf) = &args.btf {
            std::fs::File::open(btf).with_context(|| format!("cannot read the BTF file {}", btf.display()))?;
        }
        Ok(Request {
            scope,
            comm: args.comm,
            catch_exec: args.catch_exec,
            linger: Duration::from_secs(args.linger),
            verbose: args.verbose,
            data,
            h2_hooks: args.h2_hooks,
            secrets: args.mode != Mode::Text || args.keylog_file.is_some(),
            keylog_file: args.keylog_file,
            pid: args.pid,
            uid: args.uid,
            format: if args.hex { Format::Hex } else { args.format },
            output: args.output,
            // HTTP is decoded for the plaintext output only: pcap mode's sink learns processes
            // from every call, and the key log has no calls.
            view: match args.mode {
                Mode::Text if !args.raw => View::Http { calls_too: args.data, go_reports: args.h2_hooks },
                _ => View::Calls,
            },
            ringbuf_bytes,
            dry_run: args.dry_run,
            null_probes: args.null_probes,
            read_slots: args.read_slots,
            read_path: args.read_path,
            disabled_features,
            btf_file: args.btf,
            pcap,
        })
    }

    /// The probes every hooked binary gets.
    pub(crate) fn probe_set(&self) -> crate::target::ProbeSet {
        crate::target::ProbeSet {
            data: self.data,
            secrets: self.secrets,
            h2_headers: self.h2_hooks,
            cheapest_read_path: self.read_path,
        }
    }
}
