//! What tlstap's own process spends per HTTP/1 exchange in the HTTP view, offline: no BPF, no
//! root, the same numbers on every run of the same code.
//!
//! ```text
//! flock /tmp/tlstap-bench.lock cargo run --release -p tlstap --example httpview_cost
//! flock /tmp/tlstap-bench.lock cargo run --release -p tlstap --example httpview_cost -- --exchanges 200000 --runs 7
//! ... --example httpview_cost -- --only text,jsonl,jsonl-file,raw-text,raw-jsonl
//! ```
//!
//! It drives the capture's own code from the decoded data record on: `pipeline.rs` is compiled
//! in here as the binary compiles it, so each call goes `Pipeline::data` → `Reassembler` →
//! `Sequencer` → `Output::call` → `HttpDecoder` → the sinks, with `Pipeline::tick` (and its
//! flush) after every 64 calls as after a ring poll. The calls are what a server traced under
//! the overhead benchmark sees (bench/tlsbench under `hey -c 32 -m POST -d ...`, keep-alive):
//! on each of 32 connections in turn, one Read of hey's request (`POST /echo?size=64`, Host,
//! User-Agent, Content-Length, Content-Type, X-Nonce, Accept-Encoding and a 22-byte body) and
//! one Write of tlsbench's answer (200, Content-Length, Content-Type, Date, X-Nonce, a 64-byte
//! body that is the nonce and then random bytes, so the text view shows it as a hex dump).
//!
//! Outputs: the text view and jsonl to `io::sink()` behind the 64 KiB `BufWriter` tlstap puts
//! in front of every output, and jsonl to a file in /tmp (removed after), as `-o FILE` writes
//! it; the per-call (`--raw`) views for comparison. Each configuration runs `--runs` times
//! (default 7) over `--exchanges` exchanges (default 200 000), alternating; printed are the
//! median and the range of the CPU time per exchange (this thread's, from the scheduler: what
//! a shared VM's other work or steal takes is not in it) and of the wall time.

use std::io::{self, BufWriter, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Instant;

use tlstap_core::event::{ConnKind, Direction};
use tlstap_core::reassembly::{CallMeta, Chunk, WireConn};
use tlstap_core::sink::{JsonlSink, PayloadStyle, Sink, TextSink};

// The binary's own modules: what this measures is the code the capture runs.
#[allow(dead_code)]
#[path = "../src/pipeline.rs"]
mod pipeline;
#[allow(dead_code)]
#[path = "../src/system.rs"]
mod system;

use pipeline::{Pipeline, View};

/// Connections the load keeps open (`hey -c 32`).
const CONNS: usize = 32;
/// Calls between ticks (a ring poll's worth under this load).
const CALLS_PER_TICK: usize = 64;
const NONCE: &str = "0123456789abcdef";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Config {
    HttpText,
    HttpJsonlSink,
    HttpJsonlFile,
    RawText,
    RawJsonlSink,
}

impl Config {
    const ALL: [Config; 5] =
        [Config::HttpText, Config::HttpJsonlSink, Config::HttpJsonlFile, Config::RawText, Config::RawJsonlSink];

    fn name(self) -> &'static str {
        match self {
            Config::HttpText => "http text -> sink",
            Config::HttpJsonlSink => "http jsonl -> sink",
            Config::HttpJsonlFile => "http jsonl -> /tmp file",
            Config::RawText => "raw text -> sink",
            Config::RawJsonlSink => "raw jsonl -> sink",
        }
    }

    /// The name `--only` takes.
    fn key(self) -> &'static str {
        match self {
            Config::HttpText => "text",
            Config::HttpJsonlSink => "jsonl",
            Config::HttpJsonlFile => "jsonl-file",
            Config::RawText => "raw-text",
            Config::RawJsonlSink => "raw-jsonl",
        }
    }

    fn view(self) -> View {
        match self {
            Config::HttpText | Config::HttpJsonlSink | Config::HttpJsonlFile => {
                View::Http { calls_too: false, go_reports: false }
            }
            Config::RawText | Config::RawJsonlSink => View::Calls,
        }
    }
}

/// The bytes of one connection's calls: hey's request (as the server reads it) and tlsbench's
/// answer (as it writes it).
struct Exchange {
    request: Vec<u8>,
    response: Vec<u8>,
}

fn exchange(port: u16) -> Exchange {
    let body = format!("{NONCE}-bench");
    let request = format!(
        "POST /echo?size=64 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: hey/0.0.1\r\nContent-Length: {}\r\n\
         Content-Type: text/html\r\nX-Nonce: {NONCE}\r\nAccept-Encoding: gzip\r\n\r\n{body}",
        body.len()
    );
    let mut response = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: 64\r\nContent-Type: application/octet-stream\r\n\
         Date: Mon, 07 Dec 2026 04:04:00 GMT\r\nX-Nonce: {NONCE}\r\n\r\n{NONCE}"
    )
    .into_bytes();
    // tlsbench's payload is random bytes: xorshift, so every run sees the same ones.
    let body_at = response.len() - NONCE.len();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while response.len() < body_at + 64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        response.push(x as u8);
    }
    Exchange { request: request.into_bytes(), response }
}

fn wire_conn(i: usize) -> WireConn {
    let local = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 41234);
    let remote = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 50_000 + i as u16);
    WireConn {
        kind: ConnKind::Tcp,
        fd: Some(10 + i as i32),
        local: Some(local),
        remote: Some(remote),
        sock_id: i as u64,
    }
}

fn sinks(config: Config, file: &std::path::Path) -> io::Result<Vec<Box<dyn Sink>>> {
    let sink = || BufWriter::with_capacity(64 * 1024, io::sink());
    Ok(vec![match config {
        Config::HttpText | Config::RawText => Box::new(TextSink::new(sink(), PayloadStyle::Auto)),
        Config::HttpJsonlSink | Config::RawJsonlSink => Box::new(JsonlSink::new(sink())),
        Config::HttpJsonlFile => {
            let out: Box<dyn Write> = Box::new(std::fs::File::create(file)?);
            Box::new(JsonlSink::new(BufWriter::with_capacity(64 * 1024, out)))
        }
    }])
}

/// One run: `exchanges` exchanges round-robin over the connections; ns per exchange.
fn run(config: Config, exchanges: usize, file: &std::path::Path) -> io::Result<Times> {
    let pid = std::process::id();
    let bytes: Vec<Exchange> = (0..CONNS).map(|_| exchange(41234)).collect();
    let conns: Vec<WireConn> = (0..CONNS).map(wire_conn).collect();
    let mut comm = [0u8; 16];
    comm[..8].copy_from_slice(b"tlsbench");
    let mut pipeline = Pipeline::new(sinks(config, file)?, config.view());
    let mut seqs = [0u64; CONNS];
    let (mut call_id, mut ts_ns, mut calls) = (0u64, 1_000_000_000u64, 0usize);
    let (start, cpu_start) = (Instant::now(), cpu_ns()?);
    for n in 0..exchanges {
        let c = n % CONNS;
        for (direction, data) in [(Direction::Read, &bytes[c].request), (Direction::Write, &bytes[c].response)] {
            call_id += 1;
            ts_ns += 25_000;
            let meta = CallMeta {
                call_id,
                direction,
                ts_ns,
                pid,
                tid: pid + 1 + c as u32,
                uid: 0,
                comm,
                conn_ptr: 0xc000_1000_0000 + 0x1000 * c as u64,
                call_len: data.len() as u64,
                seq: seqs[c],
                stream_epoch: 1,
                conn: conns[c],
                goroutine: 0,
            };
            pipeline.data(Chunk { meta, offset: 0, span: data.len() as u64, read_fault: false, payload: data })?;
            calls += 1;
            if calls % CALLS_PER_TICK == 0 {
                pipeline.tick(Some(Instant::now()))?;
            }
        }
        seqs[c] += 1;
    }
    pipeline.tick(None)?;
    pipeline.finish_http()?;
    pipeline.tick(None)?;
    let (elapsed, cpu) = (start.elapsed(), cpu_ns()? - cpu_start);
    let decoded = pipeline.http_exchanges();
    if config.view() != View::Calls && decoded != exchanges as u64 {
        return Err(io::Error::other(format!("{} exchanges decoded of {exchanges}", decoded)));
    }
    Ok(Times { wall: elapsed.as_nanos() as f64 / exchanges as f64, cpu: cpu as f64 / exchanges as f64 })
}

/// Per exchange, ns.
#[derive(Debug, Clone, Copy)]
struct Times {
    wall: f64,
    cpu: f64,
}

/// Time this thread has run on a CPU, ns (the scheduler's own count: time the VM or other
/// processes took is not in it).
fn cpu_ns() -> io::Result<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat")?;
    stat.split_whitespace().next().and_then(|n| n.parse().ok()).ok_or_else(|| io::Error::other("bad schedstat"))
}

fn arg(args: &[String], name: &str, default: usize) -> Result<usize, String> {
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => args.get(i + 1).and_then(|v| v.parse().ok()).ok_or(format!("{name} needs a number")),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let exchanges = arg(&args, "--exchanges", 200_000)?;
    let runs = arg(&args, "--runs", 7)?.max(1);
    let file = std::env::temp_dir().join(format!("httpview_cost.{}.jsonl", std::process::id()));
    let configs: Vec<Config> = match args.iter().position(|a| a == "--only") {
        None => Config::ALL.to_vec(),
        Some(i) => {
            let keys = args.get(i + 1).ok_or("--only needs a list")?;
            let wanted: Vec<&str> = keys.split(',').collect();
            Config::ALL.into_iter().filter(|c| wanted.contains(&c.key())).collect()
        }
    };
    let mut results: Vec<Vec<Times>> = vec![Vec::new(); configs.len()];
    for _ in 0..runs {
        for (i, &config) in configs.iter().enumerate() {
            results[i].push(run(config, exchanges, &file)?);
        }
    }
    let _ = std::fs::remove_file(&file);
    println!(
        "{exchanges} exchanges ({CONNS} connections, 2 calls each) x {runs} runs; per exchange, median [min-max]:"
    );
    println!("{:<24} {:>20} {:>20}", "", "CPU ns", "wall ns");
    for (config, times) in configs.iter().zip(&results) {
        let stats = |pick: fn(&Times) -> f64| {
            let mut v: Vec<f64> = times.iter().map(pick).collect();
            v.sort_by(f64::total_cmp);
            format!("{:.0} [{:.0}-{:.0}]", v[v.len() / 2], v[0], v[v.len() - 1])
        };
        println!("{:<24} {:>20} {:>20}", config.name(), stats(|t| t.cpu), stats(|t| t.wall));
    }
    Ok(())
}
