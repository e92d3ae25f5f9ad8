//! A real TLS capture for the oracle tests: openssl s_server on 127.0.0.1, tshark capturing
//! `lo`, curl fetching one random URL over TLS 1.3 and one over TLS 1.2 with SSLKEYLOGFILE;
//! then the capture as nanosecond pcap, parsed here. Every child dies with its guard.

use std::fs;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{run_ok, Guard};

const T: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct Packet {
    pub ts_ns: u64,
    pub orig_len: u32,
    pub data: Vec<u8>,
}

#[derive(Debug)]
pub struct Capture {
    pub port: u16,
    /// The random path (no leading slash) fetched over TLS 1.3, then over TLS 1.2.
    pub nonces: Vec<String>,
    pub key_log: PathBuf,
    /// What tshark captured, as nanosecond pcap.
    pub raw_pcap: PathBuf,
    pub linktype: u16,
    pub packets: Vec<Packet>,
}

fn nonce() -> String {
    let mut b = [0u8; 8];
    fs::File::open("/dev/urandom").unwrap().read_exact(&mut b).unwrap();
    format!("tlstap-{}", b.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_for_port(port: u16, server: &mut Guard) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = server.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
            panic!("openssl s_server exited: {status}");
        }
        assert!(Instant::now() < deadline, "s_server not listening on {port}");
        thread::sleep(Duration::from_millis(50));
    }
}

pub fn capture_curl_fetches(dir: &Path) -> Capture {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    run_ok(
        Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"])
            .args(["-days", "1", "-nodes", "-subj", "/CN=tlstap-test", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert),
        T,
    );
    let port = free_port();
    let mut server = Guard::spawn(
        Command::new("openssl")
            .args(["s_server", "-accept", &format!("127.0.0.1:{port}"), "-www", "-quiet", "-cert"])
            .arg(&cert)
            .arg("-key")
            .arg(&key),
    );
    wait_for_port(port, &mut server);

    let raw = dir.join("raw.pcapng");
    let mut tshark = Guard::spawn_watching_stderr(
        Command::new("tshark")
            .args(["-n", "-i", "lo", "-f", &format!("tcp port {port}"), "-a", "duration:60", "-w"])
            .arg(&raw),
    );
    tshark.wait_for_stderr("Capturing on", T);
    thread::sleep(Duration::from_millis(500));

    let key_log = dir.join("curl.keys");
    let nonces = vec![nonce(), nonce()];
    for (nonce, versions) in nonces.iter().zip([&["--tlsv1.3"][..], &["--tlsv1.2", "--tls-max", "1.2"]]) {
        run_ok(
            Command::new("curl")
                .args(["-sS", "-k", "--http1.1", "--noproxy", "*", "--max-time", "10", "-o", "/dev/null"])
                .args(versions)
                .arg(format!("https://127.0.0.1:{port}/{nonce}"))
                .env("SSLKEYLOGFILE", &key_log),
            T,
        );
    }
    thread::sleep(Duration::from_millis(500));
    let status = tshark.interrupt_and_wait(T);
    assert!(status.success() || status.code() == Some(130) || status.code().is_none(), "tshark: {status}");
    drop(server);

    let raw_pcap = dir.join("raw.pcap");
    run_ok(Command::new("tshark").arg("-r").arg(&raw).args(["-F", "nsecpcap", "-w"]).arg(&raw_pcap), T);
    let (linktype, packets) = parse_pcap(&fs::read(&raw_pcap).unwrap());
    Capture { port, nonces, key_log, raw_pcap, linktype, packets }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// Parses little-endian pcap (microsecond or nanosecond magic): 24-byte file header, then
/// 16-byte record headers (seconds, fraction, captured length, original length) and data.
pub fn parse_pcap(b: &[u8]) -> (u16, Vec<Packet>) {
    let frac_ns = match u32_at(b, 0) {
        0xa1b2_3c4d => 1,
        0xa1b2_c3d4 => 1000,
        m => panic!("not little-endian pcap: magic {m:#x}"),
    };
    let linktype = u16::try_from(u32_at(b, 20) & 0xffff).unwrap();
    let mut packets = Vec::new();
    let mut at = 24;
    while at < b.len() {
        let (sec, frac, cap, orig) = (u32_at(b, at), u32_at(b, at + 4), u32_at(b, at + 8), u32_at(b, at + 12));
        let start = at + 16;
        let end = start + cap as usize;
        let ts_ns = u64::from(sec) * 1_000_000_000 + u64::from(frac) * frac_ns;
        packets.push(Packet { ts_ns, orig_len: orig, data: b[start..end].to_vec() });
        at = end;
    }
    (linktype, packets)
}
