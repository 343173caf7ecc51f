//! Noise contrast on continuous visible variables: NCE against a noise
//! distribution fitted to the data, with a learned log-normaliser
//! `nce.log_z`, and conditional NCE against the data shifted by symmetric
//! noise (which needs no density).
//!
//! The phases: NCE `softplus(F + c + log νp_n)` over the data and
//! `softplus(−F − c − log νp_n)` over the noise (`log νp_n` per row in
//! `__nce.log_pn`), both weight 1/rows; CNCE one phase `softplus(F(x) −
//! F(x'))`, with `F(x')` the free energy with each visible `x` renamed to
//! `__shift.x`, weight 1/rows.

#[cfg(test)]
use super::super::T3;
#[cfg(test)]
use super::super::eval::{Evaluator, Taped, expand, unary};
use super::super::noise::{Noise, normals};
use super::super::{Kernels, upload};
use super::score::with;
use super::{Grads, Objective, OnDevice, Phase, TrainError};
use crate::ir::{Id, Unary};
use crate::tensor::{HostTensor, Tensors};
#[cfg(test)]
use dfdx::prelude::*;
use std::collections::BTreeMap;

#[cfg(test)]
type Own<D> = OwnedTape<f32, D>;

/// The per-row input of NCE's phases: `log ν p_n(x)`.
const LOG_PN: &str = "__nce.log_pn";

/// The learned log-normaliser's parameter name.
const LOG_Z: &str = "nce.log_z";

#[derive(Clone, Copy)]
pub(super) enum Kind {
    Nce { gaussian: bool, ratio: usize },
    Cnce { sigma: f32 },
}

pub(super) struct Nce {
    kind: Kind,
    /// The visible variables the energy depends on, with ∂F/∂x (their cones name the parameters).
    grads: BTreeMap<String, Id>,
    rng: rand::rngs::SmallRng,
    /// NCE's noise, fitted to the training set by `prepare`.
    noise: Option<Noise>,
    /// NCE: the data's phase and the noise's; CNCE: one phase.
    phases: Vec<Phase>,
}

/// What a step of noise contrast draws.
pub(super) enum Draw {
    /// Noise rows, `ratio` per data row, each a point over the variables in order.
    Nce(Vec<Vec<f64>>),
    /// The shifted batch `x + σz`.
    Cnce(Tensors),
}

impl Nce {
    pub(super) fn new<D: Kernels>(
        model: &mut OnDevice<D>,
        kind: Kind,
        params: &Tensors,
        seed: u64,
    ) -> Result<Self, TrainError> {
        if let Kind::Nce { .. } = kind {
            // NCE learns the log-normaliser as one more parameter.
            let c = match params.get(LOG_Z) {
                None => 0.0,
                Some(t) if t.data.len() == 1 && t.data[0].is_finite() => t.data[0],
                Some(t) => {
                    return Err(TrainError::Setup(format!(
                        "`{LOG_Z}` must be one finite number, the checkpoint holds {:?}",
                        t.data
                    )));
                }
            };
            model.params.insert(LOG_Z.into(), model.dev.tensor_from_vec(vec![c], (1, 1, 1)));
            model.shapes.insert(LOG_Z.into(), vec![]);
        }
        let grads = super::data_gradients(&mut model.ir, model.free_energy, &model.model);
        let mut params = model.declared.clone();
        let ir = &mut model.ir;
        let f = model.free_energy;
        let phases = match kind {
            Kind::Nce { .. } => {
                params.push(LOG_Z.into());
                // logit = −F − c − log νp_n; the data's loss is softplus(−logit), the noise's softplus(logit).
                let c = ir.param(LOG_Z, &[]);
                let lp = ir.var(LOG_PN, &[]);
                let fc = ir.add(f, c);
                let minus_logit = ir.add(fc, lp);
                let logit = ir.neg(minus_logit);
                let data = ir.map(Unary::Softplus, minus_logit);
                let noise = ir.map(Unary::Softplus, logit);
                vec![Phase::new(ir, data, &params), Phase::new(ir, noise, &params)]
            }
            Kind::Cnce { .. } => {
                let mut shifted = f;
                for name in grads.keys() {
                    let shape = model.model.variable(name).map(|v| v.shape.clone()).unwrap_or_default();
                    let to = ir.var(&format!("__shift.{name}"), &shape);
                    shifted = ir.substitute(shifted, name, to);
                }
                let d = ir.sub(f, shifted);
                let root = ir.map(Unary::Softplus, d);
                vec![Phase::new(ir, root, &params)]
            }
        };
        Ok(Nce { kind, grads, rng: rand::SeedableRng::seed_from_u64(seed ^ 0x736d), noise: None, phases })
    }

    /// The noise rows as a batch of the variables (`count` rows).
    fn noise_batch(&self, batch: &Tensors, noise_rows: &[Vec<f64>], count: usize) -> Tensors {
        let mut noise_batch = Tensors::new();
        let mut at = 0;
        for n in self.grads.keys() {
            let shape = &batch[n].shape;
            let per: usize = shape[1..].iter().product();
            let mut s = shape.clone();
            s[0] = count;
            noise_batch.insert(
                n.clone(),
                HostTensor::new(s, noise_rows.iter().flat_map(|p| p[at..at + per].iter().map(|x| *x as f32)).collect()),
            );
            at += per;
        }
        noise_batch
    }

    /// Row `r` of the batch over the variables, as one point.
    fn point(&self, batch: &Tensors, r: usize) -> Vec<f64> {
        self.grads
            .keys()
            .flat_map(|n| {
                let t = &batch[n];
                let per: usize = t.shape[1..].iter().product();
                t.data[r * per..(r + 1) * per].iter().map(|x| f64::from(*x)).collect::<Vec<_>>()
            })
            .collect()
    }
}

impl<D: Kernels> Objective<D> for Nce {
    type Draw = Draw;

    fn prepare(&mut self, data: &Tensors) {
        if let Kind::Nce { .. } = self.kind {
            let n = data.values().next().map_or(0, |t| t.shape[0]);
            let rows: Vec<Vec<f64>> = (0..n).map(|r| self.point(data, r)).collect();
            self.noise = Some(Noise::fit(&rows));
        }
    }

    fn begin_epoch(&mut self, seed: u64) {
        self.rng = rand::SeedableRng::seed_from_u64(seed ^ 0x736d);
    }

    fn draw(&mut self, _model: &mut OnDevice<D>, batch: &Tensors) -> Result<Draw, TrainError> {
        let rows = batch.values().next().map_or(0, |t| t.shape[0]);
        let rng = &mut self.rng;
        Ok(match self.kind {
            Kind::Nce { gaussian, ratio } => {
                let noise = self
                    .noise
                    .as_ref()
                    .ok_or_else(|| TrainError::Setup("NCE's noise was not fitted to the data".into()))?;
                Draw::Nce((0..rows * ratio).map(|_| noise.draw(rng, gaussian)).collect())
            }
            Kind::Cnce { sigma } => {
                let mut shifted = batch.clone();
                for name in self.grads.keys() {
                    let t = &batch[name];
                    let z = normals(rng, t.data.len());
                    shifted = with(&shifted, name, t.data.iter().zip(&z).map(|(x, e)| x + sigma * e).collect());
                }
                Draw::Cnce(shifted)
            }
        })
    }

    fn loss(&self, model: &OnDevice<D>, batch: &Tensors, draw: &Draw) -> Result<(f64, Grads<D>), TrainError> {
        let rows = batch.values().next().map_or(0, |t| t.shape[0]);
        let w = 1.0 / rows as f32;
        let up = |b: &Tensors| super::upload_all(&model.dev, b);
        Ok(match (self.kind, draw, self.phases.as_slice()) {
            (Kind::Cnce { .. }, Draw::Cnce(shifted), [phase]) => {
                let mut vars = up(batch);
                for name in self.grads.keys() {
                    vars.insert(format!("__shift.{name}"), upload(&model.dev, &shifted[name], rows));
                }
                super::phase_sums(model, &[(phase, &vars, w)])
            }
            (Kind::Nce { gaussian, ratio }, Draw::Nce(noise_rows), [data_phase, noise_phase]) => {
                let noise = self
                    .noise
                    .as_ref()
                    .ok_or_else(|| TrainError::Setup("NCE's noise was not fitted to the data".into()))?;
                let log_ratio = (ratio as f64).ln();
                let log_pn = |x: &[f64]| (noise.log_density(x, gaussian) + log_ratio) as f32;
                let count = rows * ratio;
                let mut data = up(batch);
                let lp: Vec<f32> = (0..rows).map(|r| log_pn(&self.point(batch, r))).collect();
                data.insert(LOG_PN.into(), upload(&model.dev, &HostTensor::new(vec![rows], lp), rows));
                let mut noisy = up(&self.noise_batch(batch, noise_rows, count));
                let lp: Vec<f32> = noise_rows.iter().map(|p| log_pn(p)).collect();
                noisy.insert(LOG_PN.into(), upload(&model.dev, &HostTensor::new(vec![count], lp), count));
                super::phase_sums(model, &[(data_phase, &data, w), (noise_phase, &noisy, w)])
            }
            // Cannot fire: `draw` makes the draw of the objective's own kind, and `new` its phases.
            _ => unreachable!("a noise-contrast draw of its own kind"),
        })
    }

    #[cfg(test)]
    fn tape_loss(&self, model: &OnDevice<D>, batch: &Tensors, draw: &Draw) -> Result<(f64, Grads<D>), TrainError> {
        let rows = batch.values().next().map_or(0, |t| t.shape[0]);
        let dev = model.dev.clone();
        let leaves = model.taped_leaves();
        let ev = Taped(Evaluator { ir: &model.ir, dev: &model.dev, leaves: &leaves });
        let up = |t: &HostTensor, n: usize| upload(&dev, t, n).retaped::<Own<D>>();
        let taped = |b: &Tensors| -> BTreeMap<String, T3<D, Own<D>>> {
            b.iter().map(|(k, t)| (k.clone(), up(t, t.shape[0]))).collect()
        };
        let energy = |b: &Tensors| super::one(ev.eval(&[model.free_energy], &taped(b)));
        let loss: Tensor<(), f32, D, Own<D>> = match (self.kind, draw) {
            (Kind::Cnce { .. }, Draw::Cnce(shifted)) => {
                // softplus(E(x) − E(x')), x' = x + σz: a symmetric noise needs no density.
                let d = expand(energy(batch), rows, 1, 1) - expand(energy(shifted), rows, 1, 1);
                unary(Unary::Softplus, d, true).sum::<(), Axes3<0, 1, 2>>() / rows as f32
            }
            (Kind::Nce { gaussian, ratio }, Draw::Nce(noise_rows)) => {
                // Logistic regression of data against ν = `ratio` noise rows per data row
                // on -E(x) - c - log(ν p_n(x)): at the optimum σ(logit) = p_d / (p_d + ν p_n),
                // so c is log Z itself (without the log ν, c would learn log Z + log ν).
                let noise = self
                    .noise
                    .as_ref()
                    .ok_or_else(|| TrainError::Setup("NCE's noise was not fitted to the data".into()))?;
                let count = rows * ratio;
                let data_rows: Vec<Vec<f64>> = (0..rows).map(|r| self.point(batch, r)).collect();
                let log_ratio = (ratio as f64).ln();
                let log_pn = |x: &[f64]| (noise.log_density(x, gaussian) + log_ratio) as f32;
                let noise_batch = self.noise_batch(batch, noise_rows, count);
                let c_param = leaves.tensors[LOG_Z].retaped::<Own<D>>();
                let logit = |e: T3<D, Own<D>>, lp: Vec<f32>, n: usize| {
                    let lp = up(&HostTensor::new(vec![n, 1, 1], lp), n);
                    expand(e, n, 1, 1).negate() - expand(c_param.retaped::<Own<D>>(), n, 1, 1) - lp
                };
                let e_data = energy(batch);
                let e_noise = energy(&noise_batch);
                let l_data = logit(e_data, data_rows.iter().map(|p| log_pn(p)).collect(), rows);
                let l_noise = logit(e_noise, noise_rows.iter().map(|p| log_pn(p)).collect(), count);
                let pos = unary(Unary::Softplus, l_data.negate(), true).sum::<(), Axes3<0, 1, 2>>() / rows as f32;
                let neg = unary(Unary::Softplus, l_noise, true).sum::<(), Axes3<0, 1, 2>>() / rows as f32;
                drop(c_param);
                pos + neg
            }
            // Cannot fire: `draw` makes the draw of the objective's own kind.
            _ => unreachable!("a noise-contrast draw of its own kind"),
        };
        let value = f64::from(loss.as_vec()[0]);
        let g = loss.backward();
        let mut used = model.params_in(&[model.free_energy], &model.used);
        if model.params.contains_key(LOG_Z) {
            used.push(LOG_Z.into());
        }
        Ok((value, super::tape_grads(model, &g, &used)))
    }

    fn phases(&self) -> Vec<&super::Phase> {
        self.phases.iter().collect()
    }

    fn roots(&self, model: &OnDevice<D>) -> Vec<Id> {
        std::iter::once(model.free_energy).chain(self.grads.values().copied()).collect()
    }
}
