//! Training throughput, each against a baseline measured in the same run.
//! `cargo bench --bench training`. Prints; asserts nothing.
//!
//! (a) One epoch of PCD-1 on 8000 random binary 784-dimensional rows, RBM
//!     with 500 hidden units, batch 100, against the raw dfdx matrix products
//!     the epoch contains. Per step: the persistent chains' sweep (v @ W and
//!     h @ W^T), the free energy's pre-activations for the data and for the
//!     samples (v @ W each), and the weight gradient summed over each batch
//!     (v^T @ sigmoid(...) each): 6 products of 100 x 784 x 500.
//! (b) Training steps per second on 8gaussians with an MLP energy
//!     2 -> 128 -> 128 -> 1 (swish), batch 256: denoising score matching, and
//!     PCD with 20 Langevin steps per update; against one raw dfdx forward
//!     pass of the same MLP on 256 points.
//!     `benches/continuous.rs` times such steps (and SSM, and width 512 at
//!     batch 1024) against JAX `jit` and against their matrix products.

mod common;

use common::{median, mlp_forward};
use dfdx::prelude::*;
use ebmc::tensor::HostTensor;
use rand::{Rng, SeedableRng};
use std::time::Instant;

fn main() {
    let src = "model rbm { visible v : binary[784]; hidden h : binary[500];
        param W : real[784, 500] = normal(0, 0.01); param b : real[784]; param c : real[500];
        energy e = -(v @ W @ h) - b @ v - c @ h; }
        train rbm { data = csv(\"unused.csv\") -> v; objective = pcd(k: 1, chains: 100); optimizer = sgd(lr: 0.01); batch = 100; }";
    let mut trainer = common::trainer(src, "rbm");
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let rows = 8000;
    let data: Vec<f32> = (0..rows * 784).map(|_| f32::from(u8::from(rng.r#gen::<bool>()))).collect();
    let batches: Vec<ebmc::tensor::Tensors> = (0..rows / 100)
        .map(|b| {
            [("v".to_string(), HostTensor::new(vec![100, 784], data[b * 100 * 784..(b + 1) * 100 * 784].to_vec()))]
                .into_iter()
                .collect()
        })
        .collect();
    let dev = Cpu::seed_from_u64(0);
    let v: Tensor<(usize, usize), f32, _> = dev.sample_uniform_like(&(100, 784));
    let h: Tensor<(usize, usize), f32, _> = dev.sample_uniform_like(&(100, 500));
    let w: Tensor<(usize, usize), f32, _> = dev.sample_normal_like(&(784, 500));
    let gemms = || {
        for _ in 0..3 {
            std::hint::black_box(v.clone().matmul(w.clone()));
        }
        std::hint::black_box(h.clone().matmul(w.clone().permute::<_, Axes2<1, 0>>()));
        for _ in 0..2 {
            std::hint::black_box(v.clone().permute::<_, Axes2<1, 0>>().matmul(h.clone()));
        }
    };
    trainer.step(&batches[0], 0.01, 1).expect("warm-up step");
    gemms();
    let mut epoch_times = Vec::new();
    let mut gemm_times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        for (i, b) in batches.iter().enumerate() {
            trainer.step(b, 0.01, i + 2).expect("step");
        }
        epoch_times.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        for _ in 0..batches.len() {
            gemms();
        }
        gemm_times.push(t.elapsed().as_secs_f64());
    }
    let ratios: Vec<f64> = epoch_times.iter().zip(&gemm_times).map(|(a, b)| a / b).collect();
    let mut sorted = ratios.clone();
    sorted.sort_by(f64::total_cmp);
    println!("(a) PCD-1 epoch, RBM 784x500, 8000 rows, batch 100 (80 steps)");
    println!("    epoch                    {:>8.3} s   {:>8.0} rows/s", epoch_times[2], rows as f64 / epoch_times[2]);
    println!("    raw dfdx products (6/step) {:>6.3} s", gemm_times[2]);
    println!("    epoch / products         {:>8.2}x  (median of 5 paired runs)", sorted[2]);
    continuous_steps(&dev);
}

fn continuous_steps(dev: &Cpu) {
    let rows = ebmc::runtime::data::toy("8gaussians", 256 * 20, 1);
    let batches: Vec<ebmc::tensor::Tensors> = rows
        .chunks(256)
        .map(|c| {
            [("x".to_string(), HostTensor::new(vec![256, 2], c.iter().flatten().map(|v| *v as f32).collect()))]
                .into_iter()
                .collect()
        })
        .collect();
    let forward = mlp_forward(dev);
    println!("(b) 8gaussians, MLP 2->128->128->1 energy (swish), batch 256");
    println!("    raw dfdx forward pass    {:>8.3} ms", forward * 1e3);
    for (what, objective) in
        [("DSM (sigma 0.1)", "dsm(sigma: 0.1)"), ("PCD, 20 Langevin steps", "pcd(k: 20, chains: 256, step: 0.01)")]
    {
        let src = format!(
            "model ring {{ visible x : real[2]; net f = mlp(2 -> 128 -> 128 -> 1, act: swish); energy e = f(x); }}
             train ring {{ data = toy(\"8gaussians\") -> x; objective = {objective}; optimizer = adam(lr: 1e-3); batch = 256; }}"
        );
        let mut trainer = common::trainer(&src, "ring");
        trainer.prepare(&batches[0]).expect("data fits");
        let mut i = 0;
        let step = median(40, || {
            trainer.step(&batches[i % batches.len()], 1e-3, i + 1).expect("step");
            i += 1;
        });
        println!(
            "    {what:<24} {:>8.3} ms   {:>8.1} steps/s   {:>6.1}x a forward pass",
            step * 1e3,
            1.0 / step,
            step / forward
        );
    }
}
