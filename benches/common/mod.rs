//! Timing helpers and baselines shared by the benchmarks; each bench uses some of them.
#![allow(dead_code)]

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

/// Median seconds of one `m×k×n` product by the `gemm` crate (what ebmc's
/// compiled steps call) over `reps` runs, with either operand stored
/// transposed: `(k, m)` or `(n, k)`, row-major.
pub fn gemm_product(
    (m, k, n): (usize, usize, usize),
    (lhs_t, rhs_t): (bool, bool),
    parallelism: gemm::Parallelism,
    reps: usize,
) -> f64 {
    let lhs: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
    let rhs: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
    let mut out = vec![0.0f32; m * n];
    let s = |x: usize| x as isize;
    let (lhs_cs, lhs_rs) = if lhs_t { (s(m), 1) } else { (1, s(k)) };
    let (rhs_cs, rhs_rs) = if rhs_t { (s(k), 1) } else { (1, s(n)) };
    median(reps, || {
        // SAFETY: every operand holds its extents under the strides given, and none overlaps another.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                out.as_mut_ptr(),
                1,
                s(n),
                false,
                lhs.as_ptr(),
                lhs_cs,
                lhs_rs,
                rhs.as_ptr(),
                rhs_cs,
                rhs_rs,
                0.0,
                1.0,
                false,
                false,
                false,
                parallelism,
            );
        }
        std::hint::black_box(&out);
    })
}

/// A CPU trainer for model `name` of `src` (its train block's options), from
/// parameters drawn with seed 1.
pub fn trainer(src: &str, name: &str) -> ebmc::backend::Trainer {
    let compiled = ebmc::compile(src).expect("bench model compiles");
    let (plans, _) = ebmc::plan(&compiled.program).expect("plans");
    let (model, train) = (&compiled.program.models[name], &compiled.program.trains[name]);
    let plan = plans.iter().find(|p| p.model == name).expect("the model's plan");
    let params = ebmc::tensor::initialise(&ebmc::ir::program_to_ir(model).params, 1);
    ebmc::backend::Trainer::new(model, plan, train, &params, &Default::default(), 1, Default::default())
        .expect("trainer")
}
