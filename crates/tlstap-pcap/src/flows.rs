//! Which TCP flows belong to hooked processes. A flow (its two endpoints, unordered) is
//! undecided when first seen; owned once it is known to be a hooked process's: the process that
//! sent its first SYN (BPF names it) is hooked, or a hooked process holds a connected or
//! listening socket for it; not owned when neither was found by the time its first packet
//! leaves the reorder window. A SYN on a flow that had closed starts it over (port reuse).
//! Pure: sockets are looked up through [`SocketLookup`], so tests use synthetic tables.

use std::collections::hash_map::{Entry, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use super::packet::{flow_key, FlowKey, TcpInfo};

/// The process a flow belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub pid: u32,
    pub comm: Arc<str>,
}

/// What the system says about hooked processes.
pub trait SocketLookup {
    /// The hooked process holding a socket of the connection between `a` and `b` (either way
    /// round), or listening on one of its endpoints.
    fn owner(&self, a: SocketAddr, b: SocketAddr) -> Option<Owner>;
    /// `pid` as an owner, if it is a hooked process.
    fn process(&self, pid: u32) -> Option<Owner>;
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Undecided,
    Owned(Owner),
    NotOwned,
}

#[derive(Debug)]
struct Flow {
    state: State,
    /// A FIN or RST was seen: a later SYN is a new connection.
    closed: bool,
    last_seen_ns: u64,
    /// The process that sent the first SYN, as BPF saw it.
    syn_pid: Option<u32>,
}

/// Flows idle this long are forgotten.
const IDLE_NS: u64 = 120_000_000_000;
/// Past this many flows the idle ones are forgotten at once.
const MAX_FLOWS: usize = 262_144;

#[derive(Debug, Default)]
pub struct Flows {
    map: HashMap<FlowKey, Flow>,
    /// Flows seen since the last [`Flows::decide`], which want a lookup soon.
    fresh: usize,
}

impl Flows {
    /// Notes a packet as it arrives (before the reorder window releases it).
    pub fn observe(&mut self, tcp: &TcpInfo, ts_ns: u64, syn_pid: u32) {
        if self.map.len() >= MAX_FLOWS {
            self.expire(ts_ns.saturating_sub(IDLE_NS / 8).max(1));
        }
        let new = Flow { state: State::Undecided, closed: false, last_seen_ns: ts_ns, syn_pid: None };
        let flow = match self.map.entry(tcp.flow()) {
            Entry::Occupied(entry) => {
                let flow = entry.into_mut();
                if tcp.syn && !tcp.ack && flow.closed {
                    *flow = new;
                    self.fresh += 1;
                }
                flow
            }
            Entry::Vacant(entry) => {
                self.fresh += 1;
                entry.insert(new)
            }
        };
        flow.closed |= tcp.closing;
        flow.last_seen_ns = flow.last_seen_ns.max(ts_ns);
        if tcp.syn && !tcp.ack && syn_pid != 0 && flow.syn_pid.is_none() {
            flow.syn_pid = Some(syn_pid);
        }
    }

    /// A hooked process said (through a data event) that this connection is its own.
    pub fn claim(&mut self, a: SocketAddr, b: SocketAddr, owner: Owner, ts_ns: u64) {
        let new = Flow { state: State::Undecided, closed: false, last_seen_ns: ts_ns, syn_pid: None };
        let flow = self.map.entry(flow_key(a, b)).or_insert(new);
        flow.state = State::Owned(owner);
    }

    /// Flows first seen since the last lookup (they want one soon, while their sockets live).
    pub fn fresh(&self) -> usize {
        self.fresh
    }

    pub fn undecided(&self) -> usize {
        self.map.values().filter(|f| f.state == State::Undecided).count()
    }

    /// Looks every undecided flow up; those found are owned, the others stay undecided.
    pub fn decide(&mut self, lookup: &dyn SocketLookup) {
        self.fresh = 0;
        for ((a, b), flow) in self.map.iter_mut().filter(|(_, f)| f.state == State::Undecided) {
            if let Some(owner) = find(flow, *a, *b, lookup) {
                flow.state = State::Owned(owner);
            }
        }
    }

    /// The owner of a packet's flow as the packet leaves the window: a last lookup for an
    /// undecided flow, after which it is final.
    pub fn owner_at_release(&mut self, tcp: &TcpInfo, lookup: &dyn SocketLookup) -> Option<Owner> {
        let flow = self.map.get_mut(&tcp.flow())?;
        if flow.state == State::Undecided {
            flow.state = find(flow, tcp.src, tcp.dst, lookup).map_or(State::NotOwned, State::Owned);
        }
        match &flow.state {
            State::Owned(owner) => Some(owner.clone()),
            _ => None,
        }
    }

    /// Forgets flows idle since before `before_ns` (CLOCK_MONOTONIC).
    pub fn expire(&mut self, before_ns: u64) {
        self.map.retain(|_, f| f.last_seen_ns >= before_ns);
    }

    /// [`Flows::expire`] with the default idle time.
    pub fn expire_idle(&mut self, now_ns: u64) {
        self.expire(now_ns.saturating_sub(IDLE_NS));
    }
}

/// The SYN's process if it is hooked, else a hooked socket or listener of the flow.
fn find(flow: &Flow, a: SocketAddr, b: SocketAddr, lookup: &dyn SocketLookup) -> Option<Owner> {
    flow.syn_pid.and_then(|pid| lookup.process(pid)).or_else(|| lookup.owner(a, b))
}

#[cfg(test)]
mod tests {
    use super::super::packet::parse_tcp;
    use super::super::packet::tests::eth_ipv4_tcp;
    use super::*;

    /// A synthetic socket table: connected sockets (local, remote) and listeners, by pid.
    #[derive(Default)]
    struct Table {
        conns: Vec<(SocketAddr, SocketAddr, u32)>,
        listeners: Vec<(SocketAddr, u32)>,
        hooked: Vec<u32>,
    }

    impl SocketLookup for Table {
        fn owner(&self, a: SocketAddr, b: SocketAddr) -> Option<Owner> {
            let pid = self
                .conns
                .iter()
                .find(|(l, r, _)| (*l, *r) == (a, b) || (*l, *r) == (b, a))
                .map(|c| c.2)
                .or_else(|| self.listeners.iter().find(|(l, _)| *l == a || *l == b).map(|l| l.1))?;
            Some(Owner { pid, comm: Arc::from(format!("p{pid}")) })
        }

        fn process(&self, pid: u32) -> Option<Owner> {
            self.hooked.contains(&pid).then(|| Owner { pid, comm: Arc::from(format!("p{pid}")) })
        }
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn tcp(src: &str, dst: &str, flags: u8) -> TcpInfo {
        parse_tcp(&eth_ipv4_tcp(sa(src), sa(dst), flags), 14).unwrap()
    }

    const SYN: u8 = 0x02;
    const SYN_ACK: u8 = 0x12;
    const ACK: u8 = 0x10;
    const FIN_ACK: u8 = 0x11;

    #[test]
    fn hooked_server_owns_flows_to_its_listener_only() {
        let table = Table { listeners: vec![(sa("127.0.0.1:8443"), 10)], ..Table::default() };
        let mut flows = Flows::default();
        let to_hooked =
            [tcp("127.0.0.1:50000", "127.0.0.1:8443", SYN), tcp("127.0.0.1:8443", "127.0.0.1:50000", SYN_ACK)];
        let to_other = tcp("127.0.0.1:50001", "127.0.0.1:9443", SYN);
        for (i, t) in to_hooked.iter().chain([&to_other]).enumerate() {
            flows.observe(t, i as u64 + 1, 0);
        }
        assert_eq!((flows.fresh(), flows.undecided()), (2, 2));
        flows.decide(&table);
        assert_eq!((flows.fresh(), flows.undecided()), (0, 1));
        for t in &to_hooked {
            assert_eq!(flows.owner_at_release(t, &table).map(|o| o.pid), Some(10));
        }
        assert_eq!(flows.owner_at_release(&to_other, &table), None);
    }

    #[test]
    fn a_flow_not_found_by_its_release_stays_unowned() {
        let mut table = Table::default();
        let mut flows = Flows::default();
        let syn = tcp("10.0.0.1:40000", "10.0.0.2:443", SYN);
        flows.observe(&syn, 1, 0);
        flows.decide(&table);
        assert_eq!(flows.owner_at_release(&syn, &table), None);
        // The socket appearing later changes nothing: the flow's first packet is gone.
        table.conns.push((sa("10.0.0.1:40000"), sa("10.0.0.2:443"), 7));
        let ack = tcp("10.0.0.2:443", "10.0.0.1:40000", ACK);
        flows.observe(&ack, 2, 0);
        assert_eq!(flows.owner_at_release(&ack, &table), None);
    }

    #[test]
    fn hooked_client_socket_found_before_release() {
        let table = Table { conns: vec![(sa("10.0.0.1:40000"), sa("10.0.0.2:443"), 7)], ..Table::default() };
        let mut flows = Flows::default();
        let syn = tcp("10.0.0.1:40000", "10.0.0.2:443", SYN);
        flows.observe(&syn, 1, 0);
        // Not decided before release: the last lookup at release finds it.
        let owner = flows.owner_at_release(&syn, &table).unwrap();
        assert_eq!((owner.pid, &*owner.comm), (7, "p7"));
        let back = tcp("10.0.0.2:443", "10.0.0.1:40000", SYN_ACK);
        flows.observe(&back, 2, 0);
        assert_eq!(flows.owner_at_release(&back, &Table::default()).map(|o| o.pid), Some(7), "decided once");
    }

    #[test]
    fn the_syn_names_a_hooked_client_without_any_socket_table() {
        let table = Table { hooked: vec![7], ..Table::default() };
        let mut flows = Flows::default();
        let (hooked, other) = (tcp("10.0.0.1:40000", "10.0.0.2:443", SYN), tcp("10.0.0.1:40001", "10.0.0.2:443", SYN));
        flows.observe(&hooked, 1, 7);
        flows.observe(&other, 2, 8);
        // A SYN-ACK names nobody (it may be sent from softirq context).
        let back = tcp("10.0.0.2:443", "10.0.0.1:40000", SYN_ACK);
        flows.observe(&back, 3, 9);
        flows.decide(&table);
        assert_eq!(flows.owner_at_release(&back, &table).map(|o| o.pid), Some(7));
        assert_eq!(flows.owner_at_release(&other, &table), None, "pid 8 is not hooked");
    }

    #[test]
    fn claims_and_port_reuse() {
        let mut flows = Flows::default();
        let empty = Table::default();
        let syn = tcp("10.0.0.1:40000", "10.0.0.2:443", SYN);
        flows.observe(&syn, 1, 0);
        flows.claim(sa("10.0.0.2:443"), sa("10.0.0.1:40000"), Owner { pid: 3, comm: Arc::from("c") }, 2);
        assert_eq!(flows.owner_at_release(&syn, &empty).map(|o| o.pid), Some(3));
        // Closed, then the same ports again: a new connection, decided afresh.
        flows.observe(&tcp("10.0.0.1:40000", "10.0.0.2:443", FIN_ACK), 3, 0);
        let again = tcp("10.0.0.1:40000", "10.0.0.2:443", SYN);
        flows.observe(&again, 4, 0);
        assert_eq!(flows.fresh(), 2, "the first SYN and this one");
        assert_eq!(flows.owner_at_release(&again, &empty), None);
        flows.expire_idle(4 + IDLE_NS + 1);
        assert_eq!(flows.undecided(), 0);
        assert!(flows.map.is_empty());
    }
}
