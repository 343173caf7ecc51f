use std::time::Instant;
fn main() {
    let path = std::env::args().nth(1).unwrap();
    let src = std::fs::read_to_string(&path).unwrap();
    let c = ebmc::compile(&src).unwrap();
    let (plans, _) = ebmc::plan(&c.program).unwrap();
    for (m, p) in c.program.models.values().zip(&plans) {
        let l = ebmc::ir::program_to_ir(m);
        let params = ebmc::tensor::initialise(&l.params, 1);
        let mut s = ebmc::backend::Sampler::new(m, p, &params, 16, 3, Default::default()).unwrap();
        let t = Instant::now();
        for _ in 0..10 { s.sweep(); }
        let st = s.state();
        for (k, v) in &st { println!("{} {k} {:?} first {:?} acc {:?} ({:?})", m.name, v.shape, &v.data[..v.data.len().min(8)], s.acceptance(), t.elapsed()); }
        println!("energy {:?}", &s.energy(&st)[..4]);
    }
}
