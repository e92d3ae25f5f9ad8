//! Pcap mode against independent oracles: tshark, reading only tlstap's pcapng, must decrypt
//! every request and response of a fixture run (TLS 1.3 and 1.2; Go server hooked, Go client
//! hooked) from the file's own secrets, and nothing once they are stripped (editcap); capinfos
//! and tshark check time order and stamps; a tshark capture of the same port must hold the same
//! packets (nothing missing, nothing twice on `lo`; both directions once on a veth); an unhooked
//! process's TLS is left out unless `--all`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on broken expectations

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use common::*;

const VERSION: &str = "1.27";
const VARIANT: &str = "exe";

fn port_of(addr: &str) -> u16 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

fn now_ns() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos()
}

/// `tshark -r FILE` (no key log but the file's own) with `-e` fields, one row per frame.
fn frames(file: &Path, filter: &str, fields: &[&str]) -> Vec<Vec<String>> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r").arg(file).args(["-o", "tls.keylog_file:", "-T", "fields", "-E", "separator=\t"]);
    if !filter.is_empty() {
        cmd.args(["-Y", filter]);
    }
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "tshark -r {}: {}", file.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| l.split('\t').map(str::to_string).collect()).collect()
}

/// Every value of one HTTP field tshark decrypts from the file alone, joined.
fn decrypted(file: &Path, field: &str) -> String {
    frames(file, "http", &[field]).concat().join("\n")
}

/// `frame.time_epoch` ("1795756220.803595110") as nanoseconds.
fn epoch_ns(text: &str) -> u128 {
    let (secs, frac) = text.split_once('.').unwrap_or((text, "0"));
    secs.parse::<u128>().unwrap() * 1_000_000_000 + format!("{frac:0<9}")[..9].parse::<u128>().unwrap()
}

/// The file with its Decryption Secrets Blocks removed.
fn without_secrets(file: &Path) -> PathBuf {
    let stripped = file.with_extension("nodsb.pcapng");
    let out = Command::new("editcap").arg("--discard-all-secrets").arg(file).arg(&stripped).output().unwrap();
    assert!(out.status.success(), "editcap: {}", String::from_utf8_lossy(&out.stderr));
    stripped
}

/// The checks every pcap-mode file must pass: 0600, capinfos' strict time order, stamps of
/// today, strictly increasing, DSBs present.
fn assert_well_formed(file: &Path, started_ns: u128) {
    assert_eq!(std::fs::metadata(file).unwrap().permissions().mode() & 0o777, 0o600);
    let info = Command::new("capinfos").arg(file).output().unwrap();
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(info.contains("Strict time order:   True"), "capinfos:\n{info}");
    assert!(info.contains("Time precision = nanoseconds (9)"), "capinfos:\n{info}");
    assert!(!info.contains("Number of decryption secrets in file: 0"), "capinfos:\n{info}");
    let stamps: Vec<u128> = frames(file, "", &["frame.time_epoch"]).iter().map(|f| epoch_ns(&f[0])).collect();
    assert!(!stamps.is_empty(), "no packets in {}", file.display());
    assert!(stamps.windows(2).all(|w| w[0] < w[1]), "stamps not strictly increasing");
    let (first, last) = (stamps[0], stamps[stamps.len() - 1]);
    assert!(first >= started_ns - 1_000_000_000 && last <= now_ns(), "stamps {first}..{last} are not of this run");
    // No snap length: every packet whole.
    let cut = frames(file, "frame.cap_len != frame.len", &["frame.number"]);
    assert!(cut.is_empty(), "packets cut short: {cut:?}");
}

/// `lo` is written as Ethernet (the kernel gives TC programs a zeroed Ethernet header there).
fn assert_ethernet(file: &Path) {
    let info = Command::new("capinfos").arg(file).output().unwrap();
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(info.contains("File encapsulation:  Ethernet"), "capinfos:\n{info}");
}

/// (ports, seq, ack, len, flags) of each frame on `port`: one packet's identity on the wire.
fn packet_ids(file: &Path, port: u16) -> BTreeMap<String, usize> {
    let fields = ["tcp.srcport", "tcp.dstport", "tcp.seq_raw", "tcp.ack_raw", "tcp.len", "tcp.flags"];
    let mut ids = BTreeMap::new();
    for f in frames(file, &format!("tcp.port == {port}"), &fields) {
        *ids.entry(f.join(" ")).or_insert(0) += 1;
    }
    ids
}

/// Starts `tlstap gotls -m pcap -i lo -w FILE` with `args` (and the JSONL side stream).
fn start_pcap(dir: &TempDir, file: &Path, args: &[&str]) -> Tlstap {
    let mut all = vec!["-m", "pcap", "-i", "lo", "-w", file.to_str().unwrap()];
    all.extend_from_slice(args);
    Tlstap::start(dir, &all)
}

#[test]
fn pcap_hooked_server_decrypts_tls13_and_tls12_and_leaves_others_out() {
    if !privileged() {
        return;
    }
    let started = now_ns();
    let dir = TempDir::new("pcap-server");
    let fixture = fixture(VERSION, VARIANT, "tlsfixture");
    let (server_bin, other_bin) = (copy_binary(&fixture, &dir, "server"), copy_binary(&fixture, &dir, "other"));
    let server = Server::start(&server_bin, &dir.path("server.jsonl"), &[]);
    let other = Server::start(&other_bin, &dir.path("other.jsonl"), &[]);
    let wire = Tshark::start(&dir.path("wire.pcapng"), port_of(&server.addr));
    let file = dir.path("out.pcapng");
    let keys = dir.path("keys.log");
    let tlstap = start_pcap(&dir, &file, &["-e", server_bin.to_str().unwrap(), "-k", keys.to_str().unwrap()]);
    let programs = program_ids_of(tlstap.proc.pid());
    let nonces = [nonce(), nonce()];
    let other_nonce = nonce();
    curl_echo(&server.addr, &["--tlsv1.3"], &nonces[0], &dir.path("curl.keys"));
    curl_echo(&other.addr, &["--tlsv1.3"], &other_nonce, &dir.path("curl.keys"));
    curl_echo(&server.addr, &["--tlsv1.2", "--tls-max", "1.2"], &nonces[1], &dir.path("curl.keys"));
    let capture = tlstap.stop();
    let wire = wire.stop();
    let (server_pid, server_port, other_port) = (server.proc.pid(), port_of(&server.addr), port_of(&other.addr));
    server.stop();
    other.stop();

    // The TC program (tcx link or clsact filter) and the uprobes are gone with tlstap.
    assert!(programs.len() >= 2, "uprobe and TC programs loaded: {programs:?}");
    assert_programs_unloaded(&programs);
    assert_well_formed(&file, started);
    assert_ethernet(&file);
    let (requests, responses) = (decrypted(&file, "http.request.uri"), decrypted(&file, "http.response.line"));
    for n in &nonces {
        assert!(requests.contains(&format!("n={n}")), "request {n} not decrypted from the file alone:\n{requests}");
        assert!(responses.contains(&format!("X-Nonce: {n}")), "response {n} not decrypted:\n{responses}");
    }
    let stripped = without_secrets(&file);
    let bare = format!("{}{}", decrypted(&stripped, "http.request.uri"), decrypted(&stripped, "http.response.line"));
    assert!(nonces.iter().all(|n| !bare.contains(n.as_str())), "decrypted without the DSBs:\n{bare}");

    // The hooked server's packets, each once, handshake included, as tshark saw them.
    assert_eq!(packet_ids(&file, server_port), packet_ids(&wire, server_port), "tlstap's packets vs tshark's");
    assert!(
        frames(&file, &format!("tcp.port == {other_port}"), &["frame.number"]).is_empty(),
        "unhooked server in the file"
    );
    let comments = frames(&file, "", &["frame.comment"]);
    assert!(comments.iter().all(|c| c[0] == format!("pid={server_pid} comm=server")), "comments: {comments:?}");

    // The side stream: one record per packet, with the process.
    let packets: Vec<_> = capture.records.iter().filter(|r| r["type"] == "packet").collect();
    assert_eq!(packets.len(), comments.len());
    assert!(packets.iter().all(|p| p["pid"] == server_pid && p["comm"] == "server" && p["ifname"] == "lo"));
    assert_eq!(capture.stats()["lost"], 0, "{}", capture.stats());
    assert!(capture.stderr.contains(&format!(", {} packets", packets.len())), "summary: {}", capture.stderr);
    // -k writes the same secrets as an NSS key log: 4 lines for TLS 1.3, 1 for TLS 1.2; the
    // side stream has them as secret records.
    let keylog = std::fs::read_to_string(&keys).unwrap();
    assert_eq!(keylog.lines().count(), 5);
    assert_eq!(capture.secret_lines(), keylog.lines().map(str::to_string).collect(), "secrets in the side stream");
    assert_eq!(std::fs::metadata(&keys).unwrap().permissions().mode() & 0o777, 0o600);
}

#[test]
fn pcap_hooked_client_decrypts_tls13_and_tls12() {
    if !privileged() {
        return;
    }
    let started = now_ns();
    let dir = TempDir::new("pcap-client");
    let fixture = fixture(VERSION, VARIANT, "tlsfixture");
    let (server_bin, client_bin) = (copy_binary(&fixture, &dir, "server"), copy_binary(&fixture, &dir, "client"));
    let server = Server::start(&server_bin, &dir.path("server.jsonl"), &[]);
    let file = dir.path("out.pcapng");
    let tlstap = start_pcap(&dir, &file, &["-e", client_bin.to_str().unwrap()]);
    let manifest = dir.path("client.jsonl");
    let pids = [
        run_client(&client_bin, &server.addr, &manifest, &["--requests", "3", "--sizes", "10,5000"]),
        run_client(&client_bin, &server.addr, &manifest, &["--requests", "2", "--sizes", "100", "--tls-max", "1.2"]),
    ];
    let capture = tlstap.stop();
    server.stop();

    assert_well_formed(&file, started);
    let nonces: Vec<String> = read_jsonl(&manifest)
        .iter()
        .filter(|r| r["type"] == "request")
        .map(|r| r["nonce"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(nonces.len(), 5);
    let (requests, responses) = (decrypted(&file, "http.request.line"), decrypted(&file, "http.response.line"));
    for n in &nonces {
        assert!(requests.contains(&format!("X-Nonce: {n}")), "request {n} not decrypted:\n{requests}");
        assert!(responses.contains(&format!("X-Nonce: {n}")), "response {n} not decrypted:\n{responses}");
    }
    let versions = frames(
        &file,
        "tls.handshake.type == 2",
        &["tls.handshake.version", "tls.handshake.extensions.supported_version"],
    );
    assert!(
        versions.iter().any(|v| v[1] == "0x0304") && versions.iter().any(|v| v[0] == "0x0303" && v[1].is_empty()),
        "{versions:?}"
    );
    let bare = decrypted(&without_secrets(&file), "http.request.line");
    assert!(nonces.iter().all(|n| !bare.contains(n.as_str())), "decrypted without the DSBs:\n{bare}");
    let comments = frames(&file, "", &["frame.comment"]);
    let expected: Vec<String> = pids.iter().map(|p| format!("pid={p} comm=client")).collect();
    assert!(comments.iter().all(|c| expected.contains(&c[0])), "comments: {comments:?}");
    assert_eq!(capture.stats()["lost"], 0, "{}", capture.stats());
}

/// Packets the ring buffer cannot take are counted by cause, and the file stays valid.
#[test]
fn pcap_loss_is_counted_and_the_file_stays_valid() {
    if !privileged() {
        return;
    }
    let started = now_ns();
    let dir = TempDir::new("pcap-loss");
    let server_bin = copy_binary(&fixture(VERSION, VARIANT, "tlsfixture"), &dir, "server");
    let server = Server::start(&server_bin, &dir.path("server.jsonl"), &[]);
    let file = dir.path("loss.pcapng");
    // A 1 MiB ring against 64 MiB answers on lo (64 KiB segments at memory speed).
    let tlstap = start_pcap(&dir, &file, &["-e", server_bin.to_str().unwrap(), "--ringbuf-mb", "1"]);
    for _ in 0..3 {
        let (url, nonce) = (format!("https://{}/echo?size=67108864", server.addr), nonce());
        let out = Command::new("curl")
            .args(["-sSk", "--fail", "-o", "/dev/null", "-X", "POST", "--data-binary", &nonce, "-H"])
            .arg(format!("X-Nonce: {nonce}"))
            .arg(&url)
            .status()
            .unwrap();
        assert!(out.success());
    }
    let capture = tlstap.stop();
    server.stop();
    let stats = capture.stats();
    assert!(stats["lost_by_cause"]["packet_ringbuf_full"].as_u64().unwrap() > 0, "{stats}");
    assert!(capture.stderr.contains("packet_ringbuf_full="), "summary: {}", capture.stderr);
    assert_well_formed(&file, started);
}

/// Without --all, a filter narrows the hooked processes' packets: here to one direction.
#[test]
fn pcap_filter_narrows_the_hooked_traffic() {
    if !privileged() {
        return;
    }
    let dir = TempDir::new("pcap-narrow");
    let server_bin = copy_binary(&fixture(VERSION, VARIANT, "tlsfixture"), &dir, "server");
    let server = Server::start(&server_bin, &dir.path("server.jsonl"), &[]);
    let port = port_of(&server.addr);
    let file = dir.path("narrow.pcapng");
    let port_text = port.to_string();
    let tlstap = start_pcap(&dir, &file, &["-e", server_bin.to_str().unwrap(), "tcp", "src", "port", &port_text]);
    curl_echo(&server.addr, &["--tlsv1.3"], &nonce(), &dir.path("curl.keys"));
    let capture = tlstap.stop();
    server.stop();
    let sources: Vec<String> = frames(&file, "", &["tcp.srcport"]).concat();
    assert!(!sources.is_empty(), "the server's packets are written");
    assert!(sources.iter().all(|p| *p == port_text), "only the server's side: {sources:?}");
    assert_eq!(capture.stats()["lost"], 0);
}

#[test]
fn pcap_all_writes_unhooked_traffic_and_a_filter_narrows_it() {
    if !privileged() {
        return;
    }
    let dir = TempDir::new("pcap-all");
    let fixture = fixture(VERSION, VARIANT, "tlsfixture");
    let (server_bin, other_bin) = (copy_binary(&fixture, &dir, "server"), copy_binary(&fixture, &dir, "other"));
    let server = Server::start(&server_bin, &dir.path("server.jsonl"), &[]);
    let other = Server::start(&other_bin, &dir.path("other.jsonl"), &[]);
    let (port, other_port) = (port_of(&server.addr), port_of(&other.addr));
    let hooked = ["-e", server_bin.to_str().unwrap()];
    let filter = format!("tcp.port == {other_port} or tcp.port == {port}");
    for (name, extra) in [("all", vec!["--all"]), ("filtered", vec!["--all", "tcp", "port", &other_port.to_string()])] {
        let file = dir.path(&format!("{name}.pcapng"));
        let args: Vec<&str> = hooked.iter().copied().chain(extra.iter().copied()).collect();
        let tlstap = start_pcap(&dir, &file, &args);
        let nonces = [nonce(), nonce()];
        curl_echo(&server.addr, &["--tlsv1.3"], &nonces[0], &dir.path("curl.keys"));
        curl_echo(&other.addr, &["--tlsv1.3"], &nonces[1], &dir.path("curl.keys"));
        let capture = tlstap.stop();
        assert_eq!(capture.stats()["lost"], 0);
        let ports: Vec<u16> = frames(&file, &filter, &["tcp.srcport", "tcp.dstport"])
            .concat()
            .iter()
            .map(|p| p.parse().unwrap())
            .collect();
        assert!(ports.contains(&other_port), "{name}: the unhooked server's packets are missing");
        assert_eq!(ports.contains(&port), name == "all", "{name}: the hooked server's packets");
        // Only the hooked server's secrets are known: its traffic decrypts, the other's not.
        let requests = decrypted(&file, "http.request.uri");
        assert_eq!(requests.contains(&nonces[0]), name == "all", "{name}:\n{requests}");
        assert!(!requests.contains(&nonces[1]), "{name}:\n{requests}");
        let unowned = frames(&file, &format!("tcp.port == {other_port}"), &["frame.comment"]);
        assert!(unowned.iter().all(|c| c[0].is_empty()), "{name}: an unhooked packet got a process: {unowned:?}");
    }
    server.stop();
    other.stop();
}

/// A network namespace joined to this one by a veth pair; both go when dropped.
struct Netns {
    name: String,
    host_if: String,
    host_ip: String,
    peer_ip: String,
}

impl Netns {
    fn new() -> Netns {
        let id = std::process::id() % 10_000;
        let (name, host_if) = (format!("tlstap-pcap-{id}"), format!("tlpc{id}h"));
        let subnet = format!("10.{}.{}", 200 + id % 50, id % 250);
        let ns = Netns { name, host_if, host_ip: format!("{subnet}.1"), peer_ip: format!("{subnet}.2") };
        let ip = |args: &str| {
            let out = Command::new("ip").args(args.split_whitespace()).output().unwrap();
            assert!(out.status.success(), "ip {args}: {}", String::from_utf8_lossy(&out.stderr));
        };
        let _ = Command::new("ip").args(["netns", "del", &ns.name]).output();
        ip(&format!("netns add {}", ns.name));
        ip(&format!("link add {} type veth peer name tlpcpeer netns {}", ns.host_if, ns.name));
        ip(&format!("addr add {}/24 dev {}", ns.host_ip, ns.host_if));
        ip(&format!("link set {} up", ns.host_if));
        ip(&format!("-n {} addr add {}/24 dev tlpcpeer", ns.name, ns.peer_ip));
        ip(&format!("-n {} link set tlpcpeer up", ns.name));
        ip(&format!("-n {} link set lo up", ns.name));
        ns
    }

    /// `curl` from inside the namespace, as [`curl_echo`] does.
    fn curl_echo(&self, addr: &str, nonce: &str) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, "curl", "-sS", "-k", "--noproxy", "*", "--fail", "-o", "/dev/null"])
            .args(["-X", "POST", "--data-binary", &format!("{nonce}-request"), "-H", &format!("X-Nonce: {nonce}")])
            .arg(format!("https://{addr}/echo?size=20000&n={nonce}"))
            .output()
            .unwrap();
        assert!(out.status.success(), "curl in {}: {}", self.name, String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

/// On an Ethernet interface (a veth), ingress and egress are both captured, each packet once,
/// as tshark sees them on the same interface; the file decrypts from its own secrets.
#[test]
fn pcap_on_a_veth_captures_both_directions_once() {
    if !privileged() {
        return;
    }
    let started = now_ns();
    let dir = TempDir::new("pcap-veth");
    let ns = Netns::new();
    let server_bin = copy_binary(&fixture(VERSION, VARIANT, "tlsfixture"), &dir, "server");
    let server = Server::start(&server_bin, &dir.path("server.jsonl"), &["--addr", &format!("{}:0", ns.host_ip)]);
    let mut wire = Proc::spawn(
        Command::new("tshark")
            .args(["-i", &ns.host_if, "-f", &format!("tcp port {}", port_of(&server.addr)), "-w"])
            .arg(dir.path("wire.pcapng"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped()),
        "tshark",
    );
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(wire.child.stderr.take().unwrap()));
    assert!(lines.any(|l| l.unwrap().contains("Capturing on")), "tshark did not start capturing");
    std::thread::spawn(move || lines.for_each(drop)); // never block tshark on a full pipe
    let file = dir.path("out.pcapng");
    let tlstap = Tlstap::start(
        &dir,
        &["-m", "pcap", "-i", &ns.host_if, "-w", file.to_str().unwrap(), "-e", server_bin.to_str().unwrap()],
    );
    let nonces = [nonce(), nonce()];
    for n in &nonces {
        ns.curl_echo(&server.addr, n);
    }
    let capture = tlstap.stop();
    std::thread::sleep(std::time::Duration::from_millis(300));
    wire.signal(libc::SIGINT);
    wire.wait_timeout(std::time::Duration::from_secs(30));
    let port = port_of(&server.addr);
    server.stop();

    assert_well_formed(&file, started);
    let responses = decrypted(&file, "http.response.line");
    assert!(
        nonces.iter().all(|n| responses.contains(&format!("X-Nonce: {n}"))),
        "not decrypted:
{responses}"
    );
    let ours = packet_ids(&file, port);
    // Equal counts: a retransmission is there as often as on the wire, nothing twice beyond.
    assert_eq!(ours, packet_ids(&dir.path("wire.pcapng"), port), "tlstap's packets vs tshark's");
    let directions: Vec<_> =
        capture.records.iter().filter(|r| r["type"] == "packet").map(|r| r["direction"].as_str().unwrap()).collect();
    assert!(directions.contains(&"ingress") && directions.contains(&"egress"), "{directions:?}");
    assert_eq!(capture.stats()["lost"], 0, "{}", capture.stats());
}

/// A tun device (no link-layer header) held open by this test; it goes when dropped.
struct Tun {
    fd: std::fs::File,
    name: String,
}

impl Tun {
    fn new(name: &str, addr: &str) -> Tun {
        const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
        let fd = std::fs::OpenOptions::new().read(true).write(true).open("/dev/net/tun").unwrap();
        let mut ifreq = [0u8; 40];
        ifreq[..name.len()].copy_from_slice(name.as_bytes());
        ifreq[16..18].copy_from_slice(&(0x0001u16 | 0x1000).to_ne_bytes()); // IFF_TUN | IFF_NO_PI
                                                                            // SAFETY: a valid fd and a 40-byte ifreq that outlives the call.
        let rc = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&fd), TUNSETIFF, ifreq.as_mut_ptr()) };
        assert_eq!(rc, 0, "TUNSETIFF: {}", std::io::Error::last_os_error());
        for args in [vec!["addr", "add", addr, "dev", name], vec!["link", "set", name, "up"]] {
            assert!(Command::new("ip").args(&args).status().unwrap().success(), "ip {args:?}");
        }
        Tun { fd, name: name.to_string() }
    }
}

/// On a raw-IP interface (tun) the file's link type is raw IP (101) and tshark decodes it.
#[test]
fn pcap_on_a_tun_writes_raw_ip() {
    if !privileged() {
        return;
    }
    let dir = TempDir::new("pcap-tun");
    let id = std::process::id() % 10_000;
    let tun = Tun::new(&format!("tlpt{id}"), &format!("10.{}.{}.1/24", 200 + id % 50, id % 250));
    let peer = format!("10.{}.{}.2:9", 200 + id % 50, id % 250);
    let file = dir.path("out.pcapng");
    let fixture = fixture(VERSION, VARIANT, "tlsfixture");
    let args =
        ["-m", "pcap", "-i", &tun.name, "-w", file.to_str().unwrap(), "-e", fixture.to_str().unwrap(), "--all", "udp"];
    let tlstap = Tlstap::start(&dir, &args);
    let marker = format!("tlstap-raw-{}", nonce());
    std::net::UdpSocket::bind("0.0.0.0:0").unwrap().send_to(marker.as_bytes(), &peer).unwrap();
    let capture = tlstap.stop();
    let info = String::from_utf8_lossy(&Command::new("capinfos").arg(&file).output().unwrap().stdout).into_owned();
    assert!(info.contains("File encapsulation:  Raw IP\n"), "capinfos:\n{info}");
    let payloads = frames(&file, "udp.dstport == 9", &["data.data"]).concat().join("");
    let hex: String = marker.bytes().map(|b| format!("{b:02x}")).collect();
    assert!(payloads.contains(&hex), "datagram not in the file: {payloads}");
    let packets: Vec<_> = capture.records.iter().filter(|r| r["type"] == "packet").collect();
    assert!(packets.iter().all(|p| p["ifname"] == tun.name.as_str() && p["pid"].is_null()), "{packets:?}");
    drop(tun.fd);
}

/// Bad pcap-mode input: one clear line, exit 1, nothing left behind.
#[test]
fn pcap_bad_input_is_one_clear_line() {
    if !privileged() {
        return;
    }
    let dir = TempDir::new("pcap-errors");
    let fixture = fixture(VERSION, VARIANT, "tlsfixture");
    let file = dir.path("out.pcapng");
    let w = file.to_str().unwrap();
    let cases: [(&[&str], &str); 5] = [
        (&["-m", "pcap", "-i", "nosuchif0", "-w", w], "no network interface \"nosuchif0\""),
        (&["-m", "pcap", "-i", "lo", "-w", w, "tcp", "prot", "80"], "bad filter expression \"tcp prot 80\""),
        (&["-m", "pcap", "-w", w], "-m pcap needs -i/--ifname IFACE"),
        (&["-m", "pcap", "-i", "lo"], "-m pcap needs -w/--pcapfile FILE"),
        (&["-i", "lo", "-w", w], "belong to -m pcap"),
    ];
    for (args, expected) in cases {
        let out = Command::new(TLSTAP).arg("gotls").arg("-e").arg(&fixture).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: one line: {stderr:?}");
        assert!(stderr.starts_with("tlstap: error: ") && stderr.contains(expected), "{args:?}: {stderr:?}");
        assert!(!file.exists(), "{args:?} left {}", file.display());
    }
    let tc = Command::new("tc").args(["qdisc", "show", "dev", "lo"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&tc.stdout).contains("clsact"), "a qdisc was left on lo");
}

/// Where the kernel has no tcx, pcap mode adds a clsact filter (and the qdisc, when there was
/// none) to the interface. A tlstap killed with SIGKILL cannot take it away, and the filter
/// keeps its program running; the next tlstap, in any mode, removes it at its start.
#[test]
fn clsact_left_by_a_killed_tlstap_is_removed_at_the_next_start() {
    if !privileged() {
        return;
    }
    let dir = TempDir::new("pcap-sigkill");
    let server_bin = copy_binary(&fixture(VERSION, VARIANT, "tlsfixture"), &dir, "server");
    let server = Server::start(&server_bin, &dir.path("server.jsonl"), &[]);
    let file = dir.path("out.pcapng");
    let mut killed = start_pcap(&dir, &file, &["-e", server_bin.to_str().unwrap(), "--disable-feature", "tcx"]);
    let programs = program_ids_of(killed.proc.pid());
    let record = Path::new("/run/tlstap/tc");
    let recorded = || std::fs::read_dir(record).map(|d| d.count()).unwrap_or(0);
    assert!(recorded() >= 1, "pcap mode on clsact records what it added");
    killed.proc.signal(libc::SIGKILL);
    killed.proc.wait_timeout(std::time::Duration::from_secs(10));
    let still_loaded = |id: &u64| {
        Command::new("bpftool").args(["prog", "show", "id", &id.to_string()]).output().is_ok_and(|o| o.status.success())
    };
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(programs.iter().any(still_loaded), "the killed tlstap's TC program stays, held by its filter");

    let next = Tlstap::start(&dir, &["-e", server_bin.to_str().unwrap()]);
    let capture = next.stop();
    server.stop();
    let removed = "removed 1 clsact filter(s) a killed tlstap left on interface index 1";
    assert!(capture.stderr.contains(removed), "{}", capture.stderr);
    assert_programs_unloaded(&programs);
    let killed_pid = format!("{}-", killed.proc.pid());
    let left: Vec<_> = std::fs::read_dir(record)
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    assert!(!left.iter().any(|n| n.starts_with(&killed_pid)), "the killed tlstap's record is gone: {left:?}");
}
