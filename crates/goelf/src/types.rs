//! Struct layouts from the binary's own runtime type descriptors, which survive `-s -w` and
//! `strip`: what tlstap's BPF needs to go from a `*tls.Conn` to its socket fd.
//!
//! ```no_run
//! let data = std::fs::read("/usr/local/bin/some-go-program").unwrap();
//! let bin = goelf::GoBinary::parse(&data).unwrap();
//! let l = goelf::types::conn_layout(&bin).unwrap();
//! println!("conn at +{}, *net.TCPConn type at {:#x}", l.tls_conn_conn, l.tcp_conn_type);
//! ```
//!
//! The path: `runtime.moduledata` → typelinks → the pointer types `*tls.Conn`,
//! `*net.TCPConn`, `*net.UnixConn` → their element structs → field by field through the
//! descriptor graph (`net.conn`, `*net.netFD`, `poll.FD`), never relying on each being listed.

mod moduledata;
mod rtype;
mod tlsg;

pub use moduledata::ModuledataLayout;
pub use rtype::{FieldOffsetEncoding, NameEncoding};
pub use tlsg::g_below_fs;

use moduledata::{Links, Moduledata};
use rtype::{MapSize, Reader, KIND_INTERFACE, KIND_PTR, KIND_STRUCT, TFLAG_EXTRA_STAR};

use crate::elf::read_u32;
use crate::{Error, GoBinary};

/// Offsets and type addresses to get from a `*tls.Conn` to the socket fd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnLayout {
    /// Offset of field `conn` (a `net.Conn` interface) in `crypto/tls.Conn`.
    pub tls_conn_conn: u64,
    /// Offset of the embedded `conn` in `net.TCPConn` + offset of `fd` (`*net.netFD`) in
    /// `net.conn`.
    pub net_conn_fd: u64,
    /// Offset of `pfd` (`internal/poll.FD`) in `net.netFD` + offset of `Sysfd` in `poll.FD`.
    pub net_fd_sysfd: u64,
    /// Address (file view, unrelocated) of the type descriptor of `*net.TCPConn`: the type
    /// word of a `net.Conn` interface holding a TCP connection (via its itab).
    pub tcp_conn_type: u64,
    /// The same for `*net.UnixConn`, if the binary has it and its `conn` sits where
    /// `net.TCPConn`'s does.
    pub unix_conn_type: Option<u64>,
}

/// Map descriptor size of the Go 1.27 layout (`internal/abi.MapType`), for the typelink walk.
const GO127_MAP_SIZE: u64 = 136;
/// Most descriptors walked in a Go 1.27+ typelink run.
const MAX_WALK: usize = 1 << 22;
/// `reflect.Int`.
const KIND_INT: u8 = 2;

/// The type data of a binary's first module.
#[derive(Debug)]
pub struct TypeData<'b, 'a> {
    md: Moduledata,
    reader: Reader<'b, 'a>,
    links: Vec<u64>,
}

impl<'b, 'a> TypeData<'b, 'a> {
    /// Finds moduledata and lists the typelink descriptors.
    pub fn load(bin: &'b GoBinary<'a>) -> Result<Self, Error> {
        let md = moduledata::locate(bin)?;
        let v = &bin.info.go_version;
        let newer = |minor: u32| v.major > 1 || (v.major == 1 && v.minor >= minor);
        let reader = Reader {
            image: &bin.image,
            types: md.types,
            etypes: md.etypes,
            names: if newer(17) { NameEncoding::Varint } else { NameEncoding::BigEndian16 },
            fields: if newer(19) { FieldOffsetEncoding::Plain } else { FieldOffsetEncoding::OffsetAnon },
        };
        let links = match md.links {
            Links::Offsets { vaddr, len } => {
                let table = reader
                    .image
                    .bytes_at(vaddr, len.saturating_mul(4))
                    .ok_or_else(|| Error::malformed("typelinks table not in the file"))?;
                table.chunks_exact(4).filter_map(|c| md.types.checked_add(u64::from(read_u32(c, 0)?))).collect()
            }
            // A walk that loses its way (a descriptor kind sized differently in a newer
            // release) leaves the list empty: lookups then scan the type data instead.
            Links::Descriptors { end } => walk(&reader, md.types, end).unwrap_or_default(),
        };
        Ok(TypeData { md, reader, links })
    }

    /// Address of the moduledata.
    pub fn moduledata(&self) -> u64 {
        self.md.addr
    }

    /// The moduledata field layout found.
    pub fn layout(&self) -> ModuledataLayout {
        self.md.layout
    }

    /// `[types, etypes)`: every name and type offset is relative to `types`.
    pub fn types_range(&self) -> (u64, u64) {
        (self.md.types, self.md.etypes)
    }

    /// How names store their lengths in this binary.
    pub fn name_encoding(&self) -> NameEncoding {
        self.reader.names
    }

    /// How struct fields store their offsets in this binary.
    pub fn field_offset_encoding(&self) -> FieldOffsetEncoding {
        self.reader.fields
    }

    /// Addresses of the typelink descriptors (the types reflect may construct: unnamed
    /// pointer, slice, map, chan, func, array and struct types), in the linker's order.
    pub fn typelinks(&self) -> &[u64] {
        &self.links
    }

    /// The type's string as Go prints it (`*tls.Conn`, `poll.FD`).
    pub fn type_string(&self, addr: u64) -> Result<String, Error> {
        let t = self.reader.rtype(addr)?;
        Ok(String::from_utf8_lossy(self.reader.string(&t)?).into_owned())
    }

    /// The package path of a named type (e.g. `crypto/tls` for `tls.Conn`).
    pub fn pkg_path(&self, addr: u64) -> Result<Option<String>, Error> {
        let t = self.reader.rtype(addr)?;
        Ok(self.reader.pkg_path(&t)?.map(|p| String::from_utf8_lossy(p).into_owned()))
    }

    /// The pointer type printed `string` (e.g. `*net.TCPConn`) whose element's package path
    /// is `pkg`: looked up among the typelinks, else by scanning `[types, etypes)`.
    pub fn pointer_type(&self, string: &str, pkg: &str) -> Result<Option<u64>, Error> {
        let wanted = |addr: u64| self.is_pointer_to(addr, string.as_bytes(), pkg.as_bytes());
        if let Some(&addr) = self.links.iter().find(|&&a| wanted(a)) {
            return Ok(Some(addr));
        }
        Ok(self.scan(string.as_bytes(), &wanted))
    }

    /// The offset and type of field `name` of the struct at `addr`.
    pub fn field(&self, addr: u64, name: &str) -> Result<(u64, u64), Error> {
        let t = self.reader.rtype(addr)?;
        let fields = self.reader.fields(&t)?;
        let f = fields.iter().find(|f| f.name == name.as_bytes()).ok_or_else(|| {
            Error::TypeNotFound(format!("field {name} of {}", self.type_string(addr).unwrap_or_default()))
        })?;
        Ok((f.offset, f.typ))
    }

    /// The element type of the pointer or slice type at `addr`.
    pub fn elem(&self, addr: u64) -> Result<u64, Error> {
        self.reader.elem(&self.reader.rtype(addr)?)
    }

    /// The size in bytes of a value of the type at `addr`.
    pub fn size(&self, addr: u64) -> Result<u64, Error> {
        Ok(self.reader.rtype(addr)?.size)
    }

    fn is_pointer_to(&self, addr: u64, string: &[u8], pkg: &[u8]) -> bool {
        let Ok(t) = self.reader.rtype(addr) else { return false };
        if t.kind != KIND_PTR || t.tflag & TFLAG_EXTRA_STAR != 0 || self.reader.raw_string(&t).ok() != Some(string) {
            return false;
        }
        let elem = self.reader.elem(&t).and_then(|e| self.reader.rtype(e));
        elem.is_ok_and(|e| self.reader.pkg_path(&e).ok().flatten() == Some(pkg))
    }

    /// Every 8-aligned descriptor-shaped spot in `[types, etypes)` whose string is `string`,
    /// checked by `wanted`: for layouts whose typelinks miss a type.
    fn scan(&self, string: &[u8], wanted: &dyn Fn(u64) -> bool) -> Option<u64> {
        let (types, etypes) = (self.md.types, self.md.etypes);
        let region = self.reader.image.bytes_at(types, etypes - types)?;
        let first = usize::try_from((8 - types % 8) % 8).ok()?;
        let mut at = first;
        while let Some(head) = at.checked_add(48).and_then(|end| region.get(at..end)) {
            let kind = head.get(23).copied().unwrap_or(0) & 0x1f;
            let str_off = read_u32(head, 40).and_then(|o| usize::try_from(o).ok());
            if kind == KIND_PTR && str_off.is_some_and(|o| name_is(region, o, string, self.reader.names)) {
                let addr = types.checked_add(at as u64)?;
                if wanted(addr) {
                    return Some(addr);
                }
            }
            at = at.checked_add(8)?;
        }
        None
    }
}

/// True if the name at `off` in `region` is `string` (cheap pre-check for the scan).
fn name_is(region: &[u8], off: usize, string: &[u8], enc: NameEncoding) -> bool {
    region.get(off..).and_then(|b| rtype::decode_name(b, enc)).is_some_and(|n| n.bytes == string)
}

/// Walks the typelink descriptors of a Go 1.27+ module: from `types + 8` to `end`, each
/// aligned to 8 and as long as `DescriptorSize` says; the last must end exactly at `end`.
fn walk(r: &Reader<'_, '_>, types: u64, end: u64) -> Result<Vec<u64>, Error> {
    let lost = |at: u64| Error::malformed(format!("typelink descriptor walk lost at {at:#x}"));
    let mut out = Vec::new();
    let mut td = types.checked_add(8).ok_or_else(|| lost(types))?;
    while td < end {
        td = td.checked_add(7).map(|a| a & !7).ok_or_else(|| lost(td))?;
        if td >= end {
            break;
        }
        let t = r.rtype(td)?;
        if t.kind == 0 || u64::from(t.str_off) >= r.etypes - r.types || out.len() >= MAX_WALK {
            return Err(lost(td));
        }
        let size = r.descriptor_size(&t, MapSize::Bytes(GO127_MAP_SIZE)).ok_or_else(|| lost(td))?;
        out.push(td);
        td = td.checked_add(size).ok_or_else(|| lost(td))?;
    }
    // The linker's typedesclen is the exact end of the last descriptor.
    if td != end {
        return Err(lost(td));
    }
    Ok(out)
}

/// Computes the [`ConnLayout`] of `bin` from its type descriptors.
pub fn conn_layout(bin: &GoBinary<'_>) -> Result<ConnLayout, Error> {
    let td = TypeData::load(bin)?;
    let r = &td.reader;
    let need_ptr = |string: &str, pkg: &str| {
        td.pointer_type(string, pkg)?.ok_or_else(|| Error::TypeNotFound(format!("{string} (package {pkg})")))
    };
    // Checks that the type at `addr` has the expected kind and printed string.
    let expect = |addr: u64, kind: u8, string: &str| -> Result<u64, Error> {
        let t = r.rtype(addr)?;
        let got = r.string(&t)?;
        if t.kind != kind || got != string.as_bytes() {
            return Err(Error::malformed(format!(
                "type at {addr:#x} is {} (kind {}), expected {string} (kind {kind})",
                String::from_utf8_lossy(got),
                t.kind
            )));
        }
        Ok(addr)
    };

    let tls_conn = td.elem(need_ptr("*tls.Conn", "crypto/tls")?)?;
    let (tls_conn_conn, conn_iface) = td.field(tls_conn, "conn")?;
    expect(conn_iface, KIND_INTERFACE, "net.Conn")?;

    let tcp_ptr = need_ptr("*net.TCPConn", "net")?;
    let (tcp_conn, net_conn) = td.field(td.elem(tcp_ptr)?, "conn")?;
    expect(net_conn, KIND_STRUCT, "net.conn")?;
    let (conn_fd, fd_ptr) = td.field(net_conn, "fd")?;
    let netfd = td.elem(expect(fd_ptr, KIND_PTR, "*net.netFD")?)?;
    let (pfd, poll_fd) = td.field(expect(netfd, KIND_STRUCT, "net.netFD")?, "pfd")?;
    let (sysfd, sysfd_type) = td.field(expect(poll_fd, KIND_STRUCT, "poll.FD")?, "Sysfd")?;
    expect(sysfd_type, KIND_INT, "int")?;
    let overflow = || Error::malformed("field offsets overflow");

    let unix_conn_type = match td.pointer_type("*net.UnixConn", "net")? {
        Some(ptr) => match td.field(td.elem(ptr)?, "conn") {
            Ok((off, typ)) if off == tcp_conn && typ == net_conn => Some(ptr),
            _ => None,
        },
        None => None,
    };
    Ok(ConnLayout {
        tls_conn_conn,
        net_conn_fd: tcp_conn.checked_add(conn_fd).ok_or_else(overflow)?,
        net_fd_sysfd: pfd.checked_add(sysfd).ok_or_else(overflow)?,
        tcp_conn_type: tcp_ptr,
        unix_conn_type,
    })
}
