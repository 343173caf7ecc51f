fn main() {
    let src = "model ising { const A = grid(6, 6, periodic: true); visible s : spin[36]; param J : real; param field : real;
           energy e = -0.5 * J * (s @ A @ s) - field * sum(s); }
         train ising { data = csv(\"unused.csv\") -> s; objective = pl; optimizer = adam(lr: 0.05); batch = 50; epochs = 40; }";
    let c = ebmc::compile(src).unwrap();
    let (plans, _) = ebmc::plan(&c.program).unwrap();
    let m = &c.program.models["ising"];
    let t = &c.program.trains["ising"];
    for j0 in [0.0f32, 0.1] {
        let mut p = ebmc::tensor::initialise(&ebmc::ir::program_to_ir(m).params, 0);
        p.get_mut("J").unwrap().data[0] = j0;
        let mut tr = ebmc::backend::Trainer::new(m, &plans[0], t, &p, &Default::default(), 1, Default::default()).unwrap();
        let data: Vec<f32> = (0..50 * 36).map(|i| if (i / 36) % 3 == 0 { 1.0 } else if i % 2 == 0 { 1.0 } else { -1.0 }).collect();
        let batch: ebmc::tensor::Tensors = [("s".to_string(), ebmc::tensor::HostTensor::new(vec![50, 36], data))].into_iter().collect();
        let r = tr.step(&batch, 0.05, 1).unwrap();
        println!("J0 {j0}: {:?} -> {:?}", r, tr.params());
    }
}
