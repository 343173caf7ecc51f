//! Score matching on continuous visible variables: exact (SM), denoising
//! (DSM) and sliced (SSM). Gradients and Hessian-vector products of the
//! energy in the data are IR, and so is each loss per example, with its
//! symbolic gradients in the parameters (`Phase`). Score matching sees the
//! energy only through its derivatives in the data: a parameter that shifts
//! the energy by a constant gets no gradient.
//!
//! The phases: DSM `½|σ∇F(x + σz) − z|²` (noise `z` in `__noise.x`), weight
//! 1/rows; SSM one phase per projection, `½(v·∇F)² − v·Hv` (or `½|∇F|² −
//! v·Hv` variance-reduced, directions `v` in `__dir.x`), weight
//! 1/(rows·projections); exact SM `½|∇F|²` plus, for each coordinate `i`, a
//! phase `−e_i·H e_i` with `__dir.x` the unit vector `e_i`, weight 1/rows.

#[cfg(test)]
use super::super::T3;
#[cfg(test)]
use super::super::eval::{Evaluator, Taped, canon, expand};
use super::super::noise::normals;
use super::super::{Kernels, upload};
use super::{Grads, Objective, OnDevice, Phase, TrainError, Vars};
use crate::front::ast::Role;
use crate::ir::{Id, Ir, Unary};
use crate::tensor::{HostTensor, Tensors};
#[cfg(test)]
use dfdx::prelude::*;
use std::collections::BTreeMap;

#[cfg(test)]
type Own<D> = OwnedTape<f32, D>;

#[derive(Clone, Copy)]
pub(super) enum Kind {
    Exact,
    Denoising { sigma: f32 },
    Sliced { projections: usize, rademacher: bool, variance_reduced: bool },
}

pub(super) struct Score {
    kind: Kind,
    /// `grads[x]` is ∂F/∂x and `hvps[x]` the Hessian-vector product along the variable `__dir.x`.
    grads: BTreeMap<String, Id>,
    hvps: BTreeMap<String, Id>,
    /// DSM's and SSM's one phase; exact SM's `½|∇F|²`. `None`: the energy reads no continuous visible variable.
    phase: Option<Phase>,
    /// Exact SM: `−v·Hv` of each variable, with `v` = `__dir.x` set to each unit vector in turn.
    diagonal: BTreeMap<String, Phase>,
    rng: rand::rngs::SmallRng,
}

/// What a step of score matching draws.
pub(super) enum Draw {
    Exact,
    /// The noisy batch `x + σz` and the noise `z` of each variable.
    Denoising {
        noisy: Tensors,
        noise: BTreeMap<String, HostTensor>,
    },
    /// Per projection: the batch with the directions `__dir.x` added, and the directions.
    Sliced(Vec<(Tensors, BTreeMap<String, HostTensor>)>),
}

impl Score {
    pub(super) fn new<D: Kernels>(model: &mut OnDevice<D>, kind: Kind, seed: u64) -> Self {
        let mut grads = BTreeMap::new();
        let mut hvps = BTreeMap::new();
        let visible: Vec<String> =
            model.model.variables.iter().filter(|v| v.role == Role::Visible).map(|v| v.name.clone()).collect();
        for name in visible {
            if let Some(g) = model.ir.grad(model.free_energy, &name) {
                grads.insert(name.clone(), g);
            }
            if matches!(kind, Kind::Sliced { .. } | Kind::Exact)
                && let Some(h) = model.ir.hessian_vector(model.free_energy, &name, &format!("__dir.{name}"))
            {
                hvps.insert(name.clone(), h);
            }
        }
        let params = model.declared.clone();
        let ir = &mut model.ir;
        let mut diagonal = BTreeMap::new();
        let root = match kind {
            Kind::Denoising { sigma } => sum_over(ir, &grads, |ir, name, g| {
                // ½ |σ ∇F(x̃) − z|²
                let s = ir.num(f64::from(sigma));
                let sg = ir.mul(s, g);
                let shape = ir.shape(g).clone();
                let z = ir.var(&format!("__noise.{name}"), &shape);
                let d = ir.sub(sg, z);
                let sq = ir.map(Unary::Square, d);
                let total = ir.sum(sq);
                let half = ir.num(0.5);
                ir.mul(half, total)
            }),
            Kind::Sliced { variance_reduced, .. } => {
                let first = if variance_reduced {
                    half_square_norm(ir, &grads)
                } else {
                    sum_over(ir, &grads, |ir, name, g| {
                        let v = direction(ir, name, g);
                        let gv = ir.mul(g, v);
                        ir.sum(gv)
                    })
                    .map(|vg| {
                        let sq = ir.map(Unary::Square, vg);
                        let half = ir.num(0.5);
                        ir.mul(half, sq)
                    })
                };
                let vhv = sum_over(ir, &hvps, |ir, name, h| {
                    let v = direction(ir, name, h);
                    let hv = ir.mul(h, v);
                    ir.sum(hv)
                });
                match (first, vhv) {
                    (Some(a), Some(b)) => Some(ir.sub(a, b)),
                    (a, None) => a,
                    (None, Some(b)) => Some(ir.neg(b)),
                }
            }
            Kind::Exact => {
                for (name, h) in &hvps {
                    let v = direction(ir, name, *h);
                    let hv = ir.mul(*h, v);
                    let s = ir.sum(hv);
                    let root = ir.neg(s);
                    diagonal.insert(name.clone(), Phase::new(ir, root, &params));
                }
                half_square_norm(ir, &grads)
            }
        };
        let phase = root.map(|r| Phase::new(ir, r, &params));
        Score { kind, grads, hvps, phase, diagonal, rng: rand::SeedableRng::seed_from_u64(seed ^ 0x736d) }
    }
}

/// The sum over `items` of `term(name, id)`; `None` when there are none.
fn sum_over(ir: &mut Ir, items: &BTreeMap<String, Id>, mut term: impl FnMut(&mut Ir, &str, Id) -> Id) -> Option<Id> {
    let mut total = None;
    for (name, id) in items {
        let t = term(ir, name, *id);
        total = Some(match total {
            Some(acc) => ir.add(acc, t),
            None => t,
        });
    }
    total
}

/// `½ Σ_x |∂F/∂x|²`.
fn half_square_norm(ir: &mut Ir, grads: &BTreeMap<String, Id>) -> Option<Id> {
    sum_over(ir, grads, |ir, _, g| {
        let sq = ir.map(Unary::Square, g);
        let s = ir.sum(sq);
        let half = ir.num(0.5);
        ir.mul(half, s)
    })
}

/// The direction variable `__dir.x`, of the shape of `like`.
fn direction(ir: &mut Ir, name: &str, like: Id) -> Id {
    let shape = ir.shape(like).clone();
    ir.var(&format!("__dir.{name}"), &shape)
}

/// `batch` with variable `name` replaced by `data` (same shape).
pub(super) fn with(batch: &Tensors, name: &str, data: Vec<f32>) -> Tensors {
    let mut b = batch.clone();
    let shape = b[name].shape.clone();
    b.insert(name.to_string(), HostTensor::new(shape, data));
    b
}

/// A sum of terms built one by one.
#[cfg(test)]
pub(super) fn add<T: std::ops::Add<Output = T>>(total: Option<T>, term: T) -> Option<T> {
    Some(match total {
        Some(t) => t + term,
        None => term,
    })
}

impl<D: Kernels> Objective<D> for Score {
    type Draw = Draw;

    fn begin_epoch(&mut self, seed: u64) {
        self.rng = rand::SeedableRng::seed_from_u64(seed ^ 0x736d);
    }

    fn draw(&mut self, _model: &mut OnDevice<D>, batch: &Tensors) -> Result<Draw, TrainError> {
        let rng = &mut self.rng;
        Ok(match self.kind {
            Kind::Exact => Draw::Exact,
            Kind::Denoising { sigma } => {
                let mut noisy = batch.clone();
                let mut noise = BTreeMap::new();
                for name in self.grads.keys() {
                    let t = &batch[name];
                    let z = normals(rng, t.data.len());
                    noisy = with(&noisy, name, t.data.iter().zip(&z).map(|(x, e)| x + sigma * e).collect());
                    noise.insert(name.clone(), HostTensor::new(t.shape.clone(), z));
                }
                Draw::Denoising { noisy, noise }
            }
            Kind::Sliced { projections, rademacher, .. } => Draw::Sliced(
                (0..projections)
                    .map(|_| {
                        let mut b = batch.clone();
                        let mut dirs = BTreeMap::new();
                        for name in self.grads.keys() {
                            let t = &batch[name];
                            let v: Vec<f32> = if rademacher {
                                normals(rng, t.data.len())
                                    .into_iter()
                                    .map(|x| if x < 0.0 { -1.0 } else { 1.0 })
                                    .collect()
                            } else {
                                normals(rng, t.data.len())
                            };
                            b.insert(format!("__dir.{name}"), HostTensor::new(t.shape.clone(), v.clone()));
                            dirs.insert(name.clone(), HostTensor::new(t.shape.clone(), v));
                        }
                        (b, dirs)
                    })
                    .collect(),
            ),
        })
    }

    fn loss(&self, model: &OnDevice<D>, batch: &Tensors, draw: &Draw) -> Result<(f64, Grads<D>), TrainError> {
        let rows = batch.values().next().map_or(0, |t| t.shape[0]);
        let no_terms = || TrainError::Setup("the energy does not depend on any continuous visible variable".into());
        let phase = self.phase.as_ref().ok_or_else(no_terms)?;
        let up = |b: &Tensors| super::upload_all(&model.dev, b);
        let with_named = |b: &Tensors, prefix: &str, extra: &BTreeMap<String, HostTensor>| -> Vars<D> {
            let mut vars = up(b);
            for (name, t) in extra {
                vars.insert(format!("{prefix}.{name}"), upload(&model.dev, t, rows));
            }
            vars
        };
        Ok(match (self.kind, draw) {
            (Kind::Denoising { .. }, Draw::Denoising { noisy, noise }) => {
                let vars = with_named(noisy, "__noise", noise);
                super::phase_sums(model, &[(phase, &vars, 1.0 / rows as f32)])
            }
            (Kind::Sliced { projections, .. }, Draw::Sliced(draws)) => {
                let vars: Vec<Vars<D>> = draws.iter().map(|(b, _)| up(b)).collect();
                let w = 1.0 / (rows * projections) as f32;
                let phases: Vec<(&Phase, &Vars<D>, f32)> = vars.iter().map(|v| (phase, v, w)).collect();
                super::phase_sums(model, &phases)
            }
            (Kind::Exact, _) => {
                let data = up(batch);
                let w = 1.0 / rows as f32;
                let mut vars: Vec<(&Phase, Vars<D>)> = Vec::new();
                for (name, diag) in &self.diagonal {
                    let v = model.variable(name)?;
                    let dims: usize = v.shape.iter().product();
                    let mut shape = vec![rows];
                    shape.extend(&v.shape);
                    for i in 0..dims {
                        let unit: Vec<f32> = (0..rows * dims).map(|j| f32::from(u8::from(j % dims == i))).collect();
                        let mut b = data.clone();
                        b.insert(
                            format!("__dir.{name}"),
                            upload(&model.dev, &HostTensor::new(shape.clone(), unit), rows),
                        );
                        vars.push((diag, b));
                    }
                }
                let mut phases: Vec<(&Phase, &Vars<D>, f32)> = vec![(phase, &data, w)];
                phases.extend(vars.iter().map(|(p, v)| (*p, v, w)));
                super::phase_sums(model, &phases)
            }
            // Cannot fire: `draw` makes the draw of the objective's own kind.
            _ => unreachable!("a score-matching draw of its own kind"),
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
        let per_row = |t: T3<D, Own<D>>| t.sum::<(usize,), Axes2<1, 2>>();
        let (grads, hvps) = (&self.grads, &self.hvps);
        let no_terms = || TrainError::Setup("the energy does not depend on any continuous visible variable".into());
        let loss: Tensor<(), f32, D, Own<D>> = match (self.kind, draw) {
            (Kind::Denoising { sigma }, Draw::Denoising { noisy, noise }) => {
                // ½ |σ ∇E(x + σz) − z|²: the denoising target is the noise itself.
                let roots: Vec<Id> = grads.values().copied().collect();
                let gs = ev.eval(&roots, &taped(noisy));
                let mut total: Option<Tensor<(), f32, D, Own<D>>> = None;
                for ((name, _), g) in grads.iter().zip(gs) {
                    let (m, n) = canon(&model.variable(name)?.shape);
                    let z = up(&noise[name], rows);
                    let term = ((expand(g, rows, m, n) * sigma) - z).square().sum::<(), Axes3<0, 1, 2>>();
                    total = add(total, term);
                }
                total.ok_or_else(no_terms)? * (0.5 / rows as f32)
            }
            (Kind::Sliced { projections, variance_reduced, .. }, Draw::Sliced(draws)) => {
                // ½ (vᵀ∇E)² − vᵀ(∇²E)v, or ½ |∇E|² − vᵀ(∇²E)v with the variance reduction.
                let mut total: Option<Tensor<(), f32, D, Own<D>>> = None;
                for (b, dirs) in draws {
                    let roots: Vec<Id> = grads.values().chain(hvps.values()).copied().collect();
                    let mut vals = ev.eval(&roots, &taped(b));
                    let hs = vals.split_off(grads.len());
                    let mut vg: Option<Tensor<(usize,), f32, D, Own<D>>> = None;
                    let mut g2: Option<Tensor<(), f32, D, Own<D>>> = None;
                    let mut vhv: Option<Tensor<(), f32, D, Own<D>>> = None;
                    for ((name, g), h) in grads.keys().zip(vals).zip(hs) {
                        let (m, n) = canon(&model.variable(name)?.shape);
                        let (g, h) = (expand(g, rows, m, n), expand(h, rows, m, n));
                        let v = up(&dirs[name], rows);
                        // Each gradient is consumed by the one term that uses it, so its tape reaches the loss.
                        if variance_reduced {
                            g2 = add(g2, g.square().sum::<(), Axes3<0, 1, 2>>());
                        } else {
                            vg = add(vg, per_row(g * v.retaped::<Own<D>>()));
                        }
                        vhv = add(vhv, (h * v).sum::<(), Axes3<0, 1, 2>>());
                    }
                    let first = if variance_reduced {
                        g2.ok_or_else(no_terms)? * 0.5
                    } else {
                        vg.ok_or_else(no_terms)?.square().sum::<(), Axis<0>>() * 0.5
                    };
                    total = add(total, first - vhv.ok_or_else(no_terms)?);
                }
                total.ok_or_else(no_terms)? / (rows * projections) as f32
            }
            (Kind::Exact, _) => {
                // Σ_i ½ (∂_i E)² − ∂²_i E: one Hessian-vector product per coordinate (the minus sign: s = −∇E, tr ∇s = −ΔE).
                let roots: Vec<Id> = grads.values().copied().collect();
                let gs = ev.eval(&roots, &taped(batch));
                let mut total: Option<Tensor<(), f32, D, Own<D>>> = None;
                for ((name, _), g) in grads.iter().zip(gs) {
                    let v = model.variable(name)?;
                    let (m, n) = canon(&v.shape);
                    let half = expand(g, rows, m, n).square().sum::<(), Axes3<0, 1, 2>>() * 0.5;
                    let mut sum = match total.take() {
                        Some(t) => t + half,
                        None => half,
                    };
                    let dims: usize = v.shape.iter().product();
                    for i in 0..dims {
                        let unit: Vec<f32> = (0..rows * dims).map(|j| f32::from(u8::from(j % dims == i))).collect();
                        let mut b = batch.clone();
                        let mut shape = vec![rows];
                        shape.extend(&v.shape);
                        b.insert(format!("__dir.{name}"), HostTensor::new(shape.clone(), unit.clone()));
                        let h = super::one(ev.eval(&[hvps[name]], &taped(&b)));
                        let diag = (expand(h, rows, m, n) * up(&HostTensor::new(shape, unit), rows))
                            .sum::<(), Axes3<0, 1, 2>>();
                        sum = sum - diag;
                    }
                    total = Some(sum);
                }
                total.ok_or_else(no_terms)? / rows as f32
            }
            // Cannot fire: `draw` makes the draw of the objective's own kind.
            _ => unreachable!("a score-matching draw of its own kind"),
        };
        let value = f64::from(loss.as_vec()[0]);
        let g = loss.backward();
        let roots: Vec<Id> = grads.values().chain(hvps.values()).copied().collect();
        let used = model.params_in(&roots, &model.used);
        Ok((value, super::tape_grads(model, &g, &used)))
    }

    fn phases(&self) -> Vec<&super::Phase> {
        self.phase.iter().chain(self.diagonal.values()).collect()
    }

    fn roots(&self, model: &OnDevice<D>) -> Vec<Id> {
        std::iter::once(model.free_energy)
            .chain(self.grads.values().copied())
            .chain(self.hvps.values().copied())
            .collect()
    }
}
