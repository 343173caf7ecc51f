//! Each objective for continuous models, fitted to data from a known
//! Gaussian with a quadratic energy, recovers its mean and covariance.

use ebmc::backend::DeviceKind;
use ebmc::tensor::HostTensor;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

const MEAN: [f64; 2] = [1.0, -1.0];
/// Covariance [[1, 0.5], [0.5, 2]] and its Cholesky factor.
const COV: [[f64; 2]; 2] = [[1.0, 0.5], [0.5, 2.0]];
const CHOL: [[f64; 2]; 2] = [[1.0, 0.0], [0.5, 1.322_875_7]];

fn gaussian_rows(n: usize) -> HostTensor {
    let mut rng = rand::rngs::StdRng::seed_from_u64(8);
    let mut data = Vec::with_capacity(2 * n);
    for _ in 0..n {
        let z: [f64; 2] = [StandardNormal.sample(&mut rng), StandardNormal.sample(&mut rng)];
        for i in 0..2 {
            data.push((MEAN[i] + CHOL[i][0] * z[0] + CHOL[i][1] * z[1]) as f32);
        }
    }
    HostTensor::new(vec![n, 2], data)
}

/// Trains `0.5 |A (x - mu)|^2` with `objective` and returns (mu, cov = (AᵀA)^-1).
/// `decls` (a critic net, say) are added to the model.
fn fit_with(objective: &str, decls: &str, epochs: usize) -> ([f64; 2], [[f64; 2]; 2]) {
    let src = format!(
        "model g {{ visible x : real[2]; param A : real[2, 2] = normal(0, 0.7); param mu : real[2]; {decls}
           energy e = 0.5 * sum(square(A @ (x - mu))); }}
         train g {{ data = csv(\"unused.csv\") -> x; objective = {objective}; optimizer = adam(lr: 0.05); schedule = cosine; batch = 200; epochs = {epochs}; seed = 4; }}"
    );
    let c = ebmc::compile(&src).unwrap();
    let (plans, _) = ebmc::plan(&c.program)
        .unwrap_or_else(|d| panic!("{}", ebmc::front::diagnostic::render_plain("g.ebm", &src, &d)));
    let model = c.program.models["g"].clone();
    let graph = ebmc::analysis::graph::program_to_graph(&model);
    let data = ebmc::runtime::data::Dataset {
        rows: 4000,
        vars: [("x".to_string(), gaussian_rows(4000))].into_iter().collect(),
    };
    let out =
        std::env::temp_dir().join(format!("ebmc-cont-{}-{}", std::process::id(), objective.split('(').next().unwrap()));
    let _ = std::fs::remove_dir_all(&out);
    let opts =
        ebmc::runtime::train::RunOptions { epochs, seed: 4, out: out.clone(), resume: false, device: DeviceKind::Cpu };
    ebmc::runtime::train::run(&src, &graph, &plans[0], &c.program.trains["g"], &data, None, &opts, &mut |_| {})
        .unwrap();
    let p = ebmc::runtime::train::load_params(&out).unwrap();
    std::fs::remove_dir_all(&out).unwrap();
    let a = &p["A"].data;
    let a = |i: usize, j: usize| f64::from(a[i * 2 + j]);
    // Precision P = AᵀA; covariance its inverse.
    let pr = [
        [a(0, 0) * a(0, 0) + a(1, 0) * a(1, 0), a(0, 0) * a(0, 1) + a(1, 0) * a(1, 1)],
        [0.0, a(0, 1) * a(0, 1) + a(1, 1) * a(1, 1)],
    ];
    let det = pr[0][0] * pr[1][1] - pr[0][1] * pr[0][1];
    let cov = [[pr[1][1] / det, -pr[0][1] / det], [-pr[0][1] / det, pr[0][0] / det]];
    ([f64::from(p["mu"].data[0]), f64::from(p["mu"].data[1])], cov)
}

/// With 4000 rows the sample mean errs by about sqrt(2 / 4000) = 0.02 and the
/// sample covariance by about 0.03-0.05 per entry; the objectives add their
/// own estimation noise (random projections, noise samples) and optimisation
/// error. 0.1 on the mean and 0.2 on the covariance (entries 0.5 to 2) are
/// a few times those errors and far below what a wrong sign produces (a
/// divergence, or a covariance off by a factor).
fn check(objective: &str, epochs: usize) {
    check_with(objective, "", epochs);
}

fn check_with(objective: &str, decls: &str, epochs: usize) {
    let (mu, cov) = fit_with(objective, decls, epochs);
    eprintln!("{objective}: mean {mu:?}, covariance {cov:?}");
    for i in 0..2 {
        assert!((mu[i] - MEAN[i]).abs() < 0.1, "{objective}: mean {mu:?}");
        for j in 0..2 {
            assert!((cov[i][j] - COV[i][j]).abs() < 0.2, "{objective}: covariance {cov:?}");
        }
    }
}

#[test]
fn exact_score_matching_recovers_a_gaussian() {
    check("sm", 60);
}

#[test]
fn denoising_score_matching_recovers_a_gaussian() {
    // DSM fits the data convolved with N(0, σ²): its covariance is COV + σ² I,
    // +0.09 on the diagonal here, inside the tolerance. Smaller σ has less bias
    // but noisier gradients (the target z/σ dominates).
    check("dsm(sigma: 0.3)", 60);
}

#[test]
fn sliced_score_matching_recovers_a_gaussian() {
    check("ssm(projections: 2)", 60);
    check("ssm(projections: 1, directions: rademacher, variance_reduced: true)", 60);
}

#[test]
fn conditional_nce_recovers_a_gaussian() {
    check("cnce(sigma: 1.0)", 80);
}

#[test]
fn nce_recovers_a_gaussian() {
    check("nce(noise: gaussian, ratio: 2)", 40);
}

#[test]
fn learned_stein_discrepancy_recovers_a_gaussian() {
    // The critic's optimum (s_model − s_data) / (2·penalty) is affine for two
    // Gaussians, so a small net represents it and the fixed point is the data's
    // mean and covariance; the estimate's noise is the critic's lag and the
    // Hutchinson trace's variance. The energy moves on one step in six
    // (`critic_steps: 5`), hence twice the epochs of the others.
    check_with("lsd(critic: c)", "net c = mlp(2 -> 32 -> 2, act: swish);", 120);
}

#[test]
fn persistent_langevin_cd_recovers_a_gaussian() {
    // Unadjusted Langevin with step 0.02 biases the covariance by about
    // step * precision / 2 < 2%, inside the tolerance. 50 steps an update
    // (one time unit, about the slowest direction's relaxation time at
    // precision 0.6) from the replay buffer, 5% of chains from noise.
    // The quadratic form would be drawn exactly through its Cholesky factor; the sample block keeps Langevin.
    check_with("pcd(k: 50, chains: 500, step: 0.02)", "sample { x: langevin(step: 0.02); }", 30);
}

#[test]
fn exact_gibbs_pcd_recovers_a_gaussian() {
    // Without a sample block `x` is drawn exactly through the Cholesky factor
    // of AᵀA, refactored after every update: one sweep an update is an
    // exact draw at the current parameters, so PCD's gradient is unbiased.
    check("pcd(k: 1, chains: 500)", 30);
}

#[test]
fn grid_integral_matches_a_gaussians_normaliser() {
    let src = "model g { visible x : real[2]; param A : real[2, 2]; param mu : real[2];
        energy e = 0.5 * sum(square(A @ (x - mu))); }";
    let c = ebmc::compile(src).unwrap();
    let (plans, _) = ebmc::plan(&c.program).unwrap();
    let model = &c.program.models["g"];
    let mut params = ebmc::tensor::initialise(&ebmc::ir::program_to_ir(model).params, 0);
    params.insert("A".into(), HostTensor::new(vec![2, 2], vec![1.5, 0.3, 0.0, 0.8]));
    params.insert("mu".into(), HostTensor::new(vec![2], vec![0.5, -0.5]));
    // Z = 2π / |det A|; the midpoint rule on a smooth, well-contained integrand
    // is accurate far beyond the 1e-3 allowed (f32 energies limit it).
    let exact = (2.0 * std::f64::consts::PI).ln() - 1.2f64.ln();
    let grid = ebmc::runtime::evaluate::grid_log_z(model, &plans[0], &params, -8.0, 8.0, 400, DeviceKind::Cpu).unwrap();
    assert!((grid - exact).abs() < 1e-3, "grid {grid} vs exact {exact}");
}

#[test]
fn langevin_pcd_keeps_its_replay_buffer_across_a_resume() {
    let src = "model g { visible x : real[2]; param A : real[2, 2] = normal(0, 0.7); param mu : real[2];
           energy e = 0.5 * sum(square(A @ (x - mu))); sample { x: langevin(step: 0.02); } }
         train g { data = csv(\"unused.csv\") -> x; objective = pcd(k: 5, chains: 50, step: 0.02, buffer: 300, reinit: 0.1); optimizer = adam(lr: 0.05); batch = 100; epochs = 4; seed = 4; }";
    let c = ebmc::compile(src).unwrap();
    let (plans, _) = ebmc::plan(&c.program).unwrap();
    let model = c.program.models["g"].clone();
    let graph = ebmc::analysis::graph::program_to_graph(&model);
    let data =
        ebmc::runtime::data::Dataset { rows: 400, vars: [("x".to_string(), gaussian_rows(400))].into_iter().collect() };
    let run = |out: &std::path::PathBuf, epochs: usize, resume: bool| {
        let opts =
            ebmc::runtime::train::RunOptions { epochs, seed: 4, out: out.clone(), resume, device: DeviceKind::Cpu };
        ebmc::runtime::train::run(src, &graph, &plans[0], &c.program.trains["g"], &data, None, &opts, &mut |_| {})
            .unwrap()
    };
    let dir = |name: &str| {
        let d = std::env::temp_dir().join(format!("ebmc-replay-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    };
    let (a, b) = (dir("straight"), dir("resumed"));
    run(&a, 4, false);
    run(&b, 2, false);
    // After two epochs (8 steps of 50 chains) the 300-row buffer is full, and saved.
    let state = ebmc::tensor::load_safetensors(&b.join("epoch-2/state.safetensors")).unwrap();
    assert_eq!(state["replay.x"].shape, vec![300, 2]);
    run(&b, 4, true);
    for file in ["params.safetensors", "state.safetensors"] {
        assert_eq!(
            std::fs::read(a.join("epoch-4").join(file)).unwrap(),
            std::fs::read(b.join("epoch-4").join(file)).unwrap(),
            "{file}"
        );
    }
    std::fs::remove_dir_all(&a).unwrap();
    std::fs::remove_dir_all(&b).unwrap();
}

/// Probabilistic PCA, `x = w z + b + s ε` with `z ~ N(0, 1)`, `x ∈ R^3`.
const PPCA_W: [f64; 3] = [1.0, -0.5, 0.8];
const PPCA_B: [f64; 3] = [0.5, -1.0, 0.0];
/// The decoder's noise, a constant of the model: `0.5 / s² = 2`.
const PPCA_S: f64 = 0.5;

/// `log N(x; b, w wᵀ + s² I)` for each row of `x` (3 columns), by the
/// matrix determinant lemma and Sherman–Morrison.
fn ppca_log_likelihood(x: &[f32], w: [f64; 3], b: [f64; 3]) -> Vec<f64> {
    let s2 = PPCA_S * PPCA_S;
    let ww: f64 = w.iter().map(|v| v * v).sum();
    let log_det = 3.0 * s2.ln() + (1.0 + ww / s2).ln();
    x.chunks(3)
        .map(|row| {
            let r: Vec<f64> = (0..3).map(|i| f64::from(row[i]) - b[i]).collect();
            let rr: f64 = r.iter().map(|v| v * v).sum();
            let wr: f64 = (0..3).map(|i| w[i] * r[i]).sum();
            let quad = rr / s2 - wr * wr / (s2 * (s2 + ww));
            -0.5 * (quad + log_det + 3.0 * (2.0 * std::f64::consts::PI).ln())
        })
        .collect()
}

#[test]
fn elbo_of_probabilistic_pca_reaches_the_exact_likelihood() {
    // z is one-dimensional, so the Gaussian posterior family is exact: at the
    // optimum the ELBO is the log-likelihood, and the decoder is its maximiser.
    let n = 4000;
    let mut rng = rand::rngs::StdRng::seed_from_u64(21);
    let mut rows = Vec::with_capacity(3 * n);
    for _ in 0..n {
        let z: f64 = StandardNormal.sample(&mut rng);
        for i in 0..3 {
            let e: f64 = StandardNormal.sample(&mut rng);
            rows.push((PPCA_W[i] * z + PPCA_B[i] + PPCA_S * e) as f32);
        }
    }
    let src = "model p { visible x : real[3]; hidden z : real[1];
           param W : real[3, 1] = normal(0, 0.5); param b : real[3]; net q = linear(3 -> 2);
           energy prior = 0.5 * sum(square(z)); energy recon = 2.0 * sum(square(x - W @ z - b)); }
         train p { data = csv(\"unused.csv\") -> x; objective = elbo(encoder: q); optimizer = adam(lr: 0.03); schedule = cosine; batch = 100; epochs = 40; seed = 2; }";
    let c = ebmc::compile(src).unwrap();
    let (plans, _) = ebmc::plan(&c.program)
        .unwrap_or_else(|d| panic!("{}", ebmc::front::diagnostic::render_plain("p.ebm", src, &d)));
    let model = c.program.models["p"].clone();
    let graph = ebmc::analysis::graph::program_to_graph(&model);
    let data = ebmc::runtime::data::Dataset {
        rows: n,
        vars: [("x".to_string(), HostTensor::new(vec![n, 3], rows.clone()))].into_iter().collect(),
    };
    let out = std::env::temp_dir().join(format!("ebmc-cont-{}-elbo", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let opts = ebmc::runtime::train::RunOptions {
        epochs: 40,
        seed: 2,
        out: out.clone(),
        resume: false,
        device: DeviceKind::Cpu,
    };
    let metrics =
        ebmc::runtime::train::run(src, &graph, &plans[0], &c.program.trains["p"], &data, None, &opts, &mut |_| {})
            .unwrap();
    let p = ebmc::runtime::train::load_params(&out).unwrap();
    std::fs::remove_dir_all(&out).unwrap();
    let f = |name: &str, i: usize| f64::from(p[name].data[i]);
    let (w, b) = ([f("W", 0), f("W", 1), f("W", 2)], [f("b", 0), f("b", 1), f("b", 2)]);
    // The ELBO in closed form for the trained encoder (`q.w0` is [3, 2]: the
    // mean's column, then the log standard deviation's), with the normalisers
    // the energy leaves out: log p(x, z) = −E − ½ log 2π − (3/2) log 2πs².
    let (s2, log_2pi) = (PPCA_S * PPCA_S, (2.0 * std::f64::consts::PI).ln());
    let ww: f64 = w.iter().map(|v| v * v).sum();
    let elbo: Vec<f64> = rows
        .chunks(3)
        .map(|row| {
            let x: Vec<f64> = row.iter().map(|&v| f64::from(v)).collect();
            let mu = (0..3).map(|i| x[i] * f("q.w0", 2 * i)).sum::<f64>() + f("q.b0", 0);
            let log_sd = (0..3).map(|i| x[i] * f("q.w0", 2 * i + 1)).sum::<f64>() + f("q.b0", 1);
            let var = (2.0 * log_sd).exp();
            let resid: f64 = (0..3).map(|i| (x[i] - b[i] - w[i] * mu).powi(2)).sum();
            let energy = 0.5 * (mu * mu + var) + (resid + ww * var) / (2.0 * s2);
            -(energy + 0.5 * log_2pi + 1.5 * (log_2pi + s2.ln())) + log_sd + 0.5 * (1.0 + log_2pi)
        })
        .collect();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (elbo, exact) = (mean(&elbo), mean(&ppca_log_likelihood(&rows, w, b)));
    let truth = mean(&ppca_log_likelihood(&rows, PPCA_W, PPCA_B));
    // The last epoch's mean loss is −ELBO less the energy's normalisers, estimated with one draw per row;
    // `eval`'s figure is the same with 16.
    let normaliser = 0.5 * log_2pi + 1.5 * (log_2pi + s2.ln());
    let reported = -metrics.last().unwrap().loss - normaliser;
    let (train, data) = (&c.program.trains["p"], &data.vars);
    let evaluated =
        ebmc::runtime::evaluate::elbo(&model, &plans[0], train, &p, data, 3, DeviceKind::Cpu).unwrap() - normaliser;
    eprintln!(
        "elbo {elbo}, exact log-likelihood {exact}, at the true parameters {truth}, reported {reported}, evaluated {evaluated}; W {w:?}, b {b:?}"
    );
    // The gap is the mean KL(q ‖ p(z | x)) ≥ 0: zero at the optimum, 0.33
    // nats for a posterior of the right mean and twice the width.
    assert!(elbo <= exact + 1e-9 && exact - elbo < 0.01, "ELBO {elbo} vs exact {exact}");
    // The maximum likelihood fit beats the true parameters by χ²₆ / 2n ≈ 0.001
    // nats on its own data; the optimiser's residual adds to the difference.
    assert!((exact - truth).abs() < 0.01, "exact log-likelihood {exact} vs {truth} at the true parameters");
    // One draw per row: the reported loss's noise is about sd(ε²/2) / √n ≈ 0.011 over an epoch.
    assert!((reported - elbo).abs() < 0.05, "reported ELBO {reported} vs {elbo}");
    // Sixteen draws a row: about a quarter of that noise.
    assert!((evaluated - elbo).abs() < 0.02, "evaluated ELBO {evaluated} vs {elbo}");
    // w wᵀ + s² I against the truth; the sample covariance errs by about
    // √(C_ii C_jj / n) ≤ 0.03 per entry.
    for i in 0..3 {
        assert!((b[i] - PPCA_B[i]).abs() < 0.1, "b {b:?}");
        for j in 0..3 {
            let (fit, truth) = (w[i] * w[j], PPCA_W[i] * PPCA_W[j]);
            assert!((fit - truth).abs() < 0.1, "w wᵀ[{i}][{j}]: {fit} vs {truth} (W {w:?})");
        }
    }
}
