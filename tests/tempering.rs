//! Parallel tempering, annealing and HMC against known answers: a symmetric
//! double well whose barrier plain Langevin cannot cross in the run, and
//! Gaussians and a truncated exponential whose moments are known. Seeds are
//! fixed; every tolerance is derived in a comment.

use ebmc::backend::Sampler;
use ebmc::tensor::{HostTensor, Tensors};

fn setup(src: &str) -> (ebmc::analysis::program::Model, ebmc::analysis::plan::Plan, Tensors) {
    let c =
        ebmc::compile(src).unwrap_or_else(|d| panic!("{}", ebmc::front::diagnostic::render_plain("t.ebm", src, &d)));
    let (plans, _) = ebmc::plan(&c.program)
        .unwrap_or_else(|d| panic!("{}", ebmc::front::diagnostic::render_plain("t.ebm", src, &d)));
    let model = c.program.models.values().next().unwrap().clone();
    let params = ebmc::tensor::initialise(&plans[0].lowered.params, 0);
    (model, plans[0].clone(), params)
}

/// E(x) = 10 x⁴ − 20 x² = 10 (x² − 1)² − 10: modes at ±1, a barrier of 10 at
/// 0. Kramers' escape time from a well is about 2π / √(E''(1) |E''(0)|) · e¹⁰
/// = 2π / √(80 · 40) · 22026 ≈ 2400 time units; 3000 Langevin steps of 0.01
/// are 30, so a chain of plain Langevin crosses with a probability of a few
/// percent (Kramers' rate is an estimate; 2.25% of 400 chains with seed 11).
const DOUBLE_WELL: &str = "model dw { visible x : real; energy well = 10 * x^4 - 20 * square(x);
    sample { x: langevin(step: 0.01); TEMPERING } }";

/// The share of `chains` independent chains in the right-hand mode after
/// `sweeps` sweeps from x = −1 (every chain in the left-hand mode).
fn right_mode_share(tempering: &str, chains: usize, sweeps: usize) -> (f64, Sampler) {
    let (model, plan, params) = setup(&DOUBLE_WELL.replace("TEMPERING", tempering));
    let mut s = Sampler::new(&model, &plan, &params, chains, 11, Default::default()).unwrap();
    let start: Tensors = [("x".to_string(), HostTensor::new(vec![chains], vec![-1.0; chains]))].into();
    s.set_state(&start).unwrap();
    for _ in 0..sweeps {
        s.sweep();
    }
    let x = &s.state()["x"].data;
    assert!(x.iter().all(|v| v.is_finite()), "a chain diverged");
    (x.iter().filter(|v| **v > 0.0).count() as f64 / chains as f64, s)
}

#[test]
fn parallel_tempering_mixes_a_double_well_that_langevin_cannot_cross() {
    // Chain c of every replica forms one tempered system, independent of the
    // others, so the T = 1 states of 400 chains are 400 independent draws:
    // the right-hand share is Binomial(400, 1/2) / 400, sd 0.025 when the
    // chains have mixed; 4 sd is 0.1.
    let (chains, sweeps) = (400, 3000);
    let (tempered, s) = right_mode_share("tempering(replicas: 8, t_max: 10);", chains, sweeps);
    assert!((tempered - 0.5).abs() < 0.1, "tempered right-mode share {tempered}");
    let t = s.tempering().expect("a tempering report");
    assert_eq!(t.temperatures.len(), 8);
    assert!((t.temperatures[0] - 1.0).abs() < 1e-12 && (t.temperatures[7] - 10.0).abs() < 1e-9, "{t:?}");
    // Adjacent swaps are offered on alternate sweeps: each pair gets 1500 offers per chain.
    assert!(t.swap_rates.iter().all(|r| *r > 0.2 && *r < 1.0), "swap rates {:?}", t.swap_rates);
    assert_eq!(t.diverged, vec![0; 8]);
    // Plain Langevin from the same start: a few percent of chains cross (see
    // DOUBLE_WELL), far below 1/2; even 10% would be 16 sd from it.
    let (plain, s) = right_mode_share("", chains, sweeps);
    eprintln!("right-mode share: tempered {tempered}, plain Langevin {plain}; swap rates {:?}", t.swap_rates);
    assert!(plain < 0.1, "plain Langevin right-mode share {plain}");
    assert!(s.tempering().is_none());
}

#[test]
fn tempered_mala_reports_each_replicas_acceptance() {
    let src = "model dw { visible x : real; energy well = 10 * x^4 - 20 * square(x);
        sample { x: mala(step: 0.01); tempering(replicas: 4, t_max: 8); } }";
    let (model, plan, params) = setup(src);
    let mut s = Sampler::new(&model, &plan, &params, 64, 3, Default::default()).unwrap();
    for _ in 0..50 {
        s.sweep();
    }
    let t = s.tempering().unwrap();
    assert_eq!(t.acceptance.len(), 4);
    assert!(t.acceptance.iter().all(|a| a.is_some_and(|a| a > 0.3 && a <= 1.0)), "{:?}", t.acceptance);
    assert_eq!(s.acceptance(), t.acceptance[0]);
}

/// Mean and variance of unit 0 over every chain's draws, with the bulk ESS
/// of those draws (rank-normalised, split chains; `runtime::diagnostics`).
fn draws(s: &mut Sampler, burn_in: usize, sweeps: usize) -> (f64, f64, f64) {
    for _ in 0..burn_in {
        s.sweep();
    }
    let chains = s.state()["x"].shape[0];
    let per = s.state()["x"].data.len() / chains;
    let mut by_chain = vec![Vec::new(); chains];
    for _ in 0..sweeps {
        s.sweep();
        let x = &s.state()["x"].data;
        for (c, chain) in by_chain.iter_mut().enumerate() {
            chain.push(f64::from(x[c * per]));
        }
    }
    let all: Vec<f64> = by_chain.iter().flatten().copied().collect();
    let n = all.len() as f64;
    let mean = all.iter().sum::<f64>() / n;
    let var = all.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    // The squared deviations mix more slowly than x itself when x is anticorrelated; the smaller ESS bounds both.
    let squares: Vec<Vec<f64>> = by_chain.iter().map(|c| c.iter().map(|v| (v - mean).powi(2)).collect()).collect();
    let ess = ebmc::runtime::diagnostics::ess_bulk(&by_chain).min(ebmc::runtime::diagnostics::ess_bulk(&squares));
    (mean, var, ess)
}

#[test]
fn hmc_samples_a_gaussians_mean_and_variance() {
    // E = 2 (x − 1.5)²: mean 1.5, variance 1/4 per unit. Over an ESS of n
    // effectively independent draws the mean has sd √(σ²/n) and the sample
    // variance √(2σ⁴/n) (Gaussian fourth moment); each is checked at 5 sd.
    // A trajectory of 5 steps of 0.15 turns the oscillator (ω = 2) by 1.5
    // rad, near a quarter turn, which decorrelates both x and (x − μ)²; half
    // a turn would mirror x and leave (x − μ)² nearly unchanged.
    let src = "model g { visible x : real[2]; energy e = 2 * sum(square(x - 1.5)); sample { x: hmc(step: 0.15, leapfrog: 5); } }";
    let (model, plan, params) = setup(src);
    assert!(plan.to_text().contains("HMC, 5 leapfrog steps of 0.15"), "{}", plan.to_text());
    let mut s = Sampler::new(&model, &plan, &params, 64, 5, Default::default()).unwrap();
    let (mean, var, ess) = draws(&mut s, 50, 300);
    eprintln!("HMC on N(1.5, 0.25): mean {mean}, variance {var}, ESS {ess}, acceptance {:?}", s.acceptance());
    assert!(ess > 1000.0, "ESS {ess}");
    assert!((mean - 1.5).abs() < 5.0 * (0.25 / ess).sqrt(), "mean {mean} (ESS {ess})");
    assert!((var - 0.25).abs() < 5.0 * (2.0 * 0.0625 / ess).sqrt(), "variance {var} (ESS {ess})");
    let rate = s.acceptance().unwrap();
    assert!(rate > 0.7 && rate < 1.0, "HMC acceptance {rate}");
}

#[test]
fn hmc_reflects_at_the_bounds_of_a_box() {
    // E = 2x on [0, 1]: a truncated exponential of rate 2, mean
    // 1/2 − 1/(e² − 1) ≈ 0.3435 and variance 1/4 − e²/(e² − 1)² ≈ 0.0690;
    // over an ESS of n draws the mean has sd √(0.069/n) and the variance
    // at most √(E(x − m)⁴/n) ≤ √(0.069/n) (as |x − m| ≤ 1); each at 5 sd.
    let src =
        "model b { visible x : real[1] in [0, 1]; energy e = 2 * sum(x); sample { x: hmc(step: 0.3, leapfrog: 5); } }";
    let (model, plan, params) = setup(src);
    let mut s = Sampler::new(&model, &plan, &params, 64, 8, Default::default()).unwrap();
    let (mean, var, ess) = draws(&mut s, 20, 300);
    eprintln!("HMC on a truncated exponential: mean {mean}, variance {var}, ESS {ess}");
    let e2 = 2f64.exp();
    let (want_mean, want_var) = (0.5 - 1.0 / (e2 - 1.0), 0.25 - e2 / (e2 - 1.0).powi(2));
    assert!((mean - want_mean).abs() < 5.0 * (want_var / ess).sqrt(), "mean {mean} vs {want_mean} (ESS {ess})");
    assert!((var - want_var).abs() < 5.0 * (want_var / ess).sqrt(), "variance {var} vs {want_var} (ESS {ess})");
    assert!(s.state()["x"].data.iter().all(|v| (0.0..=1.0).contains(v)));
}

#[test]
fn annealing_ends_at_beta_one_on_a_gaussian() {
    // From β₀ = 0.01 (T = 100) the chains start wide; after the 50-sweep
    // ramp, 100 sweeps of MALA at β = 1 on E = x²/2: the final states of 2000
    // independent chains have variance 1 with sd √(2/2000) ≈ 0.032, checked
    // at 5 sd. Had the last sweeps run hot, the variance would be far above.
    let src = "model g { visible x : real; energy e = 0.5 * square(x);
        sample { x: mala(step: 0.5, steps: 2); anneal(beta0: 0.01, ramp: linear, sweeps: 50); } }";
    let (model, plan, params) = setup(src);
    assert!(plan.to_text().contains("annealed: β rises linearly from 0.01 to 1 over the first 50 sweeps"));
    let chains = 2000;
    let mut s = Sampler::new(&model, &plan, &params, chains, 4, Default::default()).unwrap();
    for _ in 0..150 {
        s.sweep();
    }
    let x = &s.state()["x"].data;
    let var = x.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / chains as f64;
    assert!((var - 1.0).abs() < 5.0 * (2.0 / chains as f64).sqrt(), "variance {var}");
}

#[test]
fn the_inverse_temperature_of_an_annealing_ramp() {
    use ebmc::analysis::program::Temperature;
    assert_eq!(Temperature::anneal_beta(0.1, false, 10, 1), 0.1);
    assert!((Temperature::anneal_beta(0.1, false, 10, 6) - 0.55).abs() < 1e-12);
    assert!((Temperature::anneal_beta(0.01, true, 10, 6) - 0.1).abs() < 1e-12);
    assert_eq!(Temperature::anneal_beta(0.1, true, 10, 11), 1.0);
    assert_eq!(Temperature::anneal_beta(0.1, false, 10, 500), 1.0);
}

#[test]
fn sample_reports_swap_and_acceptance_rates_in_json() {
    let dir = std::env::temp_dir().join(format!("ebmc-tempering-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("dw.ebm");
    std::fs::write(
        &file,
        "model dw { visible x : real; energy well = 10 * x^4 - 20 * square(x);
            sample { x: hmc(step: 0.05, leapfrog: 5); tempering(replicas: 3, t_max: 4); } }",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ebmc"))
        .args(["sample", file.to_str().unwrap(), "--chains", "8", "--steps", "40", "--message-format", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rate = json["acceptance"].as_f64().expect("an acceptance rate");
    assert!(rate > 0.0 && rate <= 1.0, "{json}");
    let t = &json["tempering"];
    assert_eq!(t["temperatures"].as_array().unwrap().len(), 3, "{json}");
    let swaps = t["swap_rates"].as_array().unwrap();
    assert_eq!(swaps.len(), 2);
    assert!(swaps.iter().all(|r| r.as_f64().is_some_and(|r| (0.0..=1.0).contains(&r))), "{json}");
    assert!(t["acceptance"].as_array().unwrap().iter().all(|a| a.as_f64().is_some()), "{json}");
    assert_eq!(t["diverged"], serde_json::json!([0, 0, 0]));
    let human = std::process::Command::new(env!("CARGO_BIN_EXE_ebmc"))
        .args(["sample", file.to_str().unwrap(), "--chains", "8", "--steps", "40"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(text.contains("HMC acceptance rate at T = 1: "), "{text}");
    assert!(text.contains("parallel tempering over 3 replicas"), "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A ladder given by hand is the one used, and exact Gaussian Gibbs runs
/// each replica at its own temperature: for E = x²/2 a replica at T draws
/// N(0, T) afresh every sweep, so each offered swap between T₁ and T₂ is an
/// independent trial accepted with probability E[min(1, e^{(β₁−β₂)(E₁−E₂)})]
/// = (4/π) arctan(√(T₁/T₂)) (β₁E₁ and β₂E₂ are both χ²₁/2). 2,000 chains
/// over 300 sweeps offer each pair 300,000 swaps (even and odd pairs
/// alternate); the rate is checked at 5 binomial standard errors. Were the
/// replicas all drawn at T = 1, the rates would be 0.87 and 0.85.
#[test]
fn a_hand_written_ladder_is_used_as_given() {
    let src = "model g { visible x : real; energy e = 0.5 * square(x);
        sample { tempering(temperatures: [1, 2.5, 10]); } }";
    let (model, plan, params) = setup(src);
    let text = plan.to_text();
    assert!(text.contains("exact Gaussian Gibbs"), "{text}");
    assert!(text.contains("parallel tempering: 3 replicas at T = 1.000, 2.500, 10.000"), "{text}");
    let chains = 2000;
    let mut s = Sampler::new(&model, &plan, &params, chains, 4, Default::default()).unwrap();
    for _ in 0..300 {
        s.sweep();
    }
    let t = s.tempering().unwrap();
    assert_eq!(t.temperatures, [1.0, 2.5, 10.0]);
    let offers = (chains * 150) as f64;
    for (i, pair) in [(1.0f64, 2.5f64), (2.5, 10.0)].into_iter().enumerate() {
        let want = 4.0 / std::f64::consts::PI * (pair.0 / pair.1).sqrt().atan();
        let se = (want * (1.0 - want) / offers).sqrt();
        assert!((t.swap_rates[i] - want).abs() < 5.0 * se, "pair {pair:?}: swap rate {} vs {want}", t.swap_rates[i]);
    }
}

/// The two forms of the ladder and its rules, checked before anything runs.
#[test]
fn hand_written_ladders_are_checked() {
    let check = |entry: &str| {
        let src = format!("model g {{ visible x : real; energy e = 0.5 * square(x); sample {{ {entry} }} }}");
        ebmc::check_source(&src)
            .err()
            .map(|d| d.iter().map(|d| format!("{} {}", d.code, d.message)).collect::<Vec<_>>())
    };
    assert_eq!(check("tempering(temperatures: [1, 1.5, 2.5, 4]);"), None);
    let first = check("tempering(temperatures: [2, 3]);").unwrap();
    assert_eq!(first, ["E0107 the first tempering temperature must be 1, found 2"]);
    let order = check("tempering(temperatures: [1, 3, 2]);").unwrap();
    assert_eq!(order, ["E0107 tempering temperatures must increase strictly: temperature 3 is 2, after 3"]);
    let both = check("tempering(replicas: 4, temperatures: [1, 2]);").unwrap();
    assert_eq!(both, ["E0107 `temperatures` and `replicas` both give the tempering ladder"]);
    let positional = check("tempering(4, 8, [1, 2]);").unwrap();
    assert_eq!(positional, ["E0107 `temperatures` and `replicas` both give the tempering ladder"]);
    assert_eq!(
        check("tempering(temperatures: [1]);").unwrap(),
        ["E0107 a tempering ladder needs at least two temperatures"]
    );
    let long: Vec<String> = (1..=65).map(|t| t.to_string()).collect();
    let many = check(&format!("tempering(temperatures: [{}]);", long.join(", "))).unwrap();
    assert_eq!(many, ["E0107 at most 64 tempering replicas, found 65"]);
    let words = check("tempering(temperatures: [1, \"hot\"]);").unwrap();
    assert_eq!(words, ["E0107 bad value for `temperatures` of `tempering`"]);
}
