//! JEM on a small separable 2-D problem: the classifier is accurate and its
//! marginal energy ranks held-out in-distribution points below far-away ones.

use ebmc::backend::DeviceKind;
use ebmc::tensor::HostTensor;
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

fn blobs(n: usize, seed: u64) -> ebmc::runtime::data::Dataset {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let noise = Normal::new(0.0, 0.5).unwrap();
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for i in 0..n {
        let k = i % 3;
        let a = k as f64 * std::f64::consts::TAU / 3.0;
        x.push((3.0 * a.cos() + noise.sample(&mut rng)) as f32);
        x.push((3.0 * a.sin() + noise.sample(&mut rng)) as f32);
        y.extend((0..3).map(|j| f32::from(u8::from(j == k))));
    }
    ebmc::runtime::data::Dataset {
        rows: n,
        vars: [("x".to_string(), HostTensor::new(vec![n, 2], x)), ("y".to_string(), HostTensor::new(vec![n, 3], y))]
            .into_iter()
            .collect(),
    }
}

#[test]
fn jem_classifies_and_its_marginal_energy_detects_far_points() {
    let src = "model jem { visible x : real[2]; visible y : categorical(3); net f = mlp(2 -> 32 -> 3, act: swish);
        energy e = -(f(x) @ y); energy prior = 0.05 * sum(square(x)); }
      train jem { data = csv(\"unused.csv\") -> (x, y); objective = jem(k: 20, step: 0.05, noise: 0.3, buffer: 2000);
        optimizer = adam(lr: 0.003); batch = 64; epochs = 8; seed = 2; }";
    let c = ebmc::compile(src).unwrap();
    let (plans, _) = ebmc::plan(&c.program).unwrap();
    let model = c.program.models["jem"].clone();
    let graph = ebmc::analysis::graph::program_to_graph(&model);
    let out = std::env::temp_dir().join(format!("ebmc-jem-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let opts = ebmc::runtime::train::RunOptions {
        epochs: 8,
        seed: 2,
        out: out.clone(),
        resume: false,
        device: DeviceKind::Cpu,
    };
    ebmc::runtime::train::run(
        src,
        &graph,
        &plans[0],
        &c.program.trains["jem"],
        &blobs(1500, 1),
        None,
        &opts,
        &mut |_| {},
    )
    .unwrap();
    let params = ebmc::runtime::train::load_params(&out).unwrap();
    std::fs::remove_dir_all(&out).unwrap();

    // Blobs 3 apart with noise 0.5: the Bayes error is below 0.1%; 95% is a low bar a broken classifier misses.
    let test = blobs(600, 7);
    let (accuracy, ece) =
        ebmc::runtime::evaluate::classification(&model, &plans[0], &params, &test.vars, DeviceKind::Cpu).unwrap();
    assert!(accuracy > 0.95, "accuracy {accuracy}");
    assert!(ece < 0.1, "expected calibration error {ece}");

    // Marginal energy (label summed out) of held-out points against points at radius 10.
    let inputs: ebmc::tensor::Tensors = [("x".to_string(), test.vars["x"].clone())].into_iter().collect();
    let summed = ebmc::runtime::evaluate::summed_for(&plans[0], &["x".to_string()]);
    let e_in =
        ebmc::backend::free_energy(&model, &plans[0].lowered, &params, &summed, &inputs, DeviceKind::Cpu).unwrap();
    let far: Vec<f32> = (0..600)
        .flat_map(|i| {
            let a = i as f64 * 0.0105;
            [(10.0 * a.cos()) as f32, (10.0 * a.sin()) as f32]
        })
        .collect();
    let far: ebmc::tensor::Tensors = [("x".to_string(), HostTensor::new(vec![600, 2], far))].into_iter().collect();
    let e_out = ebmc::backend::free_energy(&model, &plans[0].lowered, &params, &summed, &far, DeviceKind::Cpu).unwrap();
    // AUROC: the probability that a far point scores a higher energy than an in-distribution one.
    let wins: usize = e_out.iter().map(|o| e_in.iter().filter(|i| o > *i).count()).sum();
    let auroc = wins as f64 / (e_in.len() * e_out.len()) as f64;
    assert!(auroc > 0.95, "AUROC {auroc}");
}
