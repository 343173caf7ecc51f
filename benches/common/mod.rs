//! Timing helpers and baselines shared by the benchmarks.

use dfdx::prelude::*;
use std::time::Instant;

/// Median seconds of `f` over `reps` runs after one warm-up.
pub fn median(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[reps / 2]
}

/// Median seconds of one raw dfdx forward pass of an MLP 2 -> 128 -> 128 -> 1
/// (swish) on 256 points: the baseline for steps on that energy.
pub fn mlp_forward(dev: &Cpu) -> f64 {
    let x: Tensor<(usize, usize), f32, _> = dev.sample_normal_like(&(256, 2));
    let w0: Tensor<(usize, usize), f32, _> = dev.sample_normal_like(&(2, 128));
    let w1: Tensor<(usize, usize), f32, _> = dev.sample_normal_like(&(128, 128));
    let w2: Tensor<(usize, usize), f32, _> = dev.sample_normal_like(&(128, 1));
    median(50, || {
        let a = x.clone().matmul(w0.clone());
        let a = a.clone() * a.sigmoid();
        let b = a.matmul(w1.clone());
        let b = b.clone() * b.sigmoid();
        std::hint::black_box(b.matmul(w2.clone()));
    })
}
