//! The symbolic losses equal the tape's: on every zoo model with a train
//! block and on small models of every objective kind, one draw, then `loss`
//! and `tape_loss` on it, loss and every gradient within f32 round-off.

use super::super::train::on_device;
use super::super::{ChainSet, Chains};
use super::*;
use crate::analysis::program::Objective as O;

/// Small models, one or more per objective kind.
const INLINE: &[&str] = &[
    // CD on an RBM; CD with the energy penalty as a regulariser.
    "model m { visible v : binary[5]; hidden h : binary[3]; param W : real[5, 3] = normal(0, 1); param b : real[5] = normal(0, 1); param c : real[3] = normal(0, 1);
       energy e = -(v @ W @ h) - b @ v - c @ h; } train m { data = bars_and_stripes(size: 2) -> v; objective = cd(k: 2); }",
    "model m { visible v : binary[5]; hidden h : binary[3]; param W : real[5, 3] = normal(0, 1); param b : real[5] = normal(0, 1); param c : real[3] = normal(0, 1);
       energy e = -(v @ W @ h) - b @ v - c @ h; } train m { data = bars_and_stripes(size: 2) -> v; objective = cd(k: 1); regularize = energy_penalty(0.3); }",
    // PCD on a DBM (a latent kept and sampled), without and with alpha.
    "model m { visible v : binary[4]; hidden h1 : binary[3]; hidden h2 : binary[2]; param W1 : real[4, 3] = normal(0, 1); param W2 : real[3, 2] = normal(0, 1);
       energy e = -(v @ W1 @ h1) - h1 @ W2 @ h2; } train m { data = bars_and_stripes(size: 2) -> v; objective = pcd(k: 1, chains: 6); }",
    "model m { visible v : binary[4]; hidden h1 : binary[3]; hidden h2 : binary[2]; param W1 : real[4, 3] = normal(0, 1); param W2 : real[3, 2] = normal(0, 1);
       energy e = -(v @ W1 @ h1) - h1 @ W2 @ h2; } train m { data = bars_and_stripes(size: 2) -> v; objective = pcd(k: 1, chains: 6, alpha: 0.2); }",
    // CD with a net and a latent summed out; PCD with Langevin and alpha.
    "model m { visible x : real[2]; hidden h : binary[3]; param W : real[2, 3] = normal(0, 1); net f = mlp(2 -> 4 -> 1, act: tanh);
       energy e = 0.5 * sum(square(x)) + f(x) - x @ W @ h; } train m { data = toy(\"moons\", n: 40) -> x; objective = cd(k: 1); }",
    "model m { visible x : real[2]; net f = mlp(2 -> 5 -> 1, act: swish); energy e = f(x) + 0.1 * sum(square(x)); }
       train m { data = toy(\"moons\", n: 40) -> x; objective = pcd(k: 2, chains: 5, step: 0.05, buffer: 20, alpha: 0.1); }",
    // Improved CD: the KL and entropy terms through a clipped step, and the KL term through a step folded into a box.
    "model m { visible x : real[2]; net f = mlp(2 -> 5 -> 1, act: swish); energy e = f(x) + 0.1 * sum(square(x)); }
       train m { data = toy(\"moons\", n: 40) -> x; objective = pcd(k: 2, chains: 5, step: 0.05, clip: 0.3, buffer: 20, kl: 1.0, entropy: 0.3); }",
    "model m { visible x : real[2] in [-1, 1]; net f = mlp(2 -> 5 -> 1, act: tanh); energy e = f(x); }
       train m { data = toy(\"moons\", n: 40) -> x; objective = pcd(k: 1, chains: 5, step: 0.3, noise: 1.5, buffer: 20, kl: 0.5, alpha: 0.1); }",
    // PCD on a Potts lattice (a sparse constant).
    "model m { const A = grid(2, 3); visible y : categorical(3)[6]; param J : real = 0.5; param field : real[3] = normal(0, 1);
       energy e = -J * sum(A * (y @ y.T)) - sum(y @ field); } train m { data = toy(\"moons\", n: 40) -> y; objective = pcd(k: 1, chains: 6); }",
    // PL: logits (binary, spin, categorical) and energy differences (a dense self-coupling, a net).
    "model m { visible v : binary[5]; param W : real[5, 3] = normal(0, 1); param b : real[5] = normal(0, 1); param c : real[3] = normal(0, 1);
       energy e = -sum(softplus(v @ W + c)) - b @ v; } train m { data = bars_and_stripes(size: 2) -> v; objective = pl; }",
    "model m { visible s : spin[5]; param W : real[5, 5] = normal(0, 0.5); param f : real[5] = normal(0, 1);
       energy e = -0.5 * (s @ W @ s) - f @ s; } train m { data = bars_and_stripes(size: 2) -> s; objective = pl; }",
    "model m { const A = grid(2, 3); visible y : categorical(3)[6]; param J : real = 0.5; param field : real[3] = normal(0, 1);
       energy e = -J * sum(A * (y @ y.T)) - sum(y @ field); } train m { data = toy(\"moons\", n: 40) -> y; objective = pl; }",
    "model m { visible v : binary[4]; visible y : categorical(3); net g = mlp(4 -> 3 -> 1, act: tanh); param U : real[4, 3] = normal(0, 1);
       energy e = g(v) - v @ U @ y; } train m { data = csv(\"x.csv\") -> (v, y); objective = pl; }",
    // Score matching, every kind.
    "model m { visible x : real[2]; hidden h : binary[3]; param W : real[2, 3] = normal(0, 1); net f = mlp(2 -> 4 -> 1, act: tanh);
       energy e = 0.5 * sum(square(x)) + f(x) - x @ W @ h; } train m { data = toy(\"moons\", n: 40) -> x; objective = sm; }",
    "model m { visible x : real[2]; net f = mlp(2 -> 5 -> 1, act: swish); energy e = f(x) + 0.1 * sum(square(x)); }
       train m { data = toy(\"moons\", n: 40) -> x; objective = dsm(sigma: 0.3); }",
    "model m { visible x : real[2]; net f = mlp(2 -> 5 -> 1, act: softplus); energy e = f(x) + 0.1 * sum(square(x)); }
       train m { data = toy(\"moons\", n: 40) -> x; objective = ssm(projections: 2); }",
    "model m { visible x : real[2]; net f = mlp(2 -> 5 -> 1, act: tanh); energy e = f(x) + 0.1 * sum(square(x)); }
       train m { data = toy(\"moons\", n: 40) -> x; objective = ssm(projections: 3, variance_reduced: true); }",
    "model m { visible x : real[2]; net f = mlp(2 -> 5 -> 1, act: tanh); energy e = f(x) + 0.1 * sum(square(x)); }
       train m { data = toy(\"moons\", n: 40) -> x; objective = ssm(projections: 2, directions: rademacher); }",
    "model m { visible x : real[2]; hidden h : binary[3]; param W : real[2, 3] = normal(0, 1); param b : real[3] = normal(0, 1);
       energy e = 0.5 * sum(square(x)) - x @ W @ h - b @ h; }
       train m { data = toy(\"moons\", n: 40) -> x; objective = ssm(projections: 2, directions: rademacher, variance_reduced: true); }",
    // Noise contrast.
    "model m { visible x : real[2]; net f = mlp(2 -> 5 -> 1, act: swish); energy e = f(x) + 0.1 * sum(square(x)); }
       train m { data = toy(\"moons\", n: 40) -> x; objective = nce(noise: gaussian, ratio: 3); }",
    "model m { visible x : real[2]; net f = mlp(2 -> 5 -> 1, act: swish); energy e = f(x) + 0.1 * sum(square(x)); }
       train m { data = toy(\"moons\", n: 40) -> x; objective = nce(noise: uniform, ratio: 2); }",
    "model m { visible x : real[2]; net f = mlp(2 -> 5 -> 1, act: tanh); energy e = f(x) + 0.1 * sum(square(x)); }
       train m { data = toy(\"moons\", n: 40) -> x; objective = cnce(sigma: 0.3); }",
    // ELBO: a Gaussian decoder with two draws per row, a Bernoulli decoder on binary data with a latent matrix.
    "model m { visible x : real[2]; hidden z : real[3]; net q = mlp(2 -> 4 -> 6, act: tanh); net g = mlp(3 -> 4 -> 2, act: swish);
       energy prior = 0.5 * sum(square(z)); energy recon = 2.0 * sum(square(x - g(z))); }
       train m { data = toy(\"moons\", n: 40) -> x; objective = elbo(encoder: q, samples: 2); }",
    "model m { visible v : binary[4]; hidden z : real[1, 2]; param W : real[2, 4] = normal(0, 1); param b : real[4] = normal(0, 1);
       net q = linear(4 -> 4); energy prior = 0.5 * sum(square(z)); energy recon = sum(softplus(z @ W + b)) - sum(v * (z @ W + b)); }
       train m { data = bars_and_stripes(size: 2) -> v; objective = elbo(encoder: q); }",
    // LSD: a critic step and an energy step.
    "model m { visible x : real[2]; net f = mlp(2 -> 5 -> 1, act: swish); net c = mlp(2 -> 4 -> 2, act: tanh);
       energy e = f(x) + 0.1 * sum(square(x)); }
       train m { data = toy(\"moons\", n: 40) -> x; objective = lsd(critic: c, critic_steps: 1); }",
    // JEM, without and with alpha.
    "model m { visible x : real[2]; visible y : categorical(3); net f = mlp(2 -> 5 -> 3, act: swish);
       energy e = -(f(x) @ y); energy prior = 0.01 * sum(square(x)); }
       train m { data = csv(\"x.csv\") -> (x, y); objective = jem(k: 2, step: 0.05, noise: 0.3, buffer: 20); }",
    "model m { visible x : real[2]; visible y : categorical(3); net f = mlp(2 -> 5 -> 3, act: swish);
       energy e = -(f(x) @ y); energy prior = 0.01 * sum(square(x)); }
       train m { data = csv(\"x.csv\") -> (x, y); objective = jem(k: 1, step: 0.05, noise: 0.3, buffer: 20, alpha: 0.1); }",
    // Cross-entropy alone; with the energy-bounded term (margins about the
    // energies at the initial parameters, so both hinges are active).
    "model m { visible x : real[2]; visible y : categorical(3); net f = mlp(2 -> 5 -> 3, act: swish);
       energy e = -(f(x) @ y); energy prior = 0.01 * sum(square(x)); }
       train m { data = csv(\"x.csv\") -> (x, y); objective = classify; }",
    "model m { visible x : real[2]; visible y : categorical(3); net f = mlp(2 -> 5 -> 3, act: swish);
       energy e = -(f(x) @ y); energy prior = 0.01 * sum(square(x)); }
       train m { data = csv(\"x.csv\") -> (x, y); outliers = uniform(n: 40, low: -3, high: 3) -> x;
       objective = classify(m_in: -3, m_out: 3, weight: 0.5); }",
];

/// Rows per test batch: small, CI has two cores.
const ROWS: usize = 5;

/// The objective kind, for the record of what was checked.
fn kind(o: &O) -> String {
    match o {
        O::Cd { .. } => "cd".into(),
        O::Pcd(p) if p.kl > 0.0 || p.entropy > 0.0 => "pcd+icd".into(),
        O::Pcd(p) if p.alpha > 0.0 => "pcd+alpha".into(),
        O::Pcd(_) => "pcd".into(),
        O::Pl => "pl".into(),
        O::Jem(p) if p.alpha > 0.0 => "jem+alpha".into(),
        O::Jem(_) => "jem".into(),
        O::Sm => "sm".into(),
        O::Dsm { .. } => "dsm".into(),
        O::Ssm { directions, variance_reduced, .. } => format!(
            "ssm{}{}",
            if *variance_reduced { "+vr" } else { "" },
            if *directions == crate::analysis::program::Directions::Rademacher { "+rademacher" } else { "" }
        ),
        O::Nce { noise, .. } => format!("nce({noise:?})"),
        O::Cnce { .. } => "cnce".into(),
        O::Lsd { .. } => "lsd".into(),
        O::Elbo { samples: 1, .. } => "elbo".into(),
        O::Elbo { .. } => "elbo+samples".into(),
        O::Classify(c) if c.outliers => "classify+outliers".into(),
        O::Classify(_) => "classify".into(),
    }
}

/// Checks `loss` against `tape_loss` for the train block `name` of `src`,
/// on `data` (the first rows make the batch) or, without data, on samples
/// of the model. Returns the objective's kind.
fn check(src: &str, name: &str, data: Option<&Tensors>) -> String {
    let c = crate::compile(src).unwrap_or_else(|d| panic!("{d:?}\n{src}"));
    let (plans, _) = crate::plan(&c.program).expect("plans");
    let mut train = c.program.trains[name].clone();
    let model = c.program.models[&train.model].clone();
    let plan = plans.iter().find(|p| p.model == train.model).expect("a plan for the model").clone();
    // Short chains keep the test fast; the check is of the loss on whatever they drew.
    match &mut train.options.objective {
        O::Cd { k } => *k = (*k).min(2),
        O::Pcd(p) | O::Jem(p) => {
            p.k = p.k.min(2);
            p.chains = p.chains.min(6);
            p.buffer = p.buffer.min(50);
        }
        _ => {}
    }
    let params = crate::tensor::initialise(&crate::ir::param_specs(&model), 3);
    let (mut on, declared) = on_device(Cpu::seed_from_u64(0), &model, &plan, &train, &params, 1).expect("on device");
    let visible = on.visible.clone();
    let batch: Tensors = match data {
        Some(d) => d.iter().map(|(k, t)| (k.clone(), first_rows(t, ROWS))).collect(),
        None => {
            let mut set = ChainSet::new(Cpu::seed_from_u64(2), &model, &plan, &params, ROWS, 2).expect("chains");
            Chains::sweep(&mut set);
            visible.iter().map(|v| (v.clone(), Chains::state(&set)[v].clone())).collect()
        }
    };
    let rows = batch.values().next().map_or(0, |t| t.shape[0]);
    let mut objective = build(&mut on, &train.options, rows, &params, &Tensors::new(), 5).expect("objective");
    on.used = on.params_in(&objective.roots(&on), &declared);
    objective.prepare(&batch);
    if let Some(spec) = &train.outliers {
        let rows = crate::runtime::data::load(spec, &model, std::path::Path::new(".")).expect("outlier rows");
        objective.outliers(&on, &rows.vars).expect("outliers bind the inputs");
    }
    objective.begin_epoch(11);
    let what = format!("{} `{name}`\n{src}", kind(&train.options.objective));
    // Improved CD's entropy term needs a replay buffer with rows in it: a first step fills it.
    if matches!(&train.options.objective, O::Pcd(p) if p.entropy > 0.0) {
        objective.step(&mut on, &batch).expect("a first step");
    }
    // LSD alternates: a critic step, then (with `critic_steps: 1`) an energy step.
    let steps = if matches!(train.options.objective, O::Lsd { .. }) { 2 } else { 1 };
    for _ in 0..steps {
        compare_step(&mut *objective, &mut on, &batch, &what);
    }
    kind(&train.options.objective)
}

/// One step's draw, its loss and gradients both ways, held equal.
fn compare_step(objective: &mut dyn Step<Cpu>, on: &mut OnDevice<Cpu>, batch: &Tensors, what: &str) {
    let [(l_sym, g_sym), (l_tape, g_tape)] = objective.step_both(on, batch).expect("a step");
    assert!(l_tape.is_finite(), "tape loss {l_tape}: {what}");
    assert!((l_sym - l_tape).abs() <= 1e-4 * l_tape.abs() + 1e-4, "loss: symbolic {l_sym} vs tape {l_tape}: {what}");
    assert!(!g_tape.is_empty(), "no gradients: {what}");
    assert_eq!(g_sym.keys().collect::<Vec<_>>(), g_tape.keys().collect::<Vec<_>>(), "gradients of: {what}");
    for (p, a) in &g_tape {
        let (a, b) = (a.as_vec(), g_sym[p].as_vec());
        assert_eq!(a.len(), b.len(), "gradient of {p}: {what}");
        let scale = a.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!(
                (x - y).abs() <= 1e-4 * x.abs() + 1e-5 * (1.0 + scale),
                "gradient of {p}[{i}]: tape {x} vs symbolic {y}: {what}"
            );
        }
    }
}

/// The first `n` rows of `t` (all of them when it has fewer).
fn first_rows(t: &HostTensor, n: usize) -> HostTensor {
    let n = n.min(t.shape[0]);
    let per: usize = t.shape[1..].iter().product();
    let mut shape = t.shape.clone();
    shape[0] = n;
    HostTensor::new(shape, t.data[..n * per].to_vec())
}

#[test]
fn every_objective_kind_matches_the_tape() {
    let kinds: BTreeSet<String> = INLINE.iter().map(|src| check(src, "m", None)).collect();
    for k in [
        "cd",
        "pcd",
        "pcd+alpha",
        "pcd+icd",
        "pl",
        "sm",
        "dsm",
        "ssm",
        "ssm+vr",
        "ssm+rademacher",
        "ssm+vr+rademacher",
        "nce(Gaussian)",
        "nce(Uniform)",
        "cnce",
        "lsd",
        "elbo",
        "elbo+samples",
        "jem",
        "jem+alpha",
        "classify",
        "classify+outliers",
    ] {
        assert!(kinds.contains(k), "no model of kind {k}: {kinds:?}");
    }
}

#[test]
fn every_zoo_model_matches_the_tape() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    let mut dirs = vec![root.join("models")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("models/").flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "ebm") {
                files.push(path);
            }
        }
    }
    files.sort();
    let (mut checked, mut skipped, mut images) = (Vec::new(), Vec::new(), Vec::new());
    for file in &files {
        let src = std::fs::read_to_string(file).expect("reads");
        let c = crate::compile(&src).unwrap_or_else(|d| panic!("{}: {d:?}", file.display()));
        for (name, train) in &c.program.trains {
            let Some(spec) = &train.data else { continue };
            let model = &c.program.models[&train.model];
            let base = file.parent().unwrap_or(root);
            // The tape records no image ops (backend::conv runs outside it):
            // conv energies are checked against the f64 interpreter in
            // `step::tests` and against central differences in tests/conv_props.rs.
            if model.nets.iter().any(|n| n.conv.is_some()) {
                images.push(file.display().to_string());
                continue;
            }
            match crate::runtime::data::load(spec, model, base) {
                Ok(data) => {
                    let kind = check(&src, name, Some(&data.vars));
                    checked.push(format!("{} ({kind})", file.display()));
                }
                // Only a data file that is not in the repository (MNIST's) is a reason to skip.
                Err(e @ crate::runtime::data::DataError::Read { .. }) => {
                    skipped.push(format!("{}: {e:?}", file.display()))
                }
                Err(e) => panic!("{}: {e:?}", file.display()),
            }
        }
    }
    eprintln!("checked {checked:#?}\nskipped (data not available offline) {skipped:#?}\nimage models {images:#?}");
    assert!(files.len() >= 18 && checked.len() + skipped.len() + images.len() >= files.len(), "{files:?}");
    assert!(checked.len() >= 17, "checked {checked:?}");
    // Only MNIST's files are not in the repository.
    assert!(skipped.iter().all(|s| s.contains("mnist")), "checked {checked:?}, skipped {skipped:?}");
}
