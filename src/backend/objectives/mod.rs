//! The training objectives, one room per family, behind one trait.
//!
//! | room | objectives |
//! |---|---|
//! | `contrastive` | CD-k, PCD (and the energy penalty every contrastive loss can carry) |
//! | `pseudo_likelihood` | PL |
//! | `score` | SM, DSM, SSM |
//! | `nce` | NCE, CNCE |
//! | `jem` | JEM |
//!
//! Each objective splits a step in two, the split the step compiler needs
//! (issue 12): [`Objective::draw`] is what it needs from the sampler and the
//! data (negative samples, noise, projection directions: everything random,
//! drawn in a fixed order from the objective's own generators), and
//! [`Objective::loss`] is a deterministic function of the parameters and that
//! draw, returning the loss and its parameter gradients. Today `loss` runs
//! the IR through dfdx's tape (CD/PCD without the energy penalty already use
//! symbolic parameter gradients); a compiled step replaces `loss` by one IR
//! program built from the objective's roots, with the tape kept as its test
//! oracle, and leaves `draw` as it is.

mod contrastive;
mod jem;
mod nce;
mod pseudo_likelihood;
mod score;

/// Every objective `build` can return is `Send` on the CPU; the CPU trainer's
/// `Send` rests on this (see `train::Fitter`). An objective added to `build`
/// is added here too.
pub(super) const ALL_SEND_ON_CPU: () = {
    const fn send<T: Send>() {}
    send::<contrastive::Contrastive<dfdx::tensor::Cpu>>();
    send::<jem::Jem<dfdx::tensor::Cpu>>();
    send::<nce::Nce>();
    send::<pseudo_likelihood::PseudoLikelihood>();
    send::<score::Score>();
};

use super::eval::Leaves;
pub(super) use super::eval::one;
use super::{ChainSet, Kernels, T3};
use crate::analysis::plan::Plan;
use crate::analysis::program::{Model, Objective as Options, Persistent, TrainOptions};
use crate::ir::{Id, Ir, Op};
use crate::tensor::{HostTensor, Tensors};
use dfdx::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

pub(super) use super::train::TrainError;

/// Parameter gradients by name.
pub(super) type Grads<D> = BTreeMap<String, T3<D>>;

/// One training objective. See the module's documentation for the split.
pub(super) trait Objective<D: Kernels> {
    /// What one step draws; `loss` reads it and draws nothing.
    type Draw;

    /// Sees the whole training set once before the first epoch (NCE fits its noise to it).
    fn prepare(&mut self, _data: &Tensors) {}

    /// Reseeds the objective's generators and chains from the run's seed and the epoch.
    fn begin_epoch(&mut self, _seed: u64) {}

    /// Draws what the step needs from the sampler and the data.
    fn draw(&mut self, model: &mut OnDevice<D>, batch: &Tensors) -> Result<Self::Draw, TrainError>;

    /// The loss on `batch` and its gradient in each parameter it depends on.
    fn loss(&self, model: &OnDevice<D>, batch: &Tensors, draw: &Self::Draw) -> Result<(f64, Grads<D>), TrainError>;

    /// The IR roots the loss reads: a parameter outside their cones gets no gradient.
    fn roots(&self, model: &OnDevice<D>) -> Vec<Id>;

    /// Persistent chains and replay buffers, for checkpoints.
    fn state(&self) -> Tensors {
        Tensors::new()
    }

    /// The persistent chains' current states, when the objective keeps chains.
    fn chains(&self) -> Option<Tensors> {
        None
    }

    /// Every chain set the objective keeps (they hold the parameters while they sweep).
    fn chain_sets(&mut self) -> Vec<&mut ChainSet<D>> {
        Vec::new()
    }
}

/// An objective behind a pointer: one step is `draw` then `loss`.
pub(super) trait Step<D: Kernels> {
    fn prepare(&mut self, data: &Tensors);
    fn begin_epoch(&mut self, seed: u64);
    fn step(&mut self, model: &mut OnDevice<D>, batch: &Tensors) -> Result<(f64, Grads<D>), TrainError>;
    fn roots(&self, model: &OnDevice<D>) -> Vec<Id>;
    fn state(&self) -> Tensors;
    fn chains(&self) -> Option<Tensors>;
    fn chain_sets(&mut self) -> Vec<&mut ChainSet<D>>;
}

impl<D: Kernels, O: Objective<D>> Step<D> for O {
    fn prepare(&mut self, data: &Tensors) {
        Objective::prepare(self, data)
    }
    fn begin_epoch(&mut self, seed: u64) {
        Objective::begin_epoch(self, seed)
    }
    fn step(&mut self, model: &mut OnDevice<D>, batch: &Tensors) -> Result<(f64, Grads<D>), TrainError> {
        let draw = self.draw(model, batch)?;
        self.loss(model, batch, &draw)
    }
    fn roots(&self, model: &OnDevice<D>) -> Vec<Id> {
        Objective::roots(self, model)
    }
    fn state(&self) -> Tensors {
        Objective::state(self)
    }
    fn chains(&self) -> Option<Tensors> {
        Objective::chains(self)
    }
    fn chain_sets(&mut self) -> Vec<&mut ChainSet<D>> {
        Objective::chain_sets(self)
    }
}

/// The model being trained, on the device: what every objective reads.
pub(super) struct OnDevice<D: Kernels> {
    pub(super) dev: D,
    pub(super) ir: Ir,
    /// Free energy of the visible and kept variables (latents summed out where planned).
    pub(super) free_energy: Id,
    /// The full energy (pseudo-likelihood).
    pub(super) total: Id,
    pub(super) params: BTreeMap<String, T3<D>>,
    pub(super) shapes: BTreeMap<String, Vec<usize>>,
    /// Every parameter, in declaration order.
    pub(super) declared: Vec<String>,
    /// Parameters the loss depends on (the others get no gradient).
    pub(super) used: Vec<String>,
    pub(super) consts: BTreeMap<String, T3<D>>,
    pub(super) lattices: BTreeMap<String, Vec<Vec<usize>>>,
    /// The energy penalty's weight (0: none).
    pub(super) energy_alpha: f32,
    pub(super) visible: Vec<String>,
    pub(super) kept: Vec<String>,
    /// Batch-sized chains for the positive phase and for CD's negative phase.
    pub(super) scratch: Option<Box<ChainSet<D>>>,
    pub(super) model: Model,
    pub(super) plan: Plan,
    pub(super) seed: u64,
}

impl<D: Kernels> OnDevice<D> {
    pub(super) fn host_params(&self) -> Tensors {
        self.params.iter().map(|(k, t)| (k.clone(), HostTensor::new(self.shapes[k].clone(), t.as_vec()))).collect()
    }

    /// A batch-sized chain set (made once per batch size), with current parameters.
    pub(super) fn scratch(&mut self, rows: usize) -> Result<&mut ChainSet<D>, TrainError> {
        let set = match self.scratch.take() {
            Some(set) if set.chains == rows => set,
            _ => Box::new(ChainSet::new(
                self.dev.clone(),
                &self.model,
                &self.plan,
                &self.host_params(),
                rows,
                self.seed ^ 0x5343_5241,
            )?),
        };
        let set = self.scratch.insert(set);
        set.set_params(&self.params);
        Ok(set)
    }

    /// Traced parameters and untaped constants for one loss evaluation.
    pub(super) fn taped_leaves(&self) -> Leaves<D, OwnedTape<f32, D>> {
        let mut tensors: BTreeMap<String, T3<D, OwnedTape<f32, D>>> =
            self.params.iter().map(|(k, t)| (k.clone(), t.leaky_trace())).collect();
        tensors.extend(self.consts.iter().map(|(k, t)| (k.clone(), t.retaped::<OwnedTape<f32, D>>())));
        Leaves { tensors, lattices: self.lattices.clone() }
    }

    /// The parameters of `among` that occur in the cones of `roots`, in `among`'s order.
    pub(super) fn params_in(&self, roots: &[Id], among: &[String]) -> Vec<String> {
        let cone: BTreeSet<Id> = roots.iter().flat_map(|r| self.ir.cone(*r)).collect();
        among
            .iter()
            .filter(|p| cone.iter().any(|id| matches!(&self.ir.node(*id).op, Op::Param(n) if n == *p)))
            .cloned()
            .collect()
    }

    /// The declared variable `name` (planned and checked, so it exists).
    pub(super) fn variable(&self, name: &str) -> Result<&crate::analysis::program::Variable, TrainError> {
        self.model.variable(name).ok_or_else(|| TrainError::Setup(format!("no variable `{name}` in the model")))
    }
}

/// Builds the objective the options name, adding its roots to `model.ir`.
/// (Each objective here is listed in `ALL_SEND_ON_CPU` too.)
pub(super) fn build<D: Kernels>(
    model: &mut OnDevice<D>,
    options: &TrainOptions,
    batch: usize,
    params: &Tensors,
    state: &Tensors,
    seed: u64,
) -> Result<Box<dyn Step<D>>, TrainError> {
    Ok(match &options.objective {
        Options::Cd { k } => Box::new(contrastive::Contrastive::cd(model, *k)),
        Options::Pcd(p) => Box::new(contrastive::Contrastive::pcd(model, p, params, state, seed)?),
        Options::Pl => Box::new(pseudo_likelihood::PseudoLikelihood::new(model)?),
        Options::Jem(p) => Box::new(jem::Jem::new(model, p, batch, params, state, seed)?),
        Options::Sm => Box::new(score::Score::new(model, score::Kind::Exact, seed)),
        Options::Dsm { sigma } => {
            Box::new(score::Score::new(model, score::Kind::Denoising { sigma: *sigma as f32 }, seed))
        }
        Options::Ssm { projections, directions, variance_reduced } => Box::new(score::Score::new(
            model,
            score::Kind::Sliced {
                projections: *projections,
                rademacher: *directions == crate::analysis::program::Directions::Rademacher,
                variance_reduced: *variance_reduced,
            },
            seed,
        )),
        Options::Nce { noise, ratio } => Box::new(nce::Nce::new(
            model,
            nce::Kind::Nce { gaussian: *noise == crate::analysis::program::NoiseKind::Gaussian, ratio: *ratio },
            params,
            seed,
        )?),
        Options::Cnce { sigma } => {
            Box::new(nce::Nce::new(model, nce::Kind::Cnce { sigma: *sigma as f32 }, params, seed)?)
        }
    })
}

/// The persistent options' replay buffer.
fn replay(p: &Persistent, seed: u64, state: &Tensors) -> super::replay::Replay {
    super::replay::Replay::new(p.buffer, p.reinit, seed, state)
}

/// `∂E/∂x` for each visible variable `E` depends on (score matching, NCE).
fn data_gradients(ir: &mut Ir, root: Id, model: &Model) -> BTreeMap<String, Id> {
    let mut grads = BTreeMap::new();
    for v in model.variables.iter().filter(|v| v.role == crate::front::ast::Role::Visible) {
        if let Some(g) = ir.grad(root, &v.name) {
            grads.insert(v.name.clone(), g);
        }
    }
    grads
}

/// Gradients by tape for `used`, read off a backward pass.
fn tape_grads<D: Kernels>(model: &OnDevice<D>, g: &Gradients<f32, D>, used: &[String]) -> Grads<D> {
    used.iter().map(|p| (p.clone(), g.get(&model.params[p]))).collect()
}
