//! Noise contrast on continuous visible variables: NCE against a noise
//! distribution fitted to the data, with a learned log-normaliser
//! `nce.log_z`, and conditional NCE against the data shifted by symmetric
//! noise (which needs no density).

use super::super::eval::{Evaluator, Taped, expand, unary};
use super::super::noise::{Noise, normals};
use super::super::{Kernels, T3, upload};
use super::score::with;
use super::{Grads, Objective, OnDevice, TrainError};
use crate::ir::{Id, Unary};
use crate::tensor::{HostTensor, Tensors};
use dfdx::prelude::*;
use std::collections::BTreeMap;

type Own<D> = OwnedTape<f32, D>;

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
        Ok(Nce { kind, grads, rng: rand::SeedableRng::seed_from_u64(seed ^ 0x736d), noise: None })
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
                let mut noise_batch = Tensors::new();
                let mut at = 0;
                for n in self.grads.keys() {
                    let shape = &batch[n].shape;
                    let per: usize = shape[1..].iter().product();
                    let mut s = shape.clone();
                    s[0] = count;
                    noise_batch.insert(
                        n.clone(),
                        HostTensor::new(
                            s,
                            noise_rows.iter().flat_map(|p| p[at..at + per].iter().map(|x| *x as f32)).collect(),
                        ),
                    );
                    at += per;
                }
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

    fn roots(&self, model: &OnDevice<D>) -> Vec<Id> {
        std::iter::once(model.free_energy).chain(self.grads.values().copied()).collect()
    }
}
