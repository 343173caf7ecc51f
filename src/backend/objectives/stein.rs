//! Learned Stein discrepancy (Grathwohl et al. 2020, "Learning the Stein
//! Discrepancy for Training and Evaluating Energy-Based Models without
//! Sampling"). For the model's score `s(x) = −∇ₓF(x)` and a critic net
//! `f: R^d → R^d`, Stein's identity makes
//!
//! `S(f) = E_data[ s(x)·f(x) + tr ∇ₓf(x) ] = E_data[ (s − s_data)(x)·f(x) ]`,
//!
//! zero for every `f` when the model's score is the data's. The critic
//! ascends `S(f) − penalty·E|f|²`, whose maximiser is `f* = (s − s_data) /
//! (2·penalty)`, where it equals `E|s − s_data|² / (4·penalty)` (a Fisher
//! divergence); the energy descends `S(f)` with the critic held. The trace
//! is Hutchinson's: `tr ∇ₓf ≈ εᵀ ∇ₓ(εᵀf)`, one direction `ε` (in
//! `__dir.x`) per row and step.
//!
//! Each cycle is `critic_steps` critic updates, then one energy update. Both
//! steps report `S(f)` on the batch, so the training curve is the
//! discrepancy's estimate whichever part moved.

use super::super::noise::normals;
use super::super::{Kernels, upload};
use super::{Grads, Objective, OnDevice, Phase, TrainError, Vars};
use crate::analysis::program::Directions;
use crate::ir::{Id, Unary};
use crate::tensor::{HostTensor, Tensors};
#[cfg(test)]
use dfdx::prelude::*;

pub(super) struct Stein {
    /// The visible variable the critic reads.
    var: String,
    /// Per example: `S = s·f + εᵀ∇ₓ(εᵀf)` (for the tape oracle).
    #[cfg(test)]
    stein: Id,
    /// Per example: `penalty·|f|² − S`, the critic's loss (descended).
    #[cfg(test)]
    critic_loss: Id,
    /// `S` with the energy's parameter gradients.
    energy: Phase,
    /// The critic's loss with the critic's parameter gradients.
    critic: Phase,
    /// `S` alone (no gradients), reported on critic steps.
    report: Phase,
    /// Roots the objective reads, for the parameters it trains.
    roots: Vec<Id>,
    #[cfg(test)]
    critic_params: Vec<String>,
    critic_steps: usize,
    rademacher: bool,
    /// Steps taken this epoch; decides whose turn it is.
    taken: usize,
    rng: rand::rngs::SmallRng,
}

/// What a step draws: whose turn it is and the rows' Hutchinson directions.
pub(super) struct Draw {
    critic_turn: bool,
    directions: HostTensor,
}

impl Stein {
    pub(super) fn new<D: Kernels>(
        model: &mut OnDevice<D>,
        critic: &str,
        penalty: f64,
        critic_steps: usize,
        directions: Directions,
        seed: u64,
    ) -> Result<Self, TrainError> {
        let visible: Vec<_> =
            model.model.variables.iter().filter(|v| v.role == crate::front::ast::Role::Visible).collect();
        // The planner refuses anything else (`PlanError::CriticShape`).
        let [v] = visible.as_slice() else {
            return Err(TrainError::Setup("`lsd` needs exactly one visible variable".into()));
        };
        let (var, shape) = (v.name.clone(), v.shape.clone());
        let net = model.model.nets.iter().find(|n| n.name == critic).cloned();
        let Some(net) = net else {
            return Err(TrainError::Setup(format!("no net `{critic}` in the model")));
        };
        // A frozen critic (`freeze`) is left out of `declared`, so it takes no ascent steps either.
        let critic_params: Vec<String> =
            crate::ir::net_params(&net).into_iter().map(|p| p.name).filter(|p| model.declared.contains(p)).collect();
        let ir = &mut model.ir;
        let Some(grad) = ir.grad(model.free_energy, &var) else {
            return Err(TrainError::Setup(format!("the energy does not depend on `{var}`")));
        };
        let x = ir.var(&var, &shape);
        let f = ir.net(critic, x);
        let f = ir.inline_nets(f);
        // s·f = −∇ₓF·f.
        let gf = ir.mul(grad, f);
        let gf = ir.sum(gf);
        let sf = ir.neg(gf);
        let eps = ir.var(&format!("__dir.{var}"), &shape);
        let ef = ir.mul(eps, f);
        let ef = ir.sum(ef);
        // Cannot be `None`: the critic reads `x` (its first layer is a product with it).
        let jte = ir.grad(ef, &var).unwrap_or_else(|| ir.zeros(&shape));
        let trace = ir.mul(jte, eps);
        let trace = ir.sum(trace);
        let stein = ir.add(sf, trace);
        let sq = ir.map(Unary::Square, f);
        let sq = ir.sum(sq);
        let lambda = ir.num(penalty);
        let pen = ir.mul(lambda, sq);
        let critic_loss = ir.sub(pen, stein);
        let energy_params: Vec<String> =
            model.declared.iter().filter(|p| !critic_params.contains(p)).cloned().collect();
        let energy = Phase::new(ir, stein, &energy_params);
        let critic = Phase::new(ir, critic_loss, &critic_params);
        let report = Phase::new(ir, stein, &[]);
        Ok(Stein {
            var,
            #[cfg(test)]
            stein,
            #[cfg(test)]
            critic_loss,
            energy,
            critic,
            report,
            roots: vec![model.free_energy, grad, f, stein, critic_loss],
            #[cfg(test)]
            critic_params,
            critic_steps,
            rademacher: directions == Directions::Rademacher,
            taken: 0,
            rng: rand::SeedableRng::seed_from_u64(seed ^ 0x006c_7364),
        })
    }

    /// The batch with the directions added, on the device.
    fn vars<D: Kernels>(&self, model: &OnDevice<D>, batch: &Tensors, draw: &Draw) -> Vars<D> {
        let rows = draw.directions.shape[0];
        let mut vars = super::upload_all(&model.dev, batch);
        vars.insert(format!("__dir.{}", self.var), upload(&model.dev, &draw.directions, rows));
        vars
    }
}

impl<D: Kernels> Objective<D> for Stein {
    type Draw = Draw;

    fn begin_epoch(&mut self, seed: u64) {
        self.rng = rand::SeedableRng::seed_from_u64(seed ^ 0x006c_7364);
        self.taken = 0;
    }

    fn draw(&mut self, _model: &mut OnDevice<D>, batch: &Tensors) -> Result<Draw, TrainError> {
        let t = &batch[&self.var];
        let z = normals(&mut self.rng, t.data.len());
        let data = if self.rademacher { z.into_iter().map(|x| if x < 0.0 { -1.0 } else { 1.0 }).collect() } else { z };
        let critic_turn = self.taken % (self.critic_steps + 1) < self.critic_steps;
        self.taken += 1;
        Ok(Draw { critic_turn, directions: HostTensor::new(t.shape.clone(), data) })
    }

    fn loss(&self, model: &OnDevice<D>, batch: &Tensors, draw: &Draw) -> Result<(f64, Grads<D>), TrainError> {
        let rows = draw.directions.shape[0];
        let vars = self.vars(model, batch, draw);
        let w = 1.0 / rows as f32;
        if draw.critic_turn {
            let (_, grads) = super::phase_sums(model, &[(&self.critic, &vars, w)]);
            let (stein, _) = super::phase_sums(model, &[(&self.report, &vars, w)]);
            Ok((stein, grads))
        } else {
            Ok(super::phase_sums(model, &[(&self.energy, &vars, w)]))
        }
    }

    /// Backpropagates through the per-example roots, the symbolic data
    /// derivatives in them evaluated as forward ops.
    #[cfg(test)]
    fn tape_loss(&self, model: &OnDevice<D>, batch: &Tensors, draw: &Draw) -> Result<(f64, Grads<D>), TrainError> {
        let rows = draw.directions.shape[0];
        let root = if draw.critic_turn { self.critic_loss } else { self.stein };
        // S on its own tape, read and dropped; the loss's tape is the one differentiated.
        let mut means = super::taped_means(model, self.vars(model, batch, draw), &[root, self.stein], rows);
        // Cannot fire: `taped_means` gives one mean per root.
        let stein = f64::from(means.pop().expect("a mean per root").as_vec()[0]);
        let loss = means.pop().expect("a mean per root");
        let g = loss.backward();
        let trained: Vec<String> = model
            .params_in(&[root], &model.used)
            .into_iter()
            .filter(|p| self.critic_params.contains(p) == draw.critic_turn)
            .collect();
        Ok((stein, super::tape_grads(model, &g, &trained)))
    }

    fn roots(&self, _model: &OnDevice<D>) -> Vec<Id> {
        self.roots.clone()
    }

    fn phases(&self) -> Vec<&Phase> {
        vec![&self.energy, &self.critic, &self.report]
    }
}
