//! tlstap's events, their reassembly from chunks, and the sinks that render them.
//! Pure: no BPF, no root, no reads of the system; every function here is testable on bytes.
//! The one exception is [`secret_file`], which opens (never reads) the files secrets go to.
pub mod event;
pub mod hex;
pub mod http;
pub mod names;
pub mod ordering;
pub mod pcapng;
pub mod reassembly;
pub mod secret_file;
pub mod sink;
