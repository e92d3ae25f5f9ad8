//! Go's own HTTP/2 header paths, for tlstap's header hooks (--h2-hooks): where a Go program
//! holds header fields decoded, so headers are known on connections whose HPACK state tlstap
//! missed (opened before it started).
//! - Sent: the entry of hpack's `(*Encoder).WriteField(f HeaderField)`, called once per field
//!   the program encodes (net/http's server and client, x/net/http2, grpc-go).
//! - Received: every RET of http2's `(*Framer).readMetaFrame(hf *HeadersFrame)
//!   (*MetaHeadersFrame, error)`, which returns a block's fields as Go decoded them.
//!
//! Both exist twice in programs that use golang.org/x/net/http2 beside net/http's own copy
//! (grpc-go): every copy is hooked. The layout BPF follows from a `*MetaHeadersFrame` is read
//! from the binary's type data, so a stripped binary is served like any other.

use crate::tls::{entry, point, ProbePoint};
use crate::types::TypeData;
use crate::{Error, GoBinary};

/// `(*Encoder).WriteField` in the standard library's vendored hpack (Go ≥ 1.13) and in x/net.
pub const SENT_FIELD: [&str; 2] =
    ["vendor/golang.org/x/net/http2/hpack.(*Encoder).WriteField", "golang.org/x/net/http2/hpack.(*Encoder).WriteField"];
/// `(*Framer).readMetaFrame`: net/http's bundled copy (up to Go 1.25), its internal package
/// (Go 1.26 on), and x/net's.
pub const RECEIVED_BLOCK: [&str; 3] = [
    "net/http.(*http2Framer).readMetaFrame",
    "net/http/internal/http2.(*Framer).readMetaFrame",
    "golang.org/x/net/http2.(*Framer).readMetaFrame",
];

/// Where a received block's fields and stream are, from a `*MetaHeadersFrame`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetaLayout {
    /// Offset of `MetaHeadersFrame.Fields` (a `[]hpack.HeaderField`).
    pub fields: u64,
    /// Offset of the embedded `*HeadersFrame`.
    pub headers: u64,
    /// Offset of `StreamID` in `HeadersFrame` (through its embedded `FrameHeader`).
    pub stream_id: u64,
    /// Size of `hpack.HeaderField`.
    pub field_size: u64,
}

/// The header hooks of one binary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct H2Plan {
    /// Entry of every `(*Encoder).WriteField` copy.
    pub sent_field_entries: Vec<ProbePoint>,
    /// Every RET of every `readMetaFrame` copy whose layout was read (it returns the frame
    /// as a pointer in older copies, as a `Frame` interface in newer ones: BPF tells them apart).
    pub received_block_returns: Vec<ProbePoint>,
    /// Shared by every copy hooked (a copy laid out otherwise is left out).
    pub layout: Option<MetaLayout>,
}

impl H2Plan {
    pub fn is_empty(&self) -> bool {
        self.sent_field_entries.is_empty() && self.received_block_returns.is_empty()
    }
}

/// (type as Go prints it, its package, embedded HeadersFrame field, embedded FrameHeader field)
/// of each `readMetaFrame` copy, in `RECEIVED_BLOCK` order.
const META_TYPES: [(&str, &str, &str, &str); 3] = [
    ("*http.http2MetaHeadersFrame", "net/http", "http2HeadersFrame", "http2FrameHeader"),
    ("*http2.MetaHeadersFrame", "net/http/internal/http2", "HeadersFrame", "FrameHeader"),
    ("*http2.MetaHeadersFrame", "golang.org/x/net/http2", "HeadersFrame", "FrameHeader"),
];

/// Finds the hooks; an empty plan when the binary has no Go HTTP/2.
pub fn plan(bin: &GoBinary<'_>) -> Result<H2Plan, Error> {
    let sent = bin.functions_named(&SENT_FIELD);
    let received = bin.functions_named(&RECEIVED_BLOCK);
    let mut plan = H2Plan { sent_field_entries: Vec::new(), received_block_returns: Vec::new(), layout: None };
    for (f, symbol) in sent.iter().zip(SENT_FIELD) {
        if let Some(f) = f {
            plan.sent_field_entries.push(entry(bin, symbol, f)?);
        }
    }
    if received.iter().all(Option::is_none) {
        return Ok(plan);
    }
    // Without type data the received hooks are left out: BPF could not find the fields.
    let Ok(types) = TypeData::load(bin) else { return Ok(plan) };
    for ((f, symbol), names) in received.iter().zip(RECEIVED_BLOCK).zip(META_TYPES) {
        let Some(f) = f else { continue };
        let Ok(layout) = meta_layout(&types, names) else { continue };
        if plan.layout.is_some_and(|l| l != layout) {
            continue;
        }
        plan.layout = Some(layout);
        for vaddr in bin.ret_addresses(f)? {
            plan.received_block_returns.push(point(bin, symbol, vaddr)?);
        }
    }
    Ok(plan)
}

fn meta_layout(
    types: &TypeData<'_, '_>,
    (ptr, pkg, headers_name, frame_header_name): (&str, &str, &str, &str),
) -> Result<MetaLayout, Error> {
    let missing = || Error::TypeNotFound(format!("{ptr} (package {pkg})"));
    let meta = types.elem(types.pointer_type(ptr, pkg)?.ok_or_else(missing)?)?;
    let (fields, fields_type) = types.field(meta, "Fields")?;
    let (headers, headers_ptr) = types.field(meta, headers_name)?;
    let (frame_header, frame_header_type) = types.field(types.elem(headers_ptr)?, frame_header_name)?;
    let (stream_id, _) = types.field(frame_header_type, "StreamID")?;
    let field = types.elem(fields_type)?;
    // BPF reads a field as two strings, Name then Value, at its start.
    let (name, _) = types.field(field, "Name")?;
    let (value, _) = types.field(field, "Value")?;
    if name != 0 || value != 16 {
        return Err(Error::malformed(format!("hpack.HeaderField has Name at {name} and Value at {value}")));
    }
    Ok(MetaLayout {
        fields,
        headers,
        stream_id: frame_header.checked_add(stream_id).ok_or_else(|| Error::malformed("field offsets overflow"))?,
        field_size: types.size(field)?,
    })
}
