//! The system side of flow ownership, read from /proc: which processes are hooked (they run a
//! hooked binary, or BPF reported them; narrowed by --pid/--uid), and which TCP sockets and
//! listeners they hold (their socket fds matched against /proc/PID/net/tcp{,6}, read once per
//! network namespace). Only reads; a process that vanishes mid-scan is skipped.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::flows::{Owner, SocketLookup};

/// TCP_LISTEN in /proc/net/tcp's `st` column.
const TCP_LISTEN: u8 = 0x0A;

/// Which processes count as hooked.
#[derive(Debug)]
pub struct Hooked {
    proc_root: PathBuf,
    /// (device, inode) of every hooked binary.
    binaries: HashMap<PathBuf, (u64, u64)>,
    pid: Option<u32>,
    uid: Option<u32>,
    /// Processes BPF reported (they ran a probe), with their command names ("" unknown).
    reported: HashMap<u32, Arc<str>>,
    /// [`Hooked::owner_of`]'s answers for processes not reported, by pid.
    checked: RefCell<HashMap<u32, Option<Owner>>>,
}

impl Hooked {
    pub fn new(proc_root: &Path, pid: Option<u32>, uid: Option<u32>) -> Hooked {
        let checked = RefCell::new(HashMap::new());
        Hooked {
            proc_root: proc_root.to_path_buf(),
            binaries: HashMap::new(),
            pid,
            uid,
            reported: HashMap::new(),
            checked,
        }
    }

    /// A binary was hooked (its processes count from now on).
    pub fn add_binary(&mut self, path: &Path) {
        if let Ok(meta) = std::fs::metadata(path) {
            self.binaries.insert(path.to_path_buf(), (meta.dev(), meta.ino()));
        }
        self.checked.borrow_mut().clear();
    }

    pub fn remove_binary(&mut self, path: &Path) {
        self.binaries.remove(path);
        self.checked.borrow_mut().clear();
    }

    /// `pid` as an owner if it is hooked: reported by BPF, or (checked once) the --pid, or
    /// running a hooked binary, within --uid.
    pub fn owner_of(&self, pid: u32) -> Option<Owner> {
        if self.pid.is_some_and(|p| p != pid) {
            return None;
        }
        if let Some(comm) = self.reported.get(&pid) {
            let comm =
                if comm.is_empty() { self.comm(pid).unwrap_or_else(|| Arc::from("?")) } else { Arc::clone(comm) };
            return Some(Owner { pid, comm });
        }
        let mut checked = self.checked.borrow_mut();
        if checked.len() >= 4096 {
            checked.clear();
        }
        checked.entry(pid).or_insert_with(|| self.check(pid)).clone()
    }

    fn check(&self, pid: u32) -> Option<Owner> {
        let dir = self.proc_root.join(pid.to_string());
        let meta = std::fs::metadata(&dir).ok()?;
        if self.uid.is_some_and(|uid| meta.uid() != uid) {
            return None;
        }
        let exe = std::fs::metadata(dir.join("exe")).ok()?;
        let runs_hooked = self.binaries.values().any(|&b| b == (exe.dev(), exe.ino()));
        (self.pid == Some(pid) || runs_hooked)
            .then(|| Owner { pid, comm: self.comm(pid).unwrap_or_else(|| Arc::from("?")) })
    }

    fn comm(&self, pid: u32) -> Option<Arc<str>> {
        let comm = std::fs::read_to_string(self.proc_root.join(format!("{pid}/comm"))).ok()?;
        Some(Arc::from(comm.trim_end_matches('\n')))
    }

    /// BPF saw `pid` in a probe: it is hooked whatever its binary is called now.
    pub fn reported(&mut self, pid: u32, comm: &str) {
        let known = self.reported.get(&pid).is_some_and(|c| !c.is_empty() || comm.is_empty());
        if self.pid.is_none_or(|p| p == pid) && !known {
            if self.reported.len() >= 65_536 {
                self.reported.clear();
            }
            self.reported.insert(pid, Arc::from(comm));
        }
    }

    /// The hooked processes alive now, with their command names.
    pub fn processes(&self) -> Vec<(u32, Arc<str>)> {
        let mut pids: HashSet<u32> = self.reported.keys().copied().collect();
        match self.pid {
            Some(pid) => {
                pids.insert(pid);
            }
            None => {
                let wanted: HashSet<(u64, u64)> = self.binaries.values().copied().collect();
                let entries = std::fs::read_dir(&self.proc_root).into_iter().flatten().flatten();
                for pid in entries.filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok())) {
                    let exe = std::fs::metadata(self.proc_root.join(format!("{pid}/exe")));
                    if exe.is_ok_and(|m| wanted.contains(&(m.dev(), m.ino()))) {
                        pids.insert(pid);
                    }
                }
            }
        }
        let mut out = Vec::with_capacity(pids.len());
        for pid in pids {
            let dir = self.proc_root.join(pid.to_string());
            let Ok(meta) = std::fs::metadata(&dir) else { continue };
            if self.uid.is_some_and(|uid| meta.uid() != uid) {
                continue;
            }
            let comm = self.comm(pid).or_else(|| self.reported.get(&pid).cloned()).unwrap_or_else(|| Arc::from("?"));
            out.push((pid, comm));
        }
        out
    }
}

/// The TCP sockets of the hooked processes at one moment.
#[derive(Debug, Default)]
pub struct SocketIndex {
    /// (local, remote) of connected sockets.
    conns: HashMap<(SocketAddr, SocketAddr), Owner>,
    /// Local address of listening sockets (the unspecified address for a wildcard).
    listeners: HashMap<SocketAddr, Owner>,
}

impl SocketIndex {
    /// Reads the sockets of `processes` under `proc_root`.
    pub fn scan(proc_root: &Path, processes: &[(u32, Arc<str>)]) -> SocketIndex {
        let mut index = SocketIndex::default();
        let mut tables: HashMap<u64, Vec<TcpRow>> = HashMap::new();
        for (pid, comm) in processes {
            let dir = proc_root.join(pid.to_string());
            let inodes = socket_inodes(&dir.join("fd"));
            if inodes.is_empty() {
                continue;
            }
            let Ok(netns) = std::fs::metadata(dir.join("ns/net")).map(|m| m.ino()) else { continue };
            let rows = tables.entry(netns).or_insert_with(|| {
                let read = |name: &str| std::fs::read_to_string(dir.join("net").join(name)).unwrap_or_default();
                let mut rows = parse_tcp_table(&read("tcp"));
                rows.extend(parse_tcp_table(&read("tcp6")));
                rows
            });
            let owner = Owner { pid: *pid, comm: Arc::clone(comm) };
            for row in rows.iter().filter(|r| inodes.contains(&r.inode)) {
                if row.state == TCP_LISTEN {
                    index.listeners.insert(row.local, owner.clone());
                } else {
                    index.conns.insert((row.local, row.remote), owner.clone());
                }
            }
        }
        index
    }
}

/// The system's answers to flow ownership: the last socket scan and the hooked processes.
#[derive(Debug)]
pub struct Lookup<'a> {
    pub index: &'a SocketIndex,
    pub hooked: &'a Hooked,
}

impl SocketLookup for Lookup<'_> {
    fn owner(&self, a: SocketAddr, b: SocketAddr) -> Option<Owner> {
        self.index.owner(a, b)
    }

    fn process(&self, pid: u32) -> Option<Owner> {
        self.hooked.owner_of(pid)
    }
}

impl SocketIndex {
    /// The hooked process with a socket of the connection `a`–`b`, or listening on either end.
    pub fn owner(&self, a: SocketAddr, b: SocketAddr) -> Option<Owner> {
        if let Some(owner) = self.conns.get(&(a, b)).or_else(|| self.conns.get(&(b, a))) {
            return Some(owner.clone());
        }
        [a, b].into_iter().find_map(|end| {
            let wildcards = [
                SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), end.port()),
                SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), end.port()),
            ];
            let exact = std::iter::once(end);
            // A v6 wildcard listener also accepts IPv4 (dual stack).
            let wild = wildcards.into_iter().filter(|w| end.is_ipv4() || w.is_ipv6());
            exact.chain(wild).find_map(|l| self.listeners.get(&l).cloned())
        })
    }
}

/// Inodes of the sockets among a process's fds.
fn socket_inodes(fd_dir: &Path) -> HashSet<u64> {
    let entries = std::fs::read_dir(fd_dir).into_iter().flatten().flatten();
    entries
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|target| {
            let text = target.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned();
            text.parse().ok()
        })
        .collect()
}

/// One line of /proc/net/tcp or tcp6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TcpRow {
    local: SocketAddr,
    remote: SocketAddr,
    state: u8,
    inode: u64,
}

/// Parses /proc/net/tcp{,6}; malformed lines are skipped. IPv4-mapped IPv6 addresses (dual-
/// stack sockets) become IPv4, as on the wire.
fn parse_tcp_table(text: &str) -> Vec<TcpRow> {
    text.lines().skip(1).filter_map(parse_tcp_row).collect()
}

fn parse_tcp_row(line: &str) -> Option<TcpRow> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let state = u8::from_str_radix(fields.get(3)?, 16).ok()?;
    let inode = fields.get(9)?.parse().ok()?;
    Some(TcpRow { local: parse_endpoint(fields.get(1)?)?, remote: parse_endpoint(fields.get(2)?)?, state, inode })
}

/// `0100007F:1F90` or 32 hex digits and a port: each 32-bit word is printed as the kernel holds
/// it in memory, so its native-endian bytes are the address bytes in order.
fn parse_endpoint(text: &str) -> Option<SocketAddr> {
    let (addr, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        Some(u32::from_str_radix(addr.get(i * 8..i * 8 + 8)?, 16).ok()?.to_ne_bytes())
    };
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            let v6 = Ipv6Addr::from(bytes);
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_endian = "little")]
    #[test]
    fn parses_proc_net_tcp() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
                  0: 0100007F:20FB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0 100 0 0 10 0\n\
                  1: 0100007F:C350 0100007F:20FB 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0 20 4 30 10 -1\n\
                  garbage\n";
        let rows = parse_tcp_table(v4);
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (rows[0].local, rows[0].state, rows[0].inode),
            ("127.0.0.1:8443".parse().unwrap(), TCP_LISTEN, 4242)
        );
        assert_eq!(rows[1].remote, "127.0.0.1:8443".parse().unwrap());
        let v6 = "header\n   0: 00000000000000000000000000000000:01BB 00000000000000000000000000000000:0000 0A 0 0 0 0 0 77\n\
                  1: 0000000000000000FFFF00000100007F:01BB 0000000000000000FFFF00000100007F:D431 01 0 0 0 0 0 78\n\
                  2: 00000000000000000000000001000000:01BB 00000000000000000000000001000000:D432 01 0 0 0 0 0 79\n";
        let rows = parse_tcp_table(v6);
        assert_eq!(rows[0].local, "[::]:443".parse().unwrap());
        assert_eq!(rows[1].local, "127.0.0.1:443".parse().unwrap(), "v4-mapped becomes v4");
        assert_eq!(rows[2].remote, "[::1]:54322".parse().unwrap());
    }

    #[test]
    fn wildcard_and_dual_stack_listeners() {
        let owner = |pid| Owner { pid, comm: Arc::from("s") };
        let mut index = SocketIndex::default();
        index.listeners.insert("[::]:443".parse().unwrap(), owner(1));
        index.listeners.insert("0.0.0.0:80".parse().unwrap(), owner(2));
        index.conns.insert(("10.0.0.1:5000".parse().unwrap(), "10.0.0.9:22".parse().unwrap()), owner(3));
        let pid = |a: &str, b: &str| index.owner(a.parse().unwrap(), b.parse().unwrap()).map(|o| o.pid);
        assert_eq!(pid("10.0.0.5:40000", "10.0.0.1:443"), Some(1), "v4 to a dual-stack listener");
        assert_eq!(pid("[::1]:40000", "[::1]:80"), None, "a v4 wildcard takes no v6");
        assert_eq!(pid("10.0.0.1:80", "10.0.0.7:1234"), Some(2));
        assert_eq!(pid("10.0.0.9:22", "10.0.0.1:5000"), Some(3), "either way round");
        assert_eq!(pid("10.0.0.9:22", "10.0.0.1:5001"), None);
    }

    #[test]
    fn owner_of_checks_the_binary_and_filters() {
        let me = std::process::id();
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let mut hooked = Hooked::new(Path::new("/proc"), None, None);
        assert_eq!(hooked.owner_of(me), None, "not running a hooked binary");
        hooked.add_binary(&exe);
        assert_eq!(hooked.owner_of(me).map(|o| o.pid), Some(me), "cleared the cache");
        let other_uid = Hooked::new(Path::new("/proc"), None, Some(u32::MAX - 1));
        assert_eq!(other_uid.owner_of(me), None);
        let mut other_pid = Hooked::new(Path::new("/proc"), Some(1), None);
        other_pid.reported(me, "x");
        assert_eq!(other_pid.owner_of(me), None, "--pid names someone else");
        let mut reported = Hooked::new(Path::new("/proc"), None, None);
        reported.reported(4_000_000, "");
        reported.reported(4_000_000, "gone");
        assert_eq!(reported.owner_of(4_000_000).map(|o| o.comm.to_string()), Some("gone".to_string()), "BPF said so");
    }

    /// Finds this test process's own listener and connection through the real /proc.
    #[test]
    fn scans_our_own_sockets() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let me = std::process::id();
        let mut hooked = Hooked::new(Path::new("/proc"), Some(me), None);
        hooked.reported(me, "test");
        let processes = hooked.processes();
        assert_eq!(processes.len(), 1);
        let index = SocketIndex::scan(Path::new("/proc"), &processes);
        let (local, server) = (client.local_addr().unwrap(), listener.local_addr().unwrap());
        assert_eq!(index.owner(local, server).map(|o| o.pid), Some(me));
        assert_eq!(index.owner("127.0.0.1:1".parse().unwrap(), server).map(|o| o.pid), Some(me), "listener");
        assert_eq!(index.owner("127.0.0.1:1".parse().unwrap(), "127.0.0.1:2".parse().unwrap()), None);
    }
}
