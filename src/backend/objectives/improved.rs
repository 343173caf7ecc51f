//! Improved contrastive divergence (Du, Li, Tenenbaum & Mordatch 2020): two
//! terms added to PCD on continuous data, each differentiated through the
//! last Langevin step of the negative samples and nothing earlier.
//!
//! The last step is `x̃ = fold(x' − λ clip(∇ₓF_θ(x')) + σε)`, `x'` the state
//! it started from. With `x'` and `ε` held fixed, `∂x̃/∂θ = −λ J ∂∇ₓF_θ(x')/∂θ`,
//! `J` diagonal: the clip's derivative (1 inside `[−clip, clip]`, 0 where it
//! clipped) times the fold's (1, or −1 after an odd number of reflections).
//! For a term `L(x̃)` whose own gradient `g = ∂L/∂x̃` is held constant,
//! `∂L/∂θ = −λ ∂/∂θ [ (J g) · ∇ₓF_θ(x') ]`: a mixed derivative the IR writes,
//! one phase whose root is `−λ Σ_v sum(w_v ⊙ ∂F/∂v)` with `w_v = J g` bound
//! as `__icd.v` and the variables bound to `x'`, weight 1/m.
//!
//! - KL: `L_KL = mean F_θ̄(x̃)`, `θ̄` a stop-gradient copy of θ, so
//!   `g = ∇ₓF_θ̄(x̃)` (per row; the mean's 1/m is the phase weight).
//! - Entropy: `L_ent = −mean log(‖x̃ − x_nn‖ + ε₀)`, `x_nn` the replay
//!   buffer's row nearest `x̃` before this step's samples join it, held
//!   constant; `g = −(x̃ − x_nn) / (d (d + ε₀))`, `d = ‖x̃ − x_nn‖` (0 at
//!   `d = 0`). Minimising it spreads the samples.
//!
//! The loss reported adds `kl · L_KL + entropy · L_ent` (their values);
//! the phase's own value, a surrogate with the right gradient, is dropped.

#[cfg(test)]
use super::super::T3;
#[cfg(test)]
use super::super::eval::Taped;
use super::super::eval::{Evaluator, Leaves, canon, expand};
use super::super::replay::Replay;
use super::super::{ChainSet, Kernels, upload};
use super::{Grads, OnDevice, Phase, TrainError, Vars};
use crate::analysis::plan::Kernel;
use crate::analysis::program::{Domain, Persistent};
use crate::ir::Id;
use crate::tensor::{HostTensor, Tensors};
#[cfg(test)]
use dfdx::prelude::*;
use std::collections::BTreeMap;

/// `ε₀` of the entropy estimate: keeps `log d` finite when a sample lands on
/// a buffer row (possible with `noise: 0`).
pub(super) const ENTROPY_FLOOR: f64 = 1e-4;

pub(super) struct Improved {
    kl: f32,
    entropy: f32,
    /// The Langevin kernel's step `λ` (in the phase's root; the tape's
    /// surrogate and the test's noise read it too) and clip.
    #[cfg(test)]
    step: f32,
    clip: Option<f32>,
    /// `F` and `∂F/∂v` of each visible variable, nets inlined.
    free_energy: Id,
    grads: BTreeMap<String, Id>,
    /// Each variable's box, where it has one (the fold's sign).
    bounds: BTreeMap<String, Option<(f64, f64)>>,
    /// `−λ Σ_v sum(__icd.v ⊙ ∂F/∂v)`.
    phase: Phase,
}

/// What improved CD keeps of one draw.
pub(super) struct Record {
    /// `x'`: where the last Langevin step started, by variable.
    pub(super) start: Tensors,
    /// The diagonal of `J` (clip times fold), by variable.
    jacobian: BTreeMap<String, Vec<f32>>,
    /// The samples `x̃` and the buffer rows nearest them; `None` with the
    /// entropy term off or the buffer empty (the first step), when the term
    /// is skipped.
    pub(super) nearest: Option<(Tensors, Tensors)>,
    /// `σε` of the last step, for the finite-difference test.
    #[cfg(test)]
    pub(super) noise: Tensors,
}

impl Improved {
    pub(super) fn new<D: Kernels>(model: &mut OnDevice<D>, p: &Persistent) -> Result<Self, TrainError> {
        // The sampler's one Langevin stage runs with its first variable's kernel.
        let (step, clip) = model
            .plan
            .variables
            .iter()
            .find_map(|v| match v.kernel {
                Kernel::Langevin { step, clip, .. } => Some((step as f32, clip.map(|c| c as f32))),
                _ => None,
            })
            .ok_or_else(|| TrainError::Setup("improved CD needs Langevin chains".into()))?;
        let ir = &mut model.ir;
        let free_energy = ir.inline_nets(model.free_energy);
        let mut grads = BTreeMap::new();
        let mut bounds = BTreeMap::new();
        let mut root = None;
        for name in &model.visible {
            let Some(g) = ir.grad(free_energy, name) else { continue };
            let g = ir.inline_nets(g);
            let shape = ir.shape(g).clone();
            let w = ir.var(&format!("__icd.{name}"), &shape);
            let wg = ir.mul(w, g);
            let term = ir.sum(wg);
            root = Some(match root {
                Some(acc) => ir.add(acc, term),
                None => term,
            });
            grads.insert(name.clone(), g);
            let domain = model.model.variable(name).map(|v| v.domain.clone());
            bounds.insert(name.clone(), if let Some(Domain::Real { bounds }) = domain { bounds } else { None });
        }
        let root = root.ok_or_else(|| TrainError::Setup("the energy does not depend on the data".into()))?;
        let minus_step = ir.num(-f64::from(step));
        let root = ir.mul(minus_step, root);
        let params = model.declared.clone();
        let phase = Phase::new(ir, root, &params);
        Ok(Improved {
            kl: p.kl as f32,
            entropy: p.entropy as f32,
            #[cfg(test)]
            step,
            clip,
            free_energy,
            grads,
            bounds,
            phase,
        })
    }

    pub(super) fn phase(&self) -> &Phase {
        &self.phase
    }

    /// The last step of `chains` (which keep it) and, with the entropy term
    /// on, the rows of `replay` nearest the samples `end`; call before the
    /// samples join the buffer.
    pub(super) fn record<D: Kernels>(
        &self,
        chains: &mut ChainSet<D>,
        replay: &Replay,
        end: &Tensors,
    ) -> Result<Record, TrainError> {
        let last = chains
            .last_step
            .take()
            .ok_or_else(|| TrainError::Setup("improved CD needs at least one Langevin step an update".into()))?;
        let mut start = Tensors::new();
        let mut jacobian = BTreeMap::new();
        #[cfg(test)]
        let mut noise = Tensors::new();
        for name in self.grads.keys() {
            let shape = end[name].shape.clone();
            let x = last.start[name].as_vec();
            let g = last.gradient[name].as_vec();
            let y = last.proposal[name].as_vec();
            let bounds = self.bounds[name];
            let j: Vec<f32> = g
                .iter()
                .zip(&y)
                .map(|(&g, &y)| {
                    // The clamp's derivative is 0 where it clipped: there the step does not depend on θ.
                    let clip = self.clip.map_or(1.0, |c| f32::from(u8::from(g.abs() < c)));
                    clip * fold_sign(f64::from(y), bounds)
                })
                .collect();
            #[cfg(test)]
            noise.insert(
                name.clone(),
                HostTensor::new(
                    shape.clone(),
                    y.iter().zip(&x).zip(&g).map(|((y, x), g)| y - x + self.step * g).collect(),
                ),
            );
            start.insert(name.clone(), HostTensor::new(shape, x));
            jacobian.insert(name.clone(), j);
        }
        let nearest = if self.entropy > 0.0 {
            let samples: Tensors = self.grads.keys().map(|n| (n.clone(), end[n].clone())).collect();
            replay.nearest(&samples).map(|nearest| (samples, nearest))
        } else {
            None
        };
        Ok(Record {
            start,
            jacobian,
            nearest,
            #[cfg(test)]
            noise,
        })
    }

    /// The terms' value `kl · L_KL + entropy · L_ent` at the samples
    /// `negative`, and the weights `w_v = J g` of the phase.
    pub(super) fn weights<D: Kernels>(
        &self,
        model: &OnDevice<D>,
        negative: &Vars<D>,
        record: &Record,
    ) -> (f64, BTreeMap<String, HostTensor>) {
        let rows = super::rows_of(negative);
        let leaves = Leaves {
            tensors: model.params.iter().chain(&model.consts).map(|(k, t)| (k.clone(), t.clone())).collect(),
            lattices: model.lattices.clone(),
        };
        let ev = Evaluator { ir: &model.ir, dev: &model.dev, leaves: &leaves };
        let names: Vec<&String> = self.grads.keys().collect();
        let roots: Vec<Id> = std::iter::once(self.free_energy).chain(self.grads.values().copied()).collect();
        let vars: Vars<D> = names.iter().map(|n| ((*n).clone(), negative[*n].clone())).collect();
        let mut values = ev.eval(&roots, &vars).into_iter();
        // Cannot fire: the evaluator returns one value per root.
        let f = expand(values.next().expect("one value per root"), rows, 1, 1).as_vec();
        let mut value = f64::from(self.kl) * f.iter().map(|&e| f64::from(e)).sum::<f64>() / rows as f64;
        // g = kl ∇ₓF_θ̄(x̃) + entropy ∂ℓ/∂x̃, per row.
        let mut g: BTreeMap<String, Vec<f32>> = BTreeMap::new();
        for (name, grad) in names.iter().zip(values) {
            let (m, n) = canon(&model.model.variable(name).map(|v| v.shape.clone()).unwrap_or_default());
            let grad = expand(grad, rows, m, n).as_vec();
            g.insert((*name).clone(), grad.into_iter().map(|x| self.kl * x).collect());
        }
        if let Some((samples, nearest)) = &record.nearest {
            let mut total = 0.0;
            for r in 0..rows {
                let d2: f64 = names
                    .iter()
                    .map(|n| {
                        let (x, nn) = (row(&samples[*n], r), row(&nearest[*n], r));
                        x.iter().zip(nn).map(|(a, b)| f64::from(a - b).powi(2)).sum::<f64>()
                    })
                    .sum();
                let d = d2.sqrt();
                total -= (d + ENTROPY_FLOOR).ln();
                if d > 0.0 {
                    let scale = -f64::from(self.entropy) / (d * (d + ENTROPY_FLOOR));
                    for n in &names {
                        let per = row(&samples[*n], r).len();
                        let (x, nn) = (row(&samples[*n], r), row(&nearest[*n], r));
                        // Cannot fire: `g` has an entry for every name.
                        let out = &mut g.get_mut(*n).expect("a weight per variable")[r * per..(r + 1) * per];
                        for ((o, a), b) in out.iter_mut().zip(x).zip(nn) {
                            *o += (scale * f64::from(a - b)) as f32;
                        }
                    }
                }
            }
            value += f64::from(self.entropy) * total / rows as f64;
        }
        let weights = g
            .into_iter()
            .map(|(name, g)| {
                let w = g.iter().zip(&record.jacobian[&name]).map(|(g, j)| g * j).collect();
                let shape = record.start[&name].shape.clone();
                (name, HostTensor::new(shape, w))
            })
            .collect();
        (value, weights)
    }

    /// The terms' value and their parameter gradients, by the phase.
    pub(super) fn loss<D: Kernels>(&self, model: &OnDevice<D>, negative: &Vars<D>, record: &Record) -> (f64, Grads<D>) {
        let (value, weights) = self.weights(model, negative, record);
        let vars = self.phase_vars(model, record, &weights);
        let rows = super::rows_of(&vars);
        // The phase's value is the surrogate's; the loss reports the terms' own.
        let (_, grads) = super::phase_sums(model, &[(&self.phase, &vars, 1.0 / rows as f32)]);
        (value, grads)
    }

    /// `x'` and the weights as the phase's variables.
    fn phase_vars<D: Kernels>(
        &self,
        model: &OnDevice<D>,
        record: &Record,
        weights: &BTreeMap<String, HostTensor>,
    ) -> Vars<D> {
        let mut vars = super::upload_all(&model.dev, &record.start);
        for (name, w) in weights {
            vars.insert(format!("__icd.{name}"), upload(&model.dev, w, w.shape[0]));
        }
        vars
    }

    /// The surrogate `(1/m) Σ_rows −λ Σ_v sum(w_v ⊙ ∂F/∂v(x'))` through the
    /// tape (its gradients are the terms'), and the terms' value.
    #[cfg(test)]
    pub(super) fn tape_surrogate<D: Kernels>(
        &self,
        model: &OnDevice<D>,
        ev: &Taped<'_, D, OwnedTape<f32, D>>,
        negative: &Vars<D>,
        record: &Record,
    ) -> (f64, Tensor<(), f32, D, OwnedTape<f32, D>>) {
        let (value, weights) = self.weights(model, negative, record);
        let rows = record.start.values().next().map_or(0, |t| t.shape[0]);
        let vars: BTreeMap<String, T3<D, OwnedTape<f32, D>>> = record
            .start
            .iter()
            .map(|(k, t)| (k.clone(), upload(&model.dev, t, rows).retaped::<OwnedTape<f32, D>>()))
            .collect();
        let mut total: Option<Tensor<(), f32, D, OwnedTape<f32, D>>> = None;
        for (name, g) in &self.grads {
            let (m, n) = canon(&model.model.variable(name).map(|v| v.shape.clone()).unwrap_or_default());
            let g = expand(super::one(ev.eval(&[*g], &vars)), rows, m, n);
            let w = upload(&model.dev, &weights[name], rows).retaped::<OwnedTape<f32, D>>();
            let term = (g * w).sum::<(), Axes3<0, 1, 2>>();
            total = Some(match total {
                Some(t) => t + term,
                None => term,
            });
        }
        // Cannot fire: `new` refuses an energy that reads no visible variable.
        let total = total.expect("a visible variable");
        (value, total * (-self.step / rows as f32))
    }
}

/// The derivative of the fold into `[lo, hi]` at the unfolded point `y`:
/// 1 after an even number of reflections, −1 after an odd one (the fold is
/// `lo + w − |((y − lo) mod 2w) − w|`, `w = hi − lo`); 1 without a box.
pub(super) fn fold_sign(y: f64, bounds: Option<(f64, f64)>) -> f32 {
    match bounds {
        Some((lo, hi)) => {
            let w = hi - lo;
            if (y - lo).rem_euclid(2.0 * w) > w { -1.0 } else { 1.0 }
        }
        None => 1.0,
    }
}

/// Row `r` of a batched host tensor.
fn row(t: &HostTensor, r: usize) -> &[f32] {
    let per: usize = t.shape[1..].iter().product();
    &t.data[r * per..(r + 1) * per]
}

#[cfg(test)]
mod tests {
    //! The bar of issue 14: with `kl` (or `entropy`) above 0 the objective's
    //! gradient changes by exactly the term's gradient through one Langevin
    //! step, checked against central differences of the step in f64 (the
    //! reference interpreter) with the start `x'` and noise `σε` held fixed.

    use super::super::super::train::on_device;
    use super::super::contrastive::{Contrastive, Draw};
    use super::super::{Grads, Objective, OnDevice};
    use super::ENTROPY_FLOOR;
    use crate::analysis::program::{Objective as O, Persistent};
    use crate::ir::{Id, Ir, RefValue};
    use crate::tensor::Tensors;
    use dfdx::prelude::*;
    use std::collections::BTreeMap;

    /// A model on the device, its train block's PCD options and a batch.
    struct Setup {
        on: OnDevice<Cpu>,
        pcd: Persistent,
        params: Tensors,
        batch: Tensors,
        /// `F` and `∂F/∂x` in a small IR of their own, for the reference interpreter.
        ir: Ir,
        f: Id,
        g: Id,
    }

    fn setup(src: &str) -> Setup {
        let c = crate::compile(src).unwrap_or_else(|d| panic!("{d:?}"));
        let (plans, _) = crate::plan(&c.program).unwrap_or_else(|d| panic!("{d:?}"));
        let train = c.program.trains["m"].clone();
        let model = c.program.models["m"].clone();
        let params = crate::tensor::initialise(&crate::ir::param_specs(&model), 3);
        let (mut on, declared) =
            on_device(Cpu::seed_from_u64(0), &model, &plans[0], &train, &params, 1).expect("on device");
        on.used = on.params_in(&[on.free_energy], &declared);
        let O::Pcd(pcd) = train.options.objective.clone() else { panic!("a pcd train block") };
        let data = crate::runtime::data::load(train.data.as_ref().expect("data"), &model, std::path::Path::new("."))
            .expect("toy data");
        let batch = data.vars.iter().map(|(k, t)| (k.clone(), first_rows(t, 6))).collect();
        let mut ir = plans[0].lowered.ir.clone();
        let f = ir.inline_nets(plans[0].lowered.total);
        let g = ir.grad(f, "x").expect("F depends on x");
        Setup { on, pcd, params, batch, ir, f, g }
    }

    fn first_rows(t: &crate::tensor::HostTensor, n: usize) -> crate::tensor::HostTensor {
        let per: usize = t.shape[1..].iter().product();
        let mut shape = t.shape.clone();
        shape[0] = n;
        crate::tensor::HostTensor::new(shape, t.data[..n * per].to_vec())
    }

    /// The PCD objective of `s` with the improved-CD weights `kl` and `entropy`.
    fn objective(s: &mut Setup, kl: f64, entropy: f64) -> Contrastive<Cpu> {
        let p = Persistent { kl, entropy, ..s.pcd.clone() };
        Contrastive::pcd(&mut s.on, &p, &s.params, &Tensors::new(), 7).expect("pcd")
    }

    /// `(a − b) / scale` of every gradient, flattened in parameter order.
    fn difference(a: &Grads<Cpu>, b: &Grads<Cpu>, scale: f64) -> BTreeMap<String, Vec<f64>> {
        a.iter()
            .map(|(name, g)| {
                let base = b.get(name).map(|t| t.as_vec()).unwrap_or_else(|| vec![0.0; g.as_vec().len()]);
                let d = g.as_vec().iter().zip(base).map(|(x, y)| f64::from(x - y) / scale).collect();
                (name.clone(), d)
            })
            .collect()
    }

    /// The parameters as f64 leaves.
    fn leaves(params: &Tensors, shapes: &BTreeMap<String, Vec<usize>>) -> BTreeMap<String, RefValue> {
        params
            .iter()
            .map(|(k, t)| {
                (k.clone(), RefValue { shape: shapes[k].clone(), data: t.data.iter().map(|&v| f64::from(v)).collect() })
            })
            .collect()
    }

    /// `x_K(θ)` of each row in f64: one Langevin step from the recorded start with the recorded noise.
    fn step_rows(s: &Setup, theta: &BTreeMap<String, RefValue>, draw: &Draw<Cpu>, clip: Option<f64>) -> Vec<Vec<f64>> {
        let record = draw.improved.as_ref().expect("a record");
        let (start, noise) = (&record.start["x"], &record.noise["x"]);
        let step = s.pcd.step;
        let bounds = match s.on.model.variable("x").map(|v| v.domain.clone()) {
            Some(crate::analysis::program::Domain::Real { bounds }) => bounds,
            _ => None,
        };
        (0..start.shape[0])
            .map(|r| {
                let x: Vec<f64> = start.data[r * 2..r * 2 + 2].iter().map(|&v| f64::from(v)).collect();
                let mut at = theta.clone();
                at.insert("x".into(), RefValue { shape: vec![2], data: x.clone() });
                let g = s.ir.eval_reference(s.g, &at).data;
                (0..2)
                    .map(|i| {
                        let gi = clip.map_or(g[i], |c| g[i].clamp(-c, c));
                        let y = x[i] - step * gi + f64::from(noise.data[r * 2 + i]);
                        match bounds {
                            Some((lo, hi)) => {
                                let w = hi - lo;
                                (lo + w - ((y - lo).rem_euclid(2.0 * w) - w).abs()).clamp(lo, hi)
                            }
                            None => y,
                        }
                    })
                    .collect()
            })
            .collect()
    }

    /// Central differences of `term(θ)` in every parameter at steps `h` and
    /// `2h`, checked against `symbolic`: the error allowed is the truncation
    /// error's estimate `|D_2h − D_h|` (Richardson: `D_h`'s own is a third of
    /// it), plus the f32 round-off of the compiled gradient, taken as 1e-4 of
    /// the largest entry (some hundreds of f32 operations of relative error
    /// 6e-8 each). Returns how many entries were checked.
    fn check_against_differences(
        s: &Setup,
        symbolic: &BTreeMap<String, Vec<f64>>,
        term: &dyn Fn(&BTreeMap<String, RefValue>) -> f64,
        what: &str,
    ) -> usize {
        let theta = leaves(&s.on.host_params(), &s.on.shapes);
        let scale = symbolic.values().flatten().fold(0.0f64, |m, x| m.max(x.abs()));
        assert!(scale > 1e-3, "{what}: the term's gradient is too small to test ({scale})");
        let h = 1e-3;
        let mut checked = 0;
        for (name, sym) in symbolic {
            for (i, &sym_i) in sym.iter().enumerate() {
                let diff = |delta: f64| {
                    let mut plus = theta.clone();
                    plus.get_mut(name).expect("a parameter").data[i] += delta;
                    let mut minus = theta.clone();
                    minus.get_mut(name).expect("a parameter").data[i] -= delta;
                    (term(&plus) - term(&minus)) / (2.0 * delta)
                };
                let (d1, d2) = (diff(h), diff(2.0 * h));
                let tol = (d2 - d1).abs() + 1e-4 * scale;
                assert!(
                    (sym_i - d1).abs() <= tol,
                    "{what}: d/d{name}[{i}]: symbolic {sym_i} vs central difference {d1} (at 2h {d2}), tolerance {tol}"
                );
                checked += 1;
            }
        }
        checked
    }

    const UNBOUNDED: &str = "model m { visible x : real[2]; net f = mlp(2 -> 5 -> 1, act: swish); energy e = f(x) + 0.1 * sum(square(x)); }
        train m { data = toy(\"moons\", n: 40) -> x; objective = pcd(k: 2, chains: 6, step: 0.05, clip: CLIP, buffer: 20, kl: 1.0); }";
    const BOUNDED: &str = "model m { visible x : real[2] in [-4, 4]; net f = mlp(2 -> 5 -> 1, act: tanh); energy e = f(x); }
        train m { data = toy(\"moons\", n: 40) -> x; objective = pcd(k: 2, chains: 6, step: 0.3, noise: 4, buffer: 20, kl: 1.0); }";

    /// The KL term on one model: the gradient with `kl: 1` minus that with
    /// `kl: 0` on the same draw against central differences of
    /// `θ ↦ mean F_θ̄(x_K(θ))`; returns the record's clip/fold counts.
    fn kl_matches_differences(src: &str, clip: Option<f64>) -> (usize, usize, usize) {
        let mut s = setup(src);
        let mut with = objective(&mut s, 1.0, 0.0);
        let without = objective(&mut s, 0.0, 0.0);
        let batch = s.batch.clone();
        let draw = with.draw(&mut s.on, &batch).expect("a draw");
        let (_, g1) = with.loss(&s.on, &batch, &draw).expect("loss");
        let (_, g0) = without.loss(&s.on, &batch, &draw).expect("loss");
        let symbolic = difference(&g1, &g0, 1.0);
        // θ̄: the energy outside the step keeps the unperturbed parameters.
        let fixed = leaves(&s.on.host_params(), &s.on.shapes);
        let kl = |theta: &BTreeMap<String, RefValue>| {
            let rows = step_rows(&s, theta, &draw, clip);
            rows.iter()
                .map(|x| {
                    let mut at = fixed.clone();
                    at.insert("x".into(), RefValue { shape: vec![2], data: x.clone() });
                    s.ir.eval_reference(s.f, &at).data[0]
                })
                .sum::<f64>()
                / rows.len() as f64
        };
        let checked = check_against_differences(&s, &symbolic, &kl, src);
        let record = draw.improved.as_ref().expect("a record");
        let (mut clipped, mut folded) = (0, 0);
        for j in &record.jacobian["x"] {
            clipped += usize::from(*j == 0.0);
            folded += usize::from(*j < 0.0);
        }
        (checked, clipped, folded)
    }

    #[test]
    fn the_kl_term_is_the_gradient_through_the_last_langevin_step() {
        // A clip that holds some gradient components and not others, so both sides of the clamp are checked.
        let (checked, clipped, _) = kl_matches_differences(&UNBOUNDED.replace("CLIP", "0.3"), Some(0.3));
        assert!(checked >= 21 && clipped > 0 && clipped < 12, "checked {checked}, clipped {clipped} of 12");
        // Folding into the box: the reflected components' derivative is −1.
        let (checked, _, folded) = kl_matches_differences(BOUNDED, None);
        assert!(checked >= 21 && folded > 0 && folded < 12, "checked {checked}, folded {folded} of 12");
    }

    #[test]
    fn the_entropy_term_is_the_gradient_through_the_last_langevin_step() {
        let src = UNBOUNDED.replace("CLIP", "0.3").replace("kl: 1.0", "entropy: 0.5");
        let mut s = setup(&src);
        let mut with = objective(&mut s, 0.0, 0.5);
        let without = objective(&mut s, 0.0, 0.0);
        let batch = s.batch.clone();
        // The first step fills the replay buffer the second's nearest neighbours come from.
        with.draw(&mut s.on, &batch).expect("a draw");
        let draw = with.draw(&mut s.on, &batch).expect("a draw");
        let (_, g1) = with.loss(&s.on, &batch, &draw).expect("loss");
        let (_, g0) = without.loss(&s.on, &batch, &draw).expect("loss");
        let symbolic = difference(&g1, &g0, 0.5);
        let record = draw.improved.as_ref().expect("a record");
        let (_, nearest) = record.nearest.as_ref().expect("the buffer holds the first step's samples");
        let nearest = &nearest["x"];
        let entropy = |theta: &BTreeMap<String, RefValue>| {
            let rows = step_rows(&s, theta, &draw, Some(0.3));
            rows.iter()
                .enumerate()
                .map(|(r, x)| {
                    let d = (0..2).map(|i| (x[i] - f64::from(nearest.data[r * 2 + i])).powi(2)).sum::<f64>().sqrt();
                    -(d + ENTROPY_FLOOR).ln()
                })
                .sum::<f64>()
                / rows.len() as f64
        };
        let checked = check_against_differences(&s, &symbolic, &entropy, &src);
        assert!(checked >= 21, "checked {checked}");
    }

    /// The planner refuses the terms where the sampler is not plain Langevin
    /// on visible reals, naming the variable (E0402).
    #[test]
    fn the_terms_need_plain_langevin_on_visible_reals() {
        let cases = [
            (
                "visible x : real[2]; hidden h : real[2]; energy e = 0.5 * sum(square(x - h)) + 0.5 * sum(square(h));",
                "x",
                "h is hidden",
            ),
            (
                "visible x : real[2]; visible v : binary[2]; energy e = 0.5 * sum(square(x)) - x @ v;",
                "(x, v)",
                "v is discrete",
            ),
            (
                "visible x : real[2]; energy e = 0.5 * sum(square(x)); sample { x: mala(step: 0.1); }",
                "x",
                "x is sampled by MALA",
            ),
        ];
        for (body, binding, why) in cases {
            let src = format!(
                "model m {{ {body} }} train m {{ data = csv(\"x.csv\") -> {binding}; objective = pcd(k: 1, chains: 4, entropy: 0.3); }}"
            );
            let c = crate::compile(&src).unwrap_or_else(|d| panic!("{d:?}"));
            let problems = crate::analysis::plan::program_to_plans(&c.program).err().unwrap_or_default();
            let found = problems.iter().any(
                |p| matches!(p, crate::analysis::plan::PlanError::ImprovedCdNeedsLangevin { why: w, .. } if w == why),
            );
            assert!(found, "{why}: {problems:?}");
            let d = crate::front::diagnostic::Diagnostic::from(
                problems
                    .iter()
                    .find(|p| matches!(p, crate::analysis::plan::PlanError::ImprovedCdNeedsLangevin { .. }))
                    .expect("found"),
            );
            assert_eq!(d.code, "E0402");
            // Off, the same model plans.
            let off = src.replace(", entropy: 0.3", "");
            let c = crate::compile(&off).unwrap_or_else(|d| panic!("{d:?}"));
            let refused = crate::analysis::plan::program_to_plans(&c.program).err().unwrap_or_default();
            assert!(
                !refused.iter().any(|p| matches!(p, crate::analysis::plan::PlanError::ImprovedCdNeedsLangevin { .. }))
            );
        }
    }

    /// Off, the terms leave PCD as it was: the same draw and the same
    /// gradients bit for bit.
    #[test]
    fn zero_weights_are_plain_pcd() {
        let src = UNBOUNDED.replace("CLIP", "0.3").replace(", kl: 1.0", "");
        let mut s = setup(&src);
        let batch = s.batch.clone();
        let mut a = objective(&mut s, 0.0, 0.0);
        let draw = a.draw(&mut s.on, &batch).expect("a draw");
        assert!(draw.improved.is_none());
        assert_eq!(a.phases().len(), 2);
    }
}
