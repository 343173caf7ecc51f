//! Ground truth for the compiled samplers: on models small enough to
//! enumerate, the sampled distribution must match exp(-E)/Z in total
//! variation; on Gaussians, Langevin and MALA must reproduce the known
//! moments; on a skewed density, MALA must pass a Kolmogorov-Smirnov test.
//! Seeds are fixed; every tolerance is derived in a comment.

use ebmc::analysis::program::{Domain, Model};
use ebmc::backend::Sampler;
use ebmc::tensor::{HostTensor, Tensors};
use std::collections::BTreeMap;

fn setup(src: &str, params: &[(&str, Vec<f32>)]) -> (Model, ebmc::analysis::plan::Plan, Tensors) {
    let c =
        ebmc::compile(src).unwrap_or_else(|d| panic!("{}", ebmc::front::diagnostic::render_plain("t.ebm", src, &d)));
    let (plans, _) = ebmc::plan(&c.program)
        .unwrap_or_else(|d| panic!("{}", ebmc::front::diagnostic::render_plain("t.ebm", src, &d)));
    let model = c.program.models.values().next().unwrap().clone();
    let lowered = ebmc::ir::program_to_ir(&model);
    let mut values = ebmc::tensor::initialise(&lowered.params, 0);
    for (name, data) in params {
        let t = values.get_mut(*name).unwrap_or_else(|| panic!("no parameter {name}"));
        assert_eq!(t.data.len(), data.len(), "{name}");
        t.data = data.clone();
    }
    (model, plans[0].clone(), values)
}

/// The values one unit can take, as slices of its per-unit width.
fn unit_values(domain: &Domain) -> (usize, Vec<Vec<f32>>) {
    match domain {
        Domain::Binary => (1, vec![vec![0.0], vec![1.0]]),
        Domain::Spin => (1, vec![vec![-1.0], vec![1.0]]),
        Domain::Categorical { categories } => (
            *categories,
            (0..*categories).map(|k| (0..*categories).map(|j| f32::from(u8::from(j == k))).collect()).collect(),
        ),
        Domain::Real { .. } => unreachable!(),
    }
}

/// Index of a joint state of the discrete variables `vars` (mixed radix).
fn state_index(model: &Model, vars: &[&str], state: &Tensors, row: usize) -> usize {
    let mut index = 0;
    for name in vars {
        let v = model.variable(name).unwrap();
        let (width, values) = unit_values(&v.domain);
        let per: usize = v.shape.iter().product();
        let data = &state[*name].data[row * per..(row + 1) * per];
        for unit in data.chunks(width) {
            let k = values.iter().position(|val| val.as_slice() == unit).expect("a valid discrete value");
            index = index * values.len() + k;
        }
    }
    index
}

/// Every joint state of the discrete variables, as rows, in `state_index` order.
fn all_states(model: &Model, vars: &[&str]) -> Tensors {
    let mut radices = Vec::new();
    for name in vars {
        let v = model.variable(name).unwrap();
        let (width, values) = unit_values(&v.domain);
        let per: usize = v.shape.iter().product();
        for _ in 0..per / width {
            radices.push((name.to_string(), values.clone()));
        }
    }
    let total: usize = radices.iter().map(|(_, v)| v.len()).product();
    let mut out: BTreeMap<String, Vec<f32>> = BTreeMap::new();
    for s in 0..total {
        let mut rest = s;
        let mut digits = vec![0; radices.len()];
        for i in (0..radices.len()).rev() {
            digits[i] = rest % radices[i].1.len();
            rest /= radices[i].1.len();
        }
        for (i, (name, values)) in radices.iter().enumerate() {
            out.entry(name.clone()).or_default().extend_from_slice(&values[digits[i]]);
        }
    }
    out.into_iter()
        .map(|(name, data)| {
            let mut shape = vec![total];
            shape.extend(&model.variable(&name).unwrap().shape);
            (name, HostTensor::new(shape, data))
        })
        .collect()
}

fn exact_distribution(sampler: &Sampler, model: &Model, vars: &[&str]) -> Vec<f64> {
    let states = all_states(model, vars);
    let e = sampler.energy(&states).unwrap();
    let low = e.iter().cloned().fold(f32::INFINITY, f32::min);
    let w: Vec<f64> = e.iter().map(|x| f64::from(low - x).exp()).collect();
    let z: f64 = w.iter().sum();
    w.into_iter().map(|x| x / z).collect()
}

/// Runs `chains` chains for `burn_in` sweeps, then histograms the joint state
/// of `vars` every `spacing` sweeps, `rounds` times.
#[allow(clippy::too_many_arguments)]
fn histogram(
    sampler: &mut Sampler,
    model: &Model,
    vars: &[&str],
    states: usize,
    chains: usize,
    burn_in: usize,
    spacing: usize,
    rounds: usize,
) -> Vec<f64> {
    for _ in 0..burn_in {
        sampler.sweep();
    }
    let mut counts = vec![0.0; states];
    for _ in 0..rounds {
        for _ in 0..spacing {
            sampler.sweep();
        }
        let s = sampler.state();
        for row in 0..chains {
            counts[state_index(model, vars, &s, row)] += 1.0;
        }
    }
    let n = (chains * rounds) as f64;
    counts.into_iter().map(|c| c / n).collect()
}

fn tv(p: &[f64], q: &[f64]) -> f64 {
    0.5 * p.iter().zip(q).map(|(a, b)| (a - b).abs()).sum::<f64>()
}

/// Expected TV between p and the histogram of N independent draws:
/// 1/2 sum_i E|p^_i - p_i| ~ 1/2 sum_i sqrt(2 p_i (1 - p_i) / (pi N)) (the mean
/// absolute deviation of a binomial proportion). Snapshots a few sweeps apart
/// are not independent: we take N_eff = N / 2 (these models mix in a few
/// sweeps) and allow 2.5 times the expectation. A wrong sign, a missing factor
/// of 2 in the spin conditional or a wrong colouring moves TV far beyond this.
fn tv_tolerance(p: &[f64], draws: usize) -> f64 {
    let n_eff = draws as f64 / 2.0;
    let expected: f64 =
        0.5 * p.iter().map(|pi| (2.0 * pi * (1.0 - pi) / (std::f64::consts::PI * n_eff)).sqrt()).sum::<f64>();
    2.5 * expected
}

/// Samples with the planned kernel (which must be `kernel`) and compares the
/// joint distribution of `vars` with exact enumeration.
fn check_against_enumeration(
    src: &str,
    params: &[(&str, Vec<f32>)],
    vars: &[&str],
    kernel: &str,
    chains: usize,
    rounds: usize,
) -> f64 {
    let (model, plan, values) = setup(src, params);
    assert!(plan.to_text().contains(kernel), "expected {kernel}:\n{}", plan.to_text());
    let mut sampler = Sampler::new(&model, &plan, &values, chains, 42, Default::default()).unwrap();
    let exact = exact_distribution(&sampler, &model, vars);
    let sampled = histogram(&mut sampler, &model, vars, exact.len(), chains, 30, 3, rounds);
    let d = tv(&exact, &sampled);
    let tol = tv_tolerance(&exact, chains * rounds);
    eprintln!("TV {d:.4} (tolerance {tol:.4})");
    assert!(
        d < tol,
        "TV distance {d:.4} exceeds {tol:.4} ({} states, {} draws)\nplan:\n{}",
        exact.len(),
        chains * rounds,
        plan.to_text()
    );
    d
}

#[test]
fn tiny_rbm_block_gibbs_matches_enumeration() {
    let w: Vec<f32> = vec![1.2, -0.8, 0.5, -1.0, 0.9, 0.3, 0.7, 0.4, -1.3, -0.2, -0.6, 1.1];
    check_against_enumeration(
        "model rbm { visible v : binary[4]; hidden h : binary[3];
           param W : real[4, 3]; param b : real[4]; param c : real[3];
           energy e = -(v @ W @ h) - b @ v - c @ h; }",
        &[("W", w), ("b", vec![0.3, -0.5, 0.2, 0.1]), ("c", vec![-0.4, 0.6, 0.0])],
        &["v", "h"],
        "block Gibbs, block 1 of 2",
        2000,
        20,
    );
}

#[test]
fn ising_3x3_with_fields_chromatic_gibbs_matches_enumeration() {
    check_against_enumeration(
        "model ising { const A = grid(3, 3); visible s : spin[9]; param J : real; param field : real[9];
           energy e = -0.5 * J * (s @ A @ s) - field @ s; }",
        &[("J", vec![0.6]), ("field", vec![0.3, -0.2, 0.1, 0.0, 0.25, -0.3, 0.15, -0.1, 0.05])],
        &["s"],
        "chromatic Gibbs, 2 colours",
        4000,
        25,
    );
}

#[test]
fn small_potts_chromatic_gibbs_matches_enumeration() {
    check_against_enumeration(
        "model potts { const A = chain(4); visible y : categorical(3)[4]; param J : real; param field : real[3];
           energy e = -0.5 * J * sum(A * (y @ y.T)) - sum(y @ field); }",
        &[("J", vec![0.8]), ("field", vec![0.4, -0.3, 0.0])],
        &["y"],
        "chromatic Gibbs, 2 colours",
        2000,
        20,
    );
}

#[test]
fn tiny_dbm_two_block_gibbs_matches_enumeration() {
    check_against_enumeration(
        "model dbm { visible v : binary[3]; hidden h1 : binary[2]; hidden h2 : binary[2];
           param W1 : real[3, 2]; param W2 : real[2, 2]; param b : real[3];
           energy e = -(v @ W1 @ h1) - h1 @ W2 @ h2 - b @ v; }",
        &[
            ("W1", vec![1.0, -0.7, 0.4, 0.9, -1.1, 0.3]),
            ("W2", vec![0.8, -0.6, -0.5, 1.2]),
            ("b", vec![0.2, -0.3, 0.1]),
        ],
        &["v", "h1", "h2"],
        "block Gibbs, block 2 of 2",
        2000,
        20,
    );
}

#[test]
fn fully_visible_boltzmann_machine_sequential_gibbs_matches_enumeration() {
    check_against_enumeration(
        "model bm { visible s : spin[5]; param W : real[5, 5]; energy e = -0.5 * (s @ W @ s); }",
        &[(
            "W",
            vec![
                0.0, 0.5, -0.3, 0.2, 0.4, 0.5, 0.0, 0.6, -0.2, 0.1, -0.3, 0.6, 0.0, 0.3, -0.4, 0.2, -0.2, 0.3, 0.0,
                0.5, 0.4, 0.1, -0.4, 0.5, 0.0,
            ],
        )],
        &["s"],
        "sequential Gibbs",
        1000,
        20,
    );
}

#[test]
fn mixed_grbm_discrete_marginal_matches_closed_form() {
    // E = 0.5 |v - b|^2 - v @ W @ h - c @ h. Integrating v out exactly:
    // log p(h) = 0.5 |b + W h|^2 + c @ h + const.
    let (w, b, c) = (vec![0.8f32, -0.5, 0.3, 0.4, 0.6, -0.7], vec![0.2f32, -0.1], vec![0.1f32, -0.3, 0.2]);
    let src = "model grbm { visible v : real[2]; hidden h : binary[3];
                 param W : real[2, 3]; param b : real[2]; param c : real[3];
                 energy e = 0.5 * sum(square(v - b)) - v @ W @ h - c @ h;
                 sample { v: mala(step: 0.3, steps: 4); } }";
    let (model, plan, values) = setup(src, &[("W", w.clone()), ("b", b.clone()), ("c", c.clone())]);
    let chains = 2000;
    let mut sampler = Sampler::new(&model, &plan, &values, chains, 7, Default::default()).unwrap();
    let mut exact = Vec::new();
    for s in 0..8 {
        let h: Vec<f64> = (0..3).map(|j| f64::from(((s >> (2 - j)) & 1) as u8)).collect();
        let m: Vec<f64> =
            (0..2).map(|i| f64::from(b[i]) + (0..3).map(|j| f64::from(w[i * 3 + j]) * h[j]).sum::<f64>()).collect();
        let logp = 0.5 * m.iter().map(|x| x * x).sum::<f64>() + (0..3).map(|j| f64::from(c[j]) * h[j]).sum::<f64>();
        exact.push(logp.exp());
    }
    let z: f64 = exact.iter().sum();
    let exact: Vec<f64> = exact.into_iter().map(|p| p / z).collect();
    let sampled = histogram(&mut sampler, &model, &["h"], 8, chains, 50, 3, 20);
    let d = tv(&exact, &sampled);
    assert!(d < tv_tolerance(&exact, chains * 20), "TV {d} (tolerance {})", tv_tolerance(&exact, chains * 20));
    assert!(sampler.acceptance().unwrap() > 0.5, "MALA acceptance {:?}", sampler.acceptance());
}

/// Mean and covariance of the final states of `chains` independent chains.
fn moments(state: &HostTensor) -> (Vec<f64>, Vec<Vec<f64>>) {
    let (n, d) = (state.shape[0], state.shape[1]);
    let x = |r: usize, i: usize| f64::from(state.data[r * d + i]);
    let mean: Vec<f64> = (0..d).map(|i| (0..n).map(|r| x(r, i)).sum::<f64>() / n as f64).collect();
    let cov = (0..d)
        .map(|i| {
            (0..d)
                .map(|j| (0..n).map(|r| (x(r, i) - mean[i]) * (x(r, j) - mean[j])).sum::<f64>() / (n - 1) as f64)
                .collect()
        })
        .collect();
    (mean, cov)
}

const GAUSSIAN: &str = "model g { visible x : real[2]; param mu : real[2]; param P : real[2, 2];
    energy e = 0.5 * ((x - mu) @ P @ (x - mu)); sample { x: KERNEL; } }";

fn gaussian_run(kernel: &str, chains: usize, sweeps: usize) -> (Sampler, HostTensor) {
    // Precision P = [[2, 0.6], [0.6, 1]]; mean (1, -2).
    let src = GAUSSIAN.replace("KERNEL", kernel);
    let (model, plan, values) = setup(&src, &[("mu", vec![1.0, -2.0]), ("P", vec![2.0, 0.6, 0.6, 1.0])]);
    let mut s = Sampler::new(&model, &plan, &values, chains, 3, Default::default()).unwrap();
    for _ in 0..sweeps {
        s.sweep();
    }
    let x = s.state()["x"].clone();
    (s, x)
}

#[test]
fn langevin_reaches_its_known_stationary_gaussian() {
    // ULA x' = x - l P (x - mu) + sqrt(2 l) z is linear-Gaussian; its stationary
    // covariance C solves C = (I - lP) C (I - lP) + 2l I, i.e. C = (P - l P^2 / 2)^-1
    // (P symmetric), which is the target P^-1 up to O(l). We check ULA against C
    // exactly and the mean against mu.
    let step = 0.05;
    let (_, x) = gaussian_run(&format!("langevin(step: {step}, steps: 10)"), 4000, 60);
    let p = [[2.0, 0.6], [0.6, 1.0]];
    let p2 = [
        [p[0][0] * p[0][0] + p[0][1] * p[1][0], p[0][0] * p[0][1] + p[0][1] * p[1][1]],
        [p[1][0] * p[0][0] + p[1][1] * p[1][0], p[1][0] * p[0][1] + p[1][1] * p[1][1]],
    ];
    let m = [
        [p[0][0] - step * p2[0][0] / 2.0, p[0][1] - step * p2[0][1] / 2.0],
        [p[1][0] - step * p2[1][0] / 2.0, p[1][1] - step * p2[1][1] / 2.0],
    ];
    let det = m[0][0] * m[1][1] - m[0][1] * m[1][0];
    let c = [[m[1][1] / det, -m[0][1] / det], [-m[1][0] / det, m[0][0] / det]];
    check_moments(&x, [1.0, -2.0], c, 4000);
}

#[test]
fn mala_reaches_the_exact_gaussian() {
    let (s, x) = gaussian_run("mala(step: 0.2, steps: 10)", 4000, 60);
    // Target covariance P^-1 = [[1, -0.6], [-0.6, 2]] / 1.64.
    let c = [[1.0 / 1.64, -0.6 / 1.64], [-0.6 / 1.64, 2.0 / 1.64]];
    check_moments(&x, [1.0, -2.0], c, 4000);
    let rate = s.acceptance().unwrap();
    assert!(rate > 0.5 && rate < 1.0, "acceptance {rate}");
}

/// Independent chains after 600 Langevin steps (the slowest mode decays as
/// (1 - l * 0.6)^600, negligible): the sample mean has standard error
/// sqrt(C_ii / N) and the sample covariance sqrt((C_ii C_jj + C_ij^2) / N).
/// Both are checked at 5 standard errors.
fn check_moments(x: &HostTensor, mean: [f64; 2], cov: [[f64; 2]; 2], n: usize) {
    let (m, c) = moments(x);
    for i in 0..2 {
        let se = (cov[i][i] / n as f64).sqrt();
        assert!((m[i] - mean[i]).abs() < 5.0 * se, "mean[{i}] {} vs {} (se {se})", m[i], mean[i]);
        for j in 0..2 {
            let se = ((cov[i][i] * cov[j][j] + cov[i][j] * cov[i][j]) / n as f64).sqrt();
            assert!((c[i][j] - cov[i][j]).abs() < 5.0 * se, "cov[{i}][{j}] {} vs {} (se {se})", c[i][j], cov[i][j]);
        }
    }
}

#[test]
fn mala_on_a_skewed_density_passes_kolmogorov_smirnov() {
    // Gumbel: E = x + exp(-x), CDF F(x) = exp(-exp(-x)); skewed to the right.
    let src = "model gumbel { visible x : real; energy e = x + exp(-x); sample { x: mala(step: 0.3, steps: 20); } }";
    let (model, plan, values) = setup(src, &[]);
    let chains = 3000;
    let mut s = Sampler::new(&model, &plan, &values, chains, 9, Default::default()).unwrap();
    for _ in 0..40 {
        s.sweep();
    }
    let mut xs: Vec<f64> = s.state()["x"].data.iter().map(|v| f64::from(*v)).collect();
    xs.sort_by(f64::total_cmp);
    let n = xs.len() as f64;
    let d = xs
        .iter()
        .enumerate()
        .map(|(i, x)| {
            let f = (-(-x).exp()).exp();
            (f - i as f64 / n).abs().max(((i + 1) as f64 / n - f).abs())
        })
        .fold(0.0, f64::max);
    // Kolmogorov critical value at significance 0.001: 1.95 / sqrt(n).
    assert!(d < 1.95 / n.sqrt(), "KS statistic {d} for {n} independent chains");
}

#[test]
fn same_seed_same_samples() {
    let src = "model rbm { visible v : binary[6]; hidden h : binary[4]; param W : real[6, 4] = normal(0, 1);
                 energy e = -(v @ W @ h); }";
    let (model, plan, values) = setup(src, &[]);
    let run = |seed| {
        let mut s = Sampler::new(&model, &plan, &values, 8, seed, Default::default()).unwrap();
        for _ in 0..5 {
            s.sweep();
        }
        s.state()
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1), run(2));
}

#[test]
fn periodic_ising_with_three_colours_matches_enumeration() {
    // A periodic 3x3 grid: each row and column is a ring of 3 (an odd cycle),
    // so the lattice kernel runs three colour classes; fields break the symmetry.
    check_against_enumeration(
        "model ising { const A = grid(3, 3, periodic: true); visible s : spin[9]; param J : real; param field : real[9];
           energy e = -0.5 * J * (s @ A @ s) - field @ s; }",
        &[("J", vec![0.45]), ("field", vec![0.3, -0.2, 0.1, 0.0, 0.25, -0.3, 0.15, -0.1, 0.05])],
        &["s"],
        "chromatic Gibbs, 3 colours",
        4000,
        25,
    );
}

#[test]
fn potts_with_a_learned_interaction_matrix_is_chromatic_and_exact() {
    // K is not symmetric and has off-diagonal terms: each category pair of
    // neighbouring sites has its own weight. A periodic chain of 5 (odd) needs 3 colours.
    check_against_enumeration(
        "model potts { const A = chain(5, periodic: true); visible y : categorical(3)[5]; param K : real[3, 3];
           param field : real[3];
           energy e = -0.5 * sum(A * (y @ K @ y.T)) - sum(y @ field); }",
        &[("K", vec![0.9, -0.3, 0.2, 0.1, 0.6, -0.5, 0.4, 0.0, -0.2]), ("field", vec![0.3, -0.2, 0.0])],
        &["y"],
        "chromatic Gibbs, 3 colours",
        2000,
        25,
    );
}

#[test]
fn cubic_lattice_on_two_axes_is_chromatic_and_exact() {
    // spin[4, 3]: a periodic ring of 4 along axis 0 (G @ s) and an open chain
    // of 3 along axis 1 (s @ Z), with different couplings: a bipartite unit graph.
    check_against_enumeration(
        "model cubic { const G = chain(4, periodic: true); const Z = chain(3); visible s : spin[4, 3];
           param J : real; param H : real; param field : real[4, 3];
           energy plane = -0.5 * J * sum(s * (G @ s)); energy depth = -0.5 * H * sum(s * (s @ Z));
           energy zeeman = -sum(field * s); }",
        &[
            ("J", vec![0.5]),
            ("H", vec![-0.35]),
            ("field", vec![0.2, -0.1, 0.0, 0.15, 0.05, -0.25, 0.1, 0.0, -0.05, 0.3, -0.2, 0.1]),
        ],
        &["s"],
        "chromatic Gibbs, 2 colours",
        3000,
        25,
    );
}

#[test]
fn lattice_draws_do_not_depend_on_the_thread_count() {
    // 48 chains of 4096 sites run in blocks of 8 chains on rayon's threads.
    let src = "model ising { const A = grid(64, 64, periodic: true); visible s : spin[4096]; param J : real = 0.4;
                 energy e = -0.5 * J * (s @ A @ s); }";
    let (model, plan, values) = setup(src, &[]);
    let run = |threads| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let mut s = Sampler::new(&model, &plan, &values, 48, 5, Default::default()).unwrap();
            for _ in 0..3 {
                s.sweep();
            }
            s.state()
        })
    };
    let one = run(1);
    assert_eq!(one, run(3));
    assert_ne!(one["s"].data[..4096], one["s"].data[4096..8192], "chains draw from their own streams");
}

#[test]
fn a_traced_run_records_its_own_chains_at_the_sweeps_asked_for() {
    use ebmc::analysis::limits::SampleRun;
    use ebmc::runtime::sample::{Trace, run, snapshot_sweeps};
    let src = "model rbm { visible v : binary[6]; hidden h : binary[4]; param W : real[6, 4] = normal(0, 1);
                 energy e = -(v @ W @ h); }";
    let (model, plan, values) = setup(src, &[]);
    let spec = SampleRun { chains: 12, burn_in: 5, steps: 20, every: Some(10) };
    let trace = Trace { var: "v".into(), chains: 3, count: 4 };
    let sampler = || Sampler::new(&model, &plan, &values, 12, 11, Default::default()).unwrap();
    let traced = run(&mut sampler(), &spec, Some(&trace), &mut || ()).unwrap();
    let sweeps: Vec<usize> = traced.snapshots.iter().map(|s| s.sweep).collect();
    assert_eq!((sweeps.clone(), snapshot_sweeps(25, 4)), (vec![1, 9, 17, 25], vec![1, 9, 17, 25]));
    // The same seed replayed by hand passes through the recorded states:
    // the first 3 chains of `v`, and nothing else.
    let mut replay = sampler();
    let mut snapshots = traced.snapshots.iter().peekable();
    for sweep in 1..=25 {
        replay.sweep();
        if let Some(snap) = snapshots.next_if(|s| s.sweep == sweep) {
            let v = &replay.state()["v"];
            assert_eq!(snap.state.keys().collect::<Vec<_>>(), ["v"]);
            assert_eq!(snap.state["v"].shape, [3, 6]);
            assert_eq!(snap.state["v"].data, v.data[..18], "sweep {sweep}");
        }
    }
    assert!(snapshots.next().is_none());
    // Tracing changes nothing else the run keeps.
    let plain = run(&mut sampler(), &spec, None, &mut || ()).unwrap();
    assert!(plain.snapshots.is_empty());
    assert_eq!((plain.kept.len(), &plain.kept, &plain.last), (2, &traced.kept, &traced.last));
}
