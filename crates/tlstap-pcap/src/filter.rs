//! pcap mode's optional filter: a tcpdump expression compiled by libpcap itself (so its whole
//! language and semantics are tcpdump's) for the interface's link type, and run on each packet
//! in userspace with `pcap_offline_filter`. libpcap is loaded at run time, and only when a
//! filter is given: tlstap neither links it nor needs its headers to build.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};

use anyhow::{bail, Result};

/// `struct bpf_program` (pcap/bpf.h).
#[repr(C)]
struct BpfProgram {
    bf_len: c_uint,
    bf_insns: *mut c_void,
}

/// `struct pcap_pkthdr` (pcap/pcap.h).
#[repr(C)]
struct PcapPkthdr {
    ts: libc::timeval,
    caplen: u32,
    len: u32,
}

type OpenDead = unsafe extern "C" fn(c_int, c_int) -> *mut c_void;
type Compile = unsafe extern "C" fn(*mut c_void, *mut BpfProgram, *const c_char, c_int, u32) -> c_int;
type GetErr = unsafe extern "C" fn(*mut c_void) -> *const c_char;
type Close = unsafe extern "C" fn(*mut c_void);
type FreeCode = unsafe extern "C" fn(*mut BpfProgram);
type OfflineFilter = unsafe extern "C" fn(*const BpfProgram, *const PcapPkthdr, *const u8) -> c_int;

/// Sonames tried in order: Debian/Ubuntu, other distributions, a development symlink.
const SONAMES: [&CStr; 3] = [c"libpcap.so.0.8", c"libpcap.so.1", c"libpcap.so"];
const PCAP_NETMASK_UNKNOWN: u32 = 0xffff_ffff;
const SNAPLEN: c_int = 262_144;

/// A compiled filter expression.
#[derive(Debug)]
pub struct PacketFilter {
    library: *mut c_void,
    program: BpfProgram,
    free_code: FreeCode,
    offline_filter: OfflineFilter,
}

// SAFETY: the compiled program is plain memory owned by this value; libpcap keeps no
// per-thread state for pcap_offline_filter, and `&mut`/ownership rules keep one user at a time.
unsafe impl Send for PacketFilter {}

impl std::fmt::Debug for BpfProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BpfProgram({} instructions)", self.bf_len)
    }
}

/// Looks a symbol up in `library` as a function of type `F` (a function pointer type).
///
/// # Safety
/// `F` must be the symbol's true C signature.
unsafe fn symbol<F: Copy>(library: *mut c_void, name: &CStr) -> Option<F> {
    // SAFETY: `library` is a live handle from dlopen; `name` is NUL-terminated.
    let ptr = unsafe { libc::dlsym(library, name.as_ptr()) };
    // SAFETY: function pointers and data pointers have the same size on Linux; the caller
    // vouches for the signature.
    (!ptr.is_null()).then(|| unsafe { std::mem::transmute_copy::<*mut c_void, F>(&ptr) })
}

impl PacketFilter {
    /// Compiles `expression` for packets of link type `dlt` (libpcap's DLT_*).
    pub fn compile(expression: &str, dlt: i32) -> Result<PacketFilter> {
        let Ok(text) = CString::new(expression) else { bail!("the filter expression contains a NUL byte") };
        // SAFETY: the sonames are NUL-terminated; dlopen has no other precondition.
        let library = SONAMES
            .iter()
            .map(|n| unsafe { libc::dlopen(n.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) })
            .find(|l| !l.is_null());
        let Some(library) = library else {
            bail!("a filter expression needs libpcap, which was not found (Debian/Ubuntu: apt-get install libpcap0.8)")
        };
        // SAFETY: each type alias is the documented libpcap signature of its symbol.
        let symbols = unsafe {
            (
                symbol::<OpenDead>(library, c"pcap_open_dead"),
                symbol::<Compile>(library, c"pcap_compile"),
                symbol::<GetErr>(library, c"pcap_geterr"),
                symbol::<Close>(library, c"pcap_close"),
                symbol::<FreeCode>(library, c"pcap_freecode"),
                symbol::<OfflineFilter>(library, c"pcap_offline_filter"),
            )
        };
        let (Some(open_dead), Some(compile), Some(geterr), Some(close), Some(free_code), Some(offline_filter)) =
            symbols
        else {
            // SAFETY: `library` came from dlopen and nothing of it is in use.
            unsafe { libc::dlclose(library) };
            bail!("the libpcap found lacks pcap_compile or pcap_offline_filter (libpcap ≥ 1.0 is needed)");
        };
        let mut program = BpfProgram { bf_len: 0, bf_insns: std::ptr::null_mut() };
        // SAFETY: pcap_open_dead only allocates; a null return is checked.
        let pcap = unsafe { open_dead(dlt, SNAPLEN) };
        let outcome = if pcap.is_null() {
            Err("libpcap could not set up a compiler".to_string())
        } else {
            // SAFETY: `pcap` is live, `program` writable, `text` NUL-terminated; on failure
            // pcap_geterr returns a NUL-terminated message owned by `pcap`, copied before close.
            let result = unsafe {
                if compile(pcap, &mut program, text.as_ptr(), 1, PCAP_NETMASK_UNKNOWN) == 0 {
                    Ok(())
                } else {
                    Err(CStr::from_ptr(geterr(pcap)).to_string_lossy().into_owned())
                }
            };
            // SAFETY: `pcap` is live and not used after this; the compiled program does not
            // refer to it.
            unsafe { close(pcap) };
            result
        };
        if let Err(message) = outcome {
            // SAFETY: as above; no program was compiled.
            unsafe { libc::dlclose(library) };
            bail!("bad filter expression {expression:?}: {message}");
        }
        Ok(PacketFilter { library, program, free_code, offline_filter })
    }

    /// True when the packet (`data` as captured, `orig_len` on the wire) passes the filter.
    pub fn matches(&self, data: &[u8], orig_len: u32) -> bool {
        let caplen = u32::try_from(data.len()).unwrap_or(u32::MAX);
        let header = PcapPkthdr { ts: libc::timeval { tv_sec: 0, tv_usec: 0 }, caplen, len: orig_len.max(caplen) };
        // SAFETY: the program is compiled and owned by self; the header and data are valid for
        // the call, and the filter reads at most `caplen` bytes of `data`.
        unsafe { (self.offline_filter)(&self.program, &header, data.as_ptr()) != 0 }
    }
}

impl Drop for PacketFilter {
    fn drop(&mut self) {
        // SAFETY: the program was compiled by this library and is freed once; the library's
        // code is not used after dlclose.
        unsafe {
            (self.free_code)(&mut self.program);
            libc::dlclose(self.library);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::packet::tests::eth_ipv4_tcp;
    use super::*;

    #[test]
    fn compiles_and_matches_like_tcpdump() {
        let Ok(filter) = PacketFilter::compile("tcp port 8443 and host 127.0.0.1", 1) else {
            eprintln!("SKIPPED: no libpcap");
            return;
        };
        let a = eth_ipv4_tcp("127.0.0.1:50000".parse().unwrap(), "127.0.0.1:8443".parse().unwrap(), 0x02);
        let b = eth_ipv4_tcp("127.0.0.1:50000".parse().unwrap(), "127.0.0.1:9443".parse().unwrap(), 0x02);
        assert!(filter.matches(&a, a.len() as u32));
        assert!(!filter.matches(&b, b.len() as u32));
        // Raw IP: the same expression compiled for DLT_RAW matches the bare IP packet.
        let raw = PacketFilter::compile("dst port 8443", 12).unwrap();
        assert!(raw.matches(&a[14..], a.len() as u32 - 14));
        let err = format!("{:#}", PacketFilter::compile("tcp prot 80", 1).unwrap_err());
        assert!(err.starts_with("bad filter expression \"tcp prot 80\": "), "{err}");
    }
}
