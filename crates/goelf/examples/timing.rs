//! Times parse and plan (a debugging aid).
fn main() {
    let path = std::env::args().nth(1).unwrap();
    let data = std::fs::read(&path).unwrap();
    let bin = goelf::GoBinary::parse(&data).unwrap();
    for _ in 0..3 {
        let t = std::time::Instant::now();
        let p = goelf::tls::plan(&bin).is_ok();
        let t1 = t.elapsed();
        let t = std::time::Instant::now();
        let f = bin.function(goelf::tls::CONN_READ).unwrap();
        let t2 = t.elapsed();
        let t = std::time::Instant::now();
        let r = bin.ret_addresses(&f).unwrap().len();
        let t3 = t.elapsed();
        println!("plan {t1:?} {p} lookup {t2:?} rets {t3:?} {r}");
    }
}
