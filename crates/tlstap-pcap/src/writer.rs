//! What pcap mode writes: the pcapng file (section, one interface, packets with `pid=N
//! comm=NAME` comments, TLS secrets as Decryption Secrets Blocks) and the optional JSON Lines
//! side stream (one `packet` record per written packet, plus the attach/stats records it is
//! handed). Keeps the file's invariants: every secret received is written before the next
//! packet; packet stamps strictly increase.

use std::fs::File;
use std::io::{self, BufWriter, Write};

use tlstap_core::event::{Event, SecretEvent};
use tlstap_core::sink::{PcapngSink, Sink};

use super::flows::Owner;
use super::window::Packet;

/// A secret as it crossed the thread boundary.
#[derive(Debug, Clone)]
pub struct OwnedSecret {
    pub ts_ns: u64,
    pub pid: u32,
    pub label: String,
    pub client_random: Vec<u8>,
    pub secret: Vec<u8>,
}

/// The pcapng file and the side stream.
pub struct PacketWriter {
    pcapng: PcapngSink<BufWriter<File>>,
    if_id: u32,
    ifname: String,
    side: Option<Box<dyn Write + Send>>,
    pending: Vec<OwnedSecret>,
    /// Wall-clock stamp of the last packet written.
    last_ts_ns: u64,
    pub packets: u64,
    pub bytes: u64,
    /// Packets whose stamp had to be moved forward to keep the file in strict time order.
    pub restamped: u64,
    line: Vec<u8>,
}

impl std::fmt::Debug for PacketWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PacketWriter").field("packets", &self.packets).finish_non_exhaustive()
    }
}

impl PacketWriter {
    /// Starts the file: section header and the interface's description.
    pub fn new(
        file: File,
        linktype: u16,
        ifname: &str,
        side: Option<Box<dyn Write + Send>>,
    ) -> io::Result<PacketWriter> {
        let mut pcapng = PcapngSink::new(BufWriter::with_capacity(256 * 1024, file))?;
        let if_id = pcapng.add_interface(linktype, ifname)?;
        pcapng.flush()?;
        Ok(PacketWriter {
            pcapng,
            if_id,
            ifname: ifname.to_string(),
            side,
            pending: Vec::new(),
            last_ts_ns: 0,
            packets: 0,
            bytes: 0,
            restamped: 0,
            line: Vec::with_capacity(256),
        })
    }

    /// Queues a secret; it is written before the next packet (or at the end).
    pub fn secret(&mut self, secret: OwnedSecret) {
        self.pending.push(secret);
    }

    /// Writes queued secrets as Decryption Secrets Blocks (duplicates are skipped).
    pub fn write_secrets(&mut self) -> io::Result<()> {
        for s in std::mem::take(&mut self.pending) {
            let event = SecretEvent {
                ts_ns: s.ts_ns,
                pid: s.pid,
                label: &s.label,
                client_random: &s.client_random,
                secret: &s.secret,
            };
            self.pcapng.write_event(&Event::Secret(event))?;
        }
        Ok(())
    }

    /// Writes a packet stamped `wall_ns` (wall-clock), after every queued secret.
    pub fn packet(&mut self, packet: &Packet, wall_ns: u64, owner: Option<&Owner>) -> io::Result<()> {
        self.write_secrets()?;
        let ts = if wall_ns > self.last_ts_ns {
            wall_ns
        } else {
            self.restamped += 1;
            self.last_ts_ns + 1
        };
        let comment = owner.map(|o| format!("pid={} comm={}", o.pid, o.comm));
        self.pcapng.write_packet(self.if_id, ts, &packet.data, packet.orig_len, comment.as_deref())?;
        self.last_ts_ns = ts;
        self.packets += 1;
        self.bytes += u64::from(packet.orig_len);
        if self.side.is_some() {
            self.line.clear();
            packet_record(&mut self.line, ts, owner, packet, &self.ifname);
            self.side_line()?;
        }
        Ok(())
    }

    /// Appends an already rendered JSON line (attach, stats) to the side stream.
    pub fn side_record(&mut self, line: &[u8]) -> io::Result<()> {
        if self.side.is_some() {
            self.line.clear();
            self.line.extend_from_slice(line);
            self.side_line()?;
        }
        Ok(())
    }

    fn side_line(&mut self) -> io::Result<()> {
        let Some(side) = self.side.as_mut() else { return Ok(()) };
        match side.write_all(&self.line) {
            // A reader that went away (`| head`) ends the side stream, not the capture.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                self.side = None;
                Ok(())
            }
            other => other,
        }
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.pcapng.flush()?;
        match self.side.as_mut().map(|s| s.flush()) {
            Some(Err(e)) if e.kind() == io::ErrorKind::BrokenPipe => {
                self.side = None;
                Ok(())
            }
            Some(other) => other,
            None => Ok(()),
        }
    }
}

/// `{"type":"packet","ts_ns":N,"pid":N|null,"comm":S|null,"len":N,"ifname":S,"direction":S}`
fn packet_record(out: &mut Vec<u8>, ts_ns: u64, owner: Option<&Owner>, packet: &Packet, ifname: &str) {
    out.extend_from_slice(format!("{{\"type\":\"packet\",\"ts_ns\":{ts_ns},\"pid\":").as_bytes());
    match owner {
        Some(o) => {
            out.extend_from_slice(format!("{},\"comm\":", o.pid).as_bytes());
            json_string(out, &o.comm);
        }
        None => out.extend_from_slice(b"null,\"comm\":null"),
    }
    out.extend_from_slice(format!(",\"len\":{},\"ifname\":", packet.orig_len).as_bytes());
    json_string(out, ifname);
    let direction = if packet.ingress { "ingress" } else { "egress" };
    out.extend_from_slice(format!(",\"direction\":\"{direction}\"}}\n").as_bytes());
}

/// A JSON string: quotes, backslashes and control characters escaped.
fn json_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            c if u32::from(c) < 0x20 || c == '\u{7f}' => {
                out.extend_from_slice(format!("\\u{:04x}", u32::from(c)).as_bytes())
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn packet_records_are_json() {
        let packet = Packet { ts_ns: 1, ingress: true, orig_len: 60, data: vec![0; 60], syn_pid: 0 };
        let owner = Owner { pid: 42, comm: Arc::from("we\"ird\\\n") };
        let mut line = Vec::new();
        packet_record(&mut line, 7, Some(&owner), &packet, "lo");
        assert_eq!(
            String::from_utf8(line).unwrap(),
            "{\"type\":\"packet\",\"ts_ns\":7,\"pid\":42,\"comm\":\"we\\\"ird\\\\\\u000a\",\"len\":60,\"ifname\":\"lo\",\"direction\":\"ingress\"}\n"
        );
        let mut line = Vec::new();
        packet_record(&mut line, 8, None, &Packet { ingress: false, ..packet }, "eth0");
        assert!(String::from_utf8(line)
            .unwrap()
            .contains("\"pid\":null,\"comm\":null,\"len\":60,\"ifname\":\"eth0\",\"direction\":\"egress\""));
    }
}
