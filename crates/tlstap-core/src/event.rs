//! The events every sink consumes. Owns their meaning, not their wire encoding (that is
//! `tlstap-bpf/bpf/events.h`) nor their rendering (that is `sink::*`).

use std::collections::BTreeMap;
use std::net::SocketAddr;

/// Which way plaintext moved through a `crypto/tls.Conn`, as seen by the traced program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// The program passed these bytes to `(*tls.Conn).Write`.
    Write,
    /// `(*tls.Conn).Read` returned these bytes to the program.
    Read,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Write => "write",
            Direction::Read => "read",
        }
    }
}

/// What kind of transport is under a `tls.Conn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnKind {
    /// A `*net.TCPConn`: fd and addresses known.
    Tcp,
    /// A `*net.UnixConn`: fd known.
    Unix,
    /// Anything else (a wrapping `net.Conn`, a pipe), or a layout tlstap could not read.
    Unknown,
}

impl ConnKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnKind::Tcp => "tcp",
            ConnKind::Unix => "unix",
            ConnKind::Unknown => "unknown",
        }
    }
}

/// The connection a data event belongs to, as sinks show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnInfo {
    pub kind: ConnKind,
    /// Socket file descriptor in the traced process, when known.
    pub fd: Option<i32>,
    /// The socket's own and its peer's address, when the socket is TCP. Kept as addresses until
    /// a sink writes them (`ip:port`, `[v6]:port` for IPv6: `SocketAddr`'s `Display`), so that
    /// nothing between BPF and a sink parses text back into an address.
    pub local: Option<SocketAddr>,
    pub remote: Option<SocketAddr>,
    /// Identifies the connection within this capture (stable across its events).
    pub id: String,
}

/// One `Read` or `Write` call's plaintext.
#[derive(Debug, Clone)]
pub struct DataEvent<'a> {
    /// Wall-clock time, nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    pub pid: u32,
    pub tid: u32,
    /// The command name as names.rs writes names (escaped by whoever makes the event).
    pub comm: &'a str,
    pub direction: Direction,
    /// Bytes the call moved (what the program wrote or was given), even if fewer were captured.
    pub len: u64,
    /// The captured bytes: equal to the call's bytes unless `truncated`.
    pub data: &'a [u8],
    /// True only when bytes of this call were really lost; `len` still tells the real size.
    pub truncated: bool,
    pub conn: Option<&'a ConnInfo>,
    /// The process's cgroup (v2 path), which tells containers and pods apart.
    pub cgroup: Option<&'a str>,
}

/// Emitted once per hooked binary, after its probes are live.
#[derive(Debug, Clone)]
pub struct AttachEvent<'a> {
    pub binary: &'a std::path::Path,
    pub go_version: &'a str,
    /// "register" or "stack".
    pub abi: &'a str,
    pub probes: usize,
}

/// A TLS secret the program derived, as `(*tls.Config).writeKeyLog` saw it.
#[derive(Debug, Clone)]
pub struct SecretEvent<'a> {
    /// Wall-clock time, nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    pub pid: u32,
    /// NSS key log label, e.g. "CLIENT_HANDSHAKE_TRAFFIC_SECRET" or "CLIENT_RANDOM".
    pub label: &'a str,
    /// The 32-byte ClientHello random that names the connection.
    pub client_random: &'a [u8],
    /// The secret, exact length (binary; never treated as a C string).
    pub secret: &'a [u8],
}

/// A decoded HTTP request/response pair, with the process and connection that carried it
/// (those of the call that completed it).
#[derive(Debug, Clone)]
pub struct HttpEvent<'a> {
    pub pid: u32,
    /// As in [`DataEvent::comm`].
    pub comm: &'a str,
    pub conn: Option<&'a ConnInfo>,
    pub cgroup: Option<&'a str>,
    pub exchange: &'a crate::http::HttpExchange,
}

/// Why something captured went missing: every cause tlstap counts, in one place. The names
/// are the stable ones of the stats record and the summary (README).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LossCause {
    /// BPF: no room in the ring buffer for a chunk.
    RingbufFull,
    /// BPF: the payload could not be read from user memory.
    ReadFault,
    /// BPF: a Read returned with no saved entry state.
    NoEntryState,
    /// BPF: entry state could not be saved.
    MapFull,
    /// BPF: a call beyond the chunks one probe may emit.
    CallTooLarge,
    /// A ring record that did not decode.
    DecodeError,
    /// A secret longer than the record holds (dropped).
    SecretTooLong,
    /// A call written cut to keep reassembly within its bounds.
    ReassemblyFull,
    /// A chunk that came after its call was written.
    LateChunk,
    /// Pcap mode: packets lost between the kernel and the file.
    PacketRingbufFull,
    PacketLoadFault,
    PacketTruncated,
    PacketDecodeError,
}

impl LossCause {
    pub const fn name(self) -> &'static str {
        match self {
            LossCause::RingbufFull => "ringbuf_full",
            LossCause::ReadFault => "read_fault",
            LossCause::NoEntryState => "no_entry_state",
            LossCause::MapFull => "map_full",
            LossCause::CallTooLarge => "call_too_large",
            LossCause::DecodeError => "decode_error",
            LossCause::SecretTooLong => "secret_too_long",
            LossCause::ReassemblyFull => "reassembly_full",
            LossCause::LateChunk => "late_chunk",
            LossCause::PacketRingbufFull => "packet_ringbuf_full",
            LossCause::PacketLoadFault => "packet_load_fault",
            LossCause::PacketTruncated => "packet_truncated",
            LossCause::PacketDecodeError => "packet_decode_error",
        }
    }
}

impl std::fmt::Display for LossCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// End-of-capture totals. `lost` is the sum of `lost_by_cause`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub events: u64,
    pub bytes: u64,
    pub lost: u64,
    pub lost_by_cause: BTreeMap<LossCause, u64>,
    /// Go TLS programs seen but not hooked (analysis or attach failed, or the limit was
    /// reached): their traffic is not in the capture.
    pub binaries_not_hooked: u64,
}

/// Everything a sink can be asked to render.
#[derive(Debug, Clone)]
pub enum Event<'a> {
    Attach(AttachEvent<'a>),
    /// A binary's probes were removed (no process runs it any more).
    Detach {
        binary: &'a std::path::Path,
    },
    Data(DataEvent<'a>),
    Http(HttpEvent<'a>),
    Secret(SecretEvent<'a>),
    Stats(&'a Stats),
    /// Probes are live: what was hooked when the capture started (more may follow).
    Ready {
        binaries: usize,
        processes: usize,
    },
}
