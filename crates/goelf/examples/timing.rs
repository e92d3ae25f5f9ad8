//! Times parse and plan on truncated copies of a binary (a debugging aid).
fn main() {
    let path = std::env::args().nth(1).unwrap();
    let data = std::fs::read(&path).unwrap();
    for frac in [1.0, 0.9, 0.5, 0.2] {
        let cut = (data.len() as f64 * frac) as usize;
        let t = std::time::Instant::now();
        let r = goelf::GoBinary::parse(&data[..cut]);
        let t1 = t.elapsed();
        let p = r.as_ref().map(|b| goelf::tls::plan(b).is_ok());
        println!("{frac}: parse {:?} total {:?} -> {:?}", t1, t.elapsed(), p.map_err(|e| e.to_string()));
    }
}
