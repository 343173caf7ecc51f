//! The comparison table of training methods, measured: one model per
//! objective on shared problems over several seeds, through the library
//! (`ebmc::Model::fit`, `Model::log_likelihood`). Prints markdown tables
//! (docs/objectives.md holds a run of them); asserts nothing.
//!
//! `cargo bench --bench objectives` (about 15 minutes on 2 cores);
//! `cargo bench --bench objectives -- --quick` (or `EBMC_QUICK=1`), about a
//! minute, with fewer rows, epochs and seeds, to check that it runs.
//!
//! (a) 2-D toys with known density, `toy("8gaussians")` and `toy("rings")`:
//!     the same energy `mlp(2 -> 128 -> 128 -> 1, act: swish)` for every
//!     objective, Adam (lr 1e-3, constant), batch 256, the same rows, epochs
//!     and seeds (each seed draws the data, the initial weights and the
//!     run's randomness). Per objective: the median seconds per epoch (the
//!     first epoch, which compiles the step, left out), the share of runs
//!     that diverged (the fit stopped on a non-finite loss, gradient or
//!     parameter, or the log-likelihood came out non-finite), and the KL
//!     gap `LL_true − LL_model` on the held-out rows, mean ± sample sd over
//!     the seeds that did not diverge. The gap is what `ebmc eval` reports:
//!     `Model::log_likelihood` integrates `exp(−F)` on eval's grid (300
//!     midpoints per axis over [−6, 6], `evaluate::grid_log_z`) and the true
//!     log-density is `runtime::data::toy_log_density`.
//! (b) Cost against the dimension: a mixture of 8 Gaussians in d = 2, 8, 32,
//!     128 (means drawn N(0, 2²) per coordinate, sd 0.5), the MLP of (a) with
//!     input width d (the critic of `lsd` d -> 128 -> 128 -> d), the same
//!     options: median seconds per epoch of the same number of rows per epoch,
//!     in three rounds (each objective in each dimension once a round), the
//!     median of the rounds reported.
//! (c) The bundled digits binarised at 8 (1,500 training rows, the last 297
//!     held out): an RBM with 16 hidden units (log Z exact by enumerating
//!     2^16 hidden states) by `cd(k: 10)` and `pcd(k: 10)`, and, since `pl`
//!     needs a fully visible model (E0402 on the RBM), a fully visible
//!     Boltzmann machine on the same pixels by `pl` and by `pcd`; Adam (lr
//!     0.005), batch 20. Per method: seconds per epoch, diverged runs, the
//!     exact test log-likelihood where log Z can be had, and the exact test
//!     pseudo-log-likelihood (eval's `evaluate::pseudo_likelihood`) for all.
//!
//! Verdicts, from the figures of the same run (rules in `verdicts`):
//! "fast" from (a)'s time per epoch against the fastest objective's,
//! "stable" from the diverged share and the spread of the KL gap,
//! "scales to high dimensions" from (b)'s cost at d = 128 against d = 2.
//! "No auxiliary model", "unrestricted architecture" and "approximates
//! likelihood" are properties of each method's definition, printed as such.

mod common;

use ebmc::{FitOptions, Model, Rows};
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};
use std::fmt::Write as _;
use std::time::Instant;

/// Sizes of a run: the full bench or `--quick`.
struct Sizes {
    /// Rows of each toy set (a tenth held out).
    toy_rows: usize,
    /// Epochs of each toy run.
    toy_epochs: usize,
    /// Seeds of the toys and the digits.
    seeds: u64,
    /// Dimensions of (b).
    dims: &'static [usize],
    /// Rows of (b)'s data (one epoch) and its epochs.
    scale_rows: usize,
    scale_epochs: usize,
    /// Rounds of (b), each timing every objective in every dimension once.
    rounds: usize,
    /// Epochs of each digits run.
    digit_epochs: usize,
}

const FULL: Sizes = Sizes {
    toy_rows: 10_000,
    toy_epochs: 24,
    seeds: 3,
    dims: &[2, 8, 32, 128],
    scale_rows: 1024,
    scale_epochs: 7,
    rounds: 3,
    digit_epochs: 20,
};

const QUICK: Sizes = Sizes {
    toy_rows: 2_000,
    toy_epochs: 3,
    seeds: 2,
    dims: &[2, 32],
    scale_rows: 512,
    scale_epochs: 3,
    rounds: 2,
    digit_epochs: 3,
};

/// One continuous objective of (a) and (b).
struct Objective {
    /// Its name in the tables.
    name: &'static str,
    /// The train block's `objective = ...`.
    objective: &'static str,
    /// Whether the model declares the critic net `lsd` names.
    critic: bool,
    /// A `sample` block for the model (CD's Langevin step, which `cd` has no option for).
    sample: &'static str,
    /// Auxiliary model, architecture and likelihood: the method's definition.
    auxiliary: &'static str,
    architecture: &'static str,
    likelihood: &'static str,
}

const OBJECTIVES: [Objective; 9] = [
    Objective {
        name: "cd",
        objective: "cd(k: 20)",
        critic: false,
        sample: "sample { x: langevin(step: 0.05); }",
        auxiliary: "yes (it samples the model itself)",
        architecture: "yes: any energy with ∇ₓE",
        likelihood: "yes, biased: k-step CD approximates the likelihood gradient",
    },
    Objective {
        name: "pcd",
        objective: "pcd(k: 20, chains: 256, step: 0.05, buffer: 10000, reinit: 0.05, alpha: 0.1)",
        critic: false,
        sample: "",
        auxiliary: "yes (it samples the model itself, from a replay buffer)",
        architecture: "yes: any energy with ∇ₓE",
        likelihood: "yes: the likelihood gradient, as well as the chains mix",
    },
    Objective {
        name: "improved CD",
        objective: "pcd(k: 20, chains: 256, step: 0.05, buffer: 10000, reinit: 0.05, alpha: 0.1, kl: 1.0, entropy: 0.3)",
        critic: false,
        sample: "",
        auxiliary: "yes (it samples the model itself, from a replay buffer)",
        architecture: "all variables visible, real, plain Langevin (E0402)",
        likelihood: "yes, plus the sampler's KL and entropy terms",
    },
    Objective {
        name: "sm",
        objective: "sm",
        critic: false,
        sample: "",
        auxiliary: "yes",
        architecture: "twice differentiable in x, real visibles",
        likelihood: "no: Fisher divergence",
    },
    Objective {
        name: "dsm",
        objective: "dsm(sigma: 0.1)",
        critic: false,
        sample: "",
        auxiliary: "yes",
        architecture: "differentiable in x, real visibles",
        likelihood: "no: Fisher divergence to the data blurred by σ",
    },
    Objective {
        name: "ssm",
        objective: "ssm(projections: 1, variance_reduced: true)",
        critic: false,
        sample: "",
        auxiliary: "yes",
        architecture: "twice differentiable in x, real visibles",
        likelihood: "no: Fisher divergence",
    },
    Objective {
        name: "nce",
        objective: "nce(noise: gaussian, ratio: 4)",
        critic: false,
        sample: "",
        auxiliary: "no: a noise distribution (here a Gaussian fitted to the data)",
        architecture: "yes: any energy, real visibles",
        likelihood: "yes: consistent, log Z learned; efficiency depends on the noise",
    },
    Objective {
        name: "cnce",
        objective: "cnce(sigma: 0.3)",
        critic: false,
        sample: "",
        auxiliary: "yes (its noise is the data perturbed)",
        architecture: "yes: any energy, real visibles",
        likelihood: "no: a conditional ratio loss, tending to score matching as σ → 0",
    },
    Objective {
        name: "lsd",
        objective: "lsd(critic: critic, penalty: 0.5, critic_steps: 5)",
        critic: true,
        sample: "",
        auxiliary: "no: a critic net f: R^d → R^d trained against the energy",
        architecture: "one real[d] variable, differentiable in x",
        likelihood: "no: Stein (Fisher) discrepancy",
    },
];

/// The model of `obj` on `real[d]` data; `train` is its train block's body.
fn source(obj: &Objective, d: usize, train: &str) -> String {
    let critic =
        if obj.critic { format!("net critic = mlp({d} -> 128 -> 128 -> {d}, act: swish);") } else { String::new() };
    let train = if train.is_empty() { String::new() } else { format!("train m {{ {train} }}") };
    format!(
        "model m {{ visible x : real[{d}]; net f = mlp({d} -> 128 -> 128 -> 1, act: swish); {critic}
                   energy e = f(x); {sample} }}
         {train}",
        sample = obj.sample
    )
}

/// The train-block settings shared by (a) and (b) for `obj`.
fn settings(obj: &Objective) -> String {
    format!("objective = {}; optimizer = adam(lr: 1e-3); batch = 256;", obj.objective)
}

/// Median of the epochs' seconds after the first (which compiles the step); the first alone when there is one.
fn epoch_seconds(fitted: &ebmc::Fitted) -> f64 {
    let mut t: Vec<f64> = fitted.history.iter().skip(1).map(|m| m.seconds).collect();
    if t.is_empty() {
        t = fitted.history.iter().map(|m| m.seconds).collect();
    }
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

/// A fit or evaluation that went non-finite (the run counts as diverged), or the bench's own mistake (a panic).
fn diverged(e: &ebmc::Error) -> bool {
    matches!(e, ebmc::Error::Train(_) | ebmc::Error::NotFinite { .. })
}

/// One run: seconds per epoch and the figure it is scored by, or why it diverged.
type Run = (Option<f64>, Result<f64, String>);

/// Mean and sample sd.
fn mean_sd(x: &[f64]) -> (f64, f64) {
    let m = x.iter().sum::<f64>() / x.len() as f64;
    let sd = if x.len() > 1 {
        (x.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / (x.len() - 1) as f64).sqrt()
    } else {
        f64::NAN
    };
    (m, sd)
}

/// Median of `x` (not empty).
fn median(x: &[f64]) -> f64 {
    let mut t = x.to_vec();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

/// `mean ± sd` of the runs' figures that did not diverge, with `digits` decimals.
fn figure(runs: &[Run], digits: usize) -> String {
    let ok: Vec<f64> = runs.iter().filter_map(|(_, r)| r.as_ref().ok().copied()).collect();
    match ok.len() {
        0 => "—".into(),
        1 => format!("{:.digits$}", ok[0]),
        _ => {
            let (m, sd) = mean_sd(&ok);
            format!("{m:.digits$} ± {sd:.digits$}")
        }
    }
}

fn diverged_share(runs: &[Run]) -> (usize, usize) {
    (runs.iter().filter(|(_, r)| r.is_err()).count(), runs.len())
}

fn seconds(runs: &[Run]) -> Option<f64> {
    let t: Vec<f64> = runs.iter().filter_map(|(t, _)| *t).collect();
    (!t.is_empty()).then(|| median(&t))
}

/// (a): one fit of `obj` on toy `name` with `seed`, scored by its KL gap on the held-out rows.
fn toy_run(obj: &Objective, name: &str, seed: u64, sizes: &Sizes) -> Run {
    let train = format!(
        "data = toy(\"{name}\", n: {n}, seed: {seed}) -> x; test = fraction(0.1); {s}",
        n = sizes.toy_rows,
        s = settings(obj)
    );
    let model = Model::from_source(&source(obj, 2, &train)).expect("the bench's model compiles");
    let (rows, test) = model.train_data(".").expect("toy rows");
    let test = test.expect("a test split");
    let opts = FitOptions::new().epochs(sizes.toy_epochs).seed(seed).track_log_likelihood(false);
    let fitted = match model.fit(&model.init_params(seed), &rows, &opts) {
        Ok(f) => f,
        Err(e) if diverged(&e) => return (None, Err(e.to_string())),
        Err(e) => panic!("{} on {name}: {e}", obj.name),
    };
    let t = Some(epoch_seconds(&fitted));
    let ll = match model.log_likelihood(&fitted.params, &test) {
        Ok(ll) => ll,
        Err(e) if diverged(&e) => return (t, Err(e.to_string())),
        Err(e) => panic!("{} on {name}: {e}", obj.name),
    };
    assert!(matches!(ll.method, ebmc::Method::Grid { .. }), "eval's grid integral");
    let (x, _) = test.get("x").expect("x");
    let truth: Vec<f64> = x
        .chunks(2)
        .map(|p| ebmc::runtime::data::toy_log_density(name, f64::from(p[0]), f64::from(p[1])).expect("a known density"))
        .collect();
    let gap = truth.iter().sum::<f64>() / truth.len() as f64 - ll.mean;
    (t, if gap.is_finite() { Ok(gap) } else { Err("the KL gap is not finite".into()) })
}

/// (b)'s data: `n` rows of a mixture of 8 Gaussians in `d` dimensions.
fn mixture(d: usize, n: usize) -> Rows {
    let mut rng = rand::rngs::StdRng::seed_from_u64(d as u64);
    let normal = Normal::new(0.0, 1.0).expect("unit normal");
    let means: Vec<Vec<f64>> = (0..8).map(|_| (0..d).map(|_| 2.0 * normal.sample(&mut rng)).collect()).collect();
    let data: Vec<f32> = (0..n)
        .flat_map(|_| {
            let m = &means[rng.gen_range(0..8)];
            m.iter().map(|c| (c + 0.5 * normal.sample(&mut rng)) as f32).collect::<Vec<_>>()
        })
        .collect();
    Rows::new().with("x", data, &[n, d]).expect("rows")
}

/// (b): median seconds per epoch of `obj` in `d` dimensions, or why it diverged.
fn scale_run(obj: &Objective, d: usize, sizes: &Sizes) -> Result<f64, String> {
    let model = Model::from_source(&source(obj, d, "")).expect("the bench's model compiles");
    let rows = mixture(d, sizes.scale_rows);
    let opts =
        FitOptions::new().settings(&settings(obj)).epochs(sizes.scale_epochs).seed(1).track_log_likelihood(false);
    match model.fit(&model.init_params(1), &rows, &opts) {
        Ok(f) => Ok(epoch_seconds(&f)),
        Err(e) if diverged(&e) => Err(e.to_string()),
        Err(e) => panic!("{} in {d} dimensions: {e}", obj.name),
    }
}

/// The digits runs of (c): `(what, model source, objective)`.
const DIGITS: [(&str, &str, &str); 4] = [
    ("RBM 64×16, cd(k: 10)", RBM, "cd(k: 10)"),
    ("RBM 64×16, pcd(k: 10)", RBM, "pcd(k: 10, chains: 100)"),
    ("fully visible BM, pl", FVBM, "pl"),
    ("fully visible BM, pcd(k: 1)", FVBM, "pcd(k: 1, chains: 100)"),
];

const RBM: &str = "model m { visible v : binary[64]; hidden h : binary[16];
    param W : real[64, 16] = normal(0, 0.01); param b : real[64] = zeros; param c : real[16] = zeros;
    energy e = -(v @ W @ h) - b @ v - c @ h; }";

const FVBM: &str = "model m { visible v : binary[64];
    param W : real[64, 64] = normal(0, 0.01); param b : real[64] = zeros;
    energy e = -0.5 * (v @ W @ v) - b @ v; }";

/// (c): one fit, scored by the test pseudo-log-likelihood and the exact test
/// log-likelihood when log Z can be had (else why not).
fn digits_run(model_src: &str, objective: &str, seed: u64, sizes: &Sizes) -> (Run, Result<f64, String>) {
    let train = format!(
        "data = digits(binarize: 8) -> v; test = last(297); objective = {objective};
         optimizer = adam(lr: 0.005); batch = 20;"
    );
    let model = Model::from_source(&format!("{model_src} train m {{ {train} }}")).expect("the bench's model compiles");
    let (rows, test) = model.train_data(".").expect("digits");
    let test = test.expect("a test split");
    let opts = FitOptions::new().epochs(sizes.digit_epochs).seed(seed).track_log_likelihood(false);
    let fitted = match model.fit(&model.init_params(seed), &rows, &opts) {
        Ok(f) => f,
        Err(e) if diverged(&e) => return ((None, Err(e.to_string())), Err("diverged".into())),
        Err(e) => panic!("{objective} on the digits: {e}"),
    };
    let t = Some(epoch_seconds(&fitted));
    let pl = ebmc::runtime::evaluate::pseudo_likelihood(
        model.declaration(),
        model.plan(),
        fitted.params.tensors(),
        test.tensors(),
        None,
        0,
        ebmc::backend::DeviceKind::Cpu,
    );
    let pl = match pl {
        Ok(pl) if pl.is_finite() => Ok(pl),
        Ok(pl) => Err(format!("the pseudo-likelihood is {pl}")),
        Err(e) => panic!("pseudo-likelihood of {objective}: {e}"),
    };
    let ll = match model.log_likelihood(&fitted.params, &test) {
        Ok(ll) if ll.method == ebmc::Method::Exact => Ok(ll.mean),
        Ok(ll) => Err(format!("log Z by {:?}, not exact", ll.method)),
        // The first clause of each reason: what cannot be had, without the hints.
        Err(ebmc::Error::NoLogZ { exact, ais, .. }) => {
            let first = |why: &str, at: char| why.split(at).next().unwrap_or(why).trim().to_string();
            let ais = ais.map_or(String::new(), |why| format!("; {}", first(&why, ':')));
            Err(format!("E0608: {}{ais}", first(&exact, ';')))
        }
        Err(e) => Err(e.to_string()),
    };
    ((t, pl), ll)
}

/// A verdict for "fast": an objective's seconds per epoch against the fastest's on the same problem.
fn fast(ratio: f64) -> String {
    if ratio <= 3.0 {
        format!("yes ({ratio:.1}×)")
    } else if ratio >= 10.0 {
        format!("no ({ratio:.0}×)")
    } else {
        format!("not shown ({ratio:.1}×)")
    }
}

/// A verdict for "stable": no diverged run, and on every problem the KL gap's
/// sd over the seeds at most half its mean (so one seed's fit says much about
/// another's); "no" with a diverged run; "not shown" when nothing diverged but
/// the gap's spread is wide or cannot be had (fewer than two runs).
fn stable(problems: &[Vec<Run>]) -> String {
    let (bad, all) = problems.iter().fold((0, 0), |(b, a), runs| {
        let (x, y) = diverged_share(runs);
        (b + x, a + y)
    });
    if bad > 0 {
        return format!("no ({bad}/{all} diverged)");
    }
    let tight = problems.iter().all(|runs| {
        let ok: Vec<f64> = runs.iter().filter_map(|(_, r)| r.as_ref().ok().copied()).collect();
        let (m, sd) = mean_sd(&ok);
        ok.len() > 1 && sd <= 0.5 * m.abs()
    });
    if tight { format!("yes (0/{all} diverged)") } else { format!("not shown (0/{all} diverged, wide spread)") }
}

/// A verdict for "scales to high dimensions": the cost per epoch at the largest d against the smallest.
fn scales(ratio: f64, (lo, hi): (usize, usize)) -> String {
    if ratio <= 4.0 {
        format!("yes (cost ×{ratio:.1} from d = {lo} to {hi})")
    } else if ratio >= 16.0 {
        format!("no (cost ×{ratio:.0} from d = {lo} to {hi})")
    } else {
        format!("not shown (cost ×{ratio:.1} from d = {lo} to {hi})")
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick") || std::env::var_os("EBMC_QUICK").is_some_and(|v| v != "0");
    let sizes = if quick { &QUICK } else { &FULL };
    let started = Instant::now();
    println!("command: cargo bench --bench objectives{}", if quick { " -- --quick" } else { "" });
    common::print_machine();
    let toys = ["8gaussians", "rings"];
    let seeds: Vec<u64> = (1..=sizes.seeds).collect();
    println!(
        "\n(a) 2-D toys: {} rows ({} held out), {} epochs of batch 256 ({} updates), seeds {:?}; mlp(2 -> 128 -> 128 -> 1), Adam 1e-3\n",
        sizes.toy_rows,
        sizes.toy_rows / 10,
        sizes.toy_epochs,
        (sizes.toy_rows - sizes.toy_rows / 10) / 256 * sizes.toy_epochs,
        seeds
    );
    // runs[objective][toy] = one Run per seed. Objectives run innermost, so
    // that a change in the machine's load falls on all of them alike.
    let mut runs: Vec<Vec<Vec<Run>>> = OBJECTIVES.iter().map(|_| vec![Vec::new(); toys.len()]).collect();
    for &seed in &seeds {
        for (i, toy) in toys.iter().enumerate() {
            for (obj, per_toy) in OBJECTIVES.iter().zip(runs.iter_mut()) {
                let run = toy_run(obj, toy, seed, sizes);
                if let Err(why) = &run.1 {
                    println!("  {} on {toy}, seed {seed}: diverged: {}", obj.name, why.lines().next().unwrap_or(""));
                }
                per_toy[i].push(run);
            }
            eprintln!("  {toy}, seed {seed} done at {:.0} s", started.elapsed().as_secs_f64());
        }
    }
    let mut table = String::new();
    let _ = writeln!(
        table,
        "| objective | options | s/epoch 8gaussians | s/epoch rings | diverged | KL gap 8gaussians (nats) | KL gap rings (nats) |"
    );
    let _ = writeln!(table, "|---|---|---|---|---|---|---|");
    for (obj, per_toy) in OBJECTIVES.iter().zip(&runs) {
        let t = |i: usize| seconds(&per_toy[i]).map_or("—".into(), |s| format!("{s:.3}"));
        let (bad, all) = per_toy.iter().fold((0, 0), |(b, a), r| {
            let (x, y) = diverged_share(r);
            (b + x, a + y)
        });
        let _ = writeln!(
            table,
            "| {} | `{}` | {} | {} | {bad}/{all} | {} | {} |",
            obj.name,
            obj.objective,
            t(0),
            t(1),
            figure(&per_toy[0], 3),
            figure(&per_toy[1], 3)
        );
    }
    print!("{table}");

    println!(
        "\n(b) seconds per epoch ({} rows, batch 256; median of epochs 2..{}, then the median over {} rounds) against the dimension d of a mixture of 8 Gaussians\n",
        sizes.scale_rows, sizes.scale_epochs, sizes.rounds
    );
    // times[objective][dimension] = one result per round; rounds outermost, so that
    // a change in the load falls on every cell alike.
    let mut times: Vec<Vec<Vec<Result<f64, String>>>> =
        OBJECTIVES.iter().map(|_| vec![Vec::new(); sizes.dims.len()]).collect();
    for round in 1..=sizes.rounds {
        for (obj, per_d) in OBJECTIVES.iter().zip(times.iter_mut()) {
            for (&d, cell) in sizes.dims.iter().zip(per_d.iter_mut()) {
                cell.push(scale_run(obj, d, sizes));
            }
        }
        eprintln!("  scaling round {round} done at {:.0} s", started.elapsed().as_secs_f64());
    }
    // A cell diverged when any of its rounds did; else the rounds' median.
    let scale: Vec<Vec<Result<f64, String>>> = times
        .iter()
        .map(|per_d| {
            per_d
                .iter()
                .map(|cell| cell.iter().cloned().collect::<Result<Vec<f64>, String>>().map(|t| median(&t)))
                .collect()
        })
        .collect();
    let mut table = String::new();
    let _ = write!(table, "| objective |");
    for d in sizes.dims {
        let _ = write!(table, " d = {d} |");
    }
    let _ = writeln!(table, " d = {} / d = {} |", sizes.dims[sizes.dims.len() - 1], sizes.dims[0]);
    let _ = writeln!(table, "|---|{}---|", "---|".repeat(sizes.dims.len()));
    for (obj, r) in OBJECTIVES.iter().zip(&scale) {
        let _ = write!(table, "| {} |", obj.name);
        for x in r {
            let _ = write!(table, " {} |", x.as_ref().map_or_else(|_| "diverged".into(), |s| format!("{s:.4}")));
        }
        let ratio = match (&r[0], &r[r.len() - 1]) {
            (Ok(a), Ok(b)) => format!("{:.1}×", b / a),
            _ => "—".into(),
        };
        let _ = writeln!(table, " {ratio} |");
    }
    print!("{table}");

    println!(
        "\n(c) digits binarised at 8 (1,500 rows, last 297 held out), batch 20, Adam 0.005, {} epochs, seeds {:?}\n",
        sizes.digit_epochs, seeds
    );
    let mut table = String::new();
    let _ = writeln!(
        table,
        "| model, objective | s/epoch | diverged | test log-likelihood (nats) | test pseudo-log-likelihood (nats) |"
    );
    let _ = writeln!(table, "|---|---|---|---|---|");
    // The pseudo-likelihood runs of each digits model, for the verdicts.
    let mut digits: Vec<Vec<Run>> = Vec::new();
    for (what, src, objective) in DIGITS {
        let results: Vec<(Run, Result<f64, String>)> =
            seeds.iter().map(|&s| digits_run(src, objective, s, sizes)).collect();
        eprintln!("  {what} done at {:.0} s", started.elapsed().as_secs_f64());
        let pl: Vec<Run> = results.iter().map(|(r, _)| r.clone()).collect();
        let ll: Vec<Run> = results.iter().map(|(r, ll)| (r.0, ll.clone())).collect();
        let (bad, all) = diverged_share(&pl);
        let ll_text = match ll.iter().find_map(|(_, r)| r.as_ref().err()) {
            Some(why) if ll.iter().all(|(_, r)| r.is_err()) => {
                format!("none ({})", why.lines().next().unwrap_or(why).trim())
            }
            _ => figure(&ll, 2),
        };
        let t = seconds(&pl).map_or("—".into(), |s| format!("{s:.3}"));
        let _ = writeln!(table, "| {what} | {t} | {bad}/{all} | {ll_text} | {} |", figure(&pl, 2));
        digits.push(pl);
    }
    print!("{table}");

    println!("\nverdicts (measured: fast, stable, high dimensions; by definition: the rest)\n");
    let mut table = String::new();
    let _ = writeln!(
        table,
        "| objective | fast | stable | scales to high dimensions | no auxiliary model | unrestricted architecture | approximates likelihood |"
    );
    let _ = writeln!(table, "|---|---|---|---|---|---|---|");
    // Seconds per epoch over every toy run of an objective (both toys take the same steps an epoch).
    let pooled: Vec<Option<f64>> = runs.iter().map(|per_toy| seconds(&per_toy.concat())).collect();
    let best = pooled.iter().flatten().copied().fold(f64::INFINITY, f64::min);
    for (((obj, per_toy), sc), t) in OBJECTIVES.iter().zip(&runs).zip(&scale).zip(&pooled) {
        let high = match (&sc[0], &sc[sc.len() - 1]) {
            (Ok(a), Ok(b)) => scales(b / a, (sizes.dims[0], sizes.dims[sizes.dims.len() - 1])),
            _ => "not shown (diverged)".into(),
        };
        let _ = writeln!(
            table,
            "| {} | {} | {} | {high} | {} | {} | {} |",
            obj.name,
            t.map_or("not shown (every run diverged)".into(), |t| fast(t / best)),
            stable(per_toy),
            obj.auxiliary,
            obj.architecture,
            obj.likelihood
        );
    }
    // pl against pcd on the same fully visible model (the digits); its dimension is not varied.
    let (pl, pcd) = (&digits[2], &digits[3]);
    let pl_fast = match (seconds(pl), seconds(pcd)) {
        (Some(a), Some(b)) => fast(a / a.min(b)),
        _ => "not shown (diverged)".into(),
    };
    let _ = writeln!(
        table,
        "| pl (digits) | {pl_fast} | {} | not shown (not measured) | yes | fully visible discrete models only (E0402) | no: pseudo-likelihood, consistent |",
        stable(std::slice::from_ref(pl))
    );
    print!("{table}");
    println!("\nload average at the end (1, 5, 15 min): {}", common::load_average());
    println!("took {:.0} s", started.elapsed().as_secs_f64());
}
