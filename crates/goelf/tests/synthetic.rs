//! Hand-built Go-like ELF files for every pclntab layout (1.2, 1.16, 1.20 with and without
//! pcHeader.textStart). Go 1.16/1.17 toolchains are not installable here, so the 1.16
//! layout (as written by cmd/link's pcln.go of that era) is checked on a synthetic table.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: panics are failures

use goelf::{tls, Abi, GoBinary, PclntabVersion, SymbolSource, TextStartSource};

const BASE: u64 = 0x40_0000;
const CODE: usize = 0x400; // file offset of the code (vaddr BASE + CODE)
const DATA: usize = 0x800; // file offset of the read-only segment (pclntab first)

/// (name, code): laid out 16-byte aligned from CODE.
const FUNCS: [(&str, &[u8]); 3] = [
    ("main.a", &[0x90, 0xc3]),
    // xor eax,eax; ret; nop; ret
    (tls::CONN_READ, &[0x31, 0xc0, 0xc3, 0x90, 0xc3]),
    (tls::CONN_WRITE, &[0xc3]),
];

fn put32(b: &mut Vec<u8>, v: u32) {
    b.extend_from_slice(&v.to_le_bytes());
}
fn put64(b: &mut Vec<u8>, v: u64) {
    b.extend_from_slice(&v.to_le_bytes());
}
fn set64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
fn align(b: &mut Vec<u8>, to: usize) {
    while b.len() % to != 0 {
        b.push(0);
    }
}
fn entry(i: usize) -> u64 {
    BASE + CODE as u64 + 16 * i as u64
}

/// The pclntab bytes for `version` (at vaddr BASE + DATA); `text_start` is what the 1.18+
/// header records.
fn pclntab(version: PclntabVersion, text_start: u64) -> Vec<u8> {
    let n = FUNCS.len();
    let (abs, hdr_words) = match version {
        PclntabVersion::V12 => (true, 1),
        PclntabVersion::V116 => (true, 7),
        _ => (false, 8),
    };
    let mut t = Vec::new();
    put32(&mut t, version.magic());
    t.extend_from_slice(&[0, 0, 1, 8]);
    t.resize(8 + 8 * hdr_words, 0);
    set64(&mut t, 8, n as u64);
    let v12 = version == PclntabVersion::V12;
    let esz = if abs { 16 } else { 8 };
    let table_len = esz * (n + 1) + 8 + 48 * n;
    // 1.2: the functab follows the header; later layouts put it last (pclnOffset).
    let mut pcln_at = t.len();
    if v12 {
        t.resize(pcln_at + table_len, 0);
    }
    // Names and pc tables: offsets from the table start (1.2) or from funcnametab / pctab.
    let names_at = t.len();
    let mut name_offs = Vec::new();
    for (name, _) in FUNCS {
        name_offs.push((t.len() - if v12 { 0 } else { names_at }) as u32);
        t.extend_from_slice(name.as_bytes());
        t.push(0);
    }
    let pctab_at = t.len();
    t.push(0); // offset 0 means "no table"
    let mut pcsp = Vec::new();
    for (_, code) in FUNCS {
        pcsp.push((t.len() - if v12 { 0 } else { pctab_at }) as u32);
        t.extend_from_slice(&[0x00, code.len() as u8, 0x00]); // value +0 for len bytes; end
    }
    if !v12 {
        align(&mut t, 8);
        pcln_at = t.len();
        t.resize(pcln_at + table_len, 0);
    }
    let recs_at = pcln_at + esz * (n + 1) + 8;
    for (i, (_, code)) in FUNCS.iter().enumerate() {
        let slot = pcln_at + esz * i;
        let rec = recs_at + 48 * i;
        let funcoff = (rec - if version == PclntabVersion::V12 { 0 } else { pcln_at }) as u64;
        let entry_field = if abs { 8 } else { 4 };
        if abs {
            set64(&mut t, slot, entry(i));
            set64(&mut t, slot + 8, funcoff);
            set64(&mut t, rec, entry(i));
        } else {
            let off = (entry(i) - BASE - CODE as u64) as u32;
            t[slot..slot + 4].copy_from_slice(&off.to_le_bytes());
            t[slot + 4..slot + 8].copy_from_slice(&(funcoff as u32).to_le_bytes());
            t[rec..rec + 4].copy_from_slice(&off.to_le_bytes());
        }
        t[rec + entry_field..rec + entry_field + 4].copy_from_slice(&name_offs[i].to_le_bytes());
        t[rec + entry_field + 12..rec + entry_field + 16].copy_from_slice(&pcsp[i].to_le_bytes());
        if i == n - 1 {
            let end = entry(i) + code.len() as u64;
            if abs {
                set64(&mut t, pcln_at + esz * n, end);
            } else {
                let off = (end - BASE - CODE as u64) as u32;
                t[pcln_at + esz * n..pcln_at + esz * n + 4].copy_from_slice(&off.to_le_bytes());
            }
        }
    }
    // Header offsets: (nfunc, nfiles, [textStart,] funcname, cu, filetab, pctab, pcln).
    let offs = [names_at, pctab_at, pctab_at, pctab_at, pcln_at].map(|o| o as u64);
    match version {
        PclntabVersion::V12 => {}
        PclntabVersion::V116 => (0..5).for_each(|k| set64(&mut t, 24 + 8 * k, offs[k])),
        _ => {
            set64(&mut t, 24, text_start);
            (0..5).for_each(|k| set64(&mut t, 32 + 8 * k, offs[k]));
        }
    }
    t
}

/// An ELF with code (R+X) and one read-only segment holding pclntab, build info and,
/// optionally, a moduledata-like block (pointer to the pclntab, then minpc/maxpc).
fn elf(version: PclntabVersion, text_start: u64, moduledata: bool) -> Vec<u8> {
    let mut f = vec![0u8; DATA];
    f[..4].copy_from_slice(b"\x7fELF");
    f[4..8].copy_from_slice(&[2, 1, 1, 0]);
    f[16..20].copy_from_slice(&[2, 0, 62, 0]); // ET_EXEC, EM_X86_64
    f[20] = 1;
    set64(&mut f, 24, entry(0));
    set64(&mut f, 32, 64); // e_phoff
    f[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
    f[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
    f[56..58].copy_from_slice(&2u16.to_le_bytes()); // e_phnum
    for (i, (_, code)) in FUNCS.iter().enumerate() {
        let at = CODE + 16 * i;
        f[at..at + 16].fill(0xcc);
        f[at..at + code.len()].copy_from_slice(code);
    }
    f.extend(pclntab(version, text_start));
    align(&mut f, 16);
    f.extend_from_slice(b"\xff Go buildinf:\x08\x02");
    f.resize(f.len() + 16, 0);
    f.push(9);
    f.extend_from_slice(b"go1.17.13");
    f.push(0);
    align(&mut f, 8);
    if moduledata {
        put64(&mut f, BASE + DATA as u64);
        f.resize(f.len() + 8 * 19, 0);
        put64(&mut f, entry(0)); // minpc
        put64(&mut f, entry(FUNCS.len() - 1) + 1); // maxpc
        put64(&mut f, entry(0)); // text
    }
    let len = f.len() as u64;
    for (k, (off, flags)) in [(0u64, 5u32), (DATA as u64, 4)].into_iter().enumerate() {
        let ph = 64 + 56 * k;
        let size = if k == 0 { DATA as u64 } else { len - DATA as u64 };
        f[ph..ph + 4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
        f[ph + 4..ph + 8].copy_from_slice(&flags.to_le_bytes());
        for (j, v) in [off, BASE + off, BASE + off, size, size, 0x1000].into_iter().enumerate() {
            set64(&mut f, ph + 8 + 8 * j, v);
        }
    }
    f
}

fn check(data: &[u8], version: PclntabVersion, source: TextStartSource) {
    let bin = GoBinary::parse(data).unwrap();
    let info = bin.info();
    assert_eq!((info.go_version.minor, info.abi), (17, Abi::Register));
    assert_eq!(info.symbol_source, SymbolSource::Pclntab);
    assert_eq!(info.pclntab_version, Some(version));
    assert_eq!(info.text_start_source, Some(source));
    let funcs = bin.functions();
    let want: Vec<(String, u64, u64)> =
        FUNCS.iter().enumerate().map(|(i, (n, c))| (n.to_string(), entry(i), c.len() as u64)).collect();
    let got: Vec<(String, u64, u64)> = funcs.into_iter().map(|f| (f.name, f.vaddr, f.size)).collect();
    assert_eq!(got, want, "{version:?}");
    let plan = tls::plan(&bin).unwrap();
    let rets: Vec<u64> = plan.read_returns.iter().map(|r| r.vaddr).collect();
    assert_eq!(rets, vec![entry(1) + 2, entry(1) + 4]);
    assert_eq!(plan.write_entry.file_offset, (CODE + 32) as u64);
    assert!(plan.keylog_entry.is_none());
}

#[test]
fn layout_go1_2() {
    check(&elf(PclntabVersion::V12, 0, false), PclntabVersion::V12, TextStartSource::AbsoluteEntries);
}

#[test]
fn layout_go1_16() {
    check(&elf(PclntabVersion::V116, 0, false), PclntabVersion::V116, TextStartSource::AbsoluteEntries);
}

#[test]
fn layout_go1_20_text_start_in_header() {
    let data = elf(PclntabVersion::V120, BASE + CODE as u64, false);
    check(&data, PclntabVersion::V120, TextStartSource::PcHeader);
}

#[test]
fn layout_go1_26_text_start_from_moduledata() {
    let data = elf(PclntabVersion::V120, 0, true);
    check(&data, PclntabVersion::V120, TextStartSource::Moduledata);
    // Without moduledata, symbols or sections the base is unknown: refuse, don't guess.
    let err = GoBinary::parse(&elf(PclntabVersion::V120, 0, false)).unwrap_err();
    assert!(err.to_string().contains("text start"), "{err}");
}
