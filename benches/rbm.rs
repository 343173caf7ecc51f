//! The RBM PCD-1 epoch against the floor of its products, in one run:
//! `cargo bench --bench rbm`. Prints; asserts nothing.
//!
//! One epoch of PCD-1 on 8000 random binary 784-dimensional rows, RBM with
//! 500 hidden units, at batch 100 (80 steps) and batch 10 (800 steps), as
//! many persistent chains as rows a batch. A step holds six products: the
//! chains' sweep (`v @ W`, `h @ Wᵀ`), the free energy's pre-activations for
//! the data and for the samples (`v @ W` each) and the weight gradient
//! summed over each (`vᵀ σ` each). The floor is the time of those six
//! products a step, times the steps: numpy's (OpenBLAS on all cores,
//! `benches/numpy_gemm.py`, shelled out to `python3` in this run), and the
//! `gemm` crate's on one thread. Without numpy the bench says so and the
//! `gemm` crate's floor stands alone.

mod common;

use ebmc::tensor::HostTensor;
use rand::{Rng, SeedableRng};
use std::time::Instant;

/// A product `(m, k, n)`, its operands stored transposed or not, and how many a step holds.
type Product = ((usize, usize, usize), (bool, bool), usize);

/// A step's six products at batch `b`.
fn products(b: usize) -> [Product; 3] {
    [((b, 784, 500), (false, false), 3), ((b, 500, 784), (false, true), 1), ((784, b, 500), (true, false), 2)]
}

/// Median seconds of one epoch at batch `b`, over `reps` epochs after a warm-up step.
fn epoch(data: &[f32], rows: usize, b: usize, reps: usize) -> f64 {
    let src = format!(
        "model rbm {{ visible v : binary[784]; hidden h : binary[500];
        param W : real[784, 500] = normal(0, 0.01); param b : real[784]; param c : real[500];
        energy e = -(v @ W @ h) - b @ v - c @ h; }}
        train rbm {{ data = csv(\"unused.csv\") -> v; objective = pcd(k: 1, chains: {b}); optimizer = sgd(lr: 0.01); batch = {b}; }}"
    );
    let mut trainer = common::trainer(&src, "rbm");
    let batches: Vec<ebmc::tensor::Tensors> = (0..rows / b)
        .map(|i| {
            [("v".to_string(), HostTensor::new(vec![b, 784], data[i * b * 784..(i + 1) * b * 784].to_vec()))]
                .into_iter()
                .collect()
        })
        .collect();
    trainer.step(&batches[0], 0.01, 1).expect("warm-up step");
    let mut times: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            for (i, batch) in batches.iter().enumerate() {
                trainer.step(batch, 0.01, i + 2).expect("step");
            }
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[reps / 2]
}

fn main() {
    let rows = 8000;
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let data: Vec<f32> = (0..rows * 784).map(|_| f32::from(u8::from(rng.r#gen::<bool>()))).collect();
    common::print_machine();
    println!("PCD-1 epoch, RBM 784x500, {rows} random rows; floor = the 6 products a step x steps");
    for b in [100, 10] {
        let steps = rows / b;
        let products = products(b);
        let per_step = |time: &dyn Fn(&Product) -> f64| products.iter().map(|p| time(p) * p.2 as f64).sum::<f64>();
        let gemm_one = per_step(&|p| common::gemm_product(p.0, p.1, gemm::Parallelism::None, 41));
        let numpy = common::numpy_products(&products.map(|(shape, layout, _)| (shape, layout)));
        let epoch = epoch(&data, rows, b, 5);
        println!("  batch {b} ({steps} steps)");
        println!("    epoch                          {:>8.3} s   {:>8.0} rows/s", epoch, rows as f64 / epoch);
        let floor = gemm_one * steps as f64;
        println!("    floor, gemm crate x1           {floor:>8.3} s   epoch / floor {:>6.2}x", epoch / floor);
        match numpy {
            Ok(t) => {
                let floor = products.iter().zip(&t).map(|(p, t)| t * p.2 as f64).sum::<f64>() * steps as f64;
                println!("    floor, numpy (OpenBLAS)        {floor:>8.3} s   epoch / floor {:>6.2}x", epoch / floor);
            }
            Err(why) => println!("    numpy not measured ({why}): the gemm crate's floor stands alone"),
        }
    }
}
