//! Writes the CSV data sets of the model zoo by sampling the zoo's models at
//! known parameters (and, for the JEM example, Gaussian blobs), using ebmc as
//! a library. Run from the repository root:
//!
//!     cargo run --release --example generate_lattice_data
//!
//! Training `models/ising.ebm` on `data/ising_32x32.csv` should then recover
//! J = 0.3 and a field near 0, and `models/potts_learned.ebm` on
//! `data/potts_4x4.csv` the interaction matrix K below.

use ebmc::tensor::{HostTensor, Tensors};
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};

fn sample(
    file: &str,
    params: &[(&str, Vec<f32>)],
    rows: usize,
    sweeps: usize,
) -> (ebmc::analysis::program::Model, Tensors) {
    let source = std::fs::read_to_string(file).expect("run from the repository root");
    let compiled = ebmc::compile(&source).expect("zoo model compiles");
    let (plans, _) = ebmc::plan(&compiled.program).expect("zoo model plans");
    let model = compiled.program.models.values().next().expect("one model").clone();
    let lowered = ebmc::ir::program_to_ir(&model);
    let mut values = ebmc::tensor::initialise(&lowered.params, 0);
    for (name, data) in params {
        let t = values.get_mut(*name).expect("parameter exists");
        *t = HostTensor::new(t.shape.clone(), data.clone());
    }
    let mut sampler =
        ebmc::backend::Sampler::new(&model, &plans[0], &values, rows, 2024, Default::default()).expect("sampler");
    for _ in 0..sweeps {
        sampler.sweep();
    }
    (model, sampler.state())
}

fn write(path: &str, model: &ebmc::analysis::program::Model, state: &Tensors) {
    let (names, rows) = ebmc::runtime::export::visible_table(model, state);
    std::fs::write(path, ebmc::runtime::export::csv(&names, &rows)).expect("writable data/");
    println!("wrote {} rows to {path}", rows.len());
}

fn main() {
    let (m, s) = sample("models/ising.ebm", &[("J", vec![0.3]), ("field", vec![0.0])], 100, 400);
    write("data/ising_32x32.csv", &m, &s);
    let (m, s) = sample("models/potts.ebm", &[("J", vec![0.8]), ("field", vec![0.3, 0.0, -0.3])], 400, 400);
    write("data/potts_8x8.csv", &m, &s);
    let k = vec![0.9, -0.2, 0.1, -0.2, 0.6, 0.0, 0.1, 0.0, 0.8];
    let (m, s) = sample("models/potts_learned.ebm", &[("K", k), ("field", vec![0.2, 0.0, -0.2])], 400, 400);
    write("data/potts_4x4.csv", &m, &s);
    let mut rng = rand::rngs::StdRng::seed_from_u64(16);
    let w: Vec<f32> = (0..256).map(|i| if i / 16 == i % 16 { 0.0 } else { rng.gen_range(-0.4..0.4) }).collect();
    let w: Vec<f32> = (0..256).map(|i| 0.5 * (w[i] + w[(i % 16) * 16 + i / 16])).collect();
    let field: Vec<f32> = (0..16).map(|_| rng.gen_range(-0.3..0.3)).collect();
    let (m, s) = sample("models/bm.ebm", &[("W", w), ("field", field)], 1000, 300);
    write("data/spins16.csv", &m, &s);
    let (m, s) = sample("models/ising_triangular.ebm", &[("J", vec![-0.3])], 400, 400);
    write("data/triangular.csv", &m, &s);

    // Ten Gaussian blobs on a circle of radius 3, labelled 0..9.
    let noise = Normal::new(0.0, 0.35).expect("std > 0");
    let mut text = String::from("x0,x1,y\n");
    for i in 0..2000 {
        let k = i % 10;
        let a = k as f64 * std::f64::consts::TAU / 10.0;
        text.push_str(&format!(
            "{:.4},{:.4},{k}\n",
            3.0 * a.cos() + noise.sample(&mut rng),
            3.0 * a.sin() + noise.sample(&mut rng)
        ));
    }
    std::fs::write("data/points_labelled.csv", text).expect("writable data/");
    println!("wrote 2000 rows to data/points_labelled.csv");
}
