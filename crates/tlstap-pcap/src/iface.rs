//! The capture interface of pcap mode: its index and how its packets look at TC (link type,
//! header length), read from /sys/class/net. Knows the few hardware types tlstap can write and
//! refuses the others with one clear line.

use std::path::Path;

use anyhow::{bail, Context as _, Result};
use tlstap_core::pcapng::{LINKTYPE_ETHERNET, LINKTYPE_RAW};

/// ARPHRD_* values (linux/if_arp.h) that tlstap knows.
const ARPHRD_ETHER: u32 = 1;
const ARPHRD_TUNNEL: u32 = 768;
const ARPHRD_TUNNEL6: u32 = 769;
const ARPHRD_SIT: u32 = 776;
const ARPHRD_LOOPBACK: u32 = 772;
const ARPHRD_NONE: u32 = 65534;

/// libpcap's DLT_EN10MB and (on Linux) DLT_RAW, for compiling filter expressions.
const DLT_EN10MB: i32 = 1;
const DLT_RAW: i32 = 12;

/// How packets of an interface look to the TC program, and how to write them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    /// pcapng LINKTYPE_* of the interface description block.
    pub linktype: u16,
    /// libpcap DLT_* the filter expression is compiled for.
    pub dlt: i32,
    /// Bytes before the IP header.
    pub l2_len: u32,
    /// `lo`: every packet passes egress and then ingress; capture one side only.
    pub loopback: bool,
}

/// The link of an ARPHRD hardware type, or None when tlstap cannot write it.
pub fn link_for_arphrd(arphrd: u32) -> Option<Link> {
    let ethernet = Link { linktype: LINKTYPE_ETHERNET, dlt: DLT_EN10MB, l2_len: 14, loopback: false };
    let raw = Link { linktype: LINKTYPE_RAW, dlt: DLT_RAW, l2_len: 0, loopback: false };
    match arphrd {
        ARPHRD_ETHER => Some(ethernet),
        // The kernel gives loopback packets an Ethernet header (zero addresses) at TC.
        ARPHRD_LOOPBACK => Some(Link { loopback: true, ..ethernet }),
        // tun, wireguard and IP-in-IP tunnels carry bare IPv4/IPv6 packets.
        ARPHRD_NONE | ARPHRD_TUNNEL | ARPHRD_TUNNEL6 | ARPHRD_SIT => Some(raw),
        _ => None,
    }
}

/// A network interface of tlstap's network namespace.
#[derive(Debug, Clone)]
pub struct Interface {
    pub name: String,
    pub index: u32,
    pub link: Link,
}

impl Interface {
    /// Looks `name` up under `sys_class_net` (normally /sys/class/net).
    pub fn resolve_in(sys_class_net: &Path, name: &str) -> Result<Interface> {
        // A name is one path component; anything else could walk out of the directory.
        let valid = !name.is_empty() && name != "." && name != ".." && !name.contains('/');
        let dir = sys_class_net.join(name);
        if !valid || !dir.exists() {
            bail!("no network interface {name:?} (see `ip link`)");
        }
        let read = |file: &str| -> Result<u32> {
            let path = dir.join(file);
            let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
            text.trim().parse().with_context(|| format!("{} is not a number: {:?}", path.display(), text.trim()))
        };
        let index = read("ifindex")?;
        let arphrd = read("type")?;
        let link = link_for_arphrd(arphrd).with_context(|| {
            format!(
                "interface {name} has hardware type {arphrd} (ARPHRD); tlstap can write Ethernet, loopback \
                 and raw-IP (tun, wireguard, IP tunnels) interfaces"
            )
        })?;
        Ok(Interface { name: name.to_string(), index, link })
    }

    pub fn resolve(name: &str) -> Result<Interface> {
        Interface::resolve_in(Path::new("/sys/class/net"), name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_types_by_hardware_type() {
        let lo = link_for_arphrd(772).unwrap();
        assert_eq!((lo.linktype, lo.l2_len, lo.loopback, lo.dlt), (1, 14, true, 1));
        let eth = link_for_arphrd(1).unwrap();
        assert_eq!((eth.linktype, eth.l2_len, eth.loopback), (1, 14, false));
        for tun in [65534, 768, 769, 776] {
            let raw = link_for_arphrd(tun).unwrap();
            assert_eq!((raw.linktype, raw.l2_len, raw.loopback, raw.dlt), (101, 0, false, 12), "ARPHRD {tun}");
        }
        assert_eq!(link_for_arphrd(32), None, "InfiniBand");
        assert_eq!(link_for_arphrd(778), None, "GRE");
    }

    #[test]
    fn resolves_from_sysfs_and_refuses_bad_names() {
        let dir = std::env::temp_dir().join(format!("tlstap-iface-{}", std::process::id()));
        for (name, index, arphrd) in [("lo", "1\n", "772\n"), ("wg0", "7\n", "65534\n"), ("ib0", "9\n", "32\n")] {
            std::fs::create_dir_all(dir.join(name)).unwrap();
            std::fs::write(dir.join(name).join("ifindex"), index).unwrap();
            std::fs::write(dir.join(name).join("type"), arphrd).unwrap();
        }
        let lo = Interface::resolve_in(&dir, "lo").unwrap();
        assert_eq!((lo.index, lo.link.loopback), (1, true));
        let wg = Interface::resolve_in(&dir, "wg0").unwrap();
        assert_eq!((wg.index, wg.link.linktype), (7, 101));
        let err = format!("{:#}", Interface::resolve_in(&dir, "ib0").unwrap_err());
        assert!(err.contains("hardware type 32"), "{err}");
        for bad in ["eth9", "", "..", "lo/../lo"] {
            let err = format!("{:#}", Interface::resolve_in(&dir, bad).unwrap_err());
            assert!(err.starts_with("no network interface"), "{bad}: {err}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
