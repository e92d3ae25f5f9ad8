//! Reads just enough of a captured packet to name its TCP flow: the link header, IPv4 or IPv6
//! (with the common extension headers), TCP ports and flags. Pure; every offset is checked, and
//! anything that is not the first fragment of a TCP segment is "not TCP".

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86DD;
const ETHERTYPE_VLAN: u16 = 0x8100;
const IPPROTO_TCP: u8 = 6;

/// The TCP facts of one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpInfo {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub syn: bool,
    pub ack: bool,
    /// FIN or RST: the connection is ending.
    pub closing: bool,
}

/// A flow: the two endpoints of a TCP connection, smaller first, so both directions agree.
pub type FlowKey = (SocketAddr, SocketAddr);

impl TcpInfo {
    pub fn flow(&self) -> FlowKey {
        flow_key(self.src, self.dst)
    }
}

pub fn flow_key(a: SocketAddr, b: SocketAddr) -> FlowKey {
    if a <= b {
        (a, b)
    } else {
        (b, a)
    }
}

fn u16_at(data: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*data.get(at)?, *data.get(at + 1)?]))
}

/// Parses a packet whose IP header starts after `l2_len` bytes of Ethernet (14) or none (0).
pub fn parse_tcp(data: &[u8], l2_len: usize) -> Option<TcpInfo> {
    let (ip, ethertype) = if l2_len == 0 {
        let version = data.first()? >> 4;
        (data, if version == 4 { ETHERTYPE_IPV4 } else { ETHERTYPE_IPV6 })
    } else {
        let mut ethertype = u16_at(data, l2_len - 2)?;
        let mut at = l2_len;
        if ethertype == ETHERTYPE_VLAN {
            ethertype = u16_at(data, l2_len + 2)?;
            at += 4;
        }
        (data.get(at..)?, ethertype)
    };
    let (src, dst, tcp) = match ethertype {
        ETHERTYPE_IPV4 => ipv4(ip)?,
        ETHERTYPE_IPV6 => ipv6(ip)?,
        _ => return None,
    };
    let flags = *tcp.get(13)?;
    Some(TcpInfo {
        src: SocketAddr::new(src, u16_at(tcp, 0)?),
        dst: SocketAddr::new(dst, u16_at(tcp, 2)?),
        syn: flags & 0x02 != 0,
        ack: flags & 0x10 != 0,
        closing: flags & 0x05 != 0,
    })
}

fn ipv4(ip: &[u8]) -> Option<(IpAddr, IpAddr, &[u8])> {
    let ihl = usize::from(ip.first()? & 0x0f) * 4;
    let fragment_offset = u16_at(ip, 6)? & 0x1fff;
    if ip.first()? >> 4 != 4 || ihl < 20 || *ip.get(9)? != IPPROTO_TCP || fragment_offset != 0 {
        return None;
    }
    let addr = |at: usize| -> Option<IpAddr> {
        let b = ip.get(at..at + 4)?;
        Some(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3])))
    };
    Some((addr(12)?, addr(16)?, ip.get(ihl..)?))
}

fn ipv6(ip: &[u8]) -> Option<(IpAddr, IpAddr, &[u8])> {
    if ip.first()? >> 4 != 6 {
        return None;
    }
    let addr = |at: usize| -> Option<IpAddr> {
        let b: [u8; 16] = ip.get(at..at + 16)?.try_into().ok()?;
        Some(IpAddr::V6(Ipv6Addr::from(b)))
    };
    let (src, dst) = (addr(8)?, addr(24)?);
    let mut next = *ip.get(6)?;
    let mut at = 40;
    // Hop-by-hop, routing, destination options, fragment: a few at most in practice.
    for _ in 0..8 {
        match next {
            IPPROTO_TCP => return Some((src, dst, ip.get(at..)?)),
            0 | 43 | 60 => {
                next = *ip.get(at)?;
                at += (usize::from(*ip.get(at + 1)?) + 1) * 8;
            }
            44 => {
                // Only the first fragment carries the TCP header.
                if u16_at(ip, at + 2)? & 0xfff8 != 0 {
                    return None;
                }
                next = *ip.get(at)?;
                at += 8;
            }
            _ => return None,
        }
    }
    None
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// An Ethernet + IPv4 + TCP packet (no payload) for tests.
    pub fn eth_ipv4_tcp(src: SocketAddr, dst: SocketAddr, flags: u8) -> Vec<u8> {
        let (IpAddr::V4(s), IpAddr::V4(d)) = (src.ip(), dst.ip()) else { panic!("IPv4 only") };
        let mut p = vec![0u8; 14];
        p[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        let mut ip = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, IPPROTO_TCP, 0, 0];
        ip.extend_from_slice(&s.octets());
        ip.extend_from_slice(&d.octets());
        p.extend_from_slice(&ip);
        let mut tcp = vec![0u8; 20];
        tcp[0..2].copy_from_slice(&src.port().to_be_bytes());
        tcp[2..4].copy_from_slice(&dst.port().to_be_bytes());
        tcp[12] = 0x50;
        tcp[13] = flags;
        p.extend_from_slice(&tcp);
        p
    }

    #[test]
    fn parses_ethernet_ipv4_tcp() {
        let (a, b): (SocketAddr, SocketAddr) = ("127.0.0.1:50000".parse().unwrap(), "127.0.0.1:8443".parse().unwrap());
        let syn = parse_tcp(&eth_ipv4_tcp(a, b, 0x02), 14).unwrap();
        assert_eq!((syn.src, syn.dst, syn.syn, syn.ack, syn.closing), (a, b, true, false, false));
        let rst = parse_tcp(&eth_ipv4_tcp(b, a, 0x14), 14).unwrap();
        assert!(rst.closing && rst.ack && !rst.syn);
        assert_eq!(syn.flow(), rst.flow(), "both directions are one flow");
        // Raw IP: the same packet without its Ethernet header.
        assert_eq!(parse_tcp(&eth_ipv4_tcp(a, b, 0x10)[14..], 0).unwrap().src, a);
    }

    #[test]
    fn parses_ipv6_with_an_extension_header() {
        let mut p = vec![0u8; 14];
        p[12..14].copy_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
        let mut ip = vec![0x60, 0, 0, 0, 0, 28, 0 /* hop-by-hop */, 64];
        ip.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        ip.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        ip.extend_from_slice(&[IPPROTO_TCP, 0, 0, 0, 0, 0, 0, 0]);
        let mut tcp = vec![0u8; 20];
        tcp[0..2].copy_from_slice(&443u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&40000u16.to_be_bytes());
        tcp[13] = 0x12;
        p.extend_from_slice(&ip);
        p.extend_from_slice(&tcp);
        let t = parse_tcp(&p, 14).unwrap();
        assert_eq!(
            (t.src, t.dst, t.syn, t.ack),
            ("[::1]:443".parse().unwrap(), "[::1]:40000".parse().unwrap(), true, true)
        );
    }

    #[test]
    fn not_tcp_or_truncated_is_none() {
        let (a, b): (SocketAddr, SocketAddr) = ("10.0.0.1:1".parse().unwrap(), "10.0.0.2:2".parse().unwrap());
        let p = eth_ipv4_tcp(a, b, 0x10);
        for len in 0..p.len() - 6 {
            assert_eq!(parse_tcp(&p[..len], 14), None, "len {len}");
        }
        let mut udp = p.clone();
        udp[14 + 9] = 17;
        assert_eq!(parse_tcp(&udp, 14), None);
        let mut fragment = p.clone();
        fragment[14 + 7] = 8; // offset 64
        assert_eq!(parse_tcp(&fragment, 14), None);
        let mut arp = p;
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(parse_tcp(&arp, 14), None);
    }
}
