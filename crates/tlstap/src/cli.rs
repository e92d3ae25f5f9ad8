//! Command-line parsing only: turns arguments into [`Cli`], touching nothing else.
//! Flags follow eCapture's `gotls` module so users can switch without relearning.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use tlstap_bpf::Feature;

#[derive(Debug, Parser)]
#[command(name = "tlstap", version, about = "Show the TLS plaintext and secrets of Go programs, with eBPF uprobes")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Capture the plaintext of Go programs' crypto/tls connections.
    Gotls(GotlsArgs),
}

#[derive(Debug, clap::Args)]
pub struct GotlsArgs {
    /// Go binary to hook: every process running it, now and later.
    #[arg(short = 'e', long = "elfpath", value_name = "PATH")]
    pub elfpath: Option<PathBuf>,

    /// Capture only this process (its binary is /proc/PID/exe unless --elfpath is given).
    #[arg(short = 'p', long, value_name = "PID")]
    pub pid: Option<u32>,

    /// Capture only processes of this user id.
    #[arg(short = 'u', long, value_name = "UID")]
    pub uid: Option<u32>,

    /// Capture only processes with this command name (as in /proc/PID/comm, 15 bytes).
    #[arg(long, value_name = "NAME")]
    pub comm: Option<String>,

    /// With no --elfpath/--pid: stop each newly exec'd process (SIGSTOP, sent from BPF at
    /// exec) until tlstap has checked its binary and, for a Go TLS program, attached its
    /// probes; then continue it (SIGCONT). Captures even a short-lived client from its first
    /// byte. Opt-in because every exec on the host pauses (about a millisecond for a binary
    /// already seen, tens for a new one), and because job control sees the stop: an
    /// interactive shell running a command in the foreground reports it "Stopped" (status
    /// 147) and returns to its prompt, the command going on in the background once tlstap
    /// continues it. No process stays stopped: one held 10 s is continued anyway, all are
    /// when tlstap ends, and those a tlstap killed with SIGKILL left are continued by the
    /// next tlstap to start.
    #[arg(long)]
    pub catch_exec: bool,

    /// With no --elfpath/--pid: seconds a binary stays hooked after its last process exited,
    /// so that a program run again and again (a CLI in a loop, a cron job) is hooked at no cost.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub linger: u64,

    /// Explain on stderr why processes are not hooked, and how fast new ones are.
    #[arg(short = 'v', long)]
    pub verbose: bool,

    /// What to capture.
    #[arg(short = 'm', long, visible_alias = "model", value_enum, default_value_t = Mode::Text)]
    pub mode: Mode,

    /// NSS key log file to write the TLS secrets to (keylog mode).
    #[arg(short = 'k', long = "keylogfile", value_name = "FILE")]
    pub keylog_file: Option<PathBuf>,

    /// pcapng file to write (pcap mode).
    #[arg(short = 'w', long = "pcapfile", value_name = "FILE")]
    pub pcap_file: Option<PathBuf>,

    /// Network interface to capture packets on (pcap mode).
    #[arg(short = 'i', long = "ifname", value_name = "IFACE")]
    pub ifname: Option<String>,

    /// Pcap mode: write every packet the FILTER passes, not only the hooked processes' TCP
    /// connections.
    #[arg(long)]
    pub all: bool,

    /// Pcap mode: a tcpdump filter expression (e.g. `tcp port 443`) narrowing what is written.
    #[arg(value_name = "FILTER")]
    pub filter: Vec<String>,

    /// Show payloads as hex dumps (same as --format hex).
    #[arg(long)]
    pub hex: bool,

    /// Output format of captured events.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,

    /// Show each Read and Write call as it was, without decoding HTTP (the view before
    /// HTTP decoding; also what scripts parsing `data` records of HTTP traffic want).
    #[arg(long, conflicts_with = "data")]
    pub raw: bool,

    /// With HTTP decoding: show every call too (`data` records beside the `http` ones), not
    /// only the calls of connections that are not HTTP.
    #[arg(long)]
    pub data: bool,

    /// With HTTP decoding: also hook Go's own HTTP/2 header code (hpack's encoder, the
    /// framer's decoded blocks), so that headers are right on connections opened before tlstap
    /// started. Costs a uprobe hit per header field sent and per header block received.
    #[arg(long, conflicts_with = "raw")]
    pub h2_hooks: bool,

    /// Write events to FILE instead of standard output.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Ring buffer size in MiB (a power of two, up to 1024). Larger absorbs longer bursts and
    /// bigger single calls (a call larger than the ring is lost, and counted); tlstap's memory
    /// use is about twice this (the ring is mapped twice) plus a few MiB.
    #[arg(long = "ringbuf-mb", value_name = "MIB", default_value_t = 8)]
    pub ringbuf_mib: u32,

    /// Print what would be attached (version, ABI, functions, offsets) and exit; needs no root.
    #[arg(long)]
    pub dry_run: bool,

    /// Benchmarking only: attach empty BPF programs at the same points (captures nothing).
    #[arg(long, hide = true)]
    pub null_probes: bool,

    /// Testing only: how many of BPF's slots for Reads in flight to use (a power of two; all
    /// of them when absent or larger); with 1, concurrent Reads share one slot and the rest take
    /// the hash map.
    #[arg(long, hide = true, value_name = "N", value_parser = parse_read_slots)]
    pub read_slots: Option<u32>,

    /// Testing only: the cheapest way of capturing Reads to use where the binary's analysis
    /// proved it: copy (Read's copy into b), return (its RETs alone), entry (entry and RETs,
    /// the path of arm64 and of binaries where nothing else was proven; Writes then at their
    /// body start rather than their stack check: every probe as before issue 16).
    #[arg(long, hide = true, value_enum, default_value_t = ReadPath::Copy)]
    pub read_path: ReadPath,

    /// Attach one uprobe link per offset even where the kernel has uprobe_multi (the path
    /// taken on kernels before 6.6; for testing it on newer ones). Same as
    /// `--disable-feature uprobe-multi`.
    #[arg(long, hide = true)]
    pub attach_per_offset: bool,

    /// BTF of the running kernel, for kernels without /sys/kernel/btf/vmlinux (e.g. a BTFHub
    /// file for this exact kernel release).
    #[arg(long, value_name = "FILE")]
    pub btf: Option<PathBuf>,

    /// Testing only: take the fallback path of a kernel feature the kernel has (repeatable):
    /// ringbuf, bpf-loop, cookies, fetch-atomics, uprobe-multi, tcx, btf (and, to test the
    /// refusal, the required probe-read-user and bounded-loops).
    #[arg(long, hide = true, value_name = "FEATURE", value_parser = parse_feature)]
    pub disable_feature: Vec<Feature>,
}

fn parse_feature(text: &str) -> Result<Feature, String> {
    Feature::from_name(text).ok_or_else(|| {
        let names: Vec<_> = Feature::ALL.iter().map(|f| f.name()).collect();
        format!("one of {}", names.join(", "))
    })
}

/// How Reads are captured, cheapest first (see goelf's `ReadCapture`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum ReadPath {
    /// At Read's call copying the plaintext into b: one emulated probe hit per Read.
    Copy,
    /// At Read's RETs alone: one single-stepped probe hit per Read.
    Return,
    /// At Read's entry and RETs: two probe hits per Read.
    Entry,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Plaintext of reads and writes.
    Text,
    /// TLS secrets as an NSS key log.
    Keylog,
    /// Packets with embedded secrets as pcapng.
    Pcap,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A header line per event, then the payload (text if printable, else a hex dump).
    Text,
    /// One JSON object per line.
    Jsonl,
    /// Like text, but payloads always as hex dumps.
    Hex,
}

fn parse_read_slots(text: &str) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(n) if n.is_power_of_two() => Ok(n),
        _ => Err("a power of two".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gotls(args: &[&str]) -> GotlsArgs {
        let cli = Cli::try_parse_from([&["tlstap", "gotls"], args].concat()).unwrap();
        match cli.command {
            Command::Gotls(a) => a,
        }
    }

    #[test]
    fn ecapture_flags_parse() {
        let a = gotls(&["-e", "/bin/srv", "-p", "42", "-u", "1000", "-m", "keylog", "-k", "k.log", "--hex"]);
        assert_eq!(a.elfpath, Some(PathBuf::from("/bin/srv")));
        assert_eq!((a.pid, a.uid, a.mode, a.hex), (Some(42), Some(1000), Mode::Keylog, true));
        assert_eq!(a.keylog_file, Some(PathBuf::from("k.log")));
        assert_eq!(gotls(&["--model", "pcap", "-w", "o.pcapng", "-i", "lo"]).mode, Mode::Pcap);
        assert_eq!(gotls(&["--format", "jsonl", "-o", "x"]).format, Format::Jsonl);
        let pcap = gotls(&["-m", "pcap", "-i", "lo", "-w", "o.pcapng", "--all", "tcp", "port", "443"]);
        assert_eq!((pcap.all, pcap.filter.join(" ")), (true, "tcp port 443".to_string()));
    }

    #[test]
    fn bad_mode_is_rejected() {
        assert!(Cli::try_parse_from(["tlstap", "gotls", "-m", "bogus"]).is_err());
    }
}
