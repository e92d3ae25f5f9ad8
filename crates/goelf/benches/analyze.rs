//! Times goelf's whole job (parse + TLS plan: symbols, RET offsets, file offsets) on the
//! largest Go binaries with crypto/tls it can find, stripped. Plain `Instant` harness.
//!
//! `cargo bench -p goelf` — or name binaries: `TLSTAP_BENCH_BINARY=/path/a:/path/b`.
//! Candidates otherwise: Go programs in /usr/local/bin, /usr/lib/google-cloud-sdk/bin,
//! /usr/bin, the Debian packages bench/run unpacks (rclone, prometheus: ≥ 50 MB, stripped) in
//! ~/.cache/tlstap/bench/x, and the `go` commands of the toolchains in ~/.cache/tlstap/go.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test/tool code: panics are failures

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const ROUNDS: usize = 30;
const LIMIT_MS: f64 = 100.0;

fn candidates() -> Vec<PathBuf> {
    if let Ok(list) = std::env::var("TLSTAP_BENCH_BINARY") {
        return list.split(':').filter(|s| !s.is_empty()).map(PathBuf::from).collect();
    }
    let mut dirs: Vec<PathBuf> =
        ["/usr/local/bin", "/usr/lib/google-cloud-sdk/bin", "/usr/bin"].iter().map(PathBuf::from).collect();
    if let Ok(home) = std::env::var("HOME") {
        if let Ok(entries) = std::fs::read_dir(Path::new(&home).join(".cache/tlstap/bench/x")) {
            dirs.extend(entries.flatten().map(|e| e.path().join("usr/bin")));
        }
        if let Ok(entries) = std::fs::read_dir(Path::new(&home).join(".cache/tlstap/go")) {
            dirs.extend(entries.flatten().map(|e| e.path().join("go/bin")));
        }
    }
    let mut files: Vec<(u64, PathBuf)> = dirs
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flat_map(|it| it.flatten())
        .filter_map(|e| Some((e.metadata().ok().filter(|m| m.is_file())?.len(), e.path())))
        .filter(|(len, _)| *len > 4 << 20)
        .collect();
    files.sort_by_key(|f| std::cmp::Reverse(f.0));
    files.dedup_by_key(|f| f.0);
    files.into_iter().map(|f| f.1).collect()
}

/// A stripped copy (strip --strip-all) of `path` in a temp dir, or the file itself if it
/// has no .symtab already or strip is unavailable.
fn stripped(path: &Path, data: Vec<u8>) -> (Vec<u8>, &'static str) {
    let has_symtab = goelf::GoBinary::parse(&data).is_ok_and(|b| b.info().has_symtab);
    if !has_symtab {
        return (data, "already stripped");
    }
    let out = std::env::temp_dir().join(format!("goelf-bench-{}", std::process::id()));
    let ok = Command::new("strip").arg("--strip-all").arg("-o").arg(&out).arg(path).status().is_ok_and(|s| s.success());
    let result = if ok { std::fs::read(&out).ok() } else { None };
    let _ = std::fs::remove_file(&out);
    match result {
        Some(d) => (d, "strip --strip-all copy"),
        None => (data, "UNSTRIPPED (strip failed)"),
    }
}

/// Times parse+plan of `path` (stripped); returns the median in ms, or None if it is not a
/// Go binary with crypto/tls.
fn measure(path: &Path) -> Option<f64> {
    let data = std::fs::read(path).ok()?;
    let bin = goelf::GoBinary::parse(&data).ok()?;
    goelf::tls::plan(&bin).ok()?;
    drop(bin);
    let (data, how) = stripped(path, data);
    let mut times: Vec<Duration> = Vec::with_capacity(ROUNDS);
    let mut rets = 0;
    for _ in 0..ROUNDS {
        let t = Instant::now();
        let bin = goelf::GoBinary::parse(&data).ok()?;
        let plan = goelf::tls::plan(&bin).ok()?;
        times.push(t.elapsed());
        rets = plan.read_returns.len();
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let (min, median, max) = (ms(times[0]), ms(times[ROUNDS / 2]), ms(times[ROUNDS - 1]));
    let bin = goelf::GoBinary::parse(&data).ok()?;
    let t = Instant::now();
    let nfuncs = bin.functions().len();
    let all = ms(t.elapsed());
    let i = bin.info();
    println!(
        "{} ({:.1} MB, {how}, {} pie={} {:?}, text start from {:?}, {nfuncs} functions): \
         parse+plan min {min:.2} ms, median {median:.2} ms, max {max:.2} ms ({rets} RETs); \
         listing all functions {all:.1} ms",
        path.display(),
        data.len() as f64 / 1e6,
        i.go_version,
        i.pie,
        i.symbol_source,
        i.text_start_source,
    );
    Some(median)
}

fn main() {
    let mut medians = Vec::new();
    for path in candidates() {
        if let Some(m) = measure(&path) {
            medians.push(m);
        }
        if medians.len() == 3 {
            break;
        }
    }
    // The newest toolchain's own `go` command: Go 1.26+ layout (text start via moduledata).
    if std::env::var("TLSTAP_BENCH_BINARY").is_err() {
        if let Ok(home) = std::env::var("HOME") {
            let go = Path::new(&home).join(".cache/tlstap/go/1.27/go/bin/go");
            if let Some(m) = measure(&go) {
                medians.push(m);
            }
        }
    }
    if medians.is_empty() {
        eprintln!("no Go binary with crypto/tls found; set TLSTAP_BENCH_BINARY");
        std::process::exit(1);
    }
    let worst = medians.iter().copied().fold(0.0, f64::max);
    if worst > LIMIT_MS {
        eprintln!("median {worst:.1} ms exceeds the {LIMIT_MS} ms budget");
        std::process::exit(1);
    }
}
