//! The training objectives, one room per family, behind one trait.
//!
//! | room | objectives |
//! |---|---|
//! | `elbo` | the negative ELBO of a VAE, its encoder reparameterised |
//! | `contrastive` | CD-k, PCD (and the energy penalty every contrastive loss can carry) |
//! | `improved` | improved CD's KL and entropy terms on top of PCD |
//! | `pseudo_likelihood` | PL |
//! | `score` | SM, DSM, SSM |
//! | `nce` | NCE, CNCE |
//! | `jem` | JEM |
//! | `stein` | LSD |
//! | `classify` | cross-entropy alone, with the energy-bounded outlier term (energy-based OOD) |
//!
//! Each objective splits a step in two, the split the step compiler needs
//! (issue 12): [`Objective::draw`] is what it needs from the sampler and the
//! data (negative samples, noise, projection directions: everything random,
//! drawn in a fixed order from the objective's own generators), and
//! [`Objective::loss`] is a deterministic function of the parameters and that
//! draw, returning the loss and its parameter gradients.
//!
//! `loss` runs no tape: each objective writes its loss as one or more
//! [`Phase`]s, built once at construction, each a per-example scalar IR root
//! with its symbolic per-example gradient in every parameter (`Ir::grad_param`),
//! and [`phase_sums`] evaluates the weighted batch sums of those roots. dfdx's
//! tape stays as the test oracle only: each objective's `tape_loss` (tests
//! only) computes the same loss and gradients by backpropagation, and the
//! tests hold the two equal on every zoo model and every objective kind.

mod classify;
mod contrastive;
mod elbo;
mod improved;
mod jem;
mod nce;
mod pseudo_likelihood;
mod score;
mod stein;

/// Every objective `build` can return is `Send` on the CPU; the CPU trainer's
/// `Send` rests on this (see `train::Fitter`). An objective added to `build`
/// is added here too.
pub(super) const ALL_SEND_ON_CPU: () = {
    const fn send<T: Send>() {}
    send::<classify::Classify>();
    send::<contrastive::Contrastive<dfdx::tensor::Cpu>>();
    send::<elbo::Elbo>();
    send::<jem::Jem<dfdx::tensor::Cpu>>();
    send::<nce::Nce>();
    send::<pseudo_likelihood::PseudoLikelihood>();
    send::<score::Score>();
    send::<stein::Stein>();
};

#[cfg(test)]
pub(super) use super::eval::one;
use super::eval::{Evaluator, Leaves, canon};
use super::{ChainSet, Kernels, T3};
use crate::analysis::plan::Plan;
use crate::analysis::program::{Model, Objective as Options, Persistent, TrainOptions};
use crate::ir::{Id, Ir, Op};
use crate::tensor::{HostTensor, Tensors};
use dfdx::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

pub(super) use super::train::TrainError;

/// Parameter gradients by name.
pub(super) type Grads<D> = BTreeMap<String, Grad<D>>;

/// A parameter's gradient. On host devices it stays in the buffer the
/// compiled step summed it into, so the update reads it where it lies and
/// hands the buffer back for the next step (`Mirror::give_back`); a tape's,
/// or any other device's, is a device tensor.
pub(super) enum Grad<D: Kernels> {
    Host { data: Vec<f32>, dims: (usize, usize) },
    Device(T3<D>),
}

impl<D: Kernels> Grad<D> {
    /// As a device tensor `(1, m, n)`; a host buffer moves into it uncopied.
    pub(super) fn into_tensor(self, dev: &D) -> T3<D> {
        match self {
            Grad::Host { data, dims: (m, n) } => dev.tensor_from_vec(data, (1, m, n)),
            Grad::Device(t) => t,
        }
    }

    /// `self + other`, on the host where both are host buffers.
    pub(super) fn add(self, other: Grad<D>, dev: &D) -> Grad<D> {
        match (self, other) {
            (Grad::Host { mut data, dims }, Grad::Host { data: more, .. }) => {
                data.iter_mut().zip(&more).for_each(|(a, b)| *a += b);
                Grad::Host { data, dims }
            }
            (a, b) => Grad::Device(a.into_tensor(dev) + b.into_tensor(dev)),
        }
    }

    /// The elements, row-major.
    #[cfg(test)]
    pub(super) fn as_vec(&self) -> Vec<f32> {
        match self {
            Grad::Host { data, .. } => data.clone(),
            Grad::Device(t) => t.as_vec(),
        }
    }
}

/// Device variables by name, one batch of them: `(rows, m, n)` each.
pub(super) type Vars<D> = BTreeMap<String, T3<D>>;

/// One phase of a loss: a per-example scalar IR root and its per-example gradient in each parameter.
pub(super) struct Phase {
    pub(super) loss: Id,
    pub(super) grads: Vec<(String, Id)>,
    /// The loss and gradients' batch sums compiled for the host (CPU devices), made on first use.
    compiled: std::sync::Mutex<super::step::Compiled>,
}

impl Phase {
    /// The listing of the program the last step ran, if it has run on a host device.
    pub(super) fn listing(&self) -> Option<String> {
        self.compiled.lock().unwrap_or_else(std::sync::PoisonError::into_inner).listing()
    }

    /// `grad_param` of `loss` for each of `params` it depends on.
    pub(super) fn new(ir: &mut Ir, loss: Id, params: &[String]) -> Phase {
        let loss = ir.inline_nets(loss);
        let grads: Vec<(String, Id)> =
            params.iter().filter_map(|p| ir.grad_param(loss, p).map(|g| (p.clone(), g))).collect();
        let outputs =
            grads.iter().map(|(_, g)| *g).chain(std::iter::once(loss)).map(super::step::Output::BatchSum).collect();
        Phase { loss, grads, compiled: std::sync::Mutex::new(super::step::Compiled::new(outputs)) }
    }
}

/// `Σ_p w_p Σ_rows loss_p(row)` and the same sums of each gradient (summed by parameter name across phases;
/// a parameter in `model.used` no phase reaches gets no entry). Each phase has its own variables
/// (device tensors `(rows, m, n)`) and weight.
pub(super) fn phase_sums<D: Kernels>(model: &OnDevice<D>, phases: &[(&Phase, &Vars<D>, f32)]) -> (f64, Grads<D>) {
    let mut loss = 0.0;
    let mut grads: BTreeMap<String, T3<D>> = BTreeMap::new();
    let mut add = |name: &str, g: T3<D>| {
        let total = match grads.remove(name) {
            Some(acc) => acc + g,
            None => g,
        };
        grads.insert(name.to_string(), total);
    };
    if D::HOST {
        // The compiled step (`step`): one program per phase, on the step's one host copy of the parameters.
        let mut host = super::step::Mirror::read(&model.host, &model.params);
        host.add_missing(&model.consts);
        // One buffer per gradient, with its shape: each phase's program
        // writes (the first to reach it) or adds (the rest) its weighted sums
        // straight into it, and it goes to the device as it is at the end.
        let mut sums: BTreeMap<&str, Vec<f32>> = BTreeMap::new();
        let mut reached: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        let mut outs: Vec<Vec<f32>> = Vec::new();
        let mut add: Vec<bool> = Vec::new();
        for (phase, vars, weight) in phases {
            outs.clear();
            add.clear();
            for (name, g) in &phase.grads {
                // The buffer the last step's update gave back: written over, so never zeroed.
                outs.push(sums.remove(name.as_str()).or_else(|| host.take_back(name)).unwrap_or_default());
                add.push(reached.insert(name, canon(model.ir.shape(*g))).is_some());
            }
            outs.push(Vec::new());
            add.push(false);
            // A poisoned lock only means another step panicked; the program itself is intact.
            let mut compiled = phase.compiled.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            compiled.run_into(&model.ir, rows_of(vars), &[*vars], host.shared(), &mut outs, *weight, &add);
            // Cannot fire: the loss is the phase's last output, a scalar.
            loss += f64::from(outs.pop().and_then(|l| l.first().copied()).expect("a loss"));
            for ((name, _), sum) in phase.grads.iter().zip(outs.drain(..)) {
                sums.insert(name, sum);
            }
        }
        let grads = reached
            .into_iter()
            .map(|(name, dims)| (name.to_string(), Grad::Host { data: sums.remove(name).unwrap_or_default(), dims }))
            .collect();
        return (loss, grads);
    }
    let leaves = Leaves {
        tensors: model.params.iter().chain(&model.consts).map(|(k, t)| (k.clone(), t.clone())).collect(),
        lattices: model.lattices.clone(),
    };
    let ev = Evaluator { ir: &model.ir, dev: &model.dev, leaves: &leaves };
    for (phase, vars, weight) in phases {
        let roots: Vec<Id> = phase.grads.iter().map(|(_, g)| *g).chain(std::iter::once(phase.loss)).collect();
        let mut sums = ev.eval_phase_sums(&roots, &[(vars, *weight)]);
        // The loss is the last of the roots.
        loss += sums.pop().map_or(f64::NAN, |f| f64::from(f.as_vec()[0]));
        for ((name, _), g) in phase.grads.iter().zip(sums) {
            add(name, g);
        }
    }
    (loss, grads.into_iter().map(|(name, g)| (name, Grad::Device(g))).collect())
}

/// The rows of a batch of host tensors.
pub(super) fn rows_of_host(batch: &Tensors) -> usize {
    batch.values().next().map_or(0, |t| t.shape[0])
}

/// The rows of a batch of variables.
pub(super) fn rows_of<D: Kernels>(vars: &Vars<D>) -> usize {
    vars.values().next().map_or(0, |t| t.shape().0)
}

/// A host batch on the device, every tensor with its own rows.
pub(super) fn upload_all<D: Kernels>(dev: &D, batch: &Tensors) -> Vars<D> {
    batch.iter().map(|(k, t)| (k.clone(), super::upload(dev, t, t.shape[0]))).collect()
}

/// One training objective. See the module's documentation for the split.
pub(super) trait Objective<D: Kernels> {
    /// What one step draws; `loss` reads it and draws nothing.
    type Draw;

    /// Sees the whole training set once before the first epoch (NCE fits its noise to it).
    fn prepare(&mut self, _data: &Tensors) {}

    /// Sees the train block's outlier rows once before the first epoch (`classify`'s energy-bounded term).
    fn outliers(&mut self, _model: &OnDevice<D>, _rows: &Tensors) -> Result<(), TrainError> {
        Ok(())
    }

    /// Reseeds the objective's generators and chains from the run's seed and the epoch.
    fn begin_epoch(&mut self, _seed: u64) {}

    /// Draws what the step needs from the sampler and the data.
    fn draw(&mut self, model: &mut OnDevice<D>, batch: &Tensors) -> Result<Self::Draw, TrainError>;

    /// The loss on `batch` and its gradient in each parameter it depends on.
    fn loss(&self, model: &OnDevice<D>, batch: &Tensors, draw: &Self::Draw) -> Result<(f64, Grads<D>), TrainError>;

    /// `loss` through dfdx's tape: the oracle the symbolic `loss` is tested against.
    #[cfg(test)]
    fn tape_loss(&self, model: &OnDevice<D>, batch: &Tensors, draw: &Self::Draw)
    -> Result<(f64, Grads<D>), TrainError>;

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

    /// The loss's phases, for the listing of their compiled schedules.
    fn phases(&self) -> Vec<&Phase>;
}

/// An objective behind a pointer: one step is `draw` then `loss`.
pub(super) trait Step<D: Kernels> {
    fn prepare(&mut self, data: &Tensors);
    fn outliers(&mut self, model: &OnDevice<D>, rows: &Tensors) -> Result<(), TrainError>;
    fn begin_epoch(&mut self, seed: u64);
    fn step(&mut self, model: &mut OnDevice<D>, batch: &Tensors) -> Result<(f64, Grads<D>), TrainError>;
    /// One draw, then its loss both ways: symbolic (`loss`) and by tape (`tape_loss`).
    #[cfg(test)]
    fn step_both(&mut self, model: &mut OnDevice<D>, batch: &Tensors) -> Result<[(f64, Grads<D>); 2], TrainError>;
    fn roots(&self, model: &OnDevice<D>) -> Vec<Id>;
    fn state(&self) -> Tensors;
    fn chains(&self) -> Option<Tensors>;
    fn chain_sets(&mut self) -> Vec<&mut ChainSet<D>>;
    fn phases(&self) -> Vec<&Phase>;
}

impl<D: Kernels, O: Objective<D>> Step<D> for O {
    fn prepare(&mut self, data: &Tensors) {
        Objective::prepare(self, data)
    }
    fn outliers(&mut self, model: &OnDevice<D>, rows: &Tensors) -> Result<(), TrainError> {
        Objective::outliers(self, model, rows)
    }
    fn begin_epoch(&mut self, seed: u64) {
        Objective::begin_epoch(self, seed)
    }
    fn step(&mut self, model: &mut OnDevice<D>, batch: &Tensors) -> Result<(f64, Grads<D>), TrainError> {
        let draw = self.draw(model, batch)?;
        self.loss(model, batch, &draw)
    }
    #[cfg(test)]
    fn step_both(&mut self, model: &mut OnDevice<D>, batch: &Tensors) -> Result<[(f64, Grads<D>); 2], TrainError> {
        let draw = self.draw(model, batch)?;
        Ok([self.loss(model, batch, &draw)?, self.tape_loss(model, batch, &draw)?])
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
    fn phases(&self) -> Vec<&Phase> {
        Objective::phases(self)
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
    /// Every parameter the run trains, in declaration order: the train
    /// block's `freeze` leaves its parameters out, so no phase differentiates them.
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
    /// Host copies of the parameters and constants for compiled programs,
    /// refreshed once a step and shared with the objective's chain sets.
    pub(super) host: super::step::SharedMirror,
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
        set.share_host(&self.host);
        set.set_params(&self.params).map_err(TrainError::Setup)?;
        Ok(set)
    }

    /// Traced parameters and untaped constants for one loss evaluation.
    #[cfg(test)]
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
        Options::Classify(c) => Box::new(classify::Classify::new(model, c, seed)?),
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
        Options::Lsd { critic, penalty, critic_steps, directions } => {
            Box::new(stein::Stein::new(model, critic, *penalty, *critic_steps, *directions, seed)?)
        }
        Options::Elbo { encoder, samples } => Box::new(elbo::Elbo::new(model, encoder, *samples, seed)?),
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

/// Each root's sum over the rows of `vars`, divided by `rows`, evaluated
/// on dfdx's tape (the parameters traced, `vars` retaped): the tape
/// oracles' losses. Each root is evaluated on its own, so each has its own
/// tape and a backward pass through one reaches that root's graph alone.
#[cfg(test)]
fn taped_means<D: Kernels>(
    model: &OnDevice<D>,
    vars: Vars<D>,
    roots: &[Id],
    rows: usize,
) -> Vec<Tensor<(), f32, D, OwnedTape<f32, D>>> {
    let leaves = model.taped_leaves();
    let ev = super::eval::Taped(Evaluator { ir: &model.ir, dev: &model.dev, leaves: &leaves });
    let vars: BTreeMap<String, T3<D, OwnedTape<f32, D>>> =
        vars.into_iter().map(|(k, t)| (k, t.retaped::<OwnedTape<f32, D>>())).collect();
    roots.iter().map(|r| one(ev.eval(&[*r], &vars)).sum::<(), Axes3<0, 1, 2>>() / rows as f32).collect()
}

/// Gradients by tape for `used`, read off a backward pass.
#[cfg(test)]
fn tape_grads<D: Kernels>(model: &OnDevice<D>, g: &Gradients<f32, D>, used: &[String]) -> Grads<D> {
    used.iter().map(|p| (p.clone(), Grad::Device(g.get(&model.params[p])))).collect()
}

#[cfg(test)]
mod tests;
