//! goelf::h2 (the --h2-hooks attach points) against real Go HTTP/2 programs: the Go versions
//! whose net/http keeps HTTP/2 in three shapes (Go 1.15's stack ABI, Go 1.19's bundle returning
//! a pointer, Go 1.27's internal package returning an interface), plain and stripped. The
//! layout is checked against Go's source (x/net/http2 and its hpack, unchanged since 2016):
//! `MetaHeadersFrame{*HeadersFrame; Fields []hpack.HeaderField; ...}`,
//! `HeadersFrame{FrameHeader{valid bool; Type, Flags uint8; Length, StreamID uint32}; ...}`,
//! `hpack.HeaderField{Name, Value string; Sensitive bool}`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use goelf::h2::{self, MetaLayout};
use goelf::GoBinary;

const SOURCE_LAYOUT: MetaLayout = MetaLayout { fields: 8, headers: 0, stream_id: 8, field_size: 40 };

/// (version, variant, the readMetaFrame copy it has).
const BUILDS: [(&str, &str, &str); 6] = [
    ("1.15", "exe", "net/http.(*http2Framer).readMetaFrame"),
    ("1.19", "exe", "net/http.(*http2Framer).readMetaFrame"),
    ("1.19", "pie-strip", "net/http.(*http2Framer).readMetaFrame"),
    ("1.27", "exe", "net/http/internal/http2.(*Framer).readMetaFrame"),
    ("1.27", "exe-sw", "net/http/internal/http2.(*Framer).readMetaFrame"),
    ("1.27", "pie-strip", "net/http/internal/http2.(*Framer).readMetaFrame"),
];

#[test]
fn hooks_and_layout_of_go_http2_programs() {
    if skip_fixtures() {
        eprintln!("TLSTAP_SKIP_FIXTURES=1: skipping the h2 hook checks");
        return;
    }
    let mut rets_by_version = std::collections::BTreeMap::new();
    for (version, variant, received) in BUILDS {
        let what = format!("go{version} {variant}");
        let data = std::fs::read(fixture(version, variant, "httpfixture", "amd64")).unwrap();
        let bin = GoBinary::parse(&data).unwrap();
        let plan = h2::plan(&bin).unwrap();
        assert_eq!(plan.layout, Some(SOURCE_LAYOUT), "{what}");
        let sent: Vec<_> = plan.sent_field_entries.iter().map(|p| p.symbol).collect();
        assert_eq!(sent, ["vendor/golang.org/x/net/http2/hpack.(*Encoder).WriteField"], "{what}");
        // Every RET of the one copy, each inside it, each a RET by an independent decoder.
        let f = bin.function(received).unwrap_or_else(|| panic!("{what}: no {received}"));
        assert!(!plan.received_block_returns.is_empty(), "{what}");
        for p in &plan.received_block_returns {
            assert_eq!(p.symbol, received, "{what}");
            assert!(p.vaddr > f.vaddr && p.vaddr < f.vaddr + f.size, "{what}: {:#x} outside", p.vaddr);
            let byte = data[p.file_offset as usize];
            assert_eq!(byte, 0xc3, "{what}: {:#x} is not a RET", p.vaddr);
        }
        // Stripping changes nothing the hooks rely on.
        let count = rets_by_version.entry(version).or_insert(plan.received_block_returns.len());
        assert_eq!(*count, plan.received_block_returns.len(), "{what}: RETs differ from the unstripped build");
    }
}

#[test]
fn programs_without_go_http2_have_no_hooks() {
    if skip_fixtures() {
        return;
    }
    // oddconn speaks TLS over odd connections, without net/http.
    let data = std::fs::read(fixture("1.27", "exe", "oddconn", "amd64")).unwrap();
    let plan = h2::plan(&GoBinary::parse(&data).unwrap()).unwrap();
    assert!(plan.is_empty() && plan.layout.is_none(), "{plan:?}");
}
