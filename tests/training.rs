//! Ground truth for training and evaluation: AIS against exact enumeration,
//! contrastive divergence and pseudo-likelihood recovering known models,
//! the digits log-likelihood bar, exact resumption, divergence handling, and
//! data errors that name the source, row and column.

use ebmc::backend::{DeviceKind, Sampler};
use ebmc::tensor::{HostTensor, Tensors};
use std::path::PathBuf;

struct Setup {
    source: String,
    graph: ebmc::analysis::graph::FactorGraph,
    plan: ebmc::analysis::plan::Plan,
    train: ebmc::analysis::program::Train,
}

fn setup(src: &str) -> Setup {
    let c =
        ebmc::compile(src).unwrap_or_else(|d| panic!("{}", ebmc::front::diagnostic::render_plain("t.ebm", src, &d)));
    let (plans, _) = ebmc::plan(&c.program).unwrap();
    let model = c.program.models.values().next().unwrap().clone();
    let train = c.program.trains.get(&model.name).cloned().unwrap_or_else(|| panic!("needs a train block"));
    Setup {
        source: src.to_string(),
        graph: ebmc::analysis::graph::program_to_graph(&model),
        plan: plans[0].clone(),
        train,
    }
}

fn params_with(s: &Setup, values: &[(&str, Vec<f32>)]) -> Tensors {
    let lowered = ebmc::ir::program_to_ir(&s.graph.model);
    let mut p = ebmc::tensor::initialise(&lowered.params, 0);
    for (k, v) in values {
        let t = p.get_mut(*k).unwrap();
        *t = HostTensor::new(t.shape.clone(), v.clone());
    }
    p
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ebmc-train-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn mean(x: &[f64]) -> f64 {
    x.iter().sum::<f64>() / x.len() as f64
}

const TINY_RBM: &str = "model rbm { visible v : binary[6]; hidden h : binary[4];
    param W : real[6, 4] = normal(0, 0.01); param b : real[6]; param c : real[4];
    energy e = -(v @ W @ h) - b @ v - c @ h; }
    train rbm { data = csv(\"unused.csv\") -> v; objective = OBJECTIVE; optimizer = adam(lr: 0.02); batch = 50; epochs = EPOCHS; seed = 3; }";

fn true_rbm_params(s: &Setup) -> Tensors {
    params_with(
        s,
        &[
            (
                "W",
                vec![
                    2.0, -1.5, 0.5, 0.0, -1.0, 1.8, 0.0, 0.7, 1.2, 0.3, -2.0, 0.4, -0.6, 0.9, 1.5, -1.2, 0.8, -0.4,
                    0.2, 1.6, 0.0, -1.3, 0.6, 1.1,
                ],
            ),
            ("b", vec![-0.5, 0.3, 0.0, 0.4, -0.2, 0.1]),
            ("c", vec![0.2, -0.3, 0.5, -0.1]),
        ],
    )
}

#[test]
fn ais_agrees_with_exact_log_z_within_its_error_bar() {
    let s = setup(&TINY_RBM.replace("OBJECTIVE", "cd").replace("EPOCHS", "1"));
    let params = true_rbm_params(&s);
    let exact = ebmc::runtime::evaluate::exact_log_z(&s.graph, &s.plan, &params, DeviceKind::Cpu).unwrap();
    let opts = ebmc::backend::AisOptions { runs: 200, temperatures: 2000, seed: 11, base: Default::default() };
    let ais = ebmc::backend::ais(&s.graph.model, &s.plan, &params, &opts, DeviceKind::Cpu).unwrap();
    // AIS is consistent; with 200 runs its standard error is reported. Allow 3 of
    // them (a two-sided 99.7% band), and the 0.1 nats absolute bound.
    let gap = (ais.log_z - exact).abs();
    assert!(gap < 3.0 * ais.std_error.max(0.005), "AIS {} ± {} vs exact {exact}", ais.log_z, ais.std_error);
    assert!(gap < 0.1, "AIS {} vs exact {exact}", ais.log_z);
}

/// Rows drawn from the true tiny RBM.
fn rbm_data(s: &Setup, rows: usize) -> ebmc::runtime::data::Dataset {
    let params = true_rbm_params(s);
    let mut sampler = Sampler::new(&s.graph.model, &s.plan, &params, rows, 5, DeviceKind::Cpu).unwrap();
    for _ in 0..200 {
        sampler.sweep();
    }
    let v = sampler.state()["v"].clone();
    ebmc::runtime::data::Dataset { rows, vars: [("v".to_string(), v)].into_iter().collect() }
}

fn train_and_score(objective: &str, epochs: usize) -> (f64, f64, f64) {
    let s = setup(&TINY_RBM.replace("OBJECTIVE", objective).replace("EPOCHS", &epochs.to_string()));
    let data = rbm_data(&s, 2000);
    let ll = |p: &Tensors| {
        let z = ebmc::runtime::evaluate::exact_log_z(&s.graph, &s.plan, p, DeviceKind::Cpu).unwrap();
        mean(
            &ebmc::runtime::evaluate::exact_log_likelihood(&s.graph, &s.plan, p, &data.vars, z, DeviceKind::Cpu)
                .unwrap(),
        )
    };
    let lowered = ebmc::ir::program_to_ir(&s.graph.model);
    let before = ll(&ebmc::tensor::initialise(&lowered.params, 3));
    let truth = ll(&true_rbm_params(&s));
    let out = tmp(objective.split('(').next().unwrap());
    let opts =
        ebmc::runtime::train::RunOptions { epochs, seed: 3, out: out.clone(), resume: false, device: DeviceKind::Cpu };
    ebmc::runtime::train::run(&s.source, &s.graph, &s.plan, &s.train, &data, None, &opts, &mut |_| {}).unwrap();
    let after = ll(&ebmc::runtime::train::load_params(&out).unwrap());
    std::fs::remove_dir_all(&out).unwrap();
    (before, after, truth)
}

#[test]
fn cd_and_pcd_move_the_exact_likelihood_to_its_maximum() {
    // The data's log-likelihood under the generating parameters is within
    // sampling noise of the maximum: with 2000 rows and 34 parameters the
    // maximum-likelihood fit exceeds it by about 34 / (2 * 2000) = 0.01 nats
    // on average. The untrained model is 0.5 nats below it; a fit must close
    // at least 80% of that gap and end within 0.05 nats of the generating
    // parameters (CD's bias on a model this small is far below that).
    for (objective, epochs) in [("cd(k: 5)", 60), ("pcd(k: 1, chains: 100)", 60)] {
        let (before, after, truth) = train_and_score(objective, epochs);
        assert!(after > before + 0.8 * (truth - before), "{objective}: {before} -> {after} (generating {truth})");
        assert!(after > truth - 0.05, "{objective}: trained {after} vs generating {truth}");
    }
}

#[test]
fn digits_rbm_reaches_the_log_likelihood_bar() {
    let source = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/models/rbm.ebm")).unwrap();
    let s = setup(&source);
    let base = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let data = ebmc::runtime::data::load(s.train.data.as_ref().unwrap(), &s.graph.model, &base).unwrap();
    let (train, test) = ebmc::runtime::data::split(data, s.train.test.as_ref(), &s.graph.model, &base).unwrap();
    assert_eq!((train.rows, test.as_ref().unwrap().rows), (1500, 297));
    let out = tmp("digits");
    let opts = ebmc::runtime::train::RunOptions {
        epochs: s.train.epochs,
        seed: s.train.seed,
        out: out.clone(),
        resume: false,
        device: DeviceKind::Cpu,
    };
    let history =
        ebmc::runtime::train::run(&s.source, &s.graph, &s.plan, &s.train, &train, test.as_ref(), &opts, &mut |_| {})
            .unwrap();
    let ll = history.last().unwrap().log_likelihood.unwrap();
    assert!(ll >= -20.6, "test log-likelihood {ll} nats");
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn resuming_reproduces_an_uninterrupted_run_exactly() {
    let s = setup(&TINY_RBM.replace("OBJECTIVE", "pcd(k: 1, chains: 20)").replace("EPOCHS", "4"));
    let data = rbm_data(&s, 200);
    let run = |out: &PathBuf, epochs: usize, resume: bool| {
        let opts =
            ebmc::runtime::train::RunOptions { epochs, seed: 9, out: out.clone(), resume, device: DeviceKind::Cpu };
        ebmc::runtime::train::run(&s.source, &s.graph, &s.plan, &s.train, &data, None, &opts, &mut |_| {}).unwrap()
    };
    let (a, b) = (tmp("straight"), tmp("resumed"));
    let straight = run(&a, 4, false);
    run(&b, 2, false);
    let resumed = run(&b, 4, true);
    assert_eq!(
        std::fs::read(a.join("epoch-4/params.safetensors")).unwrap(),
        std::fs::read(b.join("epoch-4/params.safetensors")).unwrap()
    );
    assert_eq!(
        std::fs::read(a.join("epoch-4/state.safetensors")).unwrap(),
        std::fs::read(b.join("epoch-4/state.safetensors")).unwrap()
    );
    assert_eq!(straight.len(), resumed.len());
    for (x, y) in straight.iter().zip(&resumed) {
        assert_eq!((x.epoch, x.loss), (y.epoch, y.loss));
        // The metric itself is evaluated with multithreaded GEMMs: equal up to rounding.
        assert!((x.log_likelihood.unwrap() - y.log_likelihood.unwrap()).abs() < 1e-9);
    }
    // Only complete checkpoints exist, and `latest` names the newest.
    assert_eq!(std::fs::read_to_string(b.join("latest")).unwrap(), "epoch-4");
    assert!(!std::fs::read_dir(&b).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().contains("partial")));
    std::fs::remove_dir_all(&a).unwrap();
    std::fs::remove_dir_all(&b).unwrap();
}

#[test]
fn divergence_stops_training_and_keeps_the_last_good_checkpoint() {
    let src = "model g { visible x : real[2]; hidden h : binary[2]; param W : real[2, 2] = normal(0, 1);
        energy e = 0.5 * sum(square(x)) - x @ W @ h; }
        train g { data = toy(\"moons\", n: 200) -> x; objective = cd(k: 1); optimizer = sgd(lr: LR); batch = 50; epochs = 3; }";
    let good = setup(&src.replace("LR", "0.01"));
    let data =
        ebmc::runtime::data::load(good.train.data.as_ref().unwrap(), &good.graph.model, std::path::Path::new("."))
            .unwrap();
    let out = tmp("diverge");
    let opts = |epochs| ebmc::runtime::train::RunOptions {
        epochs,
        seed: 1,
        out: out.clone(),
        resume: false,
        device: DeviceKind::Cpu,
    };
    ebmc::runtime::train::run(&good.source, &good.graph, &good.plan, &good.train, &data, None, &opts(1), &mut |_| {})
        .unwrap();
    let kept = std::fs::read(out.join("epoch-1/params.safetensors")).unwrap();
    // An absurd step size, in a fresh directory; the earlier run's checkpoint is untouched.
    let bad = setup(&src.replace("LR", "1e30"));
    let fresh = tmp("diverge-fresh");
    let err = ebmc::runtime::train::run(
        &bad.source,
        &bad.graph,
        &bad.plan,
        &bad.train,
        &data,
        None,
        &ebmc::runtime::train::RunOptions {
            epochs: 3,
            seed: 1,
            out: fresh.clone(),
            resume: false,
            device: DeviceKind::Cpu,
        },
        &mut |_| {},
    )
    .unwrap_err();
    match err {
        ebmc::runtime::train::RunError::Train {
            error: ebmc::backend::TrainError::NonFinite { what, step }, ..
        } => {
            assert!(what.contains("W") || what.contains("loss") || what.contains("gradient"), "{what}");
            assert!(step >= 1);
        }
        other => panic!("expected a divergence, got {other:?}"),
    }
    assert!(
        ebmc::runtime::train::latest_checkpoint(&fresh).is_none(),
        "no checkpoint is written from diverged parameters"
    );
    assert_eq!(std::fs::read(out.join("epoch-1/params.safetensors")).unwrap(), kept);
    let _ = std::fs::remove_dir_all(&out);
    let _ = std::fs::remove_dir_all(&fresh);
}

#[test]
fn pseudo_likelihood_recovers_lattice_couplings_from_a_zero_start() {
    // All-zero parameters put every logit at exactly 0, where a softplus built
    // from relu and abs would have no gradient: the start must still move.
    let ising = setup(
        "model ising { const A = grid(6, 6, periodic: true); visible s : spin[36]; param J : real; param field : real;
           energy e = -0.5 * J * (s @ A @ s) - field * sum(s); }
         train ising { data = csv(\"unused.csv\") -> s; objective = pl; optimizer = adam(lr: 0.05); batch = 50; epochs = 40; }",
    );
    let truth = params_with(&ising, &[("J", vec![0.3]), ("field", vec![0.1])]);
    let mut sampler = Sampler::new(&ising.graph.model, &ising.plan, &truth, 2000, 4, DeviceKind::Cpu).unwrap();
    for _ in 0..300 {
        sampler.sweep();
    }
    let data = ebmc::runtime::data::Dataset {
        rows: 2000,
        vars: [("s".to_string(), sampler.state()["s"].clone())].into_iter().collect(),
    };
    let out = tmp("pl");
    let opts = ebmc::runtime::train::RunOptions {
        epochs: 40,
        seed: 2,
        out: out.clone(),
        resume: false,
        device: DeviceKind::Cpu,
    };
    ebmc::runtime::train::run(&ising.source, &ising.graph, &ising.plan, &ising.train, &data, None, &opts, &mut |_| {})
        .unwrap();
    let fit = ebmc::runtime::train::load_params(&out).unwrap();

    // Pseudo-likelihood is consistent; with 2000 x 36 spins its error on J and the
    // field is about 0.01, so 0.05 is a wide, still discriminating band.
    assert!((fit["J"].data[0] - 0.3).abs() < 0.05, "J {}", fit["J"].data[0]);
    assert!((fit["field"].data[0] - 0.1).abs() < 0.05, "field {}", fit["field"].data[0]);
    std::fs::remove_dir_all(&out).unwrap();
}

fn load_err(source_call: &str, file_text: &[u8], var: &str, ext: &str) -> String {
    let dir = tmp(&format!("data-{ext}"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("d.{ext}"));
    std::fs::write(&file, file_text).unwrap();
    let src = format!(
        "model m {{ visible {var}; hidden h : binary[2]; param W : real[3, 2]; energy e = -(v @ W @ h); }}
         train m {{ data = {source_call} -> v; objective = cd; }}",
    )
    .replace("PATH", &file.display().to_string());
    let s = setup(&src);
    let msg = match ebmc::runtime::data::load(s.train.data.as_ref().unwrap(), &s.graph.model, &dir) {
        Ok(_) => "ok".to_string(),
        Err(e) => e.to_string(),
    };
    std::fs::remove_dir_all(&dir).unwrap();
    msg
}

#[test]
fn bad_data_is_reported_with_source_row_and_column() {
    let csv = |text: &str| load_err("csv(\"PATH\")", text.as_bytes(), "v : binary[3]", "csv");
    assert!(csv("1,0\n").contains("d.csv:1: 2 columns, expected 3"), "{}", csv("1,0\n"));
    assert!(csv("v0,v1,v2\n1,0,1\n0,2,1\n").contains("d.csv:3:2: 2 is not a value of `v`"));
    assert!(csv("1,0,1\n0,nan,1\n").contains(":2:2: NaN or infinity"));
    assert!(csv("1,0,1\n0,x,1\n").contains(":2:2: `x` is not a number"));
    assert!(csv("").contains("no data rows"));
    assert!(csv("v0,v1,v2\n").contains("no data rows"));
    // Bound by header names, in any order.
    assert_eq!(csv("v2,v0,v1\n1,0,0\n"), "ok");
    let cat = load_err("csv(\"PATH\")", b"3\n", "v : categorical(3)", "csv");
    assert!(cat.contains("3 is not a value of `v`, which takes categorical(3)"), "{cat}");
    // NPY and IDX
    let npy = ebmc::runtime::export::npy(&[vec![1.0, 0.0, 1.0], vec![0.0, 1.0, 1.0]]);
    assert_eq!(load_err("npy(\"PATH\")", &npy, "v : binary[3]", "npy"), "ok");
    let mut idx = vec![0u8, 0, 0x08, 2, 0, 0, 0, 2, 0, 0, 0, 3];
    idx.extend([0, 255, 255, 255, 0, 0]);
    assert_eq!(load_err("idx(\"PATH\", binarize: 128)", &idx, "v : binary[3]", "idx"), "ok");
    assert!(load_err("idx(\"PATH\")", &idx, "v : binary[3]", "idx").contains("255 is not a value"));
    assert!(load_err("npy(\"PATH\")", b"not npy", "v : binary[3]", "npy").contains("not an NPY file"));
}

#[test]
fn bundled_sets_have_their_documented_sizes() {
    assert_eq!(ebmc::runtime::data::bars_and_stripes(4).len(), 30);
    for name in ebmc::analysis::schema::TOY_SETS {
        let pts = ebmc::runtime::data::toy(name, 500, 1);
        assert_eq!(pts.len(), 500);
        assert!(pts.iter().all(|p| p.len() == 2 && p.iter().all(|x| x.is_finite() && x.abs() < 20.0)), "{name}");
    }
    // The 8-Gaussian density integrates to one (grid over [-6, 6]^2).
    let h = 0.02;
    let total: f64 = (0..600)
        .flat_map(|i| (0..600).map(move |j| (-6.0 + i as f64 * h, -6.0 + j as f64 * h)))
        .map(|(x, y)| ebmc::runtime::data::toy_log_density("8gaussians", x, y).unwrap().exp() * h * h)
        .sum();
    assert!((total - 1.0).abs() < 1e-3, "{total}");
}
