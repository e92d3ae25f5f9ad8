//! Times parse + plan, repeated (a debugging aid for unoptimised builds).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test/tool code: panics are failures
fn main() {
    let path = std::env::args().nth(1).unwrap();
    let n: u32 = std::env::args().nth(2).map_or(20, |s| s.parse().unwrap());
    let data = std::fs::read(&path).unwrap();
    let t = std::time::Instant::now();
    for _ in 0..n {
        let bin = goelf::GoBinary::parse(&data).unwrap();
        let _ = goelf::tls::plan(&bin);
    }
    println!("{:?} per parse+plan", t.elapsed() / n);
}
