//! Sampling throughput, each figure beside a baseline measured in the same
//! run. Run with `cargo bench --bench sampling`. Prints; asserts nothing.
//!
//! (a) RBM 784x500, 100 chains: block-Gibbs sweeps per second, and the ratio
//!     of one sweep to the two raw dfdx matrix products it contains (limit 1.0).
//! (b) Ising 64x64 (periodic), 128 chains: spin updates per second, and the
//!     ratio to thrml's sampler on the same lattice in the same run (a
//!     Python/JAX script, `benches/thrml_ising.py`; skipped with a note when
//!     thrml is not installed).
//! (c) MLP energy 2 -> 128 -> 128 -> 1, 256 chains: Langevin steps per second,
//!     and the ratio to a forward pass of the same MLP in raw dfdx.

mod common;

use common::{median, mlp_forward};
use dfdx::prelude::*;
use ebmc::backend::Sampler;
use std::time::Instant;

fn setup_chains(src: &str, chains: usize) -> Sampler {
    let c = ebmc::compile(src).expect("bench model compiles");
    let (plans, _) = ebmc::plan(&c.program).expect("bench model plans");
    let model = c.program.models.values().next().expect("one model");
    let lowered = ebmc::ir::program_to_ir(model);
    let params = ebmc::tensor::initialise(&lowered.params, 1);
    Sampler::new(model, &plans[0], &params, chains, 1, Default::default()).expect("sampler builds")
}

/// Medians of `a`, of `b`, and of the per-pair ratio a/b, over `reps` alternating runs.
fn paired(reps: usize, mut a: impl FnMut(), mut b: impl FnMut()) -> (f64, f64, f64) {
    a();
    b();
    let mut ta = Vec::new();
    let mut tb = Vec::new();
    let mut r = Vec::new();
    for _ in 0..reps {
        let s = Instant::now();
        a();
        let x = s.elapsed().as_secs_f64();
        let s = Instant::now();
        b();
        let y = s.elapsed().as_secs_f64();
        ta.push(x);
        tb.push(y);
        r.push(x / y);
    }
    for v in [&mut ta, &mut tb, &mut r] {
        v.sort_by(f64::total_cmp);
    }
    (ta[reps / 2], tb[reps / 2], r[reps / 2])
}

/// thrml's spin updates per second on the same lattice and chain count,
/// from `benches/thrml_ising.py` (needs `pip install thrml`).
fn thrml_rate(side: usize, chains: usize) -> Result<f64, String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/thrml_ising.py");
    let out = std::process::Command::new("python3")
        .args([script, &side.to_string(), &chains.to_string(), "100", "5"])
        .output()
        .map_err(|e| format!("cannot run python3: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("thrml ").and_then(|r| r.trim().parse().ok()))
        .ok_or_else(|| format!("{script} printed no rate: {}", String::from_utf8_lossy(&out.stderr).trim()))
}

fn main() {
    let dev = Cpu::seed_from_u64(0);

    // (a) RBM
    let rbm = "model rbm { visible v : binary[784]; hidden h : binary[500];
        param W : real[784, 500] = normal(0, 0.01); param b : real[784]; param c : real[500];
        energy e = -(v @ W @ h) - b @ v - c @ h; }";
    let mut s = setup_chains(rbm, 100);
    let v: Tensor<(usize, usize), f32, _> = dev.sample_uniform_like(&(100, 784));
    let h: Tensor<(usize, usize), f32, _> = dev.sample_uniform_like(&(100, 500));
    let w: Tensor<(usize, usize), f32, _> = dev.sample_normal_like(&(784, 500));
    // dfdx is eager: each product is computed when called.
    let mut gemms = || {
        std::hint::black_box(v.clone().matmul(w.clone()));
        std::hint::black_box(h.clone().matmul(w.clone().permute::<_, Axes2<1, 0>>()));
    };
    // Sweep and baseline alternate, so load on the machine affects both alike;
    // the ratio is the median of per-pair ratios.
    let (sweep, gemm, ratio) = paired(40, || s.sweep(), &mut gemms);
    println!("(a) RBM 784x500, 100 chains");
    println!("    block-Gibbs sweep        {:>8.3} ms   {:>8.1} sweeps/s", sweep * 1e3, 1.0 / sweep);
    println!("    raw dfdx matmuls (2)     {:>8.3} ms", gemm * 1e3);
    println!("    sweep / matmuls          {:>8.2}x  (median of paired runs)", ratio);

    // (b) Ising: ebmc's timings bracket thrml's, so load on the machine shows in the spread.
    let ising = "model ising { const A = grid(64, 64, periodic: true); visible s : spin[4096]; param J : real = 0.4;
        energy e = -0.5 * J * (s @ A @ s); }";
    let (chains, sites) = (128, 4096.0);
    let mut s = setup_chains(ising, chains);
    let before = median(21, || s.sweep());
    let thrml = thrml_rate(64, chains);
    let after = median(21, || s.sweep());
    let rate = |t: f64| sites * chains as f64 / t / 1e6;
    println!("(b) Ising 64x64 periodic, {chains} chains, chromatic Gibbs (2 colours)");
    println!(
        "    sweep                    {:>8.3} ms   {:>8.1} M spin updates/s  (before thrml's run: {:.1})",
        after * 1e3,
        rate(after),
        rate(before)
    );
    match thrml {
        Ok(r) => {
            println!(
                "    thrml (JAX jit, CPU)                  {:>8.1} M spin updates/s  (benches/thrml_ising.py)",
                r / 1e6
            );
            let ebmc = rate((before + after) / 2.0) * 1e6;
            println!(
                "    ebmc / thrml             {:>8.2}x  (rate ratio; ebmc's sweep time the mean of both runs)",
                ebmc / r
            );
        }
        Err(why) => println!("    thrml not measured: {why}"),
    }

    // (c) Langevin on an MLP energy
    let mlp = "model ring { visible x : real[2]; net f = mlp(2 -> 128 -> 128 -> 1, act: swish);
        energy e = f(x) + 0.01 * sum(square(x)); sample { x: langevin(step: 0.01); } }";
    let mut s = setup_chains(mlp, 256);
    let step = median(50, || s.sweep());
    let forward = mlp_forward(&dev);
    println!("(c) Langevin, MLP 2->128->128->1 energy, 256 chains");
    println!("    step (energy gradient)   {:>8.3} ms   {:>8.1} steps/s", step * 1e3, 1.0 / step);
    println!("    raw dfdx forward pass    {:>8.3} ms", forward * 1e3);
    println!(
        "    step / forward           {:>8.2}x  (a gradient step is a forward and a backward pass)",
        step / forward
    );
}
