//! The BPF side of tlstap: the programs (bpf/*.bpf.c, built by build.rs), their loading and
//! attaching ([`capture`]), reading their ring buffers ([`ring`]) and decoding the records
//! ([`wire`]).
//! The only crate that needs clang, libbpf and root.

pub mod capture;
pub mod clock;
pub mod features;
pub mod held;
pub mod packets;
pub mod ring;
pub mod slots;
pub mod tc_record;
pub mod wire;

/// The libbpf-rs skeleton generated from bpf/tlstap.bpf.c, with the Rust twins of every type
/// in bpf/events.h under `skel::types`.
pub mod skel {
    #![allow(
        clippy::all,
        clippy::undocumented_unsafe_blocks,
        clippy::unwrap_used,
        clippy::expect_used,
        missing_debug_implementations,
        non_camel_case_types,
        unsafe_op_in_unsafe_fn
    )]
    include!(concat!(env!("OUT_DIR"), "/tlstap.skel.rs"));
}

/// The skeleton of bpf/packets.bpf.c (pcap mode's TC program), with its own twins of the types.
pub mod packets_skel {
    #![allow(
        clippy::all,
        clippy::undocumented_unsafe_blocks,
        clippy::unwrap_used,
        clippy::expect_used,
        missing_debug_implementations,
        non_camel_case_types,
        unsafe_op_in_unsafe_fn
    )]
    include!(concat!(env!("OUT_DIR"), "/packets.skel.rs"));
}

pub use capture::{
    configure_libbpf_logging, h2_hooks_supported, AttachPath, BinaryConfig, BinaryHandle, Capture, CaptureOptions,
    ConnLayout, Error, H2Layout, LossCounts, ProbeKind, ProbeSpec,
};
pub use features::{Feature, KernelFeatures, MissingFeatures};
pub use held::{continue_stranded_processes, HeldWatchdog};
pub use ring::RingReader;
