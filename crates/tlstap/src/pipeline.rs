//! Everything between a decoded ring-buffer record and the sinks: reassemble chunked calls,
//! restore per-connection order, name connections, convert clocks, decode HTTP, fan out to
//! every sink. Owns the userspace counters that the exit summary reports.
//!
//! It only turns records (given by the ring callback, intake.rs) and events (given by the
//! capture loop: attach, detach, ready, stats) into sink calls, and returns their errors to
//! whoever called; it keeps no process events and no error for anyone to collect later.

use rustc_hash::FxHashMap;
use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use tlstap_bpf::wire::{H2Fields, Secret};
use tlstap_core::event::{ConnInfo, DataEvent, Direction, Event, HttpEvent, SecretEvent};
use tlstap_core::http::HttpExchange;
use tlstap_core::ordering::Sequencer;
use tlstap_core::reassembly::{Call, Chunk as WireChunk, Reassembler, WireConn};
use tlstap_core::sink::Sink;
use tlstap_http::{Chunk, HttpDecoder, Taken};

use crate::system;

/// Connection names are cached; past this many the cache starts over (names are derived, not
/// allocated, so they stay the same).
const CONN_CACHE_MAX: usize = 65_536;

/// What the sinks are given for each call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// Every call as it was (`--raw`, and the key log and pcap modes).
    Calls,
    /// HTTP decoded into exchanges; calls shown only where they are not HTTP, or all of them
    /// too with `calls_too` (`--data`); `go_reports`: Go's header fields come too (--h2-hooks).
    Http { calls_too: bool, go_reports: bool },
}

/// Goroutines whose last Read is remembered past this many start over (a report whose Read is
/// forgotten fills nothing).
const LAST_READS_MAX: usize = 65_536;

/// Names a connection for the HTTP decoder: what `ConnNames` keys on.
type ConnKey = (u32, u64, WireConn);

/// What an exchange is shown with: the process and connection of its calls.
struct HttpContext {
    pid: u32,
    comm: String,
    conn: ConnInfo,
    cgroup: Option<String>,
}

pub struct Pipeline {
    sinks: Vec<Box<dyn Sink>>,
    /// `None` in the per-call view.
    http: Option<Http>,
    reassembler: Reassembler,
    sequencer: Sequencer,
    conns: ConnNames,
    cgroups: Cgroups,
    wall_offset: u64,
    pub events: u64,
    pub bytes: u64,
    pub secrets: u64,
    pub decode_errors: u64,
    /// Secrets dropped because a field was longer than the record holds.
    pub secrets_cut: u64,
    /// Something was written since the last flush.
    dirty: bool,
}

impl Pipeline {
    pub fn new(sinks: Vec<Box<dyn Sink>>, view: View) -> Self {
        let http = match view {
            View::Calls => None,
            View::Http { calls_too, go_reports } => {
                let decoder = HttpDecoder::new(tlstap_http::Limits::default());
                let decoder = if go_reports { decoder.with_go_reports() } else { decoder };
                Some(Http { decoder, calls_too, last_reads: FxHashMap::default() })
            }
        };
        Pipeline {
            sinks,
            http,
            reassembler: Reassembler::new(),
            sequencer: Sequencer::new(),
            conns: ConnNames::default(),
            cgroups: Cgroups::default(),
            wall_offset: tlstap_bpf::clock::monotonic_to_wall_offset(),
            events: 0,
            bytes: 0,
            secrets: 0,
            decode_errors: 0,
            secrets_cut: 0,
            dirty: false,
        }
    }

    /// Calls released out of order because an earlier one never came.
    pub fn order_gaps(&self) -> u64 {
        self.sequencer.gaps()
    }

    /// (calls emitted cut to keep reassembly's memory bounded, chunks dropped because their
    /// call had been emitted already).
    pub fn reassembly_losses(&self) -> (u64, u64) {
        (self.reassembler.evicted_calls, self.reassembler.late_chunks)
    }

    /// Writes an event that does not come from the ring (attach, stats) to every sink.
    pub fn write(&mut self, event: &Event<'_>) -> io::Result<()> {
        write_all(&mut self.sinks, event)?;
        self.dirty = true;
        Ok(())
    }

    /// One chunk of a Read or Write call: reassembled into its call, put in order, written.
    pub fn data(&mut self, chunk: WireChunk<'_>) -> io::Result<()> {
        self.dirty = true;
        let now = Instant::now();
        // Go reads a block, then reports its fields, in one goroutine: remember which
        // connection each goroutine read last (in ring order, before reordering).
        if let Some(http) = self.http.as_mut().filter(|_| chunk.meta.goroutine != 0) {
            if chunk.meta.direction == Direction::Read {
                if http.last_reads.len() >= LAST_READS_MAX {
                    http.last_reads.clear();
                }
                let key = (chunk.meta.pid, chunk.meta.conn_ptr, chunk.meta.conn);
                http.last_reads.insert((chunk.meta.pid, chunk.meta.goroutine), key);
            }
        }
        let Pipeline { sinks, http, reassembler, sequencer, conns, cgroups, wall_offset, events, bytes, .. } = self;
        let mut out = Output { sinks, http: http.as_mut(), conns, cgroups, wall_offset: *wall_offset, events, bytes };
        reassembler.push(chunk, now, |call| sequencer.offer(call, now, |call| out.call(&call)))
    }

    /// A process exec'd: its cgroup is read now, while it surely exists (a short-lived client
    /// has exited by the time its events are written). An exited one's entry stays for its
    /// events still in flight; the pid's next exec replaces it.
    pub fn process_started(&mut self, pid: u32) {
        self.cgroups.learn(pid);
    }

    /// A ring record that did not decode: counted (the summary says so), never fatal.
    pub fn decode_error(&mut self) {
        self.decode_errors += 1;
    }

    /// Header fields from a Go program's own HTTP/2 code (--h2-hooks), to the decoder.
    pub fn go_fields(&mut self, f: &H2Fields<'_>) -> io::Result<()> {
        self.dirty = true;
        let Some(http) = self.http.as_mut() else { return Ok(()) };
        let mut program: Vec<_> = f.fields.iter().map(|(n, v)| Some((n.to_vec(), v.to_vec()))).collect();
        program.resize(f.field_count as usize, None);
        if f.sent {
            http.decoder.sent_field(f.pid, f.owner, program.pop().flatten());
            return Ok(());
        }
        let Some(key) = http.last_reads.get(&(f.pid, f.goroutine)).copied() else { return Ok(()) };
        let sinks = &mut self.sinks;
        let mut result = Ok(());
        http.decoder.received_block(&key, f.stream_id, program, &mut |context, exchange| {
            if result.is_ok() {
                result = write_exchange(sinks, context, &exchange);
            }
        });
        result
    }

    /// A TLS secret, to every sink that writes secrets.
    pub fn secret(&mut self, s: &Secret<'_>) -> io::Result<()> {
        self.dirty = true;
        // A secret with a byte missing would decrypt nothing and mislead: drop it, counted.
        // (BPF counted a read fault already; a field longer than the record is counted here.)
        if s.incomplete {
            if !s.read_fault {
                self.secrets_cut += 1;
            }
            return Ok(());
        }
        self.secrets += 1;
        let label = String::from_utf8_lossy(s.label);
        write_all(
            &mut self.sinks,
            &Event::Secret(SecretEvent {
                ts_ns: s.ts_ns.saturating_add(self.wall_offset),
                pid: s.pid,
                label: &label,
                client_random: s.client_random,
                secret: s.secret,
            }),
        )
    }

    /// Between polls: emit calls whose remaining chunks or predecessors are lost (everything
    /// pending when `now` is None) and flush what was written.
    pub fn tick(&mut self, now: Option<Instant>) -> io::Result<()> {
        let Pipeline { sinks, http, reassembler, sequencer, conns, cgroups, wall_offset, events, bytes, .. } = self;
        let mut out = Output { sinks, http: http.as_mut(), conns, cgroups, wall_offset: *wall_offset, events, bytes };
        let at = now.unwrap_or_else(Instant::now);
        reassembler.flush_stale(now, |call| sequencer.offer(call, at, |call| out.call(&call)))?;
        sequencer.tick(now, |call| out.call(&call))?;
        if let Some(http) = self.http.as_mut() {
            let mut result = Ok(());
            let sinks = &mut self.sinks;
            let now_ns = tlstap_bpf::clock::monotonic_ns().saturating_add(self.wall_offset);
            http.decoder.release_held(now_ns, &mut |context, exchange| {
                if result.is_ok() {
                    result = write_exchange(sinks, context, &exchange);
                }
            });
            result?;
        }
        if std::mem::take(&mut self.dirty) {
            for sink in &mut self.sinks {
                sink.flush()?;
            }
        }
        Ok(())
    }

    /// The capture is ending: every HTTP exchange still open goes out as it is.
    pub fn finish_http(&mut self) -> io::Result<()> {
        let Some(http) = self.http.as_mut() else { return Ok(()) };
        let mut result = Ok(());
        let sinks = &mut self.sinks;
        http.decoder.finish(&mut |context, exchange| {
            if result.is_ok() {
                result = write_exchange(sinks, context, &exchange);
            }
        });
        self.dirty = true;
        result
    }

    /// HTTP exchanges decoded so far (0 in the per-call view).
    pub fn http_exchanges(&self) -> u64 {
        self.http.as_ref().map_or(0, |h| h.decoder.stats.exchanges)
    }
}

fn write_all(sinks: &mut [Box<dyn Sink>], event: &Event<'_>) -> io::Result<()> {
    sinks.iter_mut().try_for_each(|sink| sink.write_event(event))
}

fn write_exchange(sinks: &mut [Box<dyn Sink>], c: &HttpContext, exchange: &HttpExchange) -> io::Result<()> {
    let event = HttpEvent { pid: c.pid, comm: &c.comm, conn: Some(&c.conn), cgroup: c.cgroup.as_deref(), exchange };
    write_all(sinks, &Event::Http(event))
}

/// The HTTP view's decoder.
struct Http {
    decoder: HttpDecoder<ConnKey, HttpContext>,
    calls_too: bool,
    /// The connection each (process, goroutine) last read from (--h2-hooks).
    last_reads: FxHashMap<(u32, u64), ConnKey>,
}

/// The parts of the pipeline a finished call needs, borrowed apart from the reassembler and
/// sequencer that produce it.
struct Output<'p> {
    sinks: &'p mut Vec<Box<dyn Sink>>,
    http: Option<&'p mut Http>,
    conns: &'p mut ConnNames,
    cgroups: &'p mut Cgroups,
    wall_offset: u64,
    events: &'p mut u64,
    bytes: &'p mut u64,
}

impl Output<'_> {
    fn call(&mut self, call: &Call<'_>) -> io::Result<()> {
        *self.events += 1;
        *self.bytes += call.data.len() as u64;
        let comm = call.meta.comm();
        let conn = self.conns.get(call.meta.pid, call.meta.conn_ptr, &call.meta.conn);
        let cgroup = self.cgroups.get(call.meta.pid);
        let ts_ns = call.meta.ts_ns.saturating_add(self.wall_offset);
        let data = DataEvent {
            ts_ns,
            pid: call.meta.pid,
            tid: call.meta.tid,
            comm: &comm,
            direction: call.meta.direction,
            len: call.meta.call_len,
            data: call.data,
            truncated: call.truncated,
            conn: Some(conn),
            cgroup,
        };
        let Some(http) = self.http.as_deref_mut() else { return write_all(self.sinks, &Event::Data(data)) };
        if http.calls_too {
            write_all(self.sinks, &Event::Data(data.clone()))?;
        }
        let key = (call.meta.pid, call.meta.conn_ptr, call.meta.conn);
        let context = || HttpContext {
            pid: data.pid,
            comm: comm.to_string(),
            conn: conn.clone(),
            cgroup: cgroup.map(str::to_string),
        };
        let chunk = Chunk {
            written: data.direction == Direction::Write,
            ts_ns,
            data: call.data,
            lost: call.truncated,
            process: data.pid,
        };
        let mut result = Ok(());
        let sinks = &mut *self.sinks;
        let taken = http.decoder.feed_borrowed(&key, context, chunk, &mut |context, exchange| {
            if result.is_ok() {
                result = write_exchange(sinks, context, exchange);
            }
        });
        result?;
        if taken == Taken::NotHttp && !http.calls_too {
            write_all(self.sinks, &Event::Data(data))?;
        }
        Ok(())
    }
}

/// The cgroup of each process seen, read from /proc once per process.
#[derive(Default)]
struct Cgroups {
    by_pid: FxHashMap<u32, Option<String>>,
}

impl Cgroups {
    fn get(&mut self, pid: u32) -> Option<&str> {
        if self.by_pid.len() >= CONN_CACHE_MAX {
            self.by_pid.clear();
        }
        self.by_pid.entry(pid).or_insert_with(|| system::cgroup_of(pid)).as_deref()
    }

    fn learn(&mut self, pid: u32) {
        if self.by_pid.len() >= CONN_CACHE_MAX {
            self.by_pid.clear();
        }
        self.by_pid.insert(pid, system::cgroup_of(pid));
    }
}

/// Names connections. The id is a hash of (pid, tls.Conn address, kernel socket, addresses),
/// so it is the same for every event of a connection and needs no bookkeeping to stay so. The
/// cache is keyed by everything BPF said, not by the tls.Conn address alone: the Go heap and
/// the kernel both reuse memory, so a new connection can come with an old one's tls.Conn and
/// socket addresses, and must not be named (or shown) as the old one.
#[derive(Default)]
struct ConnNames {
    cache: FxHashMap<(u32, u64, WireConn), ConnInfo>,
}

impl ConnNames {
    fn get(&mut self, pid: u32, conn_ptr: u64, wire: &WireConn) -> &ConnInfo {
        if self.cache.len() >= CONN_CACHE_MAX {
            self.cache.clear();
        }
        self.cache.entry((pid, conn_ptr, *wire)).or_insert_with(|| {
            let id = conn_id(pid, conn_ptr, wire.sock_id, wire.local, wire.remote);
            ConnInfo { kind: wire.kind, fd: wire.fd, local: wire.local, remote: wire.remote, id }
        })
    }
}

fn conn_id(pid: u32, conn_ptr: u64, sock_id: u64, local: Option<SocketAddr>, remote: Option<SocketAddr>) -> String {
    // FNV-1a: tiny, stable across runs and Rust versions. The addresses are hashed as sinks
    // write them (`ip:port`): ids stay what they were when addresses were kept as text.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let text = |a: Option<SocketAddr>| a.map(|a| a.to_string()).unwrap_or_default();
    let addresses = [text(local), "|".to_string(), text(remote)];
    let bytes = pid.to_le_bytes().into_iter().chain(conn_ptr.to_le_bytes()).chain(sock_id.to_le_bytes());
    for byte in bytes.chain(addresses.iter().flat_map(|a| a.bytes())) {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conn_ids_are_stable_and_distinct() {
        let addr = |a: &str| Some(a.parse::<SocketAddr>().unwrap());
        let (l, r) = (addr("127.0.0.1:443"), addr("127.0.0.1:50000"));
        let a = conn_id(1, 0xc000_1000, 0xffff_0001, l, r);
        assert_eq!(a, conn_id(1, 0xc000_1000, 0xffff_0001, l, r));
        assert_ne!(a, conn_id(2, 0xc000_1000, 0xffff_0001, l, r));
        assert_ne!(a, conn_id(1, 0xc000_1000, 0xffff_0002, l, r));
        assert_ne!(a, conn_id(1, 0xc000_1000, 0xffff_0001, l, addr("127.0.0.1:50001")));
        assert_ne!(a, conn_id(1, 0xc000_1000, 0xffff_0001, r, l));
        assert_eq!(a.len(), 16);
    }

    /// A new connection that got an old one's tls.Conn and socket memory is shown with its
    /// own addresses and id.
    #[test]
    fn reused_memory_does_not_rename_a_new_connection() {
        let mut names = ConnNames::default();
        let old = WireConn {
            kind: tlstap_core::event::ConnKind::Tcp,
            fd: Some(7),
            local: Some("127.0.0.1:443".parse().unwrap()),
            remote: Some("127.0.0.1:50000".parse().unwrap()),
            sock_id: 0xffff_0001,
        };
        let new = WireConn { remote: Some("127.0.0.1:50002".parse().unwrap()), ..old };
        let old_info = names.get(1, 0xc000_1000, &old).clone();
        let new_info = names.get(1, 0xc000_1000, &new).clone();
        assert_eq!(new_info.remote, Some("127.0.0.1:50002".parse().unwrap()));
        assert_ne!(old_info.id, new_info.id);
        assert_eq!(names.get(1, 0xc000_1000, &old), &old_info);
    }

    /// The id of a connection is what it was when addresses were kept as text (FNV-1a over
    /// the same bytes): ids in files written before stay comparable.
    #[test]
    fn conn_ids_did_not_change_with_addresses_kept_as_addresses() {
        let (l, r) = ("127.0.0.1:443".parse().ok(), "[::1]:50000".parse().ok());
        assert_eq!(conn_id(1, 0xc000_1000, 0xffff_0001, l, r), "8f65568dc68561f9");
    }
}
