//! The dfdx backend: the only module that names dfdx types. It evaluates the
//! IR on tensors (`eval`) and runs the planned samplers over batches of
//! chains (`Sampler`). Everything crosses its boundary as host tensors
//! (`crate::tensor::HostTensor`), so the rest of the crate is device-free.
//! All code is generic over the dfdx device: `Cpu` always, `Cuda` with the
//! `cuda` feature.

mod ais;
mod conv;
mod dense;
mod eval;
mod hmc;
mod host;
mod lattice;
mod noise;
mod objectives;
mod optim;
mod partner;
mod replay;
mod step;
mod tempering;
mod train;
mod truncated;

pub use ais::{
    AisEstimate, AisOptions, MAX_CHAIN_ELEMENTS, MAX_RUNS, MAX_TEMPERATURES, RaiseEstimate, ais,
    check_options as check_ais_options, raise, schedule,
};
/// The host product every compiled step runs, public for `benches/gemm.rs`.
pub use host::{Operand, gemm};
pub use tempering::Tempering;
pub use train::{StepReport, TrainError, TrainState, Trainer};

use crate::analysis::plan::{Kernel, Plan};
use crate::analysis::program::{Domain, Model};
use crate::ir::{self, Id, Ir};
use crate::tensor::{HostTensor, Tensors, check_rows, constants};
use dfdx::prelude::*;
use eval::{Evaluator, Leaves, canon, expand};
use host::Arith;
use rand::{Rng, RngCore, SeedableRng};
use rand_distr::Distribution;
use std::collections::BTreeMap;

/// A batch of per-example values: `(batch, rows, cols)`.
pub(crate) type T3<D, T = NoneTape> = Tensor<(usize, usize, usize), f32, D, T>;

/// A block's new values: each variable's index and its draw.
type Drawn<D> = Vec<(usize, T3<D>)>;

/// Device-specific kernels that dfdx has no single op for. The Bernoulli
/// draw of a Gibbs update is the hot loop of every discrete sampler: on the
/// CPU it runs as one fused pass (sigmoid, uniform draw, compare) instead of
/// six tensor ops; other devices compose dfdx ops.
pub(crate) trait Kernels: Device<f32> {
    /// Whether values live in host memory, where compiled programs
    /// (`step`) run; other devices evaluate through dfdx's ops.
    const HOST: bool = false;

    /// `hi` where u < sigmoid(scale * (logits + bias)), else `lo`, elementwise;
    /// `bias` is one per-example value shared by the whole batch.
    fn bernoulli(
        &self,
        logits: T3<Self>,
        bias: Option<T3<Self>>,
        scale: f32,
        hi: f32,
        lo: f32,
        rng: &mut rand::rngs::SmallRng,
    ) -> T3<Self>;

    /// A one-hot draw along the last axis from softmax(logits).
    fn categorical(&self, logits: T3<Self>, rng: &mut rand::rngs::SmallRng) -> T3<Self>;

    /// `A @ x` for a 0/1 lattice adjacency `A` given by its neighbour lists
    /// (`dense` is the same matrix, for devices without a gather kernel):
    /// x is `(batch, units, k)`, each output unit the sum of its neighbours.
    fn neighbour_sum(&self, x: T3<Self>, neighbours: &[Vec<usize>], dense: &T3<Self>) -> T3<Self>;

    /// `Σ_k c_k a_kᵀ b_k` for batches of vectors `a_k` `(b_k, 1, m)` and
    /// `b_k` `(b_k, 1, n)`: batch-summed outer products, `(1, m, n)`.
    fn outer_sums(&self, parts: Vec<(T3<Self>, T3<Self>, f32)>, (m, n): (usize, usize)) -> T3<Self> {
        parts
            .into_iter()
            .map(|(a, b, c)| {
                let batch = a.shape().0;
                a.reshape_like(&(batch, m))
                    .permute::<_, Axes2<1, 0>>()
                    .matmul(b.reshape_like(&(batch, n)))
                    .reshape_like(&(1usize, m, n))
                    * c
            })
            .reduce(|x, y| x + y)
            .unwrap_or_else(|| self.zeros_like(&(1, m, n)))
    }

    /// A tensor's elements in order, on the host.
    fn to_host(&self, x: &T3<Self>) -> Vec<f32> {
        x.as_vec()
    }

    /// `f(x)` elementwise, untaped.
    fn map(&self, f: ir::Unary, x: T3<Self>) -> T3<Self> {
        eval::unary(f, x, false)
    }

    /// `x op y`, each broadcast to `(b, m, n)`, untaped.
    fn zip(&self, op: Arith, x: T3<Self>, y: T3<Self>, (b, m, n): (usize, usize, usize)) -> T3<Self> {
        eval::arith(op, expand(x, b, m, n), expand(y, b, m, n))
    }

    /// Each example's sum: `(b, m, n) -> (b, 1, 1)`.
    fn sum_examples(&self, x: T3<Self>) -> T3<Self> {
        let b = x.shape().0;
        x.sum::<(usize,), Axes2<1, 2>>().reshape_like(&(b, 1usize, 1usize))
    }

    /// The sum over the batch: `(b, m, n) -> (1, m, n)`.
    fn sum_batch(&self, x: T3<Self>) -> T3<Self> {
        let (_, m, n) = *x.shape();
        x.sum::<(usize, usize), Axis<0>>().reshape_like(&(1usize, m, n))
    }

    /// The sum of the squares of all elements.
    fn sum_squares(&self, x: &T3<Self>) -> f64 {
        f64::from(x.clone().square().sum::<(), Axes3<0, 1, 2>>().as_vec()[0])
    }
}

/// A CPU tensor's elements in order (strided views are laid out first).
fn host_data(x: T3<Cpu>) -> (Vec<f32>, (usize, usize, usize)) {
    let shape = *x.shape();
    let data = with_host(&x, <[f32]>::to_vec);
    (data, shape)
}

thread_local! {
    /// Buffers that `with_host` reuses, so reading a tensor costs a copy only.
    static HOST_BUFFERS: std::cell::RefCell<Vec<Vec<f32>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` on a CPU tensor's elements, in order, copied into a reused buffer.
fn with_host<R>(x: &T3<Cpu>, f: impl FnOnce(&[f32]) -> R) -> R {
    let x = x.clone().contiguous();
    let n = x.shape().num_elements();
    let mut buffer = HOST_BUFFERS.with(|b| b.borrow_mut().pop()).unwrap_or_default();
    if buffer.len() < n {
        buffer.resize(n, 0.0);
    }
    x.copy_into(&mut buffer[..n]);
    let out = f(&buffer[..n]);
    HOST_BUFFERS.with(|b| b.borrow_mut().push(buffer));
    out
}

impl Kernels for Cpu {
    const HOST: bool = true;

    fn bernoulli(
        &self,
        logits: T3<Self>,
        bias: Option<T3<Self>>,
        scale: f32,
        hi: f32,
        lo: f32,
        rng: &mut rand::rngs::SmallRng,
    ) -> T3<Self> {
        let shape = *logits.shape();
        let bias = match bias {
            Some(b) => host_data(expand(b, 1, shape.1, shape.2)).0,
            None => vec![0.0; shape.1 * shape.2],
        };
        let draws = with_host(&logits, |xs| host::bernoulli(xs, &bias, scale, hi, lo, rng));
        self.tensor_from_vec(draws, shape)
    }

    fn neighbour_sum(&self, x: T3<Self>, neighbours: &[Vec<usize>], _dense: &T3<Self>) -> T3<Self> {
        neighbour_sum_host(self, x, neighbours)
    }

    fn to_host(&self, x: &T3<Self>) -> Vec<f32> {
        // A copy of the buffer: dfdx's `as_vec` walks it by index.
        with_host(x, <[f32]>::to_vec)
    }

    fn categorical(&self, logits: T3<Self>, rng: &mut rand::rngs::SmallRng) -> T3<Self> {
        let (mut data, shape) = host_data(logits);
        // Inverse CDF per row: one uniform, exact, no ties.
        for row in data.chunks_mut(shape.2) {
            let top = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let mut total = 0.0f64;
            for x in row.iter_mut() {
                *x = (*x - top).exp();
                total += f64::from(*x);
            }
            let mut u = rng.r#gen::<f64>() * total;
            let mut pick = row.len() - 1;
            for (k, x) in row.iter().enumerate() {
                u -= f64::from(*x);
                if u < 0.0 {
                    pick = k;
                    break;
                }
            }
            for (k, x) in row.iter_mut().enumerate() {
                *x = f32::from(u8::from(k == pick));
            }
        }
        self.tensor_from_vec(data, shape)
    }

    fn outer_sums(&self, parts: Vec<(T3<Self>, T3<Self>, f32)>, (m, n): (usize, usize)) -> T3<Self> {
        // One output; each GEMM scales its product and adds it in, with no pass of its own.
        let mut out = Vec::new();
        for (k, (a, b, c)) in parts.into_iter().enumerate() {
            let batch = a.shape().0;
            with_host(&a, |a| with_host(&b, |b| host::gemm_at_b_into(&mut out, a, b, (m, batch, n), k > 0, c)));
        }
        self.tensor_from_vec(out, (1, m, n))
    }

    fn map(&self, f: ir::Unary, x: T3<Self>) -> T3<Self> {
        let shape = *x.shape();
        self.tensor_from_vec(with_host(&x, |xs| host::map(f, xs)), shape)
    }

    fn zip(&self, op: Arith, x: T3<Self>, y: T3<Self>, shape: (usize, usize, usize)) -> T3<Self> {
        let (xs, ys) = (*x.shape(), *y.shape());
        let out = with_host(&x, |x| with_host(&y, |y| host::zip(op, x, xs, y, ys, shape)));
        self.tensor_from_vec(out, shape)
    }

    fn sum_examples(&self, x: T3<Self>) -> T3<Self> {
        let (b, m, n) = *x.shape();
        self.tensor_from_vec(with_host(&x, |xs| host::sum_runs(xs, m * n)), (b, 1, 1))
    }

    fn sum_batch(&self, x: T3<Self>) -> T3<Self> {
        let (b, m, n) = *x.shape();
        self.tensor_from_vec(with_host(&x, |xs| host::sum_leading(xs, b)), (1, m, n))
    }

    fn sum_squares(&self, x: &T3<Self>) -> f64 {
        with_host(x, host::sum_squares)
    }
}

/// `A @ x` for a lattice on the CPU: each unit sums its neighbours.
fn neighbour_sum_host(dev: &Cpu, x: T3<Cpu>, neighbours: &[Vec<usize>]) -> T3<Cpu> {
    let (b, n, k) = *x.shape();
    let mut out = vec![0.0; b * n * k];
    with_host(&x, |input| {
        for (src, dst) in input.chunks(n * k).zip(out.chunks_mut(n * k)) {
            for (i, ns) in neighbours.iter().enumerate() {
                let row = &mut dst[i * k..(i + 1) * k];
                for &j in ns {
                    for (o, v) in row.iter_mut().zip(&src[j * k..(j + 1) * k]) {
                        *o += v;
                    }
                }
            }
        }
    });
    dev.tensor_from_vec(out, (b, n, k))
}

#[cfg(feature = "cuda")]
impl Kernels for Cuda {
    fn bernoulli(
        &self,
        logits: T3<Self>,
        bias: Option<T3<Self>>,
        scale: f32,
        hi: f32,
        lo: f32,
        _rng: &mut rand::rngs::SmallRng,
    ) -> T3<Self> {
        let shape = *logits.shape();
        let logits = match bias {
            Some(b) => logits + expand(b, shape.0, shape.1, shape.2),
            None => logits,
        };
        let u: T3<Self> = self.sample_uniform_like(&shape);
        let p = (logits * scale).sigmoid();
        u.lt(&p).choose(self.ones_like(&shape) * hi, self.ones_like(&shape) * lo)
    }

    fn neighbour_sum(&self, x: T3<Self>, _neighbours: &[Vec<usize>], dense: &T3<Self>) -> T3<Self> {
        let (b, n, _) = *x.shape();
        expand(dense.clone(), b, n, n).matmul(x)
    }

    fn categorical(&self, logits: T3<Self>, _rng: &mut rand::rngs::SmallRng) -> T3<Self> {
        // Gumbel-max: argmax(logits + Gumbel noise) along the category axis.
        let shape = *logits.shape();
        let u: T3<Self> = self.sample_uniform_like(&shape);
        let gumbel = u.clamp(1e-12, 1.0 - 1e-7).ln().negate().ln().negate();
        let z = logits + gumbel;
        let best = z.clone().max::<(usize, usize), Axis<2>>().broadcast_like::<_, Axis<2>>(&shape);
        z.ge(&best).choose(self.ones_like(&shape), self.zeros_like(&shape))
    }
}

/// The device a backend computes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    /// The host CPU.
    #[default]
    Cpu,
    /// An NVIDIA GPU, through CUDA.
    Cuda,
}

/// Runs the planned kernels over `chains` independent chains. `Send`: a host
/// may move it to a worker thread.
pub struct Sampler {
    inner: Box<dyn Chains + Send>,
    /// Variables the clamps hold whole.
    whole: Vec<String>,
}

trait Chains {
    fn sweep(&mut self);
    fn sweep_clamped(&mut self, clamped: &[String]);
    fn state(&self) -> Tensors;
    fn set_state(&mut self, state: &Tensors) -> Result<(), String>;
    fn set_clamps(&mut self, clamps: &[Clamp]) -> Result<(), String>;
    fn acceptance(&self) -> Option<f64>;
    fn evaluate(&self, what: Quantity, rows: &Tensors) -> Result<HostTensor, String>;
    /// The ladder, swap rates and acceptance of tempered chains; `None` for one set at T = 1.
    fn tempering(&self) -> Option<Tempering> {
        None
    }
}

/// A CUDA chain set or trainer, declared `Send`. cudarc 0.9 leaves its
/// `CudaStream` (a raw stream handle and an `Arc<CudaDevice>`) without
/// `Send`, though it declares `CudaDevice`, which holds the same kind of
/// handle, `Send` and `Sync`: a CUDA stream is not tied to a thread, and
/// every cudarc call binds the device's context to the calling thread first.
/// So moving the one owner to another thread is sound.
#[cfg(feature = "cuda")]
pub(crate) struct MovableCuda<T>(pub(crate) T);

// SAFETY: see `MovableCuda`; only moves are allowed (no `Sync`).
#[cfg(feature = "cuda")]
unsafe impl<T> Send for MovableCuda<T> {}

#[cfg(feature = "cuda")]
impl<T: Chains> Chains for MovableCuda<T> {
    fn sweep(&mut self) {
        self.0.sweep();
    }
    fn sweep_clamped(&mut self, clamped: &[String]) {
        self.0.sweep_clamped(clamped);
    }
    fn state(&self) -> Tensors {
        self.0.state()
    }
    fn set_state(&mut self, state: &Tensors) -> Result<(), String> {
        self.0.set_state(state)
    }
    fn set_clamps(&mut self, clamps: &[Clamp]) -> Result<(), String> {
        self.0.set_clamps(clamps)
    }
    fn acceptance(&self) -> Option<f64> {
        self.0.acceptance()
    }
    fn evaluate(&self, what: Quantity, rows: &Tensors) -> Result<HostTensor, String> {
        self.0.evaluate(what, rows)
    }
    fn tempering(&self) -> Option<Tempering> {
        self.0.tempering()
    }
}

/// Part of a variable held at given values in every sweep (`Sampler::set_clamps`).
#[derive(Debug, Clone, PartialEq)]
pub struct Clamp {
    /// The variable.
    pub var: String,
    /// The held elements of one chain's value of the variable, as row-major
    /// indices (a categorical unit's whole one-hot row).
    pub elements: Vec<usize>,
    /// Each chain's values at `elements`, chain after chain.
    pub values: Vec<f32>,
}

/// What `Sampler::evaluate` computes for each row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Quantity {
    /// Total energy.
    Energy,
    /// Energy with the plan's latents summed out (rows give the other variables).
    FreeEnergy,
    /// Gradient of the energy with respect to a variable.
    Gradient(String),
    /// The exact conditional of a discrete variable: p(x = 1), p(s = +1) or
    /// the categorical probabilities.
    Conditional(String),
}

impl Sampler {
    /// Compiles the plan of `model` into kernels over `chains` chains, with
    /// parameter values `params` (by name; missing ones are an error).
    pub fn new(
        model: &Model,
        plan: &Plan,
        params: &Tensors,
        chains: usize,
        seed: u64,
        device: DeviceKind,
    ) -> Result<Sampler, String> {
        let inner: Box<dyn Chains + Send> = match device {
            DeviceKind::Cpu => {
                Box::new(tempering::Ensemble::new(Cpu::seed_from_u64(seed), model, plan, params, chains, seed)?)
            }
            #[cfg(feature = "cuda")]
            DeviceKind::Cuda => {
                let dev = Cuda::try_seed_from_u64(seed).map_err(|e| format!("cannot open the CUDA device: {e:?}"))?;
                Box::new(MovableCuda(tempering::Ensemble::new(dev, model, plan, params, chains, seed)?))
            }
            #[cfg(not(feature = "cuda"))]
            DeviceKind::Cuda => {
                return Err("this ebmc was built without the `cuda` feature; rebuild with `--features cuda`".into());
            }
        };
        Ok(Sampler { inner, whole: Vec::new() })
    }

    /// One sweep of the plan: every Gibbs block once, then the Langevin steps.
    pub fn sweep(&mut self) {
        self.inner.sweep();
    }

    /// One sweep that leaves the variables in `clamped` as they are: their
    /// kernels are skipped, so every other variable is updated from its
    /// conditional given the clamped values (exact clamping for every kernel).
    pub fn sweep_clamped(&mut self, clamped: &[String]) {
        self.inner.sweep_clamped(clamped);
    }

    /// Holds parts of variables at given values from now on, replacing any
    /// earlier clamps (none releases them): the held elements take their
    /// values at once and keep them, and every kernel draws the rest from
    /// its conditional given them. A wholly held variable's kernel is
    /// skipped; Gibbs kernels overwrite the held units after each draw (a
    /// chromatic sweep goes colour by colour, a sequential one skips them),
    /// and Langevin and MALA move only the free units (the gradient and the
    /// noise of the held ones are dropped), so each kernel leaves the
    /// conditional distribution invariant.
    pub fn set_clamps(&mut self, clamps: &[Clamp]) -> Result<(), String> {
        self.inner.set_clamps(clamps)?;
        let state = self.inner.state();
        self.whole = state
            .iter()
            .filter(|(var, t)| {
                let mut held = vec![false; t.shape[1..].iter().product()];
                for c in clamps.iter().filter(|c| c.var == **var) {
                    c.elements.iter().for_each(|&e| held[e] = true);
                }
                !held.is_empty() && held.iter().all(|&h| h)
            })
            .map(|(var, _)| var.clone())
            .collect();
        Ok(())
    }

    /// The variables the clamps hold whole (their chains do not move).
    pub fn held_whole(&self) -> &[String] {
        &self.whole
    }

    /// Current chain states: each variable as `[chains, ...shape]`.
    pub fn state(&self) -> Tensors {
        self.inner.state()
    }

    /// Replaces the chain states: each variable as `[chains, ...shape]`.
    pub fn set_state(&mut self, state: &Tensors) -> Result<(), String> {
        self.inner.set_state(state)
    }

    /// Mean acceptance rate so far of the Metropolis-adjusted kernels (MALA,
    /// HMC), when one runs; with tempering, the T = 1 replica's.
    pub fn acceptance(&self) -> Option<f64> {
        self.inner.acceptance()
    }

    /// The temperatures, swap rates and per-replica acceptance of parallel
    /// tempering, when the plan tempers the chains.
    pub fn tempering(&self) -> Option<Tempering> {
        self.inner.tempering()
    }

    /// Total energy of each row of `rows` (every variable given, `[rows, ...shape]`).
    pub fn energy(&self, rows: &Tensors) -> Result<Vec<f32>, String> {
        Ok(self.inner.evaluate(Quantity::Energy, rows)?.data)
    }

    /// Evaluates a quantity of the model on rows: `[rows, ...]` per variable,
    /// for every variable the quantity depends on (an error names a missing
    /// one or one of the wrong shape).
    pub fn evaluate(&self, what: Quantity, rows: &Tensors) -> Result<HostTensor, String> {
        self.inner.evaluate(what, rows)
    }
}

struct VarInfo {
    name: String,
    domain: Domain,
    shape: Vec<usize>,
    rows: usize,
    cols: usize,
}

enum Stage<D: Device<f32>> {
    /// Per variable: the logits' terms that depend on the chains, and those shared by all chains.
    Block(Vec<(usize, Id, Option<Id>)>),
    Chromatic {
        var: usize,
        form: Chromatic<D>,
    },
    Sequential {
        var: usize,
    },
    /// An exact draw from the Gaussian conditional of `var`, truncated to its box when it has one.
    Gaussian {
        var: usize,
        mean: Id,
        precision: Id,
        bounds: Option<(f64, f64)>,
    },
    /// An exact draw from the Gaussian conditional of `var` with a full
    /// precision matrix shared by the chains: `gradient` is ∂E/∂var, affine
    /// in it; `factor` the Cholesky factor of the precision over the free
    /// units, made when first needed and dropped when the parameters or
    /// clamps change.
    FullGaussian {
        var: usize,
        gradient: Id,
        factor: Option<Factor>,
    },
    Langevin {
        vars: Vec<(usize, Id)>,
        mala: bool,
        step: f32,
        noise: f32,
        steps: usize,
        clip: Option<f32>,
    },
    Hmc {
        vars: Vec<(usize, Id)>,
        step: f32,
        leapfrog: usize,
        steps: usize,
    },
    /// Langevin in `(latent, ε)` with `x = mean(latent) + scale ⊙ ε`
    /// (`Kernel::Reparam`): ε is read off the state (`to_eps`), the latent
    /// and ε move on the substituted energy (`moved`), and `x` is set from
    /// them (`to_x`). With `x` held in whole or part, plain Langevin on the
    /// free units of `x` and the latent (`plain`) instead.
    Reparam {
        x: usize,
        eps: usize,
        to_eps: Id,
        to_x: Id,
        moved: Vec<(usize, Id)>,
        plain: Vec<(usize, Id)>,
        step: f32,
        noise: f32,
        steps: usize,
        clip: Option<f32>,
    },
}

/// The chain state that holds the ε of a reparameterised variable (no
/// model variable can be named so: names have no dot).
fn eps_name(var: &str) -> String {
    format!("{var}.eps")
}

/// The lower Cholesky factor `L` (`L Lᵀ = P_FF`, row-major, `free.len()`
/// square) of a full Gaussian's precision over its free (unheld) units.
struct Factor {
    gradient: Id,
    free: Vec<usize>,
    lower: Vec<f64>,
}

enum Chromatic<D: Device<f32>> {
    /// Logits affine in the variable alone (other variables only add to them):
    /// one sparse operator, each colour's sites gathered and drawn in one pass.
    Lattice(Box<LatticeStage>),
    /// Logits that mix the variable with others: every site's logits are
    /// computed and the colour's draws blended in through its mask.
    Masked { logits: Id, masks: Vec<T3<D>> },
}

struct LatticeStage {
    /// Neighbours of each unit in the unit graph the plan coloured.
    adjacency: Vec<Vec<usize>>,
    /// The logits, whole (a partly clamped variable is drawn colour by colour from them).
    logits: Id,
    /// The logits' terms in the variable, in no variable, and in other variables.
    coupling: Id,
    shared: Option<Id>,
    chained: Option<Id>,
    /// Units of each colour, in order.
    classes: Vec<Vec<u32>>,
    draw: lattice::Draw,
    built: Built,
}

/// The operator of a lattice stage for the current parameters.
enum Built {
    Stale,
    Operator(lattice::Operator),
    /// The logits reach beyond the unit graph (a product the planner could
    /// not see through): the colouring may not hold, so units are drawn one
    /// at a time from energy differences instead.
    Beyond,
}

/// A variable's held elements: `mask` is 1 at them (`(1, rows, cols)`),
/// `values` their values in every chain (`(chains, rows, cols)`, 0 elsewhere).
struct Held<D: Device<f32>> {
    mask: T3<D>,
    values: T3<D>,
    /// Held elements of one chain, row-major.
    elements: Vec<bool>,
}

struct ChainSet<D: Device<f32>> {
    dev: D,
    model: Model,
    ir: Ir,
    leaves: Leaves<D, NoneTape>,
    chains: usize,
    vars: Vec<VarInfo>,
    state: BTreeMap<String, T3<D>>,
    stages: Vec<Stage<D>>,
    total: Id,
    free_energy: Id,
    gradients: BTreeMap<String, Id>,
    accepted: f64,
    proposed: usize,
    /// The inverse temperature every kernel samples exp(−βE) at (1 but in tempered or annealed runs).
    beta: f32,
    rng: rand::rngs::StdRng,
    fast_rng: rand::rngs::SmallRng,
    /// One generator per chain for the lattice kernel, so its draws do not depend on how chains are split among threads.
    chain_rngs: Vec<rand::rngs::SmallRng>,
    /// Compiled data gradients of each Langevin stage, by the stage's roots (host devices).
    compiled: BTreeMap<Vec<Id>, step::Compiled>,
    /// Host copies of the parameters and constants those programs read:
    /// the set's own, or its trainer's (`share_host`).
    host: step::SharedMirror,
    /// Whether `host` is its trainer's, which keeps it current itself.
    shares_host: bool,
    /// Clamped parts, by variable index (`Sampler::set_clamps`).
    held: BTreeMap<usize, Held<D>>,
    /// Whether `langevin` keeps `last_step` (improved CD differentiates it).
    record_last: bool,

    last_step: Option<LastStep<D>>,
}

/// What the last plain Langevin step saw, per variable name: the state it
/// started from, the (clipped) energy gradient it followed, and its proposal
/// before folding into the box, `x − step·g + noise·z`.
struct LastStep<D: Device<f32>> {
    start: BTreeMap<String, T3<D>>,
    gradient: BTreeMap<String, T3<D>>,
    proposal: BTreeMap<String, T3<D>>,
}

/// Generators for each chain, from the run's seed.
fn chain_rngs(seed: u64, chains: usize) -> Vec<rand::rngs::SmallRng> {
    (0..chains as u64)
        .map(|c| {
            rand::rngs::SmallRng::seed_from_u64(seed ^ 0x2545_f491_4f6c_dd1d ^ c.wrapping_mul(0x9e37_79b9_7f4a_7c15))
        })
        .collect()
}

/// Splits a sum into the terms that depend on some variable and those that
/// do not (biases), so a bias is added inside the sampling kernel instead of
/// as a separate broadcast pass over the batch.
fn split_shared(ir: &mut Ir, root: Id) -> (Id, Option<Id>) {
    let mut terms = Vec::new();
    let mut stack = vec![(root, 1.0)];
    while let Some((id, sign)) = stack.pop() {
        match ir.node(id).op {
            ir::Op::Add(a, b) => stack.extend([(b, sign), (a, sign)]),
            ir::Op::Sub(a, b) => stack.extend([(b, -sign), (a, sign)]),
            _ => terms.push((id, sign)),
        }
    }
    let (batched, shared): (Vec<_>, Vec<_>) = terms.into_iter().partition(|(id, _)| eval::has_var(ir, *id));
    if batched.is_empty() || shared.is_empty() {
        return (root, None);
    }
    let shape = ir.shape(root).clone();
    let b = signed_sum(ir, &shape, batched);
    let s = signed_sum(ir, &shape, shared);
    (b, Some(s))
}

fn signed_sum(ir: &mut Ir, shape: &[usize], parts: Vec<(Id, f64)>) -> Id {
    let zero = ir.zeros(shape);
    parts.into_iter().fold(zero, |acc, (id, sign)| if sign > 0.0 { ir.add(acc, id) } else { ir.sub(acc, id) })
}

/// Splits the logits of `var` into the terms in `var` alone, in no variable
/// and in other variables only; `None` when some term mixes `var` with
/// another variable (its coupling would then change from chain to chain).
fn split_coupling(ir: &mut Ir, root: Id, var: &str) -> Option<(Id, Option<Id>, Option<Id>)> {
    let (mut own, mut shared, mut chained) = (Vec::new(), Vec::new(), Vec::new());
    let mut stack = vec![(root, 1.0)];
    while let Some((id, sign)) = stack.pop() {
        match ir.node(id).op {
            ir::Op::Add(a, b) => stack.extend([(b, sign), (a, sign)]),
            ir::Op::Sub(a, b) => stack.extend([(b, -sign), (a, sign)]),
            ir::Op::Neg(a) => stack.push((a, -sign)),
            _ => {
                let other = ir.cone(id).iter().any(|n| matches!(&ir.node(*n).op, ir::Op::Var(v) if v != var));
                match (ir.depends_on(id, var), other) {
                    (true, true) => return None,
                    (true, false) => own.push((id, sign)),
                    (false, false) => shared.push((id, sign)),
                    (false, true) => chained.push((id, sign)),
                }
            }
        }
    }
    let shape = ir.shape(root).clone();
    let coupling = signed_sum(ir, &shape, own);
    let mut part = |parts: Vec<(Id, f64)>| (!parts.is_empty()).then(|| signed_sum(ir, &shape, parts));
    let shared = part(shared);
    Some((coupling, shared, part(chained)))
}

fn upload<D: Device<f32>>(dev: &D, t: &HostTensor, batch: usize) -> T3<D> {
    let per: &[usize] = if batch == 1 { &t.shape } else { &t.shape[1..] };
    let (m, n) = canon(per);
    dev.tensor_from_vec(t.data.clone(), (batch, m, n))
}

/// The compiled CPU schedules of a model's steps, titled, as listings (what
/// `ebmc plan --schedule` prints): each Langevin stage's data gradients,
/// for one batch of the train block's size (128 without one), and with a
/// train block each phase of the training step's loss, as one step on a
/// batch of random rows compiles them.
pub fn step_schedules(
    model: &Model,
    plan: &Plan,
    train: Option<&crate::analysis::program::Train>,
) -> Result<Vec<(String, String)>, String> {
    let rows = train.map_or(128, |t| t.batch);
    let params = crate::tensor::initialise(&plan.lowered.params, 0);
    let set = ChainSet::new(Cpu::seed_from_u64(0), model, plan, &params, rows, 0)?;
    let mut out = Vec::new();
    for stage in &set.stages {
        if let Stage::Langevin { vars, .. } = stage {
            let names: Vec<&str> = vars.iter().map(|(v, _)| set.vars[*v].name.as_str()).collect();
            let mut compiled = step::Compiled::new(vars.iter().map(|(_, g)| step::Output::PerExample(*g)).collect());
            compiled.prepare(&set.ir, rows);
            let title = format!("Langevin step: the gradient of the energy in {}", names.join(", "));
            out.extend(compiled.listing().map(|l| (title, l)));
        }
    }
    if let Some(train) = train {
        let visible: Vec<&str> = model
            .variables
            .iter()
            .filter(|v| v.role == crate::front::ast::Role::Visible)
            .map(|v| v.name.as_str())
            .collect();
        let batch: Tensors = Chains::state(&set).into_iter().filter(|(k, _)| visible.contains(&k.as_str())).collect();
        let mut trainer = Trainer::new(model, plan, train, &params, &Tensors::new(), 0, DeviceKind::Cpu)
            .map_err(|e| e.to_string())?;
        trainer.prepare(&batch).map_err(|e| e.to_string())?;
        // The schedule is the same on any rows: the batch stands in for `classify`'s outliers.
        if train.outliers.is_some() {
            trainer.outliers(&batch).map_err(|e| e.to_string())?;
        }
        trainer.step(&batch, 0.0, 1).map_err(|e| e.to_string())?;
        let phases = trainer.schedules();
        let count = phases.len();
        for (i, listing) in phases.into_iter().enumerate() {
            out.push((
                format!("training step, phase {} of {count} (outputs: each gradient, then the loss)", i + 1),
                listing,
            ));
        }
    }
    Ok(out)
}

impl<D: Kernels> ChainSet<D> {
    fn new(dev: D, model: &Model, plan: &Plan, params: &Tensors, chains: usize, seed: u64) -> Result<Self, String> {
        let mut lowered = plan.lowered.clone();
        let total = lowered.ir.inline_nets(lowered.total);
        let leaves = device_leaves(&dev, model, &lowered, params)?;
        let info = |name: String, v: &crate::analysis::program::Variable| {
            let (rows, cols) = canon(&v.shape);
            VarInfo { name, domain: v.domain.clone(), shape: v.shape.clone(), rows, cols }
        };
        let mut vars: Vec<VarInfo> = model.variables.iter().map(|v| info(v.name.clone(), v)).collect();
        // The ε of each reparameterised variable, after the model's own
        // variables (which `state` reports; ε it does not).
        for p in &plan.variables {
            if let Kernel::Reparam { var, .. } = &p.kernel
                && *var == p.name
                && let Some(v) = model.variable(var)
            {
                vars.push(info(eps_name(var), v));
            }
        }
        let energies = lowered.energies.clone();
        // Cannot fire: the plan was made from this model.
        let index = |name: &str| vars.iter().position(|v| v.name == name).expect("plan names model variables");
        let ir = &mut lowered.ir;
        let graph = crate::analysis::graph::program_to_graph(model);
        let mut stages = Vec::new();
        for group in &plan.sweep {
            // Cannot fire: the plan's sweep groups list its own variables.
            let first = plan.variables.iter().find(|v| v.name == group[0]).expect("sweep names planned variables");
            match &first.kernel {
                Kernel::BlockGibbs { .. } => {
                    let mut block = Vec::new();
                    for name in group {
                        let g = ir
                            .grad(total, name)
                            // Cannot fire: the plan was made from this model.
                            .unwrap_or_else(|| ir.zeros(&model.variable(name).expect("variable").shape));
                        let logits = ir.neg(g);
                        let (batched, shared) = split_shared(ir, logits);
                        block.push((index(name), batched, shared));
                    }
                    stages.push(Stage::Block(block));
                }
                Kernel::ChromaticGibbs { colours, unit_colours, .. } => {
                    let var = index(&first.name);
                    // A coupling the simplifier folded to zero (`0 * J * ...`) leaves no gradient: the logits are zero.
                    let g = ir
                        .grad(total, &first.name)
                        // Cannot fire: the plan was made from this model.
                        .unwrap_or_else(|| ir.zeros(&model.variable(&first.name).expect("variable").shape));
                    let logits = ir.neg(g);
                    let info = &vars[var];
                    let adjacency = graph.unit_graph(&first.name).map(|(a, _)| a);
                    let form = match (adjacency, split_coupling(ir, logits, &first.name)) {
                        (Some(adjacency), Some((coupling, shared, chained)))
                            if adjacency.len() == unit_colours.len() =>
                        {
                            let mut classes = vec![Vec::new(); *colours];
                            for (u, &c) in unit_colours.iter().enumerate() {
                                classes[c].push(u as u32);
                            }
                            let draw = match info.domain {
                                Domain::Binary => lattice::Draw::Bernoulli { scale: 1.0, hi: 1.0, lo: 0.0 },
                                Domain::Spin => lattice::Draw::Bernoulli { scale: 2.0, hi: 1.0, lo: -1.0 },
                                _ => lattice::Draw::Categorical { scale: 1.0 },
                            };
                            Chromatic::Lattice(Box::new(LatticeStage {
                                logits,
                                adjacency,
                                coupling,
                                shared,
                                chained,
                                classes,
                                draw,
                                built: Built::Stale,
                            }))
                        }
                        _ => {
                            let masks = (0..*colours)
                                .map(|c| {
                                    let per_unit = info.cols * info.rows / unit_colours.len();
                                    let data: Vec<f32> = unit_colours
                                        .iter()
                                        .flat_map(|&u| std::iter::repeat_n(f32::from(u8::from(u == c)), per_unit))
                                        .collect();
                                    dev.tensor_from_vec(data, (1, info.rows, info.cols))
                                })
                                .collect();
                            Chromatic::Masked { logits, masks }
                        }
                    };
                    stages.push(Stage::Chromatic { var, form });
                }
                Kernel::SequentialGibbs => stages.push(Stage::Sequential { var: index(&first.name) }),
                Kernel::GaussianGibbs { bounds, .. } => {
                    // Cannot fire: the planner chose this kernel from the same analysis of the same IR.
                    let v = model.variable(&first.name).expect("variable");
                    let c = crate::analysis::gaussian::conditional(ir, total, &v.name, &v.shape)
                        .ok_or_else(|| format!("`{}` has no Gaussian conditional", v.name))?;
                    stages.push(Stage::Gaussian {
                        var: index(&v.name),
                        mean: c.mean,
                        precision: c.precision,
                        bounds: *bounds,
                    });
                }
                Kernel::FullGaussianGibbs { .. } => {
                    let name = &first.name;
                    // Cannot fire: the planner chose this kernel from the gradient.
                    let gradient = ir.grad(total, name).ok_or_else(|| format!("`{name}` has no gradient"))?;
                    stages.push(Stage::FullGaussian { var: index(name), gradient, factor: None });
                }
                Kernel::Langevin { mala, step, noise, steps, clip, .. } => {
                    let mut lv = Vec::new();
                    for name in group {
                        let g = ir
                            .grad(total, name)
                            // Cannot fire: the plan was made from this model.
                            .unwrap_or_else(|| ir.zeros(&model.variable(name).expect("variable").shape));
                        lv.push((index(name), g));
                    }
                    stages.push(Stage::Langevin {
                        vars: lv,
                        mala: *mala,
                        step: *step as f32,
                        noise: *noise as f32,
                        steps: *steps,
                        clip: clip.map(|c| c as f32),
                    });
                }
                Kernel::Hmc { step, leapfrog, steps, .. } => {
                    let mut hv = Vec::new();
                    for name in group {
                        let g = ir
                            .grad(total, name)
                            // Cannot fire: the plan was made from this model.
                            .unwrap_or_else(|| ir.zeros(&model.variable(name).expect("variable").shape));
                        hv.push((index(name), g));
                    }
                    stages.push(Stage::Hmc { vars: hv, step: *step as f32, leapfrog: *leapfrog, steps: *steps });
                }
                Kernel::Reparam { var, latent, step, noise, steps, clip, .. } => {
                    // Cannot fire: the planner chose this kernel from the same analysis of the same IR.
                    let v = model.variable(var).expect("variable");
                    let c = crate::analysis::plan::reparameterisation(ir, model, &energies, var, latent)
                        .map_err(|_| format!("`{var}` has no Gaussian decoder given `{latent}`"))?;
                    let eps = eps_name(var);
                    let e = ir.var(&eps, &v.shape);
                    let root = ir.map(crate::ir::Unary::Sqrt, c.precision);
                    let scaled = ir.div(e, root);
                    let to_x = ir.add(c.mean, scaled);
                    let x = ir.var(var, &v.shape);
                    let offset = ir.sub(x, c.mean);
                    let to_eps = ir.mul(offset, root);
                    let moved = ir.substitute(total, var, to_x);
                    let mut grad = |root: Id, name: &str, shape: &[usize]| {
                        (index(name), ir.grad(root, name).unwrap_or_else(|| ir.zeros(shape)))
                    };
                    let z_shape = &model.variable(latent).expect("latent").shape;
                    stages.push(Stage::Reparam {
                        x: index(var),
                        eps: index(&eps),
                        to_eps,
                        to_x,
                        moved: vec![grad(moved, latent, z_shape), grad(moved, &eps, &v.shape)],
                        plain: vec![grad(total, var, &v.shape), grad(total, latent, z_shape)],
                        step: *step as f32,
                        noise: *noise as f32,
                        steps: *steps,
                        clip: clip.map(|c| c as f32),
                    });
                }
            }
        }
        let summed = plan.summed_out.as_ref().map(|m| m.summed.clone()).unwrap_or_default();
        let mut free_energy = total;
        for name in &summed {
            free_energy = crate::analysis::plan::sum_out(
                ir,
                free_energy,
                // Cannot fire: the plan sums out variables of this model.
                model.variable(name).expect("summed variables are declared"),
            )
            .0;
        }
        let free_energy = ir.inline_nets(free_energy);
        let gradients = model
            .variables
            .iter()
            .map(|v| (v.name.clone(), ir.grad(total, &v.name).unwrap_or_else(|| ir.zeros(&v.shape))))
            .collect();
        let mut set = ChainSet {
            dev,
            model: model.clone(),
            ir: lowered.ir,
            leaves,
            chains,
            vars,
            state: BTreeMap::new(),
            stages,
            total,
            free_energy,
            gradients,
            accepted: 0.0,
            proposed: 0,
            beta: 1.0,
            rng: rand::rngs::StdRng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15),
            fast_rng: rand::rngs::SmallRng::seed_from_u64(seed ^ 0x5851_f42d_4c95_7f2d),
            chain_rngs: chain_rngs(seed, chains),
            compiled: BTreeMap::new(),
            host: step::SharedMirror::default(),
            shares_host: false,
            held: BTreeMap::new(),
            record_last: false,
            last_step: None,
        };
        for i in 0..set.vars.len() {
            let init = set.initial(i);
            set.state.insert(set.vars[i].name.clone(), init);
        }
        set.factor_all()?;
        set.state = set.reparameterised(set.state.clone());
        Ok(set)
    }

    /// Uniform [0, 1) draws from the chains' own generator, so that every
    /// random number of a run follows from its seed (and `reseed`).
    fn uniform(&mut self, shape: (usize, usize, usize)) -> T3<D> {
        let n = shape.0 * shape.1 * shape.2;
        let data: Vec<f32> = (0..n).map(|_| (self.fast_rng.next_u32() >> 8) as f32 * (1.0 / 16_777_216.0)).collect();
        self.dev.tensor_from_vec(data, shape)
    }

    fn normal(&mut self, shape: (usize, usize, usize)) -> T3<D> {
        let n = shape.0 * shape.1 * shape.2;
        let data: Vec<f32> = (0..n).map(|_| rand_distr::StandardNormal.sample(&mut self.fast_rng)).collect();
        self.dev.tensor_from_vec(data, shape)
    }

    fn reseed(&mut self, seed: u64) {
        self.rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15);
        self.fast_rng = rand::rngs::SmallRng::seed_from_u64(seed ^ 0x5851_f42d_4c95_7f2d);
        self.chain_rngs = chain_rngs(seed, self.chains);
    }

    fn shape(&self, var: usize) -> (usize, usize, usize) {
        (self.chains, self.vars[var].rows, self.vars[var].cols)
    }

    /// A random starting state: uniform over discrete values, N(0, 1) or uniform in the bounds for reals.
    fn initial(&mut self, var: usize) -> T3<D> {
        let shape = self.shape(var);
        match self.vars[var].domain {
            Domain::Real { bounds: None } => self.normal(shape),
            Domain::Real { bounds: Some((lo, hi)) } => self.uniform(shape) * (hi - lo) as f32 + lo as f32,
            _ => {
                let zeros: T3<D> = self.dev.zeros_like(&shape);
                self.draw(var, zeros)
            }
        }
    }

    fn eval(&self, roots: &[Id], vars: &BTreeMap<String, T3<D>>) -> Vec<T3<D>> {
        Evaluator { ir: &self.ir, dev: &self.dev, leaves: &self.leaves }.eval(roots, vars)
    }

    /// An exact draw from the conditional with the given logits (−∂E/∂x).
    fn draw(&mut self, var: usize, logits: T3<D>) -> T3<D> {
        self.draw_with_bias(var, logits, None)
    }

    /// `draw` with logits given as chain-dependent terms plus shared ones.
    fn draw_with_bias(&mut self, var: usize, logits: T3<D>, bias: Option<T3<D>>) -> T3<D> {
        let shape = self.shape(var);
        let logits = expand(logits, shape.0, shape.1, shape.2);
        // At inverse temperature β the conditional of βE has logits β(−∂E/∂x).
        let beta = self.beta;
        match self.vars[var].domain {
            Domain::Binary => return self.dev.bernoulli(logits, bias, beta, 1.0, 0.0, &mut self.fast_rng),
            Domain::Spin => return self.dev.bernoulli(logits, bias, 2.0 * beta, 1.0, -1.0, &mut self.fast_rng),
            _ => {}
        }
        let logits = match bias {
            Some(b) => logits + expand(b, shape.0, shape.1, shape.2),
            None => logits,
        };
        let logits = if beta == 1.0 { logits } else { logits * beta };
        match self.vars[var].domain {
            // Cannot fire: binary and spin variables took the branch above.
            Domain::Binary | Domain::Spin => unreachable!("handled above"),
            Domain::Categorical { .. } => self.dev.categorical(logits, &mut self.fast_rng),
            Domain::Real { .. } => unreachable!("continuous variables are not Gibbs-sampled"),
        }
    }

    fn energies(&self, state: &BTreeMap<String, T3<D>>) -> T3<D> {
        let e = eval::one(self.eval(&[self.total], state));
        expand(e, self.chains, 1, 1)
    }

    fn sequential(&mut self, var: usize) {
        let info = &self.vars[var];
        let (rows, cols) = (info.rows, info.cols);
        let chains = self.chains;
        let (units, per_unit, values): (usize, usize, Vec<Vec<f32>>) = match info.domain {
            Domain::Binary => (rows * cols, 1, vec![vec![0.0], vec![1.0]]),
            Domain::Spin => (rows * cols, 1, vec![vec![-1.0], vec![1.0]]),
            Domain::Categorical { categories } => (
                rows,
                categories,
                (0..categories).map(|k| (0..categories).map(|j| f32::from(u8::from(j == k))).collect()).collect(),
            ),
            // Cannot fire: the planner gives continuous variables Langevin kernels only.
            Domain::Real { .. } => unreachable!("continuous variables are not Gibbs-sampled"),
        };
        let name = info.name.clone();
        let mut host = self.state[&name].as_vec();
        let stride = rows * cols;
        let held: Vec<bool> = match self.held.get(&var) {
            Some(h) => (0..units).map(|u| h.elements[u * per_unit..(u + 1) * per_unit].iter().all(|&e| e)).collect(),
            None => vec![false; units],
        };
        for unit in (0..units).filter(|&u| !held[u]) {
            let mut energies = Vec::with_capacity(values.len());
            for value in &values {
                let mut trial = host.clone();
                for c in 0..chains {
                    trial[c * stride + unit * per_unit..c * stride + (unit + 1) * per_unit].copy_from_slice(value);
                }
                let mut state = self.state.clone();
                state.insert(name.clone(), self.dev.tensor_from_vec(trial, (chains, rows, cols)));
                energies.push(self.energies(&state).as_vec());
            }
            for c in 0..chains {
                let low = energies.iter().map(|e| e[c]).fold(f32::INFINITY, f32::min);
                let beta = f64::from(self.beta);
                let weights: Vec<f64> = energies.iter().map(|e| (beta * f64::from(low - e[c])).exp()).collect();
                let mut pick = self.rng.r#gen::<f64>() * weights.iter().sum::<f64>();
                let mut k = 0;
                while k + 1 < weights.len() && pick >= weights[k] {
                    pick -= weights[k];
                    k += 1;
                }
                host[c * stride + unit * per_unit..c * stride + (unit + 1) * per_unit].copy_from_slice(&values[k]);
            }
        }
        let t = self.dev.tensor_from_vec(host, (chains, rows, cols));
        self.state.insert(name, t);
    }

    /// One chromatic sweep of `var` through its lattice operator (built first when stale).
    fn lattice_sweep(&mut self, var: usize, stage: &mut LatticeStage) {
        if let Built::Stale = stage.built {
            stage.built = self.build_operator(var, stage);
        }
        let Built::Operator(op) = &stage.built else { return self.sequential(var) };
        let shape = self.shape(var);
        let chained = stage.chained.map(|id| {
            let t = eval::one(self.eval(&[id], &self.state));
            self.dev.to_host(&expand(t, shape.0, shape.1, shape.2))
        });
        let name = &self.vars[var].name;
        let mut x = self.dev.to_host(&self.state[name]);
        op.sweep(stage.draw.at(self.beta), &mut x, chained.as_deref(), &mut self.chain_rngs);
        let t = self.dev.tensor_from_vec(x, shape);
        self.state.insert(name.clone(), t);
    }

    /// Reads the stage's coupling off the compiled logits on probe states and
    /// checks it on two random states.
    fn build_operator(&self, var: usize, stage: &LatticeStage) -> Built {
        let (_, rows, cols) = self.shape(var);
        let name = self.vars[var].name.clone();
        let width = rows * cols / stage.adjacency.len();
        let respond = |states: Vec<f32>, n: usize| {
            let vars = BTreeMap::from([(name.clone(), self.dev.tensor_from_vec(states, (n, rows, cols)))]);
            let t = eval::one(self.eval(&[stage.coupling], &vars));
            expand(t, n, rows, cols).as_vec()
        };
        let probes = lattice::Probes::new(&stage.adjacency, width);
        let mut op = lattice::Operator::from_probes(
            &stage.adjacency,
            &probes,
            &respond(probes.states.clone(), probes.count),
            &stage.classes,
        );
        // Fixed test states: the check must not move the chains' random streams.
        let mut rng = rand::rngs::SmallRng::seed_from_u64(0x6c_61_74_74_69_63_65);
        let test: Vec<f32> = (0..2 * rows * cols).map(|_| rng.gen_range(-1.0..1.0)).collect();
        if !op.agrees(&test, &respond(test.clone(), 2)) {
            return Built::Beyond;
        }
        if let Some(id) = stage.shared {
            let t = eval::one(self.eval(&[id], &BTreeMap::new()));
            op.add_bias(&expand(t, 1, rows, cols).as_vec());
        }
        Built::Operator(op)
    }

    /// `roots` for every chain at `state`: through a compiled program on
    /// host devices, kept per set of roots, else through the evaluator.
    fn eval_compiled(&mut self, roots: &[Id], state: &BTreeMap<String, T3<D>>) -> Vec<T3<D>> {
        if !D::HOST {
            return self.eval(roots, state);
        }
        let host = step::Mirror::read(&self.host, &self.leaves.tensors);
        let compiled = self
            .compiled
            .entry(roots.to_vec())
            .or_insert_with(|| step::Compiled::new(roots.iter().map(|r| step::Output::PerExample(*r)).collect()));
        let done = compiled.run(&self.ir, self.chains, &[state], host.shared());
        (0..roots.len()).map(|i| done.tensor(&self.dev, i)).collect()
    }

    /// The data gradients `grads` at `state`, each expanded to its variable's
    /// shape, clipped, and scaled by β: the gradients of βE, so that every
    /// continuous kernel at inverse temperature β is its T = 1 form on βE,
    /// with the step exactly as stable as at T = 1 (a hot replica visits
    /// steeper regions, where a drift grown by T would overshoot).
    fn langevin_gradients(
        &mut self,
        vars: &[(usize, Id)],
        state: &BTreeMap<String, T3<D>>,
        clip: Option<f32>,
    ) -> Vec<T3<D>> {
        let grads: Vec<Id> = vars.iter().map(|(_, g)| *g).collect();
        self.eval_compiled(&grads, state)
            .into_iter()
            .zip(vars)
            .map(|(g, (v, _))| {
                let (b, m, n) = self.shape(*v);
                let g = self.free_part(*v, expand(g, b, m, n));
                let g = match clip {
                    Some(c) => g.clamp(-c, c),
                    None => g,
                };
                if self.beta == 1.0 { g } else { g * self.beta }
            })
            .collect()
    }

    /// One unadjusted Langevin step on βE on host devices, in one pass per
    /// variable over the compiled gradient where it lies: clip, β, step,
    /// noise and reflection with the tensor path's arithmetic in its order
    /// (so the same chains), with no tensor made between them.
    fn langevin_host(&mut self, vars: &[(usize, Id)], step: f32, noise: f32, clip: Option<f32>) {
        // The noise first, in the order the tensor path draws it (the gradients draw nothing).
        let shapes: Vec<(usize, usize, usize)> = vars.iter().map(|(v, _)| self.shape(*v)).collect();
        let noises: Vec<Vec<f32>> = shapes
            .iter()
            .map(|(b, m, n)| (0..b * m * n).map(|_| rand_distr::StandardNormal.sample(&mut self.fast_rng)).collect())
            .collect();
        let host = step::Mirror::read(&self.host, &self.leaves.tensors);
        let grads: Vec<Id> = vars.iter().map(|(_, g)| *g).collect();
        let compiled = self
            .compiled
            .entry(grads.clone())
            .or_insert_with(|| step::Compiled::new(grads.iter().map(|r| step::Output::PerExample(*r)).collect()));
        let done = compiled.run(&self.ir, self.chains, &[&self.state], host.shared());
        let beta = self.beta;
        let mut moved = Vec::with_capacity(vars.len());
        for (i, (((v, _), z), &(b, m, n))) in vars.iter().zip(noises).zip(&shapes).enumerate() {
            let info = &self.vars[*v];
            let mut x = self.state[&info.name].as_vec();
            let g = done.value(i);
            // A gradient that does not vary along an axis comes back with extent 1 there (as `expand` reads it).
            let (gb, gm, gn) = done.dims(i);
            let at = |e: usize, r: usize, c: usize| g[((e % gb) * gm + r % gm) * gn + c % gn];
            let fold = match info.domain {
                Domain::Real { bounds: Some((lo, hi)) } => Some((lo, hi)),
                _ => None,
            };
            for (q, (x, z)) in x.iter_mut().zip(z).enumerate() {
                let g = at(q / (m * n), q / n % m, q % n);
                let g = match clip {
                    // num_traits' clamp, as the tensor path's: NaN stays NaN.
                    Some(c) if g < -c => -c,
                    Some(c) if g > c => c,
                    _ => g,
                };
                let g = if beta == 1.0 { g } else { g * beta };
                let y = *x - g * step + z * noise;
                *x = match fold {
                    Some((lo, hi)) => reflected(y, lo, hi),
                    None => y,
                };
            }
            moved.push((info.name.clone(), self.dev.tensor_from_vec(x, (b, m, n))));
        }
        self.state.extend(moved);
    }

    /// One Langevin (or MALA) step on βE. Held parts and improved CD's record
    /// of the last step take the tensor path.
    fn langevin(&mut self, vars: &[(usize, Id)], mala: bool, step: f32, noise: f32, clip: Option<f32>) {
        if D::HOST && !mala && self.held.is_empty() && !self.record_last {
            return self.langevin_host(vars, step, noise, clip);
        }
        self.langevin_tensors(vars, mala, step, noise, clip);
    }

    /// One Langevin step (MALA when `mala`) through device tensors.
    fn langevin_tensors(&mut self, vars: &[(usize, Id)], mala: bool, step: f32, noise: f32, clip: Option<f32>) {
        let state = self.state.clone();
        let g0 = self.langevin_gradients(vars, &state, clip);
        let mut proposal = self.state.clone();
        let mut unfolded = BTreeMap::new();
        for ((v, _), g) in vars.iter().zip(&g0) {
            let name = self.vars[*v].name.clone();
            let shape = self.shape(*v);
            let z: T3<D> = self.normal(shape);
            let x = self.state[&name].clone() - g.clone() * step + z * noise;
            if self.record_last && !mala {
                unfolded.insert(name.clone(), x.clone());
            }
            // Held units stay: their gradient is zero, and their noise is undone here.
            proposal.insert(name.clone(), self.hold(*v, self.reflect(*v, x)));
        }
        if !mala {
            if self.record_last {
                let names: Vec<String> = vars.iter().map(|(v, _)| self.vars[*v].name.clone()).collect();
                self.last_step = Some(LastStep {
                    start: names.iter().map(|n| (n.clone(), state[n].clone())).collect(),
                    gradient: names.into_iter().zip(g0).collect(),
                    proposal: unfolded,
                });
            }
            self.state = proposal;
            return;
        }
        // Metropolis adjustment: log a = E(x) - E(x') + log q(x | x') - log q(x' | x).
        let g1 = self.langevin_gradients(vars, &proposal, clip);
        let e0 = self.energies(&self.state);
        let e1 = self.energies(&proposal);
        let b = self.chains;
        let mut log_a = ((e0 - e1) * self.beta).reshape_like(&(b,));
        for (((v, _), ga), gb) in vars.iter().zip(&g0).zip(&g1) {
            let name = &self.vars[*v].name;
            let (x, y) = (self.state[name].clone(), proposal[name].clone());
            if let Domain::Real { bounds: Some((lo, hi)) } = self.vars[*v].domain {
                // The folded proposal's density sums the Gaussian over every image of the point.
                let (xs, ys, gas, gbs) = (x.as_vec(), y.as_vec(), ga.clone().as_vec(), gb.clone().as_vec());
                let per = xs.len() / b;
                let ratio: Vec<f32> = (0..b)
                    .map(|c| {
                        (c * per..(c + 1) * per)
                            .map(|i| {
                                let q = |to: f32, from: f32, g: f32| {
                                    log_folded_gaussian(
                                        f64::from(to),
                                        f64::from(from - step * g),
                                        f64::from(noise),
                                        lo,
                                        hi,
                                    )
                                };
                                q(xs[i], ys[i], gbs[i]) - q(ys[i], xs[i], gas[i])
                            })
                            .sum::<f64>() as f32
                    })
                    .collect();
                log_a = log_a + self.dev.tensor_from_vec(ratio, (b,));
                continue;
            }
            let back = (x.clone() - y.clone() + gb.clone() * step).square().sum::<(usize,), Axes2<1, 2>>();
            let forth = (y - x + ga.clone() * step).square().sum::<(usize,), Axes2<1, 2>>();
            log_a = log_a + (forth - back) / (2.0 * noise * noise);
        }
        let u = self.uniform((b, 1, 1)).reshape_like(&(b,));
        let accept = u.ln().le(&log_a).choose(self.dev.ones_like(&(b,)), self.dev.zeros_like(&(b,)));
        self.accepted += f64::from(accept.clone().sum::<(), Axis<0>>().as_vec()[0]);
        self.proposed += b;
        for (v, _) in vars {
            let name = self.vars[*v].name.clone();
            let (_, m, n) = self.shape(*v);
            let mask = expand(accept.clone().reshape_like(&(b, 1usize, 1usize)), b, m, n);
            let old = self.state[&name].clone();
            let new = old.clone() + mask * (proposal[&name].clone() - old);
            self.state.insert(name, new);
        }
    }

    /// `var ← mean + z / sqrt(β · precision)`, z ~ N(0, I): an exact draw
    /// from its Gaussian conditional at inverse temperature β (βE is
    /// quadratic with precision β·P), unit by unit; truncated to the box
    /// `bounds` when given, by `truncated::draw` on the host.
    fn gaussian(&mut self, var: usize, mean: Id, precision: Id, bounds: Option<(f64, f64)>) {
        let shape = self.shape(var);
        let mut values = self.eval(&[mean, precision], &self.state).into_iter();
        // Cannot fire: the evaluator returns one value per root.
        let mean = expand(values.next().expect("one value per root"), shape.0, shape.1, shape.2);
        let precision = expand(values.next().expect("one value per root"), shape.0, shape.1, shape.2);
        let precision = if self.beta == 1.0 { precision } else { precision * self.beta };
        let x = match bounds {
            None => {
                let z = self.normal(shape);
                mean + z / precision.sqrt()
            }
            Some((lo, hi)) => {
                let (mean, precision) = (mean.as_vec(), precision.as_vec());
                let rng = &mut self.fast_rng;
                let drawn = mean
                    .iter()
                    .zip(&precision)
                    .map(|(&m, &p)| truncated::draw(rng, f64::from(m), f64::from(p), lo, hi) as f32)
                    .collect();
                self.dev.tensor_from_vec(drawn, shape)
            }
        };
        self.state.insert(self.vars[var].name.clone(), x);
    }

    /// Factors every full Gaussian's precision that is not factored yet:
    /// an error names a variable whose precision is not positive definite.
    fn factor_all(&mut self) -> Result<(), String> {
        let mut stages = std::mem::take(&mut self.stages);
        let result = stages.iter_mut().try_for_each(|stage| match stage {
            Stage::FullGaussian { var, gradient, factor } if factor.is_none() => {
                *factor = Some(self.factor(*var, *gradient)?);
                Ok(())
            }
            _ => Ok(()),
        });
        self.stages = stages;
        result
    }

    /// The precision of `var` over its free units, read off its gradient
    /// (affine in it with a Jacobian shared by the chains: P's column j is
    /// g(e_j) − g(0), the other variables at 0), and its Cholesky factor.
    fn factor(&self, var: usize, gradient: Id) -> Result<Factor, String> {
        let info = &self.vars[var];
        let (rows, cols) = (info.rows, info.cols);
        let d = rows * cols;
        let held = self.held.get(&var).map(|h| h.elements.clone()).unwrap_or_else(|| vec![false; d]);
        let free: Vec<usize> = (0..d).filter(|&i| !held[i]).collect();
        // Row 0 is x = 0, row j + 1 is the unit vector e_j.
        let mut basis = vec![0.0f32; (d + 1) * d];
        for j in 0..d {
            basis[(j + 1) * d + j] = 1.0;
        }
        let state: BTreeMap<String, T3<D>> = self
            .vars
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let t = if i == var {
                    self.dev.tensor_from_vec(basis.clone(), (d + 1, rows, cols))
                } else {
                    self.dev.zeros_like(&(d + 1, v.rows, v.cols))
                };
                (v.name.clone(), t)
            })
            .collect();
        let g = expand(eval::one(self.eval(&[gradient], &state)), d + 1, rows, cols).as_vec();
        let at = |j: usize, i: usize| f64::from(g[(j + 1) * d + i]) - f64::from(g[i]);
        let k = free.len();
        // The Hessian is symmetric; averaging with its transpose drops the rounding that is not.
        let precision: Vec<f64> =
            (0..k * k).map(|n| 0.5 * (at(free[n % k], free[n / k]) + at(free[n / k], free[n % k]))).collect();
        let lower = dense::cholesky(&precision, k).ok_or_else(|| crate::messages::not_positive_definite(&info.name))?;
        Ok(Factor { gradient, free, lower })
    }

    /// `x_F ← μ + L⁻ᵀ ζ / √β` over the free units F of `var`, ζ ~ N(0, I),
    /// with `μ = −P_FF⁻¹ o` and `o = ∂E/∂x_F` at `x_F = 0` (the held units
    /// and the other variables at their values): an exact draw from the
    /// conditional of βE, whose precision is β·P.
    fn full_gaussian(&mut self, var: usize, f: &Factor) {
        let gradient = f.gradient;
        let name = self.vars[var].name.clone();
        let shape = self.shape(var);
        let d = shape.1 * shape.2;
        let mut x = self.state[&name].as_vec();
        for chain in 0..self.chains {
            for &i in &f.free {
                x[chain * d + i] = 0.0;
            }
        }
        let mut at_zero = self.state.clone();
        at_zero.insert(name.clone(), self.dev.tensor_from_vec(x.clone(), shape));
        let o = expand(eval::one(self.eval(&[gradient], &at_zero)), shape.0, shape.1, shape.2).as_vec();
        let k = f.free.len();
        let scale = 1.0 / f64::from(self.beta).sqrt();
        let rng = &mut self.fast_rng;
        for chain in 0..self.chains {
            let offset: Vec<f64> = f.free.iter().map(|&i| f64::from(o[chain * d + i])).collect();
            // L y = o, then Lᵀ z = ζ/√β − y: z = −P⁻¹ o + L⁻ᵀ ζ/√β.
            let y = dense::solve_lower(&f.lower, k, &offset);
            let w: Vec<f64> = y
                .iter()
                .map(|y| {
                    let z: f64 = rand_distr::StandardNormal.sample(rng);
                    scale * z - y
                })
                .collect();
            let z = dense::solve_upper_transposed(&f.lower, k, &w);
            for (&i, z) in f.free.iter().zip(z) {
                x[chain * d + i] = z as f32;
            }
        }
        self.state.insert(name, self.dev.tensor_from_vec(x, shape));
    }

    /// Folds a proposal into the variable's box `[lo, hi]` by reflecting at
    /// both walls as often as it takes: the reflected walk is periodic with
    /// period 2(hi − lo), so x ↦ lo + w − |((x − lo) mod 2w) − w|, w = hi − lo,
    /// whatever the step size. Non-finite values stay non-finite (and are
    /// reported by the caller).
    fn reflect(&self, var: usize, x: T3<D>) -> T3<D> {
        match self.vars[var].domain {
            Domain::Real { bounds: Some((lo, hi)) } => {
                let shape = *x.shape();
                let folded = x.as_vec().into_iter().map(|v| reflected(v, lo, hi)).collect();
                self.dev.tensor_from_vec(folded, shape)
            }
            _ => x,
        }
    }

    /// The model's variables among `rows` (checked to have `n` rows) on the device.
    fn upload_rows(&self, rows: &Tensors, n: usize) -> BTreeMap<String, T3<D>> {
        rows.iter()
            .filter(|(name, t)| self.model.variable(name).is_some() && t.shape.first() == Some(&n))
            .map(|(name, t)| (name.clone(), upload(&self.dev, t, n)))
            .collect()
    }
}

impl<D: Kernels> ChainSet<D> {
    /// One sweep that leaves the variables in `clamped` as they are (the
    /// positive phase samples latents with the data held fixed).
    fn sweep_clamped(&mut self, clamped: &[String]) {
        let mut stages = std::mem::take(&mut self.stages);
        let free = |s: &Self, var: &usize| {
            !clamped.contains(&s.vars[*var].name) && !s.held.get(var).is_some_and(|h| h.elements.iter().all(|&e| e))
        };
        for stage in &mut stages {
            match stage {
                Stage::Block(block) => {
                    let block: Vec<(usize, Id, Option<Id>)> =
                        block.iter().filter(|(v, _, _)| free(self, v)).copied().collect();
                    for (var, new) in self.block_draws(&block) {
                        // Units of a block are independent given the rest: overwriting the held ones after the draw is exact.
                        let new = self.hold(var, new);
                        self.state.insert(self.vars[var].name.clone(), new);
                    }
                }
                Stage::Chromatic { var, .. } | Stage::Sequential { var } if !free(self, var) => {}
                Stage::Chromatic { var, form: Chromatic::Lattice(stage) } if self.held.contains_key(var) => {
                    // The operator sweeps every colour in one pass; held units must be
                    // restored between colours, so this sweep takes the masked form.
                    let masks = self.colour_masks(*var, &stage.classes);
                    self.masked_sweep(*var, stage.logits, &masks);
                }
                Stage::Chromatic { var, form: Chromatic::Lattice(stage) } => self.lattice_sweep(*var, stage),
                Stage::Chromatic { var, form: Chromatic::Masked { logits, masks } } => {
                    self.masked_sweep(*var, *logits, masks)
                }
                Stage::Sequential { var } => self.sequential(*var),
                Stage::Gaussian { var, .. } if !free(self, var) => {}
                Stage::Gaussian { var, mean, precision, bounds } => {
                    // Units are independent given the rest (a diagonal precision).
                    self.gaussian(*var, *mean, *precision, *bounds);
                    let name = self.vars[*var].name.clone();
                    let x = self.hold(*var, self.state[&name].clone());
                    self.state.insert(name, x);
                }
                Stage::FullGaussian { var, .. } if !free(self, var) => {}
                Stage::FullGaussian { var, factor: Some(f), .. } => self.full_gaussian(*var, f),
                // Cannot fire: `new`, `set_params` and `set_clamps` factor every precision, or fail.
                Stage::FullGaussian { factor: None, .. } => {}
                Stage::Langevin { vars, mala, step, noise, steps, clip } => {
                    let vars: Vec<(usize, Id)> = vars.iter().filter(|(v, _)| free(self, v)).copied().collect();
                    if !vars.is_empty() {
                        for _ in 0..*steps {
                            self.langevin(&vars, *mala, *step, *noise, *clip);
                        }
                    }
                }
                Stage::Hmc { vars, step, leapfrog, steps } => {
                    let vars: Vec<(usize, Id)> = vars.iter().filter(|(v, _)| free(self, v)).copied().collect();
                    if !vars.is_empty() {
                        for _ in 0..*steps {
                            self.hmc(&vars, *step, *leapfrog);
                        }
                    }
                }
                Stage::Reparam { x, eps, to_eps, to_x, moved, plain, step, noise, steps, clip } => {
                    let (b, m, n) = self.shape(*x);
                    let vars: Vec<(usize, Id)> = if free(self, x) && !self.held.contains_key(x) {
                        let e = expand(eval::one(self.eval(&[*to_eps], &self.state)), b, m, n);
                        self.state.insert(self.vars[*eps].name.clone(), e);
                        moved.iter().filter(|(v, _)| v == eps || free(self, v)).copied().collect()
                    } else {
                        plain.iter().filter(|(v, _)| free(self, v)).copied().collect()
                    };
                    if !vars.is_empty() {
                        for _ in 0..*steps {
                            self.langevin(&vars, false, *step, *noise, *clip);
                        }
                    }
                    if vars.iter().any(|(v, _)| v == eps) {
                        let value = expand(eval::one(self.eval(&[*to_x], &self.state)), b, m, n);
                        self.state.insert(self.vars[*x].name.clone(), value);
                    }
                }
            }
        }
        self.stages = stages;
    }

    /// A draw of each variable of a block, `(var, logits, shared logits)`,
    /// from its conditional given the rest.
    fn block_draws(&mut self, block: &[(usize, Id, Option<Id>)]) -> Drawn<D> {
        let roots: Vec<Id> = block.iter().flat_map(|(_, l, b)| std::iter::once(*l).chain(*b)).collect();
        let values = if D::HOST {
            match self.draw_on_host(block, &roots) {
                Ok(drawn) => return drawn,
                Err(values) => values,
            }
        } else {
            self.eval(&roots, &self.state)
        };
        let mut values = values.into_iter();
        block
            .iter()
            .map(|&(var, _, shared)| {
                // Cannot fire: the evaluator returns one value per root, and these roots were passed.
                let logits = values.next().expect("one value per root");
                let bias = shared.map(|_| values.next().expect("one value per root"));
                (var, self.draw_with_bias(var, logits, bias))
            })
            .collect()
    }

    /// `block_draws` through a compiled program, whose products are the host
    /// GEMM's, split over two threads (`cargo bench --bench rbm`): binary and
    /// spin units are drawn straight from its logits, with the same draws as
    /// `draw_with_bias`. Where a variable's logits are not one row per chain
    /// (or its units not binary or spin), the values as tensors instead.
    fn draw_on_host(&mut self, block: &[(usize, Id, Option<Id>)], roots: &[Id]) -> Result<Drawn<D>, Vec<T3<D>>> {
        let shapes: Vec<(usize, usize, usize)> = block.iter().map(|(v, _, _)| self.shape(*v)).collect();
        let host = step::Mirror::read(&self.host, &self.leaves.tensors);
        let compiled = self
            .compiled
            .entry(roots.to_vec())
            .or_insert_with(|| step::Compiled::new(roots.iter().map(|r| step::Output::PerExample(*r)).collect()));
        let done = compiled.run(&self.ir, self.chains, &[&self.state], host.shared());
        // Each variable's (logits, shared logits) among the outputs.
        let slots: Vec<(usize, Option<usize>)> = block
            .iter()
            .scan(0, |at, (_, _, shared)| {
                let slot = (*at, shared.map(|_| *at + 1));
                *at += 1 + usize::from(shared.is_some());
                Some(slot)
            })
            .collect();
        let direct = block.iter().zip(&slots).zip(&shapes).all(|(((var, _, _), (l, b)), &(c, m, n))| {
            matches!(self.vars[*var].domain, Domain::Binary | Domain::Spin)
                && done.dims(*l) == (c, m, n)
                && b.is_none_or(|b| done.dims(b) == (1, m, n))
        });
        if !direct {
            return Err((0..roots.len()).map(|i| done.tensor(&self.dev, i)).collect());
        }
        // At inverse temperature β the conditional of βE has logits β(−∂E/∂x).
        let beta = self.beta;
        Ok(block
            .iter()
            .zip(&slots)
            .zip(shapes)
            .map(|(((var, _, _), (l, b)), shape)| {
                let (scale, lo) =
                    if matches!(self.vars[*var].domain, Domain::Spin) { (2.0 * beta, -1.0) } else { (beta, 0.0) };
                let zeros;
                let bias = match b {
                    Some(b) => done.value(*b),
                    None => {
                        zeros = vec![0.0; shape.1 * shape.2];
                        &zeros
                    }
                };
                let draws = host::bernoulli(done.value(*l), bias, scale, 1.0, lo, &mut self.fast_rng);
                (*var, self.dev.tensor_from_vec(draws, shape))
            })
            .collect())
    }

    /// One colour class of `var` at a time: every site's logits, then the
    /// colour's draws blended in through its mask, the held units restored.
    fn masked_sweep(&mut self, var: usize, logits: Id, masks: &[T3<D>]) {
        let name = self.vars[var].name.clone();
        for mask in masks {
            let l = eval::one(self.eval(&[logits], &self.state));
            let proposal = self.draw(var, l);
            let (b, m, n) = self.shape(var);
            let old = self.state[&name].clone();
            let new = old.clone() + expand(mask.clone(), b, m, n) * (proposal - old);
            let new = self.hold(var, new);
            self.state.insert(name.clone(), new);
        }
    }

    /// The 0/1 masks of each colour class of `var`'s units, `(1, rows, cols)`.
    fn colour_masks(&self, var: usize, classes: &[Vec<u32>]) -> Vec<T3<D>> {
        let (_, rows, cols) = self.shape(var);
        let units: usize = classes.iter().map(Vec::len).sum();
        let per_unit = rows * cols / units.max(1);
        classes
            .iter()
            .map(|class| {
                let mut data = vec![0.0f32; rows * cols];
                for &u in class {
                    data[u as usize * per_unit..(u as usize + 1) * per_unit].fill(1.0);
                }
                self.dev.tensor_from_vec(data, (1, rows, cols))
            })
            .collect()
    }

    /// `x` with `var`'s held elements set to their values.
    fn hold(&self, var: usize, x: T3<D>) -> T3<D> {
        match self.held.get(&var) {
            Some(h) => {
                // A choice, not a blend: the held values come back bit for bit.
                let (b, m, n) = self.shape(var);
                expand(h.mask.clone(), b, m, n).gt(0.5).choose(h.values.clone(), x)
            }
            None => x,
        }
    }

    /// `g` with `var`'s held elements zeroed: a Langevin move leaves them be.
    fn free_part(&self, var: usize, g: T3<D>) -> T3<D> {
        match self.held.get(&var) {
            Some(h) => {
                let (b, m, n) = self.shape(var);
                g.clone() - expand(h.mask.clone(), b, m, n) * g
            }
            None => g,
        }
    }

    /// Every variable's held elements set to their values in the state.
    fn apply_holds(&mut self) {
        let vars: Vec<usize> = self.held.keys().copied().collect();
        for var in vars {
            let name = self.vars[var].name.clone();
            let x = self.hold(var, self.state[&name].clone());
            self.state.insert(name, x);
        }
    }

    /// Fresh random states for every chain (replay buffers reinitialise
    /// from these); a reparameterised variable is drawn as `mean(z) + scale ⊙ ε`
    /// from z and ε ~ N(0, I), a sample of the decoder's model alone.
    fn random_state(&mut self) -> Tensors {
        let fresh: BTreeMap<String, T3<D>> =
            (0..self.vars.len()).map(|i| (self.vars[i].name.clone(), self.initial(i))).collect();
        let fresh = self.reparameterised(fresh);
        self.reported()
            .map(|v| {
                let mut shape = vec![self.chains];
                shape.extend(&v.shape);
                (v.name.clone(), HostTensor::new(shape, fresh[&v.name].as_vec()))
            })
            .collect()
    }

    /// `state` with each reparameterised variable set from its latent and ε.
    fn reparameterised(&self, mut state: BTreeMap<String, T3<D>>) -> BTreeMap<String, T3<D>> {
        for stage in &self.stages {
            if let Stage::Reparam { x, to_x, .. } = stage {
                let (b, m, n) = self.shape(*x);
                let value = expand(eval::one(self.eval(&[*to_x], &state)), b, m, n);
                state.insert(self.vars[*x].name.clone(), value);
            }
        }
        state
    }

    /// The model's own variables (the chains' ε states follow them in `vars`).
    fn reported(&self) -> impl Iterator<Item = &VarInfo> {
        self.vars.iter().take(self.model.variables.len())
    }

    /// Replaces parameter values (after an optimiser step), and refactors
    /// every full Gaussian's precision at them: an error names a variable
    /// whose precision the step left not positive definite.
    fn set_params(&mut self, params: &BTreeMap<String, T3<D>>) -> Result<(), String> {
        for (k, v) in params {
            self.leaves.tensors.insert(k.clone(), v.clone());
        }
        // A trainer's mirror already holds its parameters: its update keeps the two in step.
        if !self.shares_host {
            step::Mirror::stale(&self.host);
        }
        for stage in &mut self.stages {
            match stage {
                Stage::Chromatic { form: Chromatic::Lattice(l), .. } => l.built = Built::Stale,
                Stage::FullGaussian { factor, .. } => *factor = None,
                _ => {}
            }
        }
        self.factor_all()
    }

    /// Reads its parameters' host copies from `host`, which its trainer's
    /// loss reads too: every holder of `host` must hold the same parameters.
    fn share_host(&mut self, host: &step::SharedMirror) {
        if self.shares_host && std::sync::Arc::ptr_eq(&self.host, host) {
            return;
        }
        self.host = host.clone();
        self.shares_host = true;
        step::Mirror::stale(&self.host);
    }

    /// Drops this set's references to the parameters, so that an optimiser
    /// holding the only one updates them in place; `set_params` must come
    /// before the next sweep.
    fn release_params<'k>(&mut self, names: impl Iterator<Item = &'k String>) {
        for k in names {
            self.leaves.tensors.remove(k);
        }
    }

    /// Sets some variables' chain states from device tensors.
    fn set_vars(&mut self, vars: &BTreeMap<String, T3<D>>) {
        for (k, v) in vars {
            self.state.insert(k.clone(), v.clone());
        }
    }
}

impl<D: Kernels> Chains for ChainSet<D> {
    fn sweep(&mut self) {
        self.sweep_clamped(&[]);
    }

    fn sweep_clamped(&mut self, clamped: &[String]) {
        ChainSet::sweep_clamped(self, clamped);
    }

    fn state(&self) -> Tensors {
        self.reported()
            .map(|v| {
                let mut shape = vec![self.chains];
                shape.extend(&v.shape);
                (v.name.clone(), HostTensor::new(shape, self.state[&v.name].as_vec()))
            })
            .collect()
    }

    fn set_state(&mut self, state: &Tensors) -> Result<(), String> {
        let names: Vec<String> = self.reported().map(|v| v.name.clone()).collect();
        let n = check_rows(&self.model, state, &names).map_err(|e| e.to_string())?;
        if n != self.chains {
            return Err(format!("the state has {n} rows, one per chain is needed ({} chains)", self.chains));
        }
        for name in &names {
            crate::tensor::check_finite(&format!("the state of `{name}`"), &state[name]).map_err(|e| e.to_string())?;
        }
        for name in names {
            let t = upload(&self.dev, &state[&name], self.chains);
            self.state.insert(name, t);
        }
        self.apply_holds();
        Ok(())
    }

    fn set_clamps(&mut self, clamps: &[Clamp]) -> Result<(), String> {
        let mut held: BTreeMap<usize, (Vec<bool>, Vec<f32>)> = BTreeMap::new();
        for c in clamps {
            let var = self
                .vars
                .iter()
                .position(|v| v.name == c.var)
                .ok_or_else(|| format!("`{}` is not a variable of model `{}`", c.var, self.model.name))?;
            let per = self.vars[var].rows * self.vars[var].cols;
            if let Some(&e) = c.elements.iter().find(|&&e| e >= per) {
                return Err(format!("element {e} of `{}` is past its {per} elements", c.var));
            }
            if c.values.len() != c.elements.len() * self.chains {
                return Err(format!(
                    "{} clamped values of `{}`, expected {} ({} elements in each of {} chains)",
                    c.values.len(),
                    c.var,
                    c.elements.len() * self.chains,
                    c.elements.len(),
                    self.chains
                ));
            }
            crate::tensor::check_finite(
                &format!("the clamped values of `{}`", c.var),
                &HostTensor::new(vec![c.values.len()], c.values.clone()),
            )
            .map_err(|e| e.to_string())?;
            let (mask, values) = held.entry(var).or_insert_with(|| (vec![false; per], vec![0.0; per * self.chains]));
            for (k, &e) in c.elements.iter().enumerate() {
                mask[e] = true;
                for chain in 0..self.chains {
                    values[chain * per + e] = c.values[chain * c.elements.len() + k];
                }
            }
        }
        self.held = held
            .into_iter()
            .map(|(var, (elements, values))| {
                let (_, rows, cols) = self.shape(var);
                let mask = elements.iter().map(|&e| f32::from(u8::from(e))).collect();
                let held = Held {
                    mask: self.dev.tensor_from_vec(mask, (1, rows, cols)),
                    values: self.dev.tensor_from_vec(values, (self.chains, rows, cols)),
                    elements,
                };
                (var, held)
            })
            .collect();
        self.apply_holds();
        // The free units' precision is a new submatrix: factor it now, so a bad one is an error here.
        for stage in &mut self.stages {
            if let Stage::FullGaussian { factor, .. } = stage {
                *factor = None;
            }
        }
        self.factor_all()
    }

    fn acceptance(&self) -> Option<f64> {
        (self.proposed > 0).then(|| self.accepted / self.proposed as f64)
    }

    fn evaluate(&self, what: Quantity, rows: &Tensors) -> Result<HostTensor, String> {
        let (root, var) = match &what {
            Quantity::Energy => (self.total, None),
            Quantity::FreeEnergy => (self.free_energy, None),
            Quantity::Gradient(v) | Quantity::Conditional(v) => {
                let i = self
                    .vars
                    .iter()
                    .position(|x| x.name == *v)
                    .ok_or_else(|| format!("`{v}` is not a variable of model `{}`", self.model.name))?;
                if matches!(what, Quantity::Conditional(_)) && !self.vars[i].domain.is_discrete() {
                    return Err(format!("`{v}` is continuous and has no Gibbs conditional"));
                }
                (self.gradients[v], Some(i))
            }
        };
        let n = check_rows(&self.model, rows, &vars_of(&self.ir, root)).map_err(|e| e.to_string())?;
        let vars = self.upload_rows(rows, n);
        let value = eval::one(self.eval(&[root], &vars));
        let Some(i) = var else {
            return Ok(HostTensor::new(vec![n], expand(value, n, 1, 1).as_vec()));
        };
        let info = &self.vars[i];
        let mut shape = vec![n];
        shape.extend(&info.shape);
        let g = expand(value, n, info.rows, info.cols);
        let out = match (&what, &info.domain) {
            (Quantity::Gradient(_), _) => g,
            (_, Domain::Binary) => g.negate().sigmoid(),
            (_, Domain::Spin) => (g * -2.0).sigmoid(),
            (_, Domain::Categorical { .. }) => g.negate().softmax::<Axis<2>>(),
            // Cannot fire: real variables returned an error above.
            (_, Domain::Real { .. }) => unreachable!("refused above"),
        };
        Ok(HostTensor::new(shape, out.as_vec()))
    }
}

impl From<String> for TrainError {
    fn from(reason: String) -> Self {
        TrainError::Setup(reason)
    }
}

/// The energy of each row with the variables in `sum_out` summed out (each
/// discrete, linear in the energy, and not touching one another); `rows`
/// give every other variable as `[rows, ...shape]`. `lowered` is the
/// model's IR as its plan carries it (`Plan::lowered`).
pub fn free_energy(
    model: &Model,
    lowered: &ir::Lowered,
    params: &Tensors,
    sum_out: &[String],
    rows: &Tensors,
    device: DeviceKind,
) -> Result<Vec<f64>, String> {
    match device {
        DeviceKind::Cpu => free_energy_on(&Cpu::default(), model, lowered, params, sum_out, rows),
        #[cfg(feature = "cuda")]
        DeviceKind::Cuda => free_energy_on(
            &Cuda::try_seed_from_u64(0).map_err(|e| format!("cannot open the CUDA device: {e:?}"))?,
            model,
            lowered,
            params,
            sum_out,
            rows,
        ),
        #[cfg(not(feature = "cuda"))]
        DeviceKind::Cuda => {
            Err("this ebmc was built without the `cuda` feature; rebuild with `--features cuda`".into())
        }
    }
}

fn free_energy_on<D: Kernels>(
    dev: &D,
    model: &Model,
    lowered: &ir::Lowered,
    params: &Tensors,
    sum_out: &[String],
    rows: &Tensors,
) -> Result<Vec<f64>, String> {
    // Summing out adds nodes: to a copy, so the plan's IR stays as planned.
    let mut lowered = lowered.clone();
    let mut root = lowered.total;
    for name in sum_out {
        root = crate::analysis::plan::sum_out(
            &mut lowered.ir,
            root,
            model.variable(name).ok_or_else(|| format!("no variable `{name}`"))?,
        )
        .0;
    }
    let root = lowered.ir.inline_nets(root);
    let leaves = device_leaves(dev, model, &lowered, params)?;
    let n = check_rows(model, rows, &vars_of(&lowered.ir, root)).map_err(|e| e.to_string())?;
    let ev = Evaluator { ir: &lowered.ir, dev, leaves: &leaves };
    let mut out = Vec::with_capacity(n);
    const CHUNK: usize = 16384;
    for start in (0..n).step_by(CHUNK) {
        let end = (start + CHUNK).min(n);
        let vars: BTreeMap<String, T3<D>> = rows
            .iter()
            .filter(|(k, t)| model.variable(k).is_some() && t.shape.first() == Some(&n))
            .map(|(k, t)| {
                let per: usize = t.shape[1..].iter().product();
                let mut shape = t.shape.clone();
                shape[0] = end - start;
                (k.clone(), upload(dev, &HostTensor::new(shape, t.data[start * per..end * per].to_vec()), end - start))
            })
            .collect();
        let e = eval::one(ev.eval(&[root], &vars));
        out.extend(expand(e, end - start, 1, 1).as_vec().into_iter().map(f64::from));
    }
    Ok(out)
}

/// `v` folded into `[lo, hi]` by reflecting at both walls (see `ChainSet::reflect`).
fn reflected(v: f32, lo: f64, hi: f64) -> f32 {
    let w = hi - lo;
    (lo + w - ((f64::from(v) - lo).rem_euclid(2.0 * w) - w).abs()).clamp(lo, hi) as f32
}

/// The log-density at `y` in `[lo, hi]` of `N(mean, sd²)` folded into the
/// interval by reflection: the sum over the images of `y` under the
/// reflections, `lo + 2kw ± (y − lo)` with `w = hi − lo`, within 12 sd of the
/// mean. A proposal spread over thousands of periods is uniform on the box
/// to within rounding, and is taken as such.
fn log_folded_gaussian(y: f64, mean: f64, sd: f64, lo: f64, hi: f64) -> f64 {
    let w = hi - lo;
    let t = y - lo;
    let reach = 12.0 * sd;
    let (first, last) = (((mean - reach - lo - w) / (2.0 * w)).floor(), ((mean + reach - lo + w) / (2.0 * w)).ceil());
    if !(last - first).is_finite() || last - first > 10_000.0 {
        return -w.ln();
    }
    let terms: Vec<f64> = (first as i64..=last as i64)
        .flat_map(|k| [lo + 2.0 * k as f64 * w + t, lo + 2.0 * k as f64 * w - t])
        .map(|z| -(z - mean).powi(2) / (2.0 * sd * sd))
        .collect();
    let top = terms.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    top + terms.iter().map(|l| (l - top).exp()).sum::<f64>().ln()
}

/// The variables an expression reads, each once.
fn vars_of(ir: &Ir, root: Id) -> Vec<String> {
    let mut names: Vec<String> = ir
        .cone(root)
        .iter()
        .filter_map(|n| if let ir::Op::Var(v) = &ir.node(*n).op { Some(v.clone()) } else { None })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Parameters and constants on the device; the parameters are checked
/// against the model first (present, declared shape, finite), so every
/// entry point that evaluates the model refuses bad values with an error.
fn device_leaves<D: Kernels>(
    dev: &D,
    model: &Model,
    lowered: &ir::Lowered,
    params: &Tensors,
) -> Result<Leaves<D, NoneTape>, String> {
    crate::tensor::check_params(&lowered.params, params).map_err(|e| e.to_string())?;
    let mut tensors = BTreeMap::new();
    for spec in &lowered.params {
        let t = params.get(&spec.name).ok_or_else(|| format!("no value for parameter `{}`", spec.name))?;
        tensors.insert(spec.name.clone(), upload(dev, t, 1));
    }
    for (name, t) in constants(model) {
        tensors.insert(name, upload(dev, &t, 1));
    }
    let lattices = model
        .consts
        .iter()
        .filter_map(|c| match &c.value {
            crate::analysis::program::ConstValue::Graph(g) => {
                Some((c.name.clone(), crate::analysis::graph::lattice_adjacency(g)))
            }
            _ => None,
        })
        .collect();
    Ok(Leaves { tensors, lattices })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lattice stage's operator after one sweep, for a one-model source.
    fn built(src: &str) -> Vec<&'static str> {
        let c = crate::compile(src).expect("compiles");
        let (plans, _) = crate::plan(&c.program).expect("plans");
        let model = c.program.models.values().next().expect("a model");
        let params = crate::tensor::initialise(&ir::program_to_ir(model).params, 1);
        let mut set = ChainSet::new(Cpu::default(), model, &plans[0], &params, 4, 1).expect("chains");
        set.sweep_clamped(&[]);
        set.stages
            .iter()
            .filter_map(|s| match s {
                Stage::Chromatic { form: Chromatic::Lattice(l), .. } => Some(match l.built {
                    Built::Stale => "stale",
                    Built::Operator(_) => "operator",
                    Built::Beyond => "beyond",
                }),
                Stage::Chromatic { form: Chromatic::Masked { .. }, .. } => Some("masked"),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn lattice_models_sample_through_the_sparse_operator() {
        let ising = "model m { const A = grid(4, 4, periodic: true); visible s : spin[16]; param J : real = 0.4;
            param h : real[16] = normal(0, 1); energy e = -0.5 * J * (s @ A @ s) - h @ s; }";
        assert_eq!(built(ising), ["operator"]);
        let potts =
            "model m { const A = grid(4, 4); visible y : categorical(3)[16]; param K : real[3, 3] = normal(0, 1);
            energy e = -0.5 * sum(A * (y @ K @ y.T)); }";
        assert_eq!(built(potts), ["operator"]);
        let cubic = "model m { const G = grid(4, 4, periodic: true); const Z = chain(4); visible s : spin[16, 4];
            param J : real = 0.3; energy e = -J * sum(s * (G @ s)) - J * sum(s * (s @ Z)); }";
        assert_eq!(built(cubic), ["operator"]);
        // A hidden layer only adds to the lattice's logits: still the operator, with per-chain terms.
        let hidden = "model m { const A = chain(6); visible s : spin[6]; hidden h : binary[3];
            param W : real[6, 3] = normal(0, 1); param J : real = 0.4;
            energy e = -0.5 * J * (s @ A @ s) - s @ W @ h; }";
        assert_eq!(built(hidden), ["operator"]);
    }

    /// The host pass of an unadjusted Langevin step gives, bit for bit, the
    /// chains the tensor path gives from the same state and seed: clipped,
    /// reflected into a box, unbounded, and with a gradient shared by the
    /// chains (extent 1 along the batch).
    #[test]
    fn the_host_langevin_pass_moves_chains_as_the_tensor_path_does() {
        let cases = [
            (
                "model m { visible x : real[1, 5, 5] in [0, 1];
                net f = convnet(1 -> 3 -> 1, kernel: 3, stride: 2, act: swish); energy e = f(x); }",
                0.01,
                Some(0.02),
            ),
            (
                // Quadratic in x, so the planner would draw it exactly; the sample block asks for Langevin.
                "model m { visible x : real[3]; param w : real[3] = normal(0, 1);
                energy e = sum(w * x * x); energy prior = 0.5 * sum(square(x)); sample { x: langevin; } }",
                0.5,
                None,
            ),
            (
                "model m { visible x : real[2, 3] in [-3, 3]; param w : real[3] = normal(0, 1); energy e = sum(x @ w); }",
                0.1,
                None,
            ),
        ];
        for (src, step, clip) in cases {
            let c = crate::compile(src).expect("compiles");
            let (plans, _) = crate::plan(&c.program).expect("plans");
            let model = c.program.models.values().next().expect("a model");
            let params = crate::tensor::initialise(&ir::program_to_ir(model).params, 1);
            let set = || ChainSet::new(Cpu::default(), model, &plans[0], &params, 6, 3).expect("chains");
            let (mut host, mut tensors) = (set(), set());
            let Some(Stage::Langevin { vars, .. }) = host.stages.iter().find(|s| matches!(s, Stage::Langevin { .. }))
            else {
                panic!("{src}: a Langevin stage")
            };
            let vars = vars.clone();
            for _ in 0..3 {
                host.langevin_host(&vars, step, 0.3, clip);
                tensors.langevin_tensors(&vars, false, step, 0.3, clip);
            }
            let (a, b) = (host.state["x"].as_vec(), tensors.state["x"].as_vec());
            assert_eq!(a, b, "{src}");
            let start = set().state["x"].as_vec();
            assert!(a.iter().zip(&start).all(|(x, y)| x != y), "{src}: every component moved");
        }
    }

    #[test]
    fn a_coupling_beyond_the_lattice_falls_back_to_exact_sequential_draws() {
        // `s @ A @ A @ s` couples units two steps apart, which the lattice's colouring does not separate.
        let two_step = "model m { const A = chain(6); visible s : spin[6]; param J : real = 0.4;
            energy e = -0.5 * J * (s @ A @ A @ s); }";
        assert_eq!(built(two_step), ["beyond"]);
    }
}
