fn main() {
    let src = "model rbm { visible v : binary[7]; hidden h : binary[5];
        param W : real[7, 5]; param b : real[7]; param c : real[5];
        energy e = -(v @ W @ h) - b @ v - c @ h; }";
    let c = ebmc::compile(src).unwrap();
    let (plans, _) = ebmc::plan(&c.program).unwrap();
    let m = &c.program.models["rbm"];
    let mut l = ebmc::ir::program_to_ir(m);
    let f = ebmc::plan::sum_out(&mut l.ir, l.total, m.variable("h").unwrap()).0;
    for p in ["W", "b", "c"] {
        let g = l.ir.grad_param(f, p).unwrap();
        println!("{p}: {}", l.ir.show(g));
        print!("{}", l.ir.listing(&[(p.to_string(), g)]));
    }
    let _ = plans;
}
