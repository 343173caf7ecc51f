//! A convolutional energy on the CPU against PyTorch, in one run.
//! `cargo bench --bench conv`. Prints; asserts nothing.
//!
//! Energy `convnet(1 -> 32 -> 64 -> 1, kernel: 3, stride: 2, act: swish)` on
//! 1×8×8 images (the bundled digits' size), batch 64. As ebmc expands it: a
//! 3×3 convolution to 32 channels (stride 1: the first stage keeps the
//! size), swish, one to 64 channels at stride 2 (8×8 → 4×4), swish, the mean
//! over the pixels, a linear head to one value. Three steps:
//!
//! - langevin: one Langevin step of 64 chains, `x ← x − step ∇ₓE + noise z`
//!   (the plan's step 0.01 and noise 0.1414): `Sampler::sweep`;
//! - dsm: one training step of DSM, σ 0.1, `½ |σ ∇ₓE(x + σz) − z|²` mean over
//!   the batch, its parameter gradient and an Adam update: `Trainer::step`;
//! - pcd: one PCD training update, `pcd(k: 20, chains: 64, step: 10, noise:
//!   0.005, buffer: 5000, reinit: 0.05, alpha: 1, clip: 0.01)` on `x in [0, 1]`
//!   (the same energy): the 64 chains restart from the replay buffer (5% from
//!   uniform states), take K = 20 Langevin steps with each component of ∇ₓE
//!   clamped to ±0.01 and the proposal reflected into [0, 1], then the
//!   gradient of mean E(data) − mean E(samples) + α (mean E(data)² + mean
//!   E(samples)²) in the parameters and an Adam update: `Trainer::step`.
//!
//! ebmc: median seconds per call after two warm-up calls. PyTorch: the same
//! step in eager mode (autograd; DSM by double backward; PCD's ∇ₓE with the
//! weights detached) from ebmc's initial weights on the same batch, in
//! `benches/torch_conv.py`, with PyTorch's default threading; a check value
//! is printed beside each (the batch's mean energy, the first DSM and PCD
//! losses: PCD's from different random chains on each side, so close, not equal). Without an importable `torch` the bench
//! says so and prints the floor ratio alone. Ratios are ebmc / torch (≤ 1.0:
//! ebmc at least as fast) and ebmc / floor.
//!
//! The floor is the step's convolutions as GEMMs in im2col form (each its
//! matrix product alone, no im2col or col2im), each timed by the `gemm`
//! crate (the faster of all rayon threads and one), with N = 64 examples ×
//! output pixels: conv1 `32×9×4096`, conv2 `64×288×1024`, their input
//! adjoints `9×32×4096` and `288×64×1024`, their kernel adjoints
//! `32×4096×9` and `64×1024×288`.
//! - langevin: ∇ₓE is conv1, conv2 forward and the two input adjoints (4);
//! - dsm: ∇ₓE (4); reversing its backward pass, each input adjoint needs a
//!   forward convolution and a kernel adjoint (4); reversing the forward
//!   pass, conv2 needs its kernel and input adjoints and conv1 its kernel
//!   adjoint (3): 11 in all;
//! - pcd: K ∇ₓE (4 each), then for the data and the samples the forward pass
//!   (2) and its reverse to the kernels (conv2's kernel and input adjoints,
//!   conv1's kernel adjoint: 3): 4K + 10.
//!
//! Elementwise work, the replay buffer and the linear head are not in the floor.

mod common;

use ebmc::tensor::{HostTensor, Tensors};

/// Seconds of timed calls per measurement (at least `MIN_REPS` calls).
const SECONDS: f64 = 2.0;
const MIN_REPS: usize = 5;
const BATCH: usize = 64;

const SOURCE: &str = "model digits {
  visible x : real[1, 8, 8];
  net f = convnet(1 -> 32 -> 64 -> 1, kernel: 3, stride: 2, act: swish);
  energy e = f(x);
}
train digits { data = csv(\"x.csv\") -> x; objective = dsm(sigma: 0.1); optimizer = adam(lr: 1e-3); batch = 64; }";

/// Langevin steps per PCD update.
const K: usize = 20;

/// The same energy on images in [0, 1] (the box PCD's chains reflect into), trained by PCD.
fn pcd_source() -> String {
    format!(
        "model digits {{
  visible x : real[1, 8, 8] in [0, 1];
  net f = convnet(1 -> 32 -> 64 -> 1, kernel: 3, stride: 2, act: swish);
  energy e = f(x);
}}
train digits {{ data = csv(\"x.csv\") -> x; optimizer = adam(lr: 1e-3); batch = 64;
  objective = pcd(k: {K}, chains: 64, step: 10, noise: 0.005, buffer: 5000, reinit: 0.05, alpha: 1, clip: 0.01); }}"
    )
}

/// The parameters in the order the PyTorch script reads them.
const PARAMS: [&str; 6] = ["f.k0", "f.b0", "f.k1", "f.b1", "f.w", "f.b"];

/// A GEMM `(m, k, n)` of the floor, its name, and how many of it the langevin, dsm and pcd steps run.
type FloorGemm = ((usize, usize, usize), &'static str, usize, usize, usize);

const FLOOR: [FloorGemm; 6] = [
    ((32, 9, BATCH * 64), "conv1", 1, 2, K + 2),
    ((64, 288, BATCH * 16), "conv2", 1, 2, K + 2),
    ((9, 32, BATCH * 64), "conv1 input adjoint", 1, 1, K),
    ((288, 64, BATCH * 16), "conv2 input adjoint", 1, 2, K + 2),
    ((32, BATCH * 64, 9), "conv1 kernel adjoint", 0, 2, 2),
    ((64, BATCH * 16, 288), "conv2 kernel adjoint", 0, 2, 2),
];

/// Median seconds of `f` after two warm-up calls, over `SECONDS` of calls (at least `MIN_REPS`), and the count.
fn timed(f: impl FnMut()) -> (f64, usize) {
    common::timed(SECONDS, (MIN_REPS, 500), f)
}

/// Starts `benches/torch_conv.py` on the weights and batch in `dir`.
fn torch(dir: &std::path::Path) -> Result<common::Anchor, String> {
    let args = [dir.display().to_string(), SECONDS.to_string(), K.to_string()];
    common::Anchor::start("torch", "torch_conv.py", &args, "the PyTorch script")
}

/// Seconds of one floor GEMM: the faster of all rayon threads and one.
fn gemm_seconds((m, k, n): (usize, usize, usize)) -> f64 {
    let time = |parallelism| common::gemm_product((m, k, n), (false, false), parallelism, 41);
    time(gemm::Parallelism::Rayon(rayon::current_num_threads())).min(time(gemm::Parallelism::None))
}

fn main() {
    println!("ebmc: {} rayon threads", rayon::current_num_threads());
    let compiled = ebmc::compile(SOURCE).expect("bench model compiles");
    let (plans, _) = ebmc::plan(&compiled.program).expect("plans");
    let model = &compiled.program.models["digits"];
    let params = ebmc::tensor::initialise(&ebmc::ir::program_to_ir(model).params, 1);
    // A fixed batch of images in [0, 1), as both sides read it.
    let pixels: Vec<f32> = (0..BATCH * 64).map(|i| ((i * 7919 + 13) % 1000) as f32 / 1000.0).collect();
    let batch: Tensors =
        [("x".to_string(), HostTensor::new(vec![BATCH, 1, 8, 8], pixels.clone()))].into_iter().collect();

    let dir = std::env::temp_dir().join(format!("ebmc-conv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    std::fs::write(dir.join("params.f32"), common::f32_bytes(PARAMS.iter().flat_map(|n| &params[*n].data)))
        .expect("writes the weights for PyTorch");
    std::fs::write(dir.join("data.f32"), common::f32_bytes(&pixels)).expect("writes the batch for PyTorch");
    let mut torch = torch(&dir);
    match &torch {
        Ok(t) => println!("PyTorch: {} intra-op threads", t.note),
        Err(why) => println!("PyTorch not measured: {why}\n(ratios against the raw-GEMM floor only)"),
    }

    // langevin: 64 chains started at the batch.
    let plan = plans.iter().find(|p| p.model == "digits").expect("the model's plan");
    let mut sampler =
        ebmc::backend::Sampler::new(model, plan, &params, BATCH, 1, Default::default()).expect("sampler builds");
    sampler.set_state(&batch).expect("the batch fits the chains");
    let energies = sampler.energy(&batch).expect("energies of the batch");
    let langevin_check = energies.iter().map(|e| f64::from(*e)).sum::<f64>() / BATCH as f64;
    let langevin = timed(|| sampler.sweep());
    let torch_langevin = torch.as_mut().ok().map(|t| t.timing("langevin"));

    // dsm: the trainer's step on the same batch, every call.
    let mut trainer = common::trainer(SOURCE, "digits");
    trainer.prepare(&batch).expect("data fits");
    let mut step = 0;
    let mut first_loss = f64::NAN;
    let dsm = timed(|| {
        step += 1;
        let report = trainer.step(&batch, 1e-3, step).expect("step");
        if step == 1 {
            first_loss = report.loss;
        }
    });
    let torch_dsm = torch.as_mut().ok().map(|t| t.timing("dsm"));

    // pcd: the trainer's update on the same batch, every call; its chains and buffer persist.
    let mut trainer = common::trainer(&pcd_source(), "digits");
    trainer.prepare(&batch).expect("data fits");
    let mut step = 0;
    let mut first_pcd_loss = f64::NAN;
    let pcd = timed(|| {
        step += 1;
        let report = trainer.step(&batch, 1e-3, step).expect("step");
        if step == 1 {
            first_pcd_loss = report.loss;
        }
    });
    let torch_pcd = torch.as_mut().ok().map(|t| t.timing("pcd"));
    drop(torch);
    let _ = std::fs::remove_dir_all(&dir);

    let floor: Vec<f64> = FLOOR.iter().map(|(mkn, ..)| gemm_seconds(*mkn)).collect();
    let floor_of =
        |pick: fn(&FloorGemm) -> usize| -> f64 { FLOOR.iter().zip(&floor).map(|(q, t)| pick(q) as f64 * t).sum() };
    let rows = [
        ("langevin", langevin, torch_langevin, floor_of(|q| q.2), langevin_check),
        ("dsm", dsm, torch_dsm, floor_of(|q| q.3), first_loss),
        ("pcd", pcd, torch_pcd, floor_of(|q| q.4), first_pcd_loss),
    ];
    println!();
    println!("pcd: K = {K} Langevin steps per update");
    println!();
    println!(
        "{:<9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10}  check (ebmc, torch)",
        "step", "ebmc ms", "torch ms", "floor ms", "ebmc/torch", "ebmc/floor", "steps"
    );
    for (name, (e, e_reps), t, f, check) in rows {
        let (tms, ratio, treps, tcheck) = match t {
            Some(Ok((t, reps, c))) => {
                (format!("{:.3}", t * 1e3), format!("{:.2}x", e / t), reps.to_string(), format!("{c:.4}"))
            }
            Some(Err(why)) => {
                println!("PyTorch not measured for {name}: {why}");
                ("-".into(), "-".into(), "-".into(), "-".into())
            }
            None => ("-".into(), "-".into(), "-".into(), "-".into()),
        };
        println!(
            "{name:<9} {:>9.3} {tms:>9} {:>9.3} {ratio:>9} {:>9.2}x {:>10}  {check:.4}, {tcheck}",
            e * 1e3,
            f * 1e3,
            e / f,
            format!("{e_reps}/{treps}"),
        );
    }
    println!(
        "(steps: calls timed, ebmc/torch; check: the batch's mean energy for langevin, the first loss for dsm and pcd)"
    );
    println!();
    println!("floor GEMMs (m x k x n: ms each; count in langevin, dsm, pcd):");
    for (&((m, k, n), label, l, d, p), t) in FLOOR.iter().zip(&floor) {
        println!("  {label:<21} {m}x{k}x{n}: {:.4} ms; {l}, {d}, {p}", t * 1e3);
    }
}
