//! The pcapng writer judged by Wireshark's own tools: (a) a hand-built file with two interfaces,
//! a Decryption Secrets Block and commented packets read back by tshark and capinfos; (b) a real
//! loopback TLS 1.3 and 1.2 capture (openssl s_server, curl, tshark -i lo) rewritten through our
//! writer, which tshark must decrypt with our DSB and must not without it.
//! Skipped with a printed reason when tools or root are missing, unless
//! TLSTAP_REQUIRE_PRIVILEGED=1, which turns a skip into a failure.
// An integration test crate: a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod pcap_capture;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{golden, prerequisites, run_ok};
use tlstap_core::event::{Event, SecretEvent};
use tlstap_core::pcapng::{PcapngWriter, LINKTYPE_ETHERNET, LINKTYPE_RAW};
use tlstap_core::secret_file::{open_secret_file, OpenMode};
use tlstap_core::sink::{KeylogSink, PcapngSink, Sink};

const T: Duration = Duration::from_secs(60);

/// IPv4 + UDP 127.0.0.1:1000 -> 127.0.0.2:2000 carrying "hi" (checksums zero: not checked).
const IPV4_UDP: [u8; 30] = [
    0x45, 0, 0, 30, 0, 1, 0, 0, 64, 17, 0, 0, 127, 0, 0, 1, 127, 0, 0, 2, // IPv4
    0x03, 0xe8, 0x07, 0xd0, 0, 10, 0, 0, b'h', b'i', // UDP
];

fn ethernet_frame() -> Vec<u8> {
    let mut f = vec![0u8; 12];
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&IPV4_UDP);
    f
}

/// Two interfaces, a DSB, three packets (one truncated, one without comment), a second DSB.
fn sample() -> Vec<u8> {
    let mut w = PcapngWriter::new(Vec::new(), "tlstap 0.1.0").unwrap();
    let eth = w.add_interface(LINKTYPE_ETHERNET, "lo").unwrap();
    let raw = w.add_interface(LINKTYPE_RAW, "tlstap0").unwrap();
    w.write_secrets(format!("CLIENT_RANDOM {} {}\n", "ab".repeat(32), "cd".repeat(48)).as_bytes()).unwrap();
    let frame = ethernet_frame();
    w.write_packet(eth, 1_700_000_000_123_456_789, &frame, 44, Some("pid=1234 comm=server")).unwrap();
    w.write_packet(raw, 1_700_000_000_999_999_999, &IPV4_UDP, 30, Some("pid=99 comm=curl")).unwrap();
    w.write_secrets(b"CLIENT_TRAFFIC_SECRET_0 0101 0202\n").unwrap();
    w.write_packet(eth, 1_700_000_001_000_000_001, &frame[..20], 1500, None).unwrap();
    w.flush().unwrap();
    w.into_inner()
}

#[test]
fn sample_file_read_back_by_tshark_and_capinfos() {
    let bytes = sample();
    golden("sample.pcapng", &bytes);
    if !prerequisites("sample_file_read_back_by_tshark_and_capinfos", &["tshark", "capinfos"], false) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sample.pcapng");
    fs::write(&file, &bytes).unwrap();

    let fields = [
        "frame.interface_id",
        "frame.interface_name",
        "frame.time_epoch",
        "frame.len",
        "frame.cap_len",
        "frame.comment",
        "ip.dst",
    ];
    let mut tshark = Command::new("tshark");
    tshark.arg("-n").arg("-r").arg(&file).args(["-T", "fields", "-E", "separator=|"]);
    for f in fields {
        tshark.args(["-e", f]);
    }
    let out = run_ok(&mut tshark, T);
    let expected = "\
0|lo|1700000000.123456789|44|44|pid=1234 comm=server|127.0.0.2
1|tlstap0|1700000000.999999999|30|30|pid=99 comm=curl|127.0.0.2
0|lo|1700000001.000000001|1500|20||
";
    assert_eq!(out, expected);

    let info = run_ok(Command::new("capinfos").args(["-M", "-t", "-E", "-I", "-D", "-F", "-c"]).arg(&file), T);
    // capinfos -M (machine-readable) wording as of Wireshark 4.0; whitespace normalised.
    let info: String = info.lines().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ") + "\n").collect();
    for want in [
        "File type: pcapng",
        "File encapsulation: per-packet",
        "File timestamp precision: nanoseconds (9)",
        "Number of packets: 3",
        "Capture application: tlstap 0.1.0",
        "Number of interfaces in file: 2",
        "Interface #0 info:\nName = lo\nEncapsulation = Ethernet (1 - ether)\nCapture length = 0\nTime precision = nanoseconds (9)",
        "Interface #1 info:\nName = tlstap0\nEncapsulation = Raw IP (7 - rawip)\nCapture length = 0\nTime precision = nanoseconds (9)",
        "Number of decryption secrets in file: 2",
    ] {
        assert!(info.contains(want), "capinfos lacks {want:?}:\n{info}");
    }
}

/// Decodes curl's key log into owned (label, client random, secret).
fn parse_key_log(text: &str) -> Vec<(String, Vec<u8>, Vec<u8>)> {
    let unhex = |s: &str| -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    };
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 3, "key log line {l:?}");
            (f[0].to_string(), unhex(f[1]), unhex(f[2]))
        })
        .collect()
}

/// The request URIs tshark finds in `file`, decrypting with `keylog` (none when empty) and
/// whatever Decryption Secrets Blocks the file holds.
fn request_uris(file: &Path, port: u16, keylog: &str) -> Vec<String> {
    let out = run_ok(
        Command::new("tshark")
            .arg("-n")
            .arg("-r")
            .arg(file)
            .args(["-o", &format!("tls.keylog_file:{keylog}"), "-d", &format!("tcp.port=={port},tls")])
            .args(["-Y", "http.request", "-T", "fields", "-e", "http.request.uri"]),
        T,
    );
    out.lines().map(str::to_string).collect()
}

fn packet_count(file: &Path) -> usize {
    run_ok(Command::new("tshark").arg("-n").arg("-r").arg(file).args(["-T", "fields", "-e", "frame.number"]), T)
        .lines()
        .count()
}

#[test]
fn tshark_decrypts_loopback_tls_with_our_secrets_block() {
    let test = "tshark_decrypts_loopback_tls_with_our_secrets_block";
    if !prerequisites(test, &["tshark", "curl", "openssl"], true) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let capture = pcap_capture::capture_curl_fetches(dir.path());
    let (port, nonces) = (capture.port, &capture.nonces);
    let keys_text = fs::read_to_string(&capture.key_log).unwrap();
    assert!(keys_text.contains("CLIENT_TRAFFIC_SECRET_0 "), "no TLS 1.3 secrets:\n{keys_text}");
    assert!(keys_text.contains("CLIENT_RANDOM "), "no TLS 1.2 secrets:\n{keys_text}");
    let keys = parse_key_log(&keys_text);

    // A: curl's key log as one DSB before the packets (the writer API).
    let write = |name: &str, secrets: Option<&[u8]>| {
        let mut w = PcapngWriter::new(Vec::new(), "tlstap test").unwrap();
        let lo = w.add_interface(capture.linktype, "lo").unwrap();
        if let Some(s) = secrets {
            w.write_secrets(s).unwrap();
        }
        for p in &capture.packets {
            w.write_packet(lo, p.ts_ns, &p.data, p.orig_len, Some("pid=1 comm=curl")).unwrap();
        }
        let path = dir.path().join(name);
        fs::write(&path, w.into_inner()).unwrap();
        path
    };
    let with_dsb = write("with_dsb.pcapng", Some(keys_text.as_bytes()));
    let without = write("without_dsb.pcapng", None);

    // B: the same secrets as events through PcapngSink (one DSB per distinct line, rendered by
    // us from binary), and through KeylogSink into a file opened by open_secret_file.
    let events: Vec<Event<'_>> = keys
        .iter()
        .map(|(label, cr, s)| Event::Secret(SecretEvent { ts_ns: 0, pid: 1, label, client_random: cr, secret: s }))
        .collect();
    let via_sink = dir.path().join("via_sink.pcapng");
    let mut sink =
        PcapngSink::new(std::io::BufWriter::new(open_secret_file(&via_sink, OpenMode::Truncate).unwrap())).unwrap();
    let lo = sink.add_interface(capture.linktype, "lo").unwrap();
    for e in events.iter().chain(events.iter()) {
        sink.write_event(e).unwrap();
    }
    for p in &capture.packets {
        sink.write_packet(lo, p.ts_ns, &p.data, p.orig_len, None).unwrap();
    }
    sink.flush().unwrap();
    drop(sink);
    let our_keylog = dir.path().join("ours.keys");
    let mut keylog = KeylogSink::new(open_secret_file(&our_keylog, OpenMode::Append).unwrap());
    for e in &events {
        keylog.write_event(e).unwrap();
    }
    drop(keylog);
    assert_eq!(fs::read_to_string(&our_keylog).unwrap(), keys_text, "our key log differs from curl's");

    let want: Vec<String> = nonces.iter().map(|n| format!("/{n}")).collect();
    assert_eq!(request_uris(&with_dsb, port, ""), want, "write_secrets DSB");
    assert_eq!(request_uris(&via_sink, port, ""), want, "PcapngSink DSBs");
    assert_eq!(request_uris(&without, port, our_keylog.to_str().unwrap()), want, "KeylogSink file");
    assert!(packet_count(&without) >= 20, "the capture without secrets still has its packets");
    assert_eq!(request_uris(&without, port, ""), Vec::<String>::new(), "decrypted without secrets?");

    // Timestamps and lengths survive the rewrite (tshark reads both files the same).
    let times = |f: &Path| {
        run_ok(
            Command::new("tshark").arg("-r").arg(f).args(["-T", "fields", "-e", "frame.time_epoch", "-e", "frame.len"]),
            T,
        )
    };
    assert_eq!(times(&with_dsb), times(&capture.raw_pcap));
}
