//! Continuous training steps against JAX `jit` on the CPU, in one run.
//! `cargo bench --bench continuous`. Prints; asserts nothing.
//!
//! Energy `mlp(2 -> W -> W -> 1, act: swish)` on 8gaussians, Adam (lr 1e-3),
//! batch B, for (W, B) = (128, 256) and (512, 1024); three objectives:
//!
//! - DSM, σ 0.1: `½ |σ ∇ₓE(x + σz) − z|²`, mean over the batch;
//! - SSM, one Gaussian projection, variance reduced: `½ |∇ₓE|² − vᵀ(∇²ₓE)v`;
//! - PCD, 20 Langevin steps an update (step 0.05, noise sqrt(2 · 0.05), no
//!   clipping) on B chains restarted from a replay buffer (10000 rows, 5%
//!   fresh), energy penalty α 0.1: the options of
//!   `models/toy/8gaussians_pcd.ebm` but k 20.
//!
//! ebmc: the model compiled from source, `Trainer::step` timed (median after
//! two warm-up steps). JAX: the same step, jitted, in `benches/jax_steps.py`
//! (median after two calls, the first compiling; XLA's default CPU threading,
//! described in the output; ebmc uses all of rayon's threads), starting from
//! ebmc's initial weights on the same batches: the first step's loss of each
//! side is printed as a check that both compute the same objective. Each
//! step is timed on ebmc, then on JAX, then its floor, one after another, so
//! that load on the machine affects all three alike.
//! Ratios are ebmc / JAX (≤ 1.0: ebmc at least as fast) and, in any
//! case, ebmc / floor, where the floor is the step's matrix products alone,
//! each timed by the `gemm` crate (the faster of all rayon threads and one) in
//! this run. Without an importable `jax` the bench says so and prints the
//! floor ratio alone.
//!
//! The floor counts the products reverse-mode differentiation needs, per
//! batch of B rows, with a1 = x W0, a2 = h1 W1, E = h2 W2:
//! - ∇ₓE: forward x W0, h1 W1 (E itself is not needed: dE/dh2 = W2ᵀ), backward
//!   δ2 W1ᵀ, δ1 W0ᵀ;
//! - the parameter gradient of a loss of ∇ₓE: through the backward pass, per
//!   product the adjoint of its left operand and the weight's gradient
//!   (adj W0, adjᵀ δ1, adj W1, adjᵀ δ2), and through the forward pass
//!   h1ᵀ adj, adj W1ᵀ, xᵀ adj;
//! - SSM adds the tangent along v of the forward and backward passes (v W0,
//!   ḣ1 W1, δ̇2 W1ᵀ, δ̇1 W0ᵀ) and their reverse (two products each, one for v W0);
//! - PCD: ∇ₓE (4 products) per Langevin step, then E on the data and on the
//!   samples (3 products each) and its reverse (5 each).
//!
//! Counting the W x W products (B x W x W each): DSM 6, SSM 12, PCD 46; the
//! table lists every product's count. Elementwise work is not in the floor.
//! The floor is the `gemm` crate's, not the machine's: XLA's own GEMM can be
//! faster than it, so JAX / floor may fall below 1.

mod common;

use ebmc::tensor::HostTensor;
use std::collections::BTreeMap;
use std::time::Instant;

/// Seconds of timed steps per measurement (at least `MIN_REPS` steps).
const SECONDS: f64 = 2.0;
const MIN_REPS: usize = 5;
/// Batches of data cycled through.
const BATCHES: usize = 20;

const CONFIGS: [(usize, usize); 2] = [(128, 256), (512, 1024)];

#[derive(Clone, Copy, PartialEq)]
enum Obj {
    Dsm,
    Ssm,
    Pcd,
}

impl Obj {
    const ALL: [Obj; 3] = [Obj::Dsm, Obj::Ssm, Obj::Pcd];

    fn name(self) -> &'static str {
        match self {
            Obj::Dsm => "dsm",
            Obj::Ssm => "ssm",
            Obj::Pcd => "pcd",
        }
    }

    fn source(self, rows: usize) -> String {
        match self {
            Obj::Dsm => "dsm(sigma: 0.1)".into(),
            Obj::Ssm => "ssm(projections: 1, directions: gaussian, variance_reduced: true)".into(),
            Obj::Pcd => format!("pcd(k: 20, chains: {rows}, step: 0.05, buffer: 10000, reinit: 0.05, alpha: 0.1)"),
        }
    }
}

/// A product `(m, k) × (k, n)`, each operand stored as read or transposed.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Product {
    m: usize,
    k: usize,
    n: usize,
    lhs_t: bool,
    rhs_t: bool,
}

const fn p(m: usize, k: usize, n: usize, lhs_t: bool, rhs_t: bool) -> Product {
    Product { m, k, n, lhs_t, rhs_t }
}

/// The matrix products of one training step (see the module comment), with counts.
fn products(obj: Obj, w: usize, b: usize) -> BTreeMap<Product, usize> {
    let (n, t) = (false, true);
    // ∇ₓE on b rows: forward to a2, backward to x.
    let grad_x = [p(b, 2, w, n, n), p(b, w, w, n, n), p(b, w, w, n, t), p(b, w, 2, n, t)];
    // Reverse through the backward pass: adj δ1 = adj W0, dW0 = adjᵀ δ1, adj δ2 = adj W1, dW1 = adjᵀ δ2.
    let rev_backward = [p(b, 2, w, n, n), p(2, b, w, t, n), p(b, w, w, n, n), p(w, b, w, t, n)];
    // Reverse through the forward pass to a2: dW1 = h1ᵀ adj, adj h1 = adj W1ᵀ, dW0 = xᵀ adj.
    let rev_forward = [p(w, b, w, t, n), p(b, w, w, n, t), p(2, b, w, t, n)];
    // The tangent along v of ∇ₓE and the reverse of each tangent product.
    let tangent = [p(b, 2, w, n, n), p(b, w, w, n, n), p(b, w, w, n, t), p(b, w, 2, n, t)];
    let rev_tangent = [
        p(b, 2, w, n, n),
        p(2, b, w, t, n),
        p(b, w, w, n, n),
        p(w, b, w, t, n),
        p(b, w, w, n, t),
        p(w, b, w, t, n),
        p(2, b, w, t, n),
    ];
    // The energy's last layer and its reverse: E = h2 W2, dW2 = h2ᵀ adj, adj h2 = adj W2ᵀ.
    let energy = [p(b, w, 1, n, n), p(w, b, 1, t, n), p(b, 1, w, n, t)];
    let mut out = BTreeMap::new();
    let mut add = |list: &[Product], times: usize| {
        for q in list {
            *out.entry(*q).or_insert(0) += times;
        }
    };
    match obj {
        Obj::Dsm => {
            add(&grad_x, 1);
            add(&rev_backward, 1);
            add(&rev_forward, 1);
        }
        Obj::Ssm => {
            add(&grad_x, 1);
            add(&tangent, 1);
            add(&rev_backward, 1);
            add(&rev_forward, 1);
            add(&rev_tangent, 1);
        }
        Obj::Pcd => {
            // Langevin steps need ∇ₓE only; the loss needs E on data and samples and its reverse.
            add(&grad_x, 20);
            add(&grad_x[..2], 2);
            add(&energy, 2);
            add(&rev_forward, 2);
        }
    }
    out
}

/// Seconds of one product by the `gemm` crate: the faster of all rayon threads and one.
fn gemm_seconds(q: Product) -> f64 {
    let reps = if q.m * q.k * q.n > 10_000_000 { 11 } else { 41 };
    let time = |parallelism| common::gemm_product((q.m, q.k, q.n), (q.lhs_t, q.rhs_t), parallelism, reps);
    time(gemm::Parallelism::Rayon(rayon::current_num_threads())).min(time(gemm::Parallelism::None))
}

/// Median seconds of `f` after two warm-up calls, over `SECONDS` of calls (at least `MIN_REPS`), and the count.
fn timed(f: impl FnMut()) -> (f64, usize) {
    common::timed(SECONDS, (MIN_REPS, 200), f)
}

/// ebmc's median seconds per `Trainer::step`, the steps timed, and the first step's loss.
fn ebmc_step(obj: Obj, w: usize, b: usize, rows: &[Vec<f64>]) -> (f64, usize, f64) {
    let src = format!(
        "model ring {{ visible x : real[2]; net f = mlp(2 -> {w} -> {w} -> 1, act: swish); energy e = f(x); }}
         train ring {{ data = toy(\"8gaussians\", n: {n}) -> x; objective = {objective};
                       optimizer = adam(lr: 1e-3); batch = {b}; }}",
        n = rows.len(),
        objective = obj.source(b)
    );
    let mut trainer = common::trainer(&src, "ring");
    let batches: Vec<ebmc::tensor::Tensors> = rows
        .chunks(b)
        .take(BATCHES)
        .map(|c| {
            [("x".to_string(), HostTensor::new(vec![b, 2], c.iter().flatten().map(|v| *v as f32).collect()))]
                .into_iter()
                .collect()
        })
        .collect();
    let all: ebmc::tensor::Tensors =
        [("x".to_string(), HostTensor::new(vec![rows.len(), 2], rows.iter().flatten().map(|v| *v as f32).collect()))]
            .into_iter()
            .collect();
    trainer.prepare(&all).expect("data fits");
    let mut i = 0;
    let mut first = f64::NAN;
    let (t, reps) = timed(|| {
        let report = trainer.step(&batches[i % batches.len()], 1e-3, i + 1).expect("step");
        if i == 0 {
            first = report.loss;
        }
        i += 1;
    });
    (t, reps, first)
}

/// Starts `benches/jax_steps.py` on the data and initial weights in `dir`:
/// it reads `OBJ W B` lines and answers each with a timing line.
fn jax(dir: &std::path::Path) -> Result<common::Anchor, String> {
    common::Anchor::start("jax", "jax_steps.py", &[dir.display().to_string(), SECONDS.to_string()], "the JAX script")
}

/// ebmc's initial weights of the bench's net at width `w`, as the trainers start from them.
fn initial_params(w: usize) -> ebmc::tensor::Tensors {
    let src = format!(
        "model ring {{ visible x : real[2]; net f = mlp(2 -> {w} -> {w} -> 1, act: swish); energy e = f(x); }}"
    );
    let compiled = ebmc::compile(&src).expect("bench model compiles");
    ebmc::tensor::initialise(&ebmc::ir::program_to_ir(&compiled.program.models["ring"]).params, 1)
}

fn main() {
    let start = Instant::now();
    common::print_machine();

    // The data and each width's initial weights, for the JAX script.
    let most = CONFIGS.iter().map(|(_, b)| b).max().copied().unwrap_or(0);
    let rows = ebmc::runtime::data::toy("8gaussians", most * BATCHES, 1);
    let dir = std::env::temp_dir().join(format!("ebmc-continuous-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    let data: Vec<f32> = rows.iter().flatten().map(|v| *v as f32).collect();
    std::fs::write(dir.join("data.f32"), common::f32_bytes(&data)).expect("writes the data for JAX");
    for &(w, _) in &CONFIGS {
        let params = initial_params(w);
        let order = ["f.w0", "f.b0", "f.w1", "f.b1", "f.w2", "f.b2"];
        let bytes = common::f32_bytes(order.iter().flat_map(|n| &params[*n].data));
        std::fs::write(dir.join(format!("params-{w}.f32")), bytes).expect("writes the weights for JAX");
    }
    let mut jax = jax(&dir);
    match &jax {
        Ok(j) => println!("JAX: {}", j.note),
        Err(why) => println!("JAX not measured: {why}\n(ratios against the raw-GEMM floor only)"),
    }

    // ebmc, JAX and the floor of each step measured one after another, so that load affects all alike.
    let mut ebmc = BTreeMap::new();
    let mut jax_times = BTreeMap::new();
    let mut floor = BTreeMap::new();
    let mut gemm_cache: BTreeMap<Product, f64> = BTreeMap::new();
    for &(w, b) in &CONFIGS {
        for obj in Obj::ALL {
            let key = (obj.name(), w, b);
            ebmc.insert(key, ebmc_step(obj, w, b, &rows[..b * BATCHES]));
            if let Ok(j) = &mut jax {
                match j.timing(&format!("{} {w} {b}", obj.name())) {
                    Ok(t) => {
                        jax_times.insert(key, t);
                    }
                    Err(why) => println!("JAX not measured for {} at W {w}, B {b}: {why}", obj.name()),
                }
            }
            let list = products(obj, w, b);
            let total: f64 = list
                .iter()
                .map(|(q, count)| *count as f64 * *gemm_cache.entry(*q).or_insert_with(|| gemm_seconds(*q)))
                .sum();
            floor.insert(key, (total, list));
        }
    }
    drop(jax);
    let _ = std::fs::remove_dir_all(&dir);

    println!();
    println!(
        "{:<10} {:<4} {:>9} {:>9} {:>9} {:>9} {:>10} {:>9}  {:>9}  first loss (ebmc, jax)",
        "W, B", "step", "ebmc ms", "jax ms", "floor ms", "ebmc/jax", "ebmc/floor", "jax/floor", "steps",
    );
    for &(w, b) in &CONFIGS {
        for obj in Obj::ALL {
            let key = (obj.name(), w, b);
            let (e, e_reps, e_loss) = ebmc[&key];
            let (f, _) = &floor[&key];
            let j = jax_times.get(&key).copied();
            let (jms, ratio, jfloor, jreps, jloss) = match j {
                Some((j, reps, loss)) => (
                    format!("{:.3}", j * 1e3),
                    format!("{:.2}x", e / j),
                    format!("{:.2}x", j / f),
                    reps.to_string(),
                    format!("{loss:.4}"),
                ),
                None => ("-".into(), "-".into(), "-".into(), "-".into(), "-".into()),
            };
            println!(
                "{:<10} {:<4} {:>9.3} {:>9} {:>9.3} {:>9} {:>9.2}x {:>9}  {:>9}  {e_loss:.4}, {jloss}",
                format!("{w}, {b}"),
                obj.name(),
                e * 1e3,
                jms,
                f * 1e3,
                ratio,
                e / f,
                jfloor,
                format!("{e_reps}/{jreps}"),
            );
        }
    }
    println!(
        "(steps: steps timed, ebmc/jax; first loss: each side's loss at its first step, a check that both train the same objective from like initial weights)"
    );
    println!();
    println!("floor products per step (m x k x n, count):");
    for &(w, b) in &CONFIGS {
        for obj in Obj::ALL {
            let (_, list) = &floor[&(obj.name(), w, b)];
            let big: usize = list.iter().filter(|(q, _)| q.m.min(q.k).min(q.n) >= w.min(b)).map(|(_, c)| c).sum();
            let items: Vec<String> = list
                .iter()
                .map(|(q, c)| {
                    let t = match (q.lhs_t, q.rhs_t) {
                        (true, _) => " (Aᵀ B)",
                        (_, true) => " (A Bᵀ)",
                        _ => "",
                    };
                    format!("{}x{}x{}{t} {c}", q.m, q.k, q.n)
                })
                .collect();
            println!("  {w}, {b} {}: {big} of size {b}x{w}x{w}; {}", obj.name(), items.join(", "));
        }
    }
    println!("load average at end: {}; whole bench {:.0} s", common::load_average(), start.elapsed().as_secs_f64());
}
