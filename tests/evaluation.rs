//! Evaluation that cannot lie: on every small model whose log Z can be
//! enumerated, forward AIS (a stochastic lower bound) and reverse AIS from
//! data rows (a stochastic upper bound) bracket the exact value within their
//! reported error bars; stochastic pseudo-likelihood is unbiased; bad AIS
//! arguments and DBMs get errors or figures, never a panic.

use ebmc::backend::{AisOptions, DeviceKind, Sampler};
use ebmc::tensor::{HostTensor, Tensors};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Setup {
    graph: ebmc::analysis::graph::FactorGraph,
    plan: ebmc::analysis::plan::Plan,
}

fn setup(src: &str) -> Setup {
    let c =
        ebmc::compile(src).unwrap_or_else(|d| panic!("{}", ebmc::front::diagnostic::render_plain("t.ebm", src, &d)));
    let (plans, _) = ebmc::plan(&c.program).unwrap();
    let model = c.program.models.values().next().unwrap().clone();
    Setup { graph: ebmc::analysis::graph::program_to_graph(&model), plan: plans[0].clone() }
}

/// Every parameter drawn from N(0, scale²) with a fixed seed.
fn random_params(s: &Setup, scale: f64, seed: u64) -> Tensors {
    let lowered = ebmc::ir::program_to_ir(&s.graph.model);
    let mut p = ebmc::tensor::initialise(&lowered.params, 0);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let normal = Normal::new(0.0, scale).unwrap();
    for t in p.values_mut() {
        *t = HostTensor::new(t.shape.clone(), (0..t.data.len()).map(|_| normal.sample(&mut rng) as f32).collect());
    }
    p
}

/// `rows` samples of the visible variables after 300 Gibbs sweeps.
fn model_rows(s: &Setup, params: &Tensors, rows: usize) -> Tensors {
    let mut sampler = Sampler::new(&s.graph.model, &s.plan, params, rows, 9, DeviceKind::Cpu).unwrap();
    for _ in 0..300 {
        sampler.sweep();
    }
    let visible: Vec<String> = s
        .graph
        .model
        .variables
        .iter()
        .filter(|v| v.role == ebmc::front::ast::Role::Visible)
        .map(|v| v.name.clone())
        .collect();
    sampler.state().into_iter().filter(|(k, _)| visible.contains(k)).collect()
}

struct Bracket {
    exact: f64,
    lo: ebmc::backend::AisEstimate,
    hi: ebmc::backend::RaiseEstimate,
}

fn bracket(src: &str, scale: f64, seed: u64, temperatures: usize) -> Bracket {
    let s = setup(src);
    let params = random_params(&s, scale, seed);
    let exact = ebmc::runtime::evaluate::exact_log_z(&s.graph, &s.plan, &params, DeviceKind::Cpu).unwrap();
    let rows = model_rows(&s, &params, 500);
    let base = ebmc::runtime::evaluate::base_rates(&s.graph.model, &s.plan, &rows);
    let opts = AisOptions { runs: 100, temperatures, seed, base };
    let lo = ebmc::backend::ais(&s.graph.model, &s.plan, &params, &opts, DeviceKind::Cpu).unwrap();
    let hi = ebmc::backend::raise(&s.graph.model, &s.plan, &params, &rows, &opts, DeviceKind::Cpu).unwrap();
    Bracket { exact, lo, hi }
}

/// The bracket holds the exact log Z: each bound is stochastic, so allow 3
/// of its own standard errors (and 0.005 nats of float32 rounding) on the
/// wrong side; both ends must also be close.
fn assert_brackets(name: &str, b: &Bracket) {
    let (lo, hi) = (b.lo.log_z - 3.0 * b.lo.std_error - 0.005, b.hi.log_z + 3.0 * b.hi.std_error + 0.005);
    assert!(
        lo <= b.exact && b.exact <= hi,
        "{name}: exact {} outside [{} ± {}, {} ± {}]",
        b.exact,
        b.lo.log_z,
        b.lo.std_error,
        b.hi.log_z,
        b.hi.std_error
    );
    assert!(
        (b.lo.log_z - b.exact).abs() < 0.15 && (b.hi.log_z - b.exact).abs() < 0.15,
        "{name}: bracket [{}, {}] far from exact {}",
        b.lo.log_z,
        b.hi.log_z,
        b.exact
    );
    assert!(b.lo.ess > 20.0, "{name}: ESS {}", b.lo.ess);
}

const RBM: &str = "model r { visible v : binary[10]; hidden h : binary[6];
    param W : real[10, 6]; param b : real[10]; param c : real[6];
    energy e = -(v @ W @ h) - b @ v - c @ h; }";

#[test]
fn bracket_holds_exact_log_z_on_a_binary_rbm_with_strong_random_weights() {
    assert_brackets("binary RBM", &bracket(RBM, 1.0, 1, 2000));
}

#[test]
fn bracket_holds_exact_log_z_on_spin_and_categorical_rbms() {
    let spin = "model s { visible v : spin[8]; hidden h : binary[5];
        param W : real[8, 5]; param b : real[8]; param c : real[5];
        energy e = -(v @ W @ h) - b @ v - c @ h; }";
    assert_brackets("spin RBM", &bracket(spin, 0.7, 2, 2000));
    // Two sampled variables, one categorical, independent given h.
    let cat = "model k { visible y : categorical(4); visible v : binary[6]; hidden h : binary[5];
        param U : real[4, 5]; param W : real[6, 5]; param a : real[4]; param b : real[6]; param c : real[5];
        energy e = -(y @ U @ h) - (v @ W @ h) - a @ y - b @ v - c @ h; }";
    assert_brackets("categorical RBM", &bracket(cat, 0.7, 3, 2000));
}

#[test]
fn bracket_holds_exact_log_z_on_the_zoo_bars_rbm() {
    let source = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/models/bars.ebm")).unwrap();
    assert_brackets("bars.ebm", &bracket(&source, 0.8, 4, 2000));
}

#[test]
fn ais_agrees_with_exact_on_a_larger_rbm_with_known_random_weights() {
    // 24 visible, 12 hidden: enumerated on the hidden side (4,096 states).
    let src = "model r { visible v : binary[24]; hidden h : binary[12];
        param W : real[24, 12]; param b : real[24]; param c : real[12];
        energy e = -(v @ W @ h) - b @ v - c @ h; }";
    let b = bracket(src, 0.5, 5, 3000);
    assert_brackets("RBM 24x12", &b);
    assert!(
        (b.lo.log_z - b.exact).abs() < 3.0 * b.lo.std_error + 0.01,
        "AIS {} ± {} vs exact {}",
        b.lo.log_z,
        b.lo.std_error,
        b.exact
    );
}

#[test]
fn ais_on_a_dbm_matches_exact_log_z() {
    // h1 is summed out; AIS samples v and h2 (independent given h1).
    let src = "model d { visible v : binary[8]; hidden h1 : binary[5]; hidden h2 : binary[4];
        param W1 : real[8, 5]; param W2 : real[5, 4]; param b : real[8]; param c1 : real[5]; param c2 : real[4];
        energy e = -(v @ W1 @ h1) - (h1 @ W2 @ h2) - b @ v - c1 @ h1 - c2 @ h2; }";
    let s = setup(src);
    let params = random_params(&s, 0.8, 6);
    let exact = ebmc::runtime::evaluate::exact_log_z(&s.graph, &s.plan, &params, DeviceKind::Cpu).unwrap();
    let opts = AisOptions { runs: 100, temperatures: 2000, seed: 6, base: Tensors::new() };
    let est = ebmc::backend::ais(&s.graph.model, &s.plan, &params, &opts, DeviceKind::Cpu).unwrap();
    assert!(
        (est.log_z - exact).abs() < 3.0 * est.std_error + 0.01,
        "AIS {} ± {} vs exact {exact}",
        est.log_z,
        est.std_error
    );
    // The rows bind v only: each row's free energy enumerates h2.
    let rows = model_rows(&s, &params, 20);
    let ll = ebmc::runtime::evaluate::exact_log_likelihood(&s.graph, &s.plan, &params, &rows, exact, DeviceKind::Cpu)
        .unwrap();
    assert!(ll.iter().all(|x| x.is_finite() && *x < 0.0));
}

#[test]
fn one_temperature_or_run_is_refused_by_the_library() {
    let s = setup(RBM);
    let params = random_params(&s, 0.1, 1);
    for (runs, temperatures) in [(0, 100), (1, 100), (100, 0), (100, 1), (usize::MAX, 100), (100, usize::MAX)] {
        let opts = AisOptions { runs, temperatures, seed: 0, base: Tensors::new() };
        let err = ebmc::backend::ais(&s.graph.model, &s.plan, &params, &opts, DeviceKind::Cpu).unwrap_err();
        assert!(err.contains("--runs") || err.contains("--temperatures"), "{err}");
    }
}

/// Exact pseudo-likelihood, one row at a time (no chunking, no batching).
fn pl_row_by_row(s: &Setup, params: &Tensors, rows: &Tensors) -> f64 {
    let n = rows["v"].shape[0];
    let mut total = 0.0;
    for r in 0..n {
        let one: Tensors = rows
            .iter()
            .map(|(k, t)| {
                (k.clone(), HostTensor::new(vec![1, t.shape[1]], t.data[r * t.shape[1]..(r + 1) * t.shape[1]].to_vec()))
            })
            .collect();
        total +=
            ebmc::runtime::evaluate::pseudo_likelihood(&s.graph.model, &s.plan, params, &one, None, 0, DeviceKind::Cpu)
                .unwrap();
    }
    total / n as f64
}

#[test]
fn exact_pseudo_likelihood_is_the_same_in_chunks_as_row_by_row() {
    let s = setup(RBM);
    let params = random_params(&s, 0.8, 7);
    // 1,000 rows x 20 flipped copies cross several chunk boundaries.
    let rows = model_rows(&s, &params, 1000);
    let chunked =
        ebmc::runtime::evaluate::pseudo_likelihood(&s.graph.model, &s.plan, &params, &rows, None, 0, DeviceKind::Cpu)
            .unwrap();
    let direct = pl_row_by_row(&s, &params, &rows);
    assert!((chunked - direct).abs() < 1e-4, "{chunked} vs {direct}");
}

#[test]
fn stochastic_pseudo_likelihood_draws_units_per_row_and_is_unbiased() {
    let s = setup(RBM);
    let params = random_params(&s, 1.0, 8);
    let rows = model_rows(&s, &params, 200);
    let exact =
        ebmc::runtime::evaluate::pseudo_likelihood(&s.graph.model, &s.plan, &params, &rows, None, 0, DeviceKind::Cpu)
            .unwrap();
    let estimates: Vec<f64> = (0..30)
        .map(|seed| {
            ebmc::runtime::evaluate::pseudo_likelihood(
                &s.graph.model,
                &s.plan,
                &params,
                &rows,
                Some(2),
                seed,
                DeviceKind::Cpu,
            )
            .unwrap()
        })
        .collect();
    let mean = estimates.iter().sum::<f64>() / 30.0;
    let sd = (estimates.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 29.0).sqrt();
    // Unbiased: the mean of 30 seeds is within 4 standard errors of the exact value.
    assert!((mean - exact).abs() < 4.0 * sd / 30f64.sqrt(), "mean {mean} ± {} vs exact {exact}", sd / 30f64.sqrt());
    // Per row: one shared subset would make the spread across seeds that of
    // a single row's choice; fresh subsets per row average 200 choices, so
    // the spread is far below the spread of single-row estimates.
    let single: Vec<f64> = (0..30)
        .map(|seed| {
            let one: Tensors = rows
                .iter()
                .map(|(k, t)| (k.clone(), HostTensor::new(vec![1, t.shape[1]], t.data[..t.shape[1]].to_vec())))
                .collect();
            let e = ebmc::runtime::evaluate::pseudo_likelihood(
                &s.graph.model,
                &s.plan,
                &params,
                &one,
                None,
                0,
                DeviceKind::Cpu,
            )
            .unwrap();
            ebmc::runtime::evaluate::pseudo_likelihood(
                &s.graph.model,
                &s.plan,
                &params,
                &one,
                Some(2),
                seed,
                DeviceKind::Cpu,
            )
            .unwrap()
                - e
        })
        .collect();
    let single_sd = (single.iter().map(|x| x * x).sum::<f64>() / 30.0).sqrt();
    assert!(sd < single_sd / 3.0, "spread across seeds {sd} vs one row's {single_sd}");
}

// --- the binary, as a user runs it ---

fn ebmc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ebmc"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("ebmc runs")
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ebmc-eval-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn trained(model: &str, dir: &Path) -> String {
    let run = dir.join("run");
    let out = ebmc(&["train", model, "--epochs", "1", "--out", run.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    run.to_str().unwrap().to_string()
}

#[test]
fn eval_refuses_bad_ais_arguments_with_exit_2() {
    let dir = tmp("args");
    let params = trained("models/bars.ebm", &dir);
    for (flag, value) in [
        ("--runs", "0"),
        ("--runs", "1"),
        ("--temperatures", "0"),
        ("--temperatures", "1"),
        ("--runs", "100000000"),
        ("--temperatures", "99999999999"),
    ] {
        let out = ebmc(&["eval", "models/bars.ebm", "--params", &params, "--ais", flag, value]);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {}", text(&out));
        assert!(String::from_utf8_lossy(&out.stderr).contains(flag), "{flag} {value}: {}", text(&out));
        assert!(!text(&out).contains("panicked"));
    }
    let out = ebmc(&["eval", "models/bars.ebm", "--params", &params, "--pl-units", "0"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn eval_prints_the_log_z_bracket_ess_and_the_rows_it_used() {
    let dir = tmp("bracket");
    let params = trained("models/bars.ebm", &dir);
    let out = ebmc(&[
        "eval",
        "models/bars.ebm",
        "--params",
        &params,
        "--ais",
        "--runs",
        "50",
        "--temperatures",
        "1000",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let exact = j["exact_log_z"].as_f64().unwrap();
    let (lo, hi) = (j["log_z_bracket"][0].as_f64().unwrap(), j["log_z_bracket"][1].as_f64().unwrap());
    let (se_lo, se_hi) = (j["ais"]["std_error"].as_f64().unwrap(), j["raise"]["std_error"].as_f64().unwrap());
    assert!(lo - 3.0 * se_lo - 0.005 <= exact && exact <= hi + 3.0 * se_hi + 0.005, "{exact} outside [{lo}, {hi}]");
    assert!(j["ais"]["ess"].as_f64().unwrap() > 10.0);
    assert!(j["evaluated_on"].as_str().unwrap().contains("training rows"), "{j}");
    assert!(j["ais_base"].as_str().unwrap().contains("base rates"));
    let ll = &j["log_likelihood_bracket"];
    assert!(ll[0].as_f64().unwrap() < 0.0 && ll[1].as_f64().unwrap() < 0.0);
    let out =
        ebmc(&["eval", "models/bars.ebm", "--params", &params, "--ais", "--runs", "50", "--temperatures", "1000"]);
    let t = String::from_utf8_lossy(&out.stdout);
    assert!(
        t.contains("log Z in [") && t.contains("effective sample size") && t.contains("average log-likelihood in ["),
        "{t}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The zoo's bars RBM with every parameter drawn from N(0, scale²), saved as a safetensors file.
fn bars_params(dir: &Path, scale: f64, poison: Option<f32>) -> String {
    let source = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/models/bars.ebm")).unwrap();
    let s = setup(&source);
    let mut params = random_params(&s, scale, 12);
    if let Some(x) = poison {
        // Two hidden units' weights: their softplus terms sum past float32's range when x is huge.
        params.get_mut("W").unwrap().data[3] = x;
        params.get_mut("W").unwrap().data[4] = x;
    }
    let path = dir.join("params.safetensors");
    ebmc::tensor::save_safetensors(&path, &params).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn eval_warns_when_few_runs_carry_the_ais_estimate() {
    let dir = tmp("ess");
    let params = bars_params(&dir, 2.0, None);
    let out = ebmc(&[
        "eval",
        "models/bars.ebm",
        "--params",
        &params,
        "--ais",
        "--runs",
        "200",
        "--temperatures",
        "2",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ess = j["ais"]["ess"].as_f64().unwrap();
    assert!(ess < 20.0, "a 2-temperature path on strong weights should degenerate: ESS {ess}");
    assert!(
        j["warnings"].as_array().unwrap().iter().any(|w| w.as_str().unwrap().contains("effective sample size")),
        "{}",
        j["warnings"]
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("warning: the AIS importance weights"));
    // The bracket shows what ESS cannot: the two bounds far apart.
    let width = j["log_z_bracket"][1].as_f64().unwrap() - j["log_z_bracket"][0].as_f64().unwrap();
    let wide = j["warnings"].as_array().unwrap().iter().any(|w| w.as_str().unwrap().contains("bracket is"));
    assert!(width > 2.0 && wide, "width {width}, warnings {}", j["warnings"]);
    // The same model on a proper path: no warning.
    let out = ebmc(&[
        "eval",
        "models/bars.ebm",
        "--params",
        &params,
        "--ais",
        "--runs",
        "50",
        "--temperatures",
        "3000",
        "--json",
    ]);
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(j["ais"]["ess"].as_f64().unwrap() >= 10.0 && j["warnings"].as_array().unwrap().is_empty(), "{j}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn non_finite_parameters_and_figures_are_errors_not_results() {
    let dir = tmp("nan");
    let params = bars_params(&dir, 0.5, Some(f32::NAN));
    for args in [
        vec!["eval", "models/bars.ebm", "--params", &params],
        vec!["eval", "models/bars.ebm", "--params", &params, "--ais", "--runs", "10", "--temperatures", "10", "--json"],
    ] {
        let out = ebmc(&args);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("parameter `W` is NaN"), "{err}");
        assert!(out.stdout.is_empty(), "{}", text(&out));
    }
    // Finite parameters whose energies overflow float32.
    let huge = bars_params(&dir, 0.5, Some(3e38));
    let csv = dir.join("rows.csv");
    std::fs::write(
        &csv,
        (0..16).map(|i| format!("p{i}")).collect::<Vec<_>>().join(",") + "\n" + &["1"; 16].join(",") + "\n",
    )
    .unwrap();
    let out = ebmc(&["energy", "models/bars.ebm", "--params", &huge, "--data", csv.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("energy of row 1"), "{}", text(&out));
    assert!(out.stdout.is_empty(), "no half-printed table: {}", text(&out));
    let out = ebmc(&["eval", "models/bars.ebm", "--params", &huge, "--data", csv.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a finite number"), "{}", text(&out));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_checkpoint_of_another_shape_or_rows_of_another_width_are_errors() {
    let dir = tmp("shape");
    let params = bars_params(&dir, 0.5, None);
    let csv = dir.join("rows.csv");
    std::fs::write(
        &csv,
        (0..64).map(|i| format!("p{i}")).collect::<Vec<_>>().join(",") + "\n" + &["1"; 64].join(",") + "\n",
    )
    .unwrap();
    for args in [
        vec!["eval", "models/rbm.ebm", "--params", &params],
        vec!["energy", "models/rbm.ebm", "--params", &params, "--data", csv.to_str().unwrap()],
    ] {
        let out = ebmc(&args);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr)
                .contains("parameter `W` has shape [16, 8], the model declares [64, 16]"),
            "{}",
            text(&out)
        );
    }
    // Through the library: a batch of the wrong width.
    let s = setup(RBM);
    let p = random_params(&s, 0.5, 1);
    let rows: Tensors = [("v".to_string(), HostTensor::new(vec![2, 9], vec![0.0; 18]))].into_iter().collect();
    let err = ebmc::backend::free_energy(
        &s.graph.model,
        &ebmc::ir::program_to_ir(&s.graph.model),
        &p,
        &["h".to_string()],
        &rows,
        DeviceKind::Cpu,
    )
    .unwrap_err();
    assert!(err.contains("the rows of `v` have shape [2, 9]"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn eval_and_energy_work_on_a_dbm() {
    let dir = tmp("dbm");
    let model = dir.join("dbm.ebm");
    let csv = dir.join("rows.csv");
    std::fs::write(&csv, "a,b,c,d,e,f\n1,0,1,1,0,0\n0,0,1,0,1,1\n1,1,1,0,0,0\n0,1,0,1,0,1\n").unwrap();
    std::fs::write(
        &model,
        format!(
            "model d {{ visible v : binary[6]; hidden h1 : binary[4]; hidden h2 : binary[3];
            param W1 : real[6, 4] = normal(0, 0.5); param W2 : real[4, 3] = normal(0, 0.5); param b : real[6]; param c1 : real[4]; param c2 : real[3];
            energy e = -(v @ W1 @ h1) - (h1 @ W2 @ h2) - b @ v - c1 @ h1 - c2 @ h2; }}
            train d {{ data = csv(\"{}\", header: true) -> v; objective = pcd(k: 1, chains: 10); batch = 2; epochs = 1; }}",
            csv.display()
        ),
    )
    .unwrap();
    let m = model.to_str().unwrap();
    let params = trained(m, &dir);
    let out = ebmc(&["eval", m, "--params", &params, "--ais", "--runs", "20", "--temperatures", "300", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(j["ais"]["log_z"].as_f64().is_some() && j["log_likelihood"].as_f64().unwrap() < 0.0, "{j}");
    let out = ebmc(&["energy", m, "--params", &params, "--data", csv.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 5);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn eval_and_energy_on_the_zoo_dbm_do_not_panic() {
    let dir = tmp("zoo-dbm");
    let params = trained("models/dbm.ebm", &dir);
    // Three rows of 64 0/1 pixels (read as they are, not through the train
    // block's `binarize: 8`): each row's free energy enumerates h2's 2^16 states.
    let csv = dir.join("rows.csv");
    let header: Vec<String> = (0..64).map(|i| format!("p{i}")).collect();
    let row =
        |k: usize| (0..64).map(|i| if (i * k).is_multiple_of(3) { "1" } else { "0" }).collect::<Vec<_>>().join(",");
    std::fs::write(&csv, format!("{}\n{}\n{}\n{}\n", header.join(","), row(1), row(2), row(5))).unwrap();
    let data = csv.to_str().unwrap();
    let out = ebmc(&[
        "eval",
        "models/dbm.ebm",
        "--params",
        &params,
        "--data",
        data,
        "--data-as-is",
        "--runs",
        "10",
        "--temperatures",
        "100",
        "--json",
    ]);
    assert!(!text(&out).contains("panicked"), "{}", text(&out));
    assert!(out.status.success(), "{}", text(&out));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(j["log_likelihood_ais"].as_f64().is_some(), "{j}");
    let out = ebmc(&["energy", "models/dbm.ebm", "--params", &params, "--data", data, "--data-as-is"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 4);
    std::fs::remove_dir_all(&dir).unwrap();
}

const GRBM: &str = "model g { visible v : real[D]; hidden h : binary[H];
    param W : real[D, H]; param b : real[D]; param c : real[H];
    energy quadratic = 0.5 * sum(square(v - b)); energy coupling = -(v @ W @ h); energy hbias = -(c @ h); }";

fn grbm(d: usize, h: usize, seed: u64) -> (Setup, Tensors) {
    let s = setup(&GRBM.replace('D', &d.to_string()).replace('H', &h.to_string()));
    let p = random_params(&s, 1.0, seed);
    (s, p)
}

#[test]
fn exact_grbm_log_z_matches_a_numerical_integral_in_one_and_two_dimensions() {
    for (d, h, seed) in [(1, 2, 1), (1, 3, 2), (2, 2, 3), (2, 4, 4)] {
        let (s, p) = grbm(d, h, seed);
        let exact = ebmc::runtime::evaluate::exact_log_z(&s.graph, &s.plan, &p, DeviceKind::Cpu).unwrap();
        // Midpoint rule on [-16, 16]: the tails beyond are below e^-50 for these weights.
        let points = if d == 1 { 20_000 } else { 1_200 };
        let grid =
            ebmc::runtime::evaluate::grid_log_z(&s.graph.model, &s.plan, &p, -16.0, 16.0, points, DeviceKind::Cpu)
                .unwrap();
        assert!((exact - grid).abs() < 2e-3, "D={d} H={h}: closed form {exact} vs integral {grid}");
    }
}

#[test]
fn exact_grbm_log_z_matches_the_direct_formula() {
    // Z = Σ_h (2π)^(d/2) exp(½‖b + W h‖² − ½‖b‖² + c·h).
    let (d, h) = (5, 4);
    let (s, p) = grbm(d, h, 9);
    let (w, b, c) = (&p["W"].data, &p["b"].data, &p["c"].data);
    let terms: Vec<f64> = (0..1usize << h)
        .map(|state| {
            let hv: Vec<f64> = (0..h).map(|j| ((state >> (h - 1 - j)) & 1) as f64).collect();
            let mean: Vec<f64> = (0..d)
                .map(|i| f64::from(b[i]) + (0..h).map(|j| f64::from(w[i * h + j]) * hv[j]).sum::<f64>())
                .collect();
            0.5 * mean.iter().map(|m| m * m).sum::<f64>() - 0.5 * b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>()
                + (0..h).map(|j| f64::from(c[j]) * hv[j]).sum::<f64>()
        })
        .collect();
    let direct = ebmc::runtime::evaluate::log_sum_exp(&terms) + 0.5 * d as f64 * (2.0 * std::f64::consts::PI).ln();
    let exact = ebmc::runtime::evaluate::exact_log_z(&s.graph, &s.plan, &p, DeviceKind::Cpu).unwrap();
    assert!((exact - direct).abs() < 1e-3, "{exact} vs {direct}");
}

#[test]
fn exact_log_z_refuses_energies_that_are_not_gaussian() {
    let quartic = "model q { visible v : real[2]; hidden h : binary[2]; param W : real[2, 2];
        energy e = 0.25 * sum(square(square(v))) - (v @ W @ h); }";
    let s = setup(quartic);
    let p = random_params(&s, 1.0, 1);
    let err = ebmc::runtime::evaluate::exact_log_z(&s.graph, &s.plan, &p, DeviceKind::Cpu).unwrap_err();
    assert!(err.contains("not quadratic"), "{err}");
    // A quadratic whose curvature depends on h has no single Gaussian either.
    let varying = "model q { visible v : real[2]; hidden h : binary[2]; param c : real[2];
        energy e = 0.5 * sum(square(v)) * (1 + sum(h)) - c @ h; }";
    let s = setup(varying);
    let p = random_params(&s, 1.0, 2);
    let err = ebmc::runtime::evaluate::exact_log_z(&s.graph, &s.plan, &p, DeviceKind::Cpu).unwrap_err();
    assert!(err.contains("same curvature") || err.contains("not quadratic"), "{err}");
}

#[test]
fn eval_reports_the_exact_grbm_log_likelihood_and_no_irrelevant_notes() {
    let dir = tmp("grbm");
    let params = trained("models/grbm.ebm", &dir);
    let out = ebmc(&["eval", "models/grbm.ebm", "--params", &params, "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(j["exact_log_z"].as_f64().is_some() && j["log_likelihood"].as_f64().is_some(), "{j}");
    assert_eq!(j["evaluated_on"], "held-out test rows");
    assert!(j["notes"].as_array().unwrap().is_empty(), "{}", j["notes"]);
    let out = ebmc(&["eval", "models/grbm.ebm", "--params", &params]);
    let t = String::from_utf8_lossy(&out.stdout);
    assert!(t.contains("log Z (exact)") && !t.contains("note: no"), "{t}");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn write_points(path: &Path, points: &[Vec<f64>]) {
    let text: String = points.iter().map(|p| format!("{},{}\n", p[0], p[1])).collect();
    std::fs::write(path, text).unwrap();
}

#[test]
fn eval_compares_a_continuous_model_with_noise_its_samples_and_an_ood_file() {
    let dir = tmp("ood");
    // Fresh rows of the same distribution: the energy cannot tell them from the test rows.
    let same = dir.join("same.csv");
    write_points(&same, &ebmc::runtime::data::toy("8gaussians", 2000, 99));
    let run = dir.join("run");
    let model = "models/toy/8gaussians_sm.ebm";
    let out = ebmc(&["train", model, "--epochs", "1", "--out", run.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let run = run.to_str().unwrap();
    let flags = ["--ood", same.to_str().unwrap(), "--sample-chains", "64", "--sample-sweeps", "50"];
    let out = ebmc(&[&["eval", model, "--params", run, "--message-format", "json"][..], &flags].concat());
    assert!(out.status.success(), "{}", text(&out));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(j["notes"].as_array().unwrap().is_empty(), "{}", j["notes"]);
    // The toy set's held-out tenth of 20,000 rows, and as many noise rows.
    assert_eq!(j["energy_test"]["rows"], 2000, "{j}");
    assert_eq!(j["energy_noise"]["rows"], 2000, "{j}");
    assert_eq!(j["energy_ood"]["rows"], 2000, "{j}");
    assert_eq!(j["energy_samples"]["rows"], 64, "{j}");
    assert_eq!(j["model_samples"], serde_json::json!({"chains": 64, "sweeps": 50}));
    for stats in ["energy_test", "energy_noise", "energy_ood", "energy_samples"] {
        assert!(j[stats]["mean"].as_f64().is_some() && j[stats]["sd"].as_f64().unwrap() > 0.0, "{stats}: {j}");
    }
    let noise = &j["ood_noise"];
    assert!(noise["against"].as_str().unwrap().contains("Gaussian noise"), "{noise}");
    assert!(noise["auroc"].as_f64().unwrap() > 0.5, "the energy does not rank the test rows above noise: {noise}");
    for figure in ["aupr", "fpr_at_95_tpr"] {
        assert!((0.0..=1.0).contains(&noise[figure].as_f64().unwrap()), "{figure}: {noise}");
    }
    let file = &j["ood_file"];
    assert!(file["against"].as_str().unwrap().ends_with("same.csv"), "{file}");
    // Same distribution: AUROC 1/2 with sd √((2000 + 2000 + 1) / (12 · 2000²)) = 0.009; 5 sd.
    assert!((file["auroc"].as_f64().unwrap() - 0.5).abs() < 0.045, "{file}");
    let mmd = &j["mmd"];
    assert_eq!((mmd["permutations"].as_u64(), mmd["sample_rows"].as_u64()), (Some(200), Some(64)), "{mmd}");
    // At most 1,000 of the 2,000 test rows.
    assert_eq!(mmd["test_rows"], 1000, "{mmd}");
    let p = mmd["p_value"].as_f64().unwrap();
    assert!((1.0 / 201.0..=1.0).contains(&p) && mmd["bandwidth"].as_f64().unwrap() > 0.0, "{mmd}");
    let out = ebmc(&[&["eval", model, "--params", run][..], &flags].concat());
    let t = String::from_utf8_lossy(&out.stdout);
    for wanted in [
        "energy of the evaluated rows",
        "energy of model samples",
        "(64 chains x 50 sweeps",
        "energy of noise rows",
        "OOD detection by energy",
        "vs noise rows",
        "vs the --ood rows",
        "MMD² model samples vs rows",
        "200 permutations",
        "at most 1000 of each",
    ] {
        assert!(t.contains(wanted), "no `{wanted}` in\n{t}");
    }
    // Flags no run can honour.
    for chains in ["1", "1000000000"] {
        let out = ebmc(&["eval", model, "--params", run, "--sample-chains", chains]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(String::from_utf8_lossy(&out.stderr).contains("--sample-chains"), "{}", text(&out));
    }
    let out = ebmc(&["eval", model, "--params", run, "--ood-as-is"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = ebmc(&["eval", model, "--params", run, "--ood", dir.join("missing.csv").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.csv"), "{}", text(&out));
    std::fs::remove_dir_all(&dir).unwrap();
}
