fn main() {
    let src = std::fs::read_to_string(std::env::args().nth(1).unwrap()).unwrap();
    let var = std::env::args().nth(2).unwrap();
    let c = ebmc::compile(&src).unwrap();
    let m = c.program.models.values().next().unwrap();
    let mut l = ebmc::ir::program_to_ir(m);
    print!("{}", l.ir.listing(&[("total".into(), l.total)]));
    let g = l.ir.grad(l.total, &var).unwrap();
    print!("{}", l.ir.listing(&[("grad".into(), g)]));
    for (i, n) in l.ir.nodes.iter().enumerate() { println!("{i} {:?} {:?}", n.op, n.shape); }
}
