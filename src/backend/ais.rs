//! Annealed importance sampling of log Z (forward, a stochastic lower bound)
//! and reverse annealing from data rows (RAISE, Burda, Grosse &
//! Salakhutdinov 2015: a stochastic upper bound), on the path
//!
//!   E_β(x, h) = β E(x, h) − (1 − β) Σ a ⊙ x
//!
//! from a factorised base model over the sampled variables `x` (logits `a`,
//! the data's base rates as in Salakhutdinov & Murray 2008, or zero for the
//! uniform distribution) to the model. The plan's latents `h` are summed out
//! analytically in every intermediate distribution (the free energy F_β(x)),
//! so the importance weights depend on `x` only; each transition is one
//! two-block Gibbs step h | x, x | h at the current β, which is reversible
//! for the marginal chain on `x` (what RAISE needs).

use super::eval::{Evaluator, Leaves, canon, expand};
use super::{Kernels, T3, device_leaves};
use crate::analysis::graph::Degree;
use crate::analysis::plan::Plan;
use crate::analysis::program::{Domain, Model, Variable};
use crate::ir::{self, Id};
use crate::tensor::{HostTensor, Tensors};
use dfdx::prelude::*;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;

/// Runs and temperatures an annealing may use: at least two of each (one run
/// has no error bar, one temperature is no path), and at most these.
pub const MAX_RUNS: usize = 100_000;
/// The most temperatures an annealing may use.
pub const MAX_TEMPERATURES: usize = 10_000_000;
/// The most chain elements (runs × units) one annealing holds at once.
pub const MAX_CHAIN_ELEMENTS: usize = 1 << 27;

/// Salakhutdinov & Murray's schedule (500 β spaced evenly in [0, 0.5], 4,000
/// in [0.5, 0.9], 10,000 in [0.9, 1]), scaled to `temperatures` steps:
/// `temperatures + 1` values from β = 0 to β = 1, densest near the model,
/// where the distributions change fastest.
pub fn schedule(temperatures: usize) -> Vec<f64> {
    let k = temperatures as f64;
    let first = ((k * 500.0 / 14_500.0).round() as usize).max(1);
    let second = ((k * 4_000.0 / 14_500.0).round() as usize).max(1);
    let parts = if temperatures >= 3 {
        [(first, 0.0, 0.5), (second, 0.5, 0.9), (temperatures - first - second, 0.9, 1.0)]
    } else {
        [(0, 0.0, 0.0), (0, 0.0, 0.0), (temperatures, 0.0, 1.0)]
    };
    let mut betas = vec![0.0];
    for (steps, lo, hi) in parts {
        for i in 1..=steps {
            betas.push(lo + (hi - lo) * i as f64 / steps as f64);
        }
    }
    // Cannot fire: `check_options` requires at least 2 temperatures.
    *betas.last_mut().expect("β = 0 at least") = 1.0;
    betas
}

/// How an annealing is run.
#[derive(Debug, Clone)]
pub struct AisOptions {
    /// Independent annealing runs (at least 2).
    pub runs: usize,
    /// Annealing steps from the base (β = 0) to the model (β = 1); at least 2.
    pub temperatures: usize,
    /// Seed of the runs' random draws.
    pub seed: u64,
    /// Base-model logits per sampled variable (shape of the variable); a
    /// variable left out has a uniform base.
    pub base: Tensors,
}

/// The result of forward annealed importance sampling.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AisEstimate {
    /// log Ẑ = log Z_base + log mean w: a stochastic lower bound on log Z (E[log Ẑ] ≤ log Z).
    pub log_z: f64,
    /// Standard error of `log_z` (delta method: sd(w) / (√runs · mean w)).
    pub std_error: f64,
    /// Effective sample size of the importance weights, (Σw)² / Σw².
    pub ess: f64,
    /// Runs the estimate averages over.
    pub runs: usize,
    /// Annealing steps of each run.
    pub temperatures: usize,
    /// log Z of the base model the path starts from.
    pub log_z_base: f64,
}

/// The result of reverse annealing (RAISE) from data rows.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RaiseEstimate {
    /// Mean over runs of −F(v) − log q̂(v): a stochastic upper bound on log Z
    /// (exact as the path is refined; see the module notes).
    pub log_z: f64,
    /// Standard error of `log_z` over runs.
    pub std_error: f64,
    /// Mean log q̂(v) over the rows the runs started from (a conservative log-likelihood).
    pub log_likelihood: f64,
    /// Runs the estimate averages over.
    pub runs: usize,
    /// Annealing steps of each run.
    pub temperatures: usize,
}

/// Checks runs and temperatures before anything is allocated.
pub fn check_options(model: &Model, runs: usize, temperatures: usize) -> Result<(), String> {
    if !(2..=MAX_RUNS).contains(&runs) {
        return Err(format!(
            "AIS needs between 2 and {MAX_RUNS} runs (`--runs`), not {runs}: one run has no error bar and no effective sample size"
        ));
    }
    if !(2..=MAX_TEMPERATURES).contains(&temperatures) {
        return Err(format!(
            "AIS needs between 2 and {MAX_TEMPERATURES} temperatures (`--temperatures`), not {temperatures}: with fewer there is no path from the base model to the model"
        ));
    }
    let units: usize = model.variables.iter().map(|v| v.shape.iter().product::<usize>()).sum();
    if runs.saturating_mul(units) > MAX_CHAIN_ELEMENTS {
        return Err(format!(
            "AIS with {runs} runs of {units} units would hold {} chain elements (limit {MAX_CHAIN_ELEMENTS}); use fewer `--runs`",
            runs.saturating_mul(units)
        ));
    }
    Ok(())
}

/// The annealing path compiled once: free energies at two β (`a`, `b`) and
/// the Gibbs logits at `b`, all from one IR so shared products (W x) are
/// computed once per step.
struct Path<'m, D: Kernels> {
    dev: D,
    ir: ir::Ir,
    leaves: Leaves<D, NoneTape>,
    sampled: Vec<&'m Variable>,
    latent: Vec<&'m Variable>,
    free_a: Id,
    free_b: Id,
    logits_b: BTreeMap<String, Id>,
    log_z_base: f64,
    runs: usize,
    rng: rand::rngs::SmallRng,
}

/// The sampled and summed-out variables of a model AIS can anneal, or why it cannot.
fn split_variables<'m>(model: &'m Model, plan: &Plan) -> Result<(Vec<&'m Variable>, Vec<&'m Variable>), String> {
    let summed = plan.summed_out.as_ref().map(|m| m.summed.clone()).unwrap_or_default();
    let graph = crate::analysis::graph::program_to_graph(model);
    let sampled: Vec<&Variable> = model.variables.iter().filter(|v| !summed.contains(&v.name)).collect();
    let latent: Vec<&Variable> = model.variables.iter().filter(|v| summed.contains(&v.name)).collect();
    if latent.is_empty() || !model.variables.iter().all(|v| v.domain.is_discrete()) {
        return Err("AIS needs an RBM-like model: discrete variables, with latents the plan sums out".into());
    }
    // x | h must factorise: no sampled variable couples to itself or to another sampled one.
    for v in &sampled {
        let bad = graph.total_degree(&v.name) > Degree::Linear
            || !graph.self_couplings(&v.name).is_empty()
            || sampled.iter().any(|w| graph.neighbours(&v.name).contains(&w.name));
        if bad {
            return Err(format!(
                "AIS needs the variables it samples to be independent given the summed-out latents; `{}` is coupled to itself or to another sampled variable",
                v.name
            ));
        }
    }
    Ok((sampled, latent))
}

fn unit_log_z(domain: &Domain, a: &[f32]) -> f64 {
    match domain {
        Domain::Binary => a.iter().map(|x| softplus(f64::from(*x))).sum(),
        Domain::Spin => a.iter().map(|x| softplus(2.0 * f64::from(*x)) - f64::from(*x)).sum(),
        Domain::Categorical { categories } => a
            .chunks(*categories)
            .map(|row| crate::runtime::evaluate::log_sum_exp(&row.iter().map(|x| f64::from(*x)).collect::<Vec<_>>()))
            .sum(),
        // Cannot fire: `split_variables` refuses models with continuous variables before a path is built.
        Domain::Real { .. } => unreachable!("AIS checks that every variable is discrete"),
    }
}

fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

fn unit_values(domain: &Domain) -> f64 {
    match domain {
        Domain::Categorical { categories } => *categories as f64,
        _ => 2.0,
    }
}

impl<'m, D: Kernels> Path<'m, D> {
    fn new(dev: D, model: &'m Model, plan: &Plan, params: &Tensors, opts: &AisOptions) -> Result<Self, String> {
        let (sampled, latent) = split_variables(model, plan)?;
        let mut lowered = plan.lowered.clone();
        let base_names: Vec<String> = sampled.iter().map(|v| format!("__base_{}", v.name)).collect();
        let mut base = lowered.ir.num(0.0);
        for (v, p) in sampled.iter().zip(&base_names) {
            let a = lowered.ir.param(p, &v.shape);
            let x = lowered.ir.var(&v.name, &v.shape);
            let ax = lowered.ir.mul(a, x);
            let s = lowered.ir.sum(ax);
            base = lowered.ir.add(base, s);
        }
        let at = |ir: &mut ir::Ir, which: &str| {
            let beta = ir.param(&format!("__beta_{which}"), &[]);
            let rest = ir.param(&format!("__rest_{which}"), &[]);
            let scaled = ir.mul(beta, lowered.total);
            let pulled = ir.mul(rest, base);
            ir.sub(scaled, pulled)
        };
        let energy_a = at(&mut lowered.ir, "a");
        let energy_b = at(&mut lowered.ir, "b");
        let (mut free_a, mut free_b) = (energy_a, energy_b);
        for v in &latent {
            free_a = crate::analysis::plan::sum_out(&mut lowered.ir, free_a, v).0;
            free_b = crate::analysis::plan::sum_out(&mut lowered.ir, free_b, v).0;
        }
        let logits_b = model
            .variables
            .iter()
            .map(|v| {
                let g = lowered.ir.grad(energy_b, &v.name).unwrap_or_else(|| lowered.ir.zeros(&v.shape));
                (v.name.clone(), lowered.ir.neg(g))
            })
            .collect();
        let mut leaves = device_leaves(&dev, model, &lowered, params)?;
        let mut log_z_base = 0.0;
        for (v, p) in sampled.iter().zip(&base_names) {
            let units: usize = v.shape.iter().product();
            let a = match opts.base.get(&v.name) {
                Some(t) if t.shape == v.shape && t.data.iter().all(|x| x.is_finite()) => t.data.clone(),
                Some(t) => {
                    return Err(format!(
                        "base rates for `{}` have shape {:?} or non-finite values; expected finite values of shape {:?}",
                        v.name, t.shape, v.shape
                    ));
                }
                None => vec![0.0; units],
            };
            log_z_base += unit_log_z(&v.domain, &a);
            leaves.tensors.insert(p.clone(), super::upload(&dev, &HostTensor::new(v.shape.clone(), a), 1));
        }
        for v in &latent {
            let units = match v.domain {
                Domain::Categorical { categories } => v.shape.iter().product::<usize>() / categories,
                _ => v.shape.iter().product(),
            };
            log_z_base += units as f64 * unit_values(&v.domain).ln();
        }
        let rng = rand::rngs::SmallRng::seed_from_u64(opts.seed);
        Ok(Path {
            dev,
            ir: lowered.ir,
            leaves,
            sampled,
            latent,
            free_a,
            free_b,
            logits_b,
            log_z_base,
            runs: opts.runs,
            rng,
        })
    }

    fn set_betas(&mut self, a: f64, b: f64) {
        for (which, beta) in [("a", a), ("b", b)] {
            self.leaves
                .tensors
                .insert(format!("__beta_{which}"), self.dev.tensor_from_vec(vec![beta as f32], (1, 1, 1)));
            self.leaves
                .tensors
                .insert(format!("__rest_{which}"), self.dev.tensor_from_vec(vec![(1.0 - beta) as f32], (1, 1, 1)));
        }
    }

    fn draw(&mut self, v: &Variable, logits: T3<D>) -> T3<D> {
        let (m, n) = canon(&v.shape);
        let l = expand(logits, self.runs, m, n);
        match v.domain {
            Domain::Binary => self.dev.bernoulli(l, None, 1.0, 1.0, 0.0, &mut self.rng),
            Domain::Spin => self.dev.bernoulli(l, None, 2.0, 1.0, -1.0, &mut self.rng),
            _ => self.dev.categorical(l, &mut self.rng),
        }
    }

    fn per_run(&self, t: T3<D>) -> Vec<f64> {
        expand(t, self.runs, 1, 1).as_vec().into_iter().map(f64::from).collect()
    }

    /// F_a(x), F_b(x), and the latents drawn from p_b(h | x).
    fn free_energies_and_latents(&mut self, state: &mut BTreeMap<String, T3<D>>, draw: bool) -> (Vec<f64>, Vec<f64>) {
        let mut roots = vec![self.free_a, self.free_b];
        if draw {
            roots.extend(self.latent.iter().map(|v| self.logits_b[&v.name]));
        }
        let mut values =
            Evaluator { ir: &self.ir, dev: &self.dev, leaves: &self.leaves }.eval(&roots, state).into_iter();
        // Cannot fire: the evaluator returns one value per root, and two roots were passed.
        let fa = self.per_run(values.next().expect("one value per root"));
        let fb = self.per_run(values.next().expect("one value per root"));
        if draw {
            let latent = self.latent.clone();
            for (v, l) in latent.iter().zip(values) {
                let h = self.draw(v, l);
                state.insert(v.name.clone(), h);
            }
        }
        (fa, fb)
    }

    /// The sampled variables drawn from p_b(x | h).
    fn draw_sampled(&mut self, state: &mut BTreeMap<String, T3<D>>) {
        let roots: Vec<Id> = self.sampled.iter().map(|v| self.logits_b[&v.name]).collect();
        let values = Evaluator { ir: &self.ir, dev: &self.dev, leaves: &self.leaves }.eval(&roots, state);
        let sampled = self.sampled.clone();
        for (v, l) in sampled.iter().zip(values) {
            let x = self.draw(v, l);
            state.insert(v.name.clone(), x);
        }
    }

    /// Forward AIS: x_0 from the base model, then weight, transition, weight, ….
    fn forward(&mut self, betas: &[f64]) -> Result<Vec<f64>, String> {
        let mut state = BTreeMap::new();
        self.set_betas(0.0, 0.0);
        let sampled = self.sampled.clone();
        for v in &sampled {
            // At β = 0 the logits are the base's: −∂E_0/∂x = a.
            let l = self.leaves.tensors[&format!("__base_{}", v.name)].clone();
            let x = self.draw(v, l);
            state.insert(v.name.clone(), x);
        }
        let mut log_w = vec![0.0; self.runs];
        for k in 1..betas.len() {
            self.set_betas(betas[k - 1], betas[k]);
            let last = k + 1 == betas.len();
            let (fa, fb) = self.free_energies_and_latents(&mut state, !last);
            for (w, (a, b)) in log_w.iter_mut().zip(fa.iter().zip(&fb)) {
                *w += a - b;
            }
            if !last {
                self.draw_sampled(&mut state);
            }
        }
        finite(&log_w, "AIS importance weights")?;
        Ok(log_w)
    }

    /// Reverse annealing from the rows `start` (one per run): returns −F(v) − log q̂(v) and log q̂(v) per run.
    fn reverse(&mut self, betas: &[f64], start: &Tensors) -> Result<(Vec<f64>, Vec<f64>), String> {
        let mut state: BTreeMap<String, T3<D>> = BTreeMap::new();
        for v in &self.sampled {
            let t = start
                .get(&v.name)
                .ok_or_else(|| format!("reverse AIS starts from data rows, and the rows do not bind `{}`", v.name))?;
            state.insert(v.name.clone(), super::upload(&self.dev, t, self.runs));
        }
        let k_max = betas.len() - 1;
        // (a, b) = (β_k, β_k): F_K(x_K) and h ~ p_K(h | x_K).
        self.set_betas(betas[k_max], betas[k_max]);
        let (target, _) = self.free_energies_and_latents(&mut state, true);
        let mut current = target.clone();
        let mut log_q = vec![0.0; self.runs];
        for k in (1..=k_max).rev() {
            // x_{k−1} ~ T_k(· | x_k), then F_k(x_{k−1}), F_{k−1}(x_{k−1}) and h ~ p_{k−1}(h | x_{k−1}).
            self.set_betas(betas[k], betas[k]);
            self.draw_sampled(&mut state);
            self.set_betas(betas[k], betas[k - 1]);
            let (fk, fprev) = self.free_energies_and_latents(&mut state, k > 1);
            for (q, (a, c)) in log_q.iter_mut().zip(fk.iter().zip(&current)) {
                *q += a - c;
            }
            current = fprev;
        }
        for (q, f0) in log_q.iter_mut().zip(&current) {
            *q += -f0 - self.log_z_base;
        }
        finite(&log_q, "reverse AIS weights")?;
        let implied = target.iter().zip(&log_q).map(|(f, q)| -f - q).collect();
        Ok((implied, log_q))
    }
}

fn finite(xs: &[f64], what: &str) -> Result<(), String> {
    match xs.iter().position(|x| !x.is_finite()) {
        Some(i) => Err(format!(
            "{what} went non-finite (run {}: {}); the parameters are likely too large or not finite",
            i + 1,
            xs[i]
        )),
        None => Ok(()),
    }
}

/// log Ẑ, its delta-method standard error and the effective sample size from log weights.
fn summarise(log_w: &[f64], log_z_base: f64) -> (f64, f64, f64) {
    let n = log_w.len() as f64;
    let top = log_w.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let w: Vec<f64> = log_w.iter().map(|x| (x - top).exp()).collect();
    let mean = w.iter().sum::<f64>() / n;
    let var = w.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    let ess = w.iter().sum::<f64>().powi(2) / w.iter().map(|x| x * x).sum::<f64>();
    (log_z_base + top + mean.ln(), (var / n).sqrt() / mean, ess)
}

/// Forward AIS estimate of log Z for an RBM-like model (see the module notes).
pub fn ais(
    model: &Model,
    plan: &Plan,
    params: &Tensors,
    opts: &AisOptions,
    device: super::DeviceKind,
) -> Result<AisEstimate, String> {
    check_options(model, opts.runs, opts.temperatures)?;
    let betas = schedule(opts.temperatures);
    let run = |path: Result<Vec<f64>, String>, base: f64| -> Result<AisEstimate, String> {
        let (log_z, std_error, ess) = summarise(&path?, base);
        Ok(AisEstimate { log_z, std_error, ess, runs: opts.runs, temperatures: opts.temperatures, log_z_base: base })
    };
    match device {
        super::DeviceKind::Cpu => {
            let mut p = Path::new(Cpu::seed_from_u64(opts.seed), model, plan, params, opts)?;
            let w = p.forward(&betas);
            run(w, p.log_z_base)
        }
        #[cfg(feature = "cuda")]
        super::DeviceKind::Cuda => {
            let dev = Cuda::try_seed_from_u64(opts.seed).map_err(|e| format!("cannot open the CUDA device: {e:?}"))?;
            let mut p = Path::new(dev, model, plan, params, opts)?;
            let w = p.forward(&betas);
            run(w, p.log_z_base)
        }
        #[cfg(not(feature = "cuda"))]
        super::DeviceKind::Cuda => {
            Err("this ebmc was built without the `cuda` feature; rebuild with `--features cuda`".into())
        }
    }
}

/// Reverse AIS (RAISE) from `opts.runs` rows drawn at random from `rows`:
/// a stochastic upper bound on log Z beside forward AIS's lower one. The
/// rows must bind every variable the path samples.
pub fn raise(
    model: &Model,
    plan: &Plan,
    params: &Tensors,
    rows: &Tensors,
    opts: &AisOptions,
    device: super::DeviceKind,
) -> Result<RaiseEstimate, String> {
    check_options(model, opts.runs, opts.temperatures)?;
    let betas = schedule(opts.temperatures);
    let n = rows.values().next().map_or(0, |t| t.shape[0]);
    if n == 0 {
        return Err("reverse AIS needs at least one data row to start from".into());
    }
    // Starting rows: a random draw (with replacement) so any number of runs works.
    let mut rng = rand::rngs::StdRng::seed_from_u64(opts.seed ^ 0x52_41_49_53_45);
    let picks: Vec<usize> = (0..opts.runs).map(|_| rng.gen_range(0..n)).collect();
    let start: Tensors = rows
        .iter()
        .map(|(k, t)| {
            let per: usize = t.shape[1..].iter().product();
            let mut shape = t.shape.clone();
            shape[0] = opts.runs;
            (
                k.clone(),
                HostTensor::new(
                    shape,
                    picks.iter().flat_map(|r| t.data[r * per..(r + 1) * per].iter().copied()).collect(),
                ),
            )
        })
        .collect();
    let done = |out: Result<(Vec<f64>, Vec<f64>), String>| -> Result<RaiseEstimate, String> {
        let (implied, log_q) = out?;
        let r = implied.len() as f64;
        let mean = implied.iter().sum::<f64>() / r;
        let var = implied.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (r - 1.0);
        Ok(RaiseEstimate {
            log_z: mean,
            std_error: (var / r).sqrt(),
            log_likelihood: log_q.iter().sum::<f64>() / r,
            runs: opts.runs,
            temperatures: opts.temperatures,
        })
    };
    let opts = AisOptions { seed: opts.seed.wrapping_add(1), ..opts.clone() };
    match device {
        super::DeviceKind::Cpu => {
            done(Path::new(Cpu::seed_from_u64(opts.seed), model, plan, params, &opts)?.reverse(&betas, &start))
        }
        #[cfg(feature = "cuda")]
        super::DeviceKind::Cuda => {
            let dev = Cuda::try_seed_from_u64(opts.seed).map_err(|e| format!("cannot open the CUDA device: {e:?}"))?;
            done(Path::new(dev, model, plan, params, &opts)?.reverse(&betas, &start))
        }
        #[cfg(not(feature = "cuda"))]
        super::DeviceKind::Cuda => {
            Err("this ebmc was built without the `cuda` feature; rebuild with `--features cuda`".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_runs_from_zero_to_one_and_follows_salakhutdinov_murray() {
        let b = schedule(14_500);
        assert_eq!(b.len(), 14_501);
        assert_eq!(b[0], 0.0);
        assert!((b[14_500] - 1.0).abs() < 1e-12);
        assert!((b[500] - 0.5).abs() < 1e-12 && (b[4_500] - 0.9).abs() < 1e-12);
        assert!(b.windows(2).all(|w| w[1] > w[0]));
        for t in [2, 3, 7, 100] {
            let b = schedule(t);
            assert_eq!(b.len(), t + 1);
            assert!((b[t] - 1.0).abs() < 1e-12 && b.windows(2).all(|w| w[1] > w[0]), "{t}: {b:?}");
        }
    }

    #[test]
    fn one_dominant_weight_has_an_effective_sample_size_of_one() {
        let (_, _, ess) = summarise(&[0.0, -50.0, -60.0, -70.0], 0.0);
        assert!((ess - 1.0).abs() < 1e-9);
        let (z, se, ess) = summarise(&[1.0; 8], 2.0);
        assert!((z - 3.0).abs() < 1e-12 && se == 0.0 && (ess - 8.0).abs() < 1e-9);
    }
}
