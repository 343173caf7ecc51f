//! Stage: factor graph → inference plan (`graph_to_plan`). Chooses a sampler
//! for every variable with the reason, derives Gibbs conditionals from the
//! symbolic derivative of the energy, sums out latent blocks where the energy
//! allows, and refuses models and objectives that cannot work (no finite
//! normaliser, score matching on discrete data, invalid sampler overrides).

use crate::analysis::graph::{ColourClass, Degree, FactorGraph, colour, type_text};
use crate::analysis::program::{
    Activation, Call, ConstValue, Domain, Objective, Program, Sampler, Temperature, Train, elements,
};
use crate::front::ast::Role;
use crate::front::span::Span;
use crate::ir::{self, Id, Ir, Op, Unary};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write;

/// Exact score matching costs one second derivative per dimension; past this
/// many dimensions the plan suggests the sliced or denoising forms.
pub const SM_DIMENSION_LIMIT: usize = 64;

/// How one variable is sampled.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Kernel {
    /// Exact Gibbs update of the whole variable at once; `block` of `blocks`.
    BlockGibbs {
        /// Counted from 0 here; serialised from 1, as the text counts.
        #[serde(serialize_with = "from_one")]
        block: usize,
        /// Number of blocks in the model's block-Gibbs sweep.
        blocks: usize,
    },
    /// Exact Gibbs update of one colour class of units at a time.
    ChromaticGibbs {
        /// Colours used; units of one colour are conditionally independent.
        colours: usize,
        /// The graph constants that induce the colouring, described for reading.
        lattice: String,
        /// Each unit's colour, from 0, in unit order.
        unit_colours: Vec<usize>,
    },
    /// One unit at a time, from energy differences.
    SequentialGibbs,
    /// An exact draw of a real variable from its Gaussian conditional, the
    /// energy being quadratic in it with a diagonal precision
    /// (`analysis::gaussian`); for a bounded variable, the normal truncated
    /// to its box, unit by unit.
    GaussianGibbs {
        /// The conditional mean of each unit (before truncation), as an expression.
        mean: String,
        /// The conditional precision (inverse variance) of each unit, as an expression.
        precision: String,
        /// The variable's box, to which the normal is truncated; `None` when unbounded.
        #[serde(skip_serializing_if = "Option::is_none")]
        bounds: Option<(f64, f64)>,
    },
    /// An exact draw of an unbounded real variable from its Gaussian
    /// conditional when the energy is a quadratic form in it whose
    /// precision matrix (the Hessian) is the same for every chain
    /// (`analysis::gaussian::linear`): through a Cholesky factor of the
    /// precision, checked positive definite when it is factored.
    FullGaussianGibbs {
        /// The gradient of the energy in the variable, affine in it, as an expression.
        gradient: String,
    },
    /// Langevin dynamics, or MALA when `mala`, for a real variable.
    Langevin {
        /// Whether each proposal is accepted or rejected by Metropolis-Hastings (MALA).
        mala: bool,
        /// Step size.
        step: f64,
        /// Noise scale, resolved (`sqrt(2 step)` unless given).
        noise: f64,
        /// Steps per sweep.
        steps: usize,
        /// Each gradient component clamped to `[-clip, clip]`; `None`: no clamping.
        clip: Option<f64>,
        /// The variable's bounds, at which moves reflect; `None` when unbounded.
        bounds: Option<(f64, f64)>,
    },
    /// Hamiltonian Monte Carlo with a Metropolis correction, for a real variable.
    Hmc {
        /// Leapfrog step size.
        step: f64,
        /// Leapfrog steps per trajectory.
        leapfrog: usize,
        /// Trajectories per sweep.
        steps: usize,
        /// The variable's bounds, at which trajectories reflect; `None` when unbounded.
        bounds: Option<(f64, f64)>,
    },
    /// Langevin in the reparameterised space of a Gaussian decoder (VAEBM):
    /// `x = mean(latent) + scale ⊙ ε`, the chains moving `latent` and `ε` on
    /// `E(mean(latent) + scale ⊙ ε, latent)`; the variable and its latent
    /// both carry this kernel.
    Reparam {
        /// The variable drawn as `mean + scale ⊙ ε`.
        var: String,
        /// The latent the mean depends on.
        latent: String,
        /// `var`'s conditional mean given the latent, from the terms coupling the two.
        mean: String,
        /// `var`'s conditional standard deviation, `1 / sqrt(precision)`, free of every variable.
        scale: String,
        /// Step size.
        step: f64,
        /// Noise scale, resolved (`sqrt(2 step)` unless given).
        noise: f64,
        /// Steps per sweep.
        steps: usize,
        /// Each gradient component clamped to `[-clip, clip]`; `None`: no clamping.
        clip: Option<f64>,
    },
}

/// Why `x: reparam(z)` cannot be planned (worded in `messages.rs`).
#[derive(Debug, Clone, PartialEq)]
pub enum ReparamWhy {
    /// `x` is bounded or discrete: `mean + scale ⊙ ε` can leave its domain.
    VarDomain,
    /// The latent is bounded or discrete, so Langevin cannot move it freely.
    LatentDomain,
    /// The latent is `x` itself.
    SelfLatent,
    /// No energy term depends on both.
    NoCoupling,
    /// The terms coupling them are not quadratic in `x` with a positive diagonal precision.
    NotGaussian {
        /// The coupling terms' names.
        terms: Vec<String>,
    },
    /// The precision depends on a variable (the latent, say).
    PrecisionVaries {
        /// The precision, as text.
        precision: String,
        /// A variable it depends on.
        on: String,
    },
}

/// The reparameterisation `x = mean(z) + ε / sqrt(precision)` of `x: reparam(z)`,
/// as IR nodes of `ir`, when the terms of `energies` that couple `x` and `z`
/// are Gaussian in `x` with a positive diagonal precision free of every variable.
pub fn reparameterisation(
    ir: &mut Ir,
    model: &crate::analysis::program::Model,
    energies: &[(String, Id)],
    x: &str,
    z: &str,
) -> Result<crate::analysis::gaussian::Conditional, ReparamWhy> {
    let (Some(xv), Some(zv)) = (model.variable(x), model.variable(z)) else { return Err(ReparamWhy::NoCoupling) };
    if x == z {
        return Err(ReparamWhy::SelfLatent);
    }
    if !matches!(xv.domain, Domain::Real { bounds: None }) {
        return Err(ReparamWhy::VarDomain);
    }
    if !matches!(zv.domain, Domain::Real { bounds: None }) {
        return Err(ReparamWhy::LatentDomain);
    }
    let mut terms = Vec::new();
    let mut coupling: Option<Id> = None;
    for (name, root) in energies {
        let root = ir.inline_nets(*root);
        if ir.depends_on(root, x) && ir.depends_on(root, z) {
            terms.push(name.clone());
            coupling = Some(match coupling {
                Some(c) => ir.add(c, root),
                None => root,
            });
        }
    }
    let coupling = coupling.ok_or(ReparamWhy::NoCoupling)?;
    let c =
        crate::analysis::gaussian::conditional(ir, coupling, x, &xv.shape).ok_or(ReparamWhy::NotGaussian { terms })?;
    if let Some(on) = model.variables.iter().find(|v| ir.depends_on(c.precision, &v.name)) {
        return Err(ReparamWhy::PrecisionVaries { precision: ir.show(c.precision), on: on.name.clone() });
    }
    Ok(c)
}

fn from_one<S: serde::Serializer>(block: &usize, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(*block as u64 + 1)
}

/// The plan for one variable.
#[derive(Debug, Clone, Serialize)]
pub struct VarPlan {
    /// The variable's name.
    pub name: String,
    /// Visible or hidden.
    pub role: Role,
    /// Its type as written in messages, e.g. `binary[64]`.
    pub type_text: String,
    /// How it is sampled.
    pub kernel: Kernel,
    /// Why that kernel was chosen.
    pub reason: String,
    /// The exact conditional, for Gibbs kernels.
    pub conditional: Option<String>,
    /// Set when a `sample { }` override chose this kernel.
    pub overridden: bool,
}

/// Variables summed out of the energy, and the free energy left.
#[derive(Debug, Clone, Serialize)]
pub struct Marginal {
    /// The summed-out variables, comma-separated for reading.
    pub var: String,
    /// The summed-out variables, in order.
    pub summed: Vec<String>,
    /// `softplus` (binary), `log 2cosh` (spin) or `logsumexp` (categorical).
    pub rule: String,
    /// Variables the free energy is a function of.
    pub over: Vec<String>,
    /// The free energy, as `F(over) = ...` text.
    pub free_energy: String,
}

/// The inference plan of one model.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// The model's name.
    pub model: String,
    /// Each variable's plan, in declaration order.
    pub variables: Vec<VarPlan>,
    /// One sweep: groups of variables updated together, in order.
    pub sweep: Vec<Vec<String>>,
    /// Tempered or annealed chains, as the `sample` block asks; `None`: every sweep at T = 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<Temperature>,
    /// Latent blocks summed out of the energy, and the free energy left.
    pub summed_out: Option<Marginal>,
    /// Hidden variables that stay sampled, with the reason.
    pub kept: Vec<(String, String)>,
    /// A visible categorical label summed out for the marginal of the rest (JEM).
    pub label_marginal: Option<Marginal>,
    /// The objective as a call with the options that apply; `None` without a train block.
    pub objective: Option<String>,
    /// A staged train block's start and split (`init`, `freeze`); `None` when it has neither.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub staged: Option<Staged>,
    /// Sweeps that fresh samples run by default (`ebmc sample`, `eval`'s
    /// model samples, a run's `samples.png`) when training's chains are
    /// short-run; `None`: each command's own default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub short_run: Option<ShortRun>,
    /// The IR the plan was made from, as `ir::program_to_ir` lowered it, so
    /// the backend and runtime start from it instead of lowering again. Not
    /// printed: `ebmc plan` shows what the plan decided, not the IR.
    #[serde(skip)]
    pub lowered: ir::Lowered,
}

/// What a staged train block loads, holds fixed and trains.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Staged {
    /// `init`'s checkpoint path as written; `None`: every parameter from its initialiser.
    pub init: Option<String>,
    /// The parameters held fixed, in declaration order.
    pub frozen: Vec<String>,
    /// The parameters trained, in declaration order.
    pub trained: Vec<String>,
}

/// Training's Langevin chains are short-run when most of them restart from
/// noise each update (`reinit` ≥ 1/2) and run the objective's `k` sweeps:
/// those `k`-sweep samples from noise are what training shaped, and longer
/// runs drift past them, so fresh samples default to `k` sweeps too.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ShortRun {
    /// The objective's `k`.
    pub sweeps: usize,
    /// The fraction of chains training restarts from noise.
    pub reinit: f64,
}

impl ShortRun {
    /// The default run of fresh samples for a persistent objective on a model
    /// with Langevin variables, or `None` when its chains are persistent.
    fn of(objective: Option<&Objective>, langevin: bool) -> Option<ShortRun> {
        let p = objective?.persistent()?;
        (langevin && p.reinit >= 0.5).then_some(ShortRun { sweeps: p.k, reinit: p.reinit })
    }
}

/// A reason the planner refuses a model or objective, or warns about it.
#[derive(Debug, Clone, PartialEq)]
pub enum PlanError {
    /// A real, unbounded variable in which the energy is constant or linear: exp(-E) cannot integrate.
    NoFiniteZ {
        /// The variable.
        var: String,
        /// Where it is declared.
        span: Span,
        /// The energy's degree in it.
        degree: Degree,
    },
    /// The energy's leading term in `var` falls to -infinity in some
    /// direction (a negative even power, or an odd one).
    LeadingTermFalls {
        /// The variable.
        var: String,
        /// Where it is declared.
        span: Span,
        /// The falling term, as text.
        term: String,
    },
    /// Every term that varies with the unbounded `var` is bounded (`term`
    /// is one): exp(-E) stays above a positive floor and cannot integrate.
    BoundedEnergy {
        /// The variable.
        var: String,
        /// Where it is declared.
        span: Span,
        /// A bounded term, as text.
        term: String,
    },
    /// A warning: the planner cannot prove that exp(-E) integrates over `var`.
    NotProvablyNormalisable {
        /// The variable.
        var: String,
        /// Where it is declared.
        span: Span,
        /// What the proof lacks.
        why: Unproved,
    },
    /// A score-matching or NCE objective given a discrete visible variable.
    NeedsContinuous {
        /// The objective's name.
        objective: String,
        /// Where the objective is written.
        span: Span,
        /// The discrete variable.
        var: String,
        /// Where it is declared.
        var_span: Span,
        /// Its type as written in messages.
        type_text: String,
    },
    /// An objective that needs a free energy, given a variable that cannot be summed out.
    NeedsFreeEnergy {
        /// The objective's name.
        objective: String,
        /// Where the objective is written.
        span: Span,
        /// The variable.
        var: String,
        /// Where it is declared.
        var_span: Span,
        /// Why it cannot be summed out.
        why: String,
    },
    /// `jem` without a visible categorical label entering the energy linearly.
    JemNeedsLabel {
        /// Where the objective is written.
        span: Span,
    },
    /// `jem` with a categorical label but no real visible input.
    JemNeedsContinuous {
        /// Where the objective is written.
        span: Span,
    },
    /// `classify` without a visible categorical label entering the energy linearly beside a real input.
    ClassifyNeedsLabel {
        /// Where the objective is written.
        span: Span,
        /// Why: no categorical visible, no real visible, or the label enters non-linearly.
        why: String,
    },
    /// `outliers` in a train block whose objective is not `classify`.
    OutliersNeedClassify {
        /// Where `outliers` is written.
        span: Span,
        /// The objective's name.
        objective: String,
    },
    /// `classify`'s margin options without `outliers` to apply them to.
    MarginsNeedOutliers {
        /// Where the objective is written.
        span: Span,
        /// The first such option given.
        option: String,
    },
    /// `pl` on a model with a hidden or continuous variable.
    PlNeedsFullyVisible {
        /// Where the objective is written.
        span: Span,
        /// The offending variable.
        var: String,
        /// Where it is declared.
        var_span: Span,
        /// Why it disqualifies `pl` (hidden, or continuous).
        why: String,
    },
    /// `pcd` with improved CD's `kl` or `entropy` on a model whose chains
    /// are not plain Langevin on visible continuous variables alone.
    ImprovedCdNeedsLangevin {
        /// Where the objective is written.
        span: Span,
        /// The offending variable.
        var: String,
        /// Where it is declared.
        var_span: Span,
        /// Why it disqualifies the terms (hidden, discrete, or MALA).
        why: String,
    },
    /// `x: reparam(z)` on a model whose decoder is not Gaussian in `x` with a constant precision.
    Reparam {
        /// The variable.
        var: String,
        /// Its latent.
        latent: String,
        /// Where the override is written.
        span: Span,
        /// What fails.
        why: ReparamWhy,
    },
    /// A `gibbs` override on a real variable.
    GibbsOnContinuous {
        /// The variable.
        var: String,
        /// Where the override is written.
        span: Span,
    },
    /// A `langevin` or `mala` override on a discrete variable.
    LangevinOnDiscrete {
        /// The variable.
        var: String,
        /// Where the override is written.
        span: Span,
        /// The kernel named.
        kernel: String,
    },
    /// `lsd`'s critic does not map the visible variable to a vector of its own shape.
    CriticShape {
        /// Where the objective is written.
        span: Span,
        /// The critic net.
        critic: String,
        /// Where it is declared.
        critic_span: Span,
        /// What the critic must be.
        expected: String,
        /// What it is.
        found: String,
    },
    /// `elbo` needs one visible variable and one unbounded real latent.
    ElboVariables {
        /// Where the objective is written.
        span: Span,
        /// What is wrong, as a sentence's end (`the model has no hidden variable`).
        why: String,
        /// The variable in the way, where one is.
        var_span: Option<Span>,
    },
    /// `elbo`'s encoder does not map the visible variable to the latent's
    /// posterior mean and log standard deviation.
    EncoderShape {
        /// Where the objective is written.
        span: Span,
        /// The encoder net.
        encoder: String,
        /// Where it is declared.
        encoder_span: Span,
        /// What the encoder must be.
        expected: String,
        /// What it is.
        found: String,
    },
    /// A warning: exact `sm` over more than `SM_DIMENSION_LIMIT` visible dimensions.
    ScoreMatchingDimension {
        /// Where the objective is written.
        span: Span,
        /// Visible dimensions, summed over the visible variables.
        dims: usize,
    },
    /// Score matching on a bounded real variable: its objective drops the
    /// boundary terms of the integration by parts, so the fit is biased.
    ScoreMatchingBounded {
        /// The objective's name.
        objective: String,
        /// Where the objective is written.
        span: Span,
        /// The bounded variable.
        var: String,
        /// Where it is declared.
        var_span: Span,
        /// Its `(low, high)` bounds.
        bounds: (f64, f64),
    },
}

impl PlanError {
    /// True for warnings, which do not stop compilation; false for errors.
    pub fn is_warning(&self) -> bool {
        matches!(
            self,
            PlanError::NotProvablyNormalisable { .. }
                | PlanError::ScoreMatchingDimension { .. }
                | PlanError::ScoreMatchingBounded { .. }
        )
    }
}

/// Why the planner cannot prove that exp(-E) integrates over a real variable.
#[derive(Debug, Clone, PartialEq)]
pub enum Unproved {
    /// No term is a positive even power of the variable (`c * sum(square(x))`,
    /// `c * sum(x^4)`, ...); `term` is the one that grows fastest.
    NoConfiningTerm { term: String },
    /// A confining term exists, but `term` may fall as fast as it rises.
    Outgrown { term: String, confining: String },
}

/// The verdict on one unbounded real variable, the others held fixed.
enum Normalisability {
    Proved,
    Falls { term: String },
    Bounded { term: String },
    Unproved(Unproved),
}

/// Growth order of |node| as the variable goes to infinity (an upper bound;
/// `None`: faster than any power, or unknown), and whether the node is never
/// negative. Computed for every node of the cone, children first.
fn growth_of(graph: &FactorGraph, ir: &Ir, root: Id, var: &str) -> HashMap<Id, (Option<f64>, bool)> {
    let mut out: HashMap<Id, (Option<f64>, bool)> = HashMap::new();
    for id in ir.cone(root) {
        let g = |x: &Id| out[x].0;
        let nonneg = |x: &Id| out[x].1;
        let both = |a: Option<f64>, b: Option<f64>, f: fn(f64, f64) -> f64| a.zip(b).map(|(a, b)| f(a, b));
        let value = match &ir.node(id).op {
            Op::Num(bits) => (Some(0.0), f64::from_bits(*bits) >= 0.0),
            Op::Var(v) if v == var => (Some(1.0), false),
            Op::Var(_) | Op::Param(_) | Op::Const(_) => (Some(0.0), false),
            Op::Neg(a) | Op::Transpose(a) => (g(a), false),
            Op::Sum(a) | Op::Broadcast(a) | Op::SumTo(a) => (g(a), nonneg(a)),
            Op::LogSumExp(a) | Op::LogSumExpLast(a) => (g(a), false),
            Op::Softmax(_) | Op::SoftmaxLast(_) => (Some(0.0), true),
            Op::Add(a, b) => (both(g(a), g(b), f64::max), nonneg(a) && nonneg(b)),
            Op::Sub(a, b) => (both(g(a), g(b), f64::max), false),
            Op::Mul(a, b) | Op::MatMul(a, b) | Op::Outer(a, b) => {
                (both(g(a), g(b), |x, y| x + y), nonneg(a) && nonneg(b))
            }
            Op::Div(a, b) => (if g(b) == Some(0.0) { g(a) } else { None }, false),
            Op::Pow(a, e) => {
                let order = match ir.num_value(*e) {
                    _ if g(a) == Some(0.0) && g(e) == Some(0.0) => Some(0.0),
                    Some(p) if p >= 0.0 => g(a).map(|x| p * x),
                    _ => None,
                };
                let even = ir.num_value(*e).is_some_and(|p| p.fract() == 0.0 && p % 2.0 == 0.0);
                (order, even)
            }
            Op::Map(f, a) => {
                let ga = g(a);
                match f {
                    Unary::Tanh | Unary::Sigmoid | Unary::Step | Unary::Sign => {
                        (Some(0.0), matches!(f, Unary::Sigmoid | Unary::Step))
                    }
                    Unary::Relu | Unary::Abs | Unary::Softplus | Unary::Log2Cosh => (ga, true),
                    Unary::Swish => (ga, false),
                    Unary::Square => (ga.map(|x| 2.0 * x), true),
                    Unary::Sqrt => (ga.map(|x| x / 2.0), true),
                    Unary::Exp => (if ga == Some(0.0) { Some(0.0) } else { None }, true),
                    // log grows more slowly than any power.
                    Unary::Log => (ga.map(|x| if x > 0.0 { 0.25 } else { 0.0 }), false),
                }
            }
            Op::Net(name, a) => {
                let bounded = graph.model.net(name).is_some_and(|n| {
                    n.layers.len() > 2 && matches!(n.activation, Activation::Tanh | Activation::Sigmoid)
                });
                (if g(a) == Some(0.0) || bounded { Some(0.0) } else { g(a) }, false)
            }
            Op::SpectralNorm(a) | Op::SpectralOuter(a) => (g(a), false),
            Op::AvgPool(a, _) | Op::Unpool(a, _) | Op::SumAxes(a, ..) | Op::BroadcastAxes(a, ..) | Op::Reshape(a) => {
                (g(a), nonneg(a))
            }
            Op::Conv(a, b, _) | Op::ConvInput(a, b, _) | Op::ConvKernel(a, b, _) => {
                (both(g(a), g(b), |x, y| x + y), false)
            }
        };
        out.insert(id, value);
    }
    out
}

/// A term that is a power of the variable: `k * sum(|x + rest|^p)` over every
/// unit of `x`, `rest` free of `x`.
#[derive(Clone, Copy)]
struct Power {
    order: f64,
    /// The factor of its leading term `|x|^p`, the term's coefficient included.
    factor: f64,
    /// Of one sign whatever the direction: an even power, or `abs`.
    definite: bool,
}

/// `t` as a power of `x` (`sum(square(x - mu))`, `sum(x^4)`, `sum(abs(x))`,
/// `x @ x`), with the factor `k^p` of its leading term.
fn power_of(ir: &mut Ir, t: Id, x: &crate::analysis::program::Variable) -> Option<Power> {
    if let Op::MatMul(a, b) = ir.node(t).op {
        // v @ v over one vector is the sum of its squares.
        return (a == b && ir.node(a).shape.len() == 1).then(|| base_scale(ir, a, x)).flatten().map(|k| Power {
            order: 2.0,
            factor: k * k,
            definite: true,
        });
    }
    let inner = match ir.node(t).op {
        Op::Sum(a) => a,
        _ if x.shape.is_empty() => t,
        _ => return None,
    };
    // Every unit once: the base's `x` term is `x` or a reshape of it, and
    // broadcasting it would make more elements than `x` has.
    if elements(ir.shape(inner)) != elements(&x.shape) {
        return None;
    }
    if !matches!(ir.node(inner).op, Op::Map(Unary::Square | Unary::Abs, _) | Op::Pow(..)) {
        return None;
    }
    elementwise_power(ir, inner, x)
}

/// `u` as `|k x + rest|^p` unit by unit, through nested powers
/// (`square(square(x))` is `x^4`); the factor is `|k|^p`.
fn elementwise_power(ir: &mut Ir, u: Id, x: &crate::analysis::program::Variable) -> Option<Power> {
    let (base, order, definite) = match ir.node(u).op {
        Op::Map(Unary::Square, v) => (v, 2.0, true),
        Op::Map(Unary::Abs, v) => (v, 1.0, true),
        Op::Pow(v, e) => {
            let p = ir.num_value(e).filter(|p| *p >= 1.0 && p.fract() == 0.0)?;
            (v, p, p % 2.0 == 0.0)
        }
        _ => return base_scale(ir, u, x).map(|k| Power { order: 1.0, factor: k.abs(), definite: false }),
    };
    let inner = elementwise_power(ir, base, x)?;
    Some(Power { order: inner.order * order, factor: inner.factor.powf(order), definite: definite || inner.definite })
}

/// `k` when `base` is `k * x + rest` with `rest` free of `x` and `k != 0`.
fn base_scale(ir: &mut Ir, base: Id, x: &crate::analysis::program::Variable) -> Option<f64> {
    let mut scale = None;
    for (c, r) in ir.signed_terms(base) {
        let Some(r) = r else { continue };
        match &ir.node(r).op {
            Op::Var(n) if *n == x.name && scale.is_none() => scale = Some(c),
            // `flatten(x)` and `reshape(x, ..)` hold the same elements: the same powers.
            Op::Reshape(v) if matches!(&ir.node(*v).op, Op::Var(n) if *n == x.name) && scale.is_none() => {
                scale = Some(c)
            }
            _ if ir.depends_on(r, &x.name) => return None,
            _ => {}
        }
    }
    scale.filter(|k| *k != 0.0)
}

/// Whether exp(-E) integrates over the unbounded real variable `x` for
/// fixed values of the others, from the sign and order of the energy's
/// leading term: a positive even power of `x` that outgrows every other term
/// proves it; a leading term that falls (a negative even power, an odd
/// power) refutes it.
fn normalisability(
    graph: &FactorGraph,
    ir: &mut Ir,
    total: Id,
    x: &crate::analysis::program::Variable,
) -> Normalisability {
    let growth = growth_of(graph, ir, total, &x.name);
    // (order, leading factor if a power of x, grows never negative, printed)
    struct Term {
        order: Option<f64>,
        power: Option<Power>,
        rises: bool,
        text: String,
    }
    let mut terms = Vec::new();
    for (c, r) in ir.signed_terms(total) {
        let Some(t) = r else { continue };
        if !ir.depends_on(t, &x.name) {
            continue;
        }
        let power = power_of(ir, t, x).map(|p| Power { factor: c * p.factor, ..p });
        let (order, nonneg) = growth.get(&t).copied().unwrap_or((None, false));
        let k = ir.num(c);
        let shown = ir.mul(k, t);
        terms.push(Term {
            order: power.map(|p| Some(p.order)).unwrap_or(order),
            power,
            rises: c > 0.0 && nonneg,
            text: ir.show(shown),
        });
    }
    let confines = |t: &Term| t.power.is_some_and(|p| p.definite && p.factor > 0.0);
    let confining = terms
        .iter()
        .filter(|t| confines(t))
        .max_by(|a, b| a.order.unwrap_or(f64::INFINITY).total_cmp(&b.order.unwrap_or(f64::INFINITY)));
    // The highest order of any term, and the terms holding it.
    let top = terms.iter().map(|t| t.order.unwrap_or(f64::INFINITY)).fold(0.0, f64::max);
    let leading: Vec<&Term> = terms.iter().filter(|t| t.order.unwrap_or(f64::INFINITY) == top).collect();
    if top == 0.0 && !leading.is_empty() {
        return Normalisability::Bounded { term: leading[0].text.clone() };
    }
    if top.is_finite() && leading.iter().all(|t| t.power.is_some_and(|p| p.definite)) {
        // Definite powers of one order: the sign of their summed factors decides.
        let factor: f64 = leading.iter().filter_map(|t| t.power).map(|p| p.factor).sum();
        if factor > 0.0 {
            return Normalisability::Proved;
        }
        if factor < 0.0 {
            return Normalisability::Falls { term: leading[0].text.clone() };
        }
    }
    if top.is_finite() && leading.len() == 1 && leading[0].power.is_some_and(|p| !p.definite) {
        return Normalisability::Falls { term: leading[0].text.clone() };
    }
    // Terms never negative cannot pull the energy down; the rest must grow
    // more slowly than the confining term.
    let threat = terms
        .iter()
        .filter(|t| !t.rises && !confines(t))
        .max_by(|a, b| a.order.unwrap_or(f64::INFINITY).total_cmp(&b.order.unwrap_or(f64::INFINITY)));
    match (confining, threat) {
        (Some(_), None) => Normalisability::Proved,
        (Some(c), Some(t)) if t.order.is_some_and(|o| Some(o) < c.order) => Normalisability::Proved,
        (Some(c), Some(t)) => {
            Normalisability::Unproved(Unproved::Outgrown { term: t.text.clone(), confining: c.text.clone() })
        }
        (None, t) => {
            let fastest = t.or_else(|| {
                terms
                    .iter()
                    .max_by(|a, b| a.order.unwrap_or(f64::INFINITY).total_cmp(&b.order.unwrap_or(f64::INFINITY)))
            });
            Normalisability::Unproved(Unproved::NoConfiningTerm {
                term: fastest.map(|t| t.text.clone()).unwrap_or_default(),
            })
        }
    }
}

/// Plans every model of a program, in name order.
pub fn program_to_plans(program: &Program) -> Result<(Vec<Plan>, Vec<PlanError>), Vec<PlanError>> {
    let mut plans = Vec::new();
    let mut problems = Vec::new();
    for model in program.models.values() {
        let graph = crate::analysis::graph::program_to_graph(model);
        match graph_to_plan(&graph, program.trains.get(&model.name)) {
            Ok((plan, warnings)) => {
                plans.push(plan);
                problems.extend(warnings);
            }
            Err(errors) => problems.extend(errors),
        }
    }
    if problems.iter().any(|p| !p.is_warning()) { Err(problems) } else { Ok((plans, problems)) }
}

/// Plans the model of `graph`, checking it against `train`'s objective: the plan and its warnings, or every problem when any is an error.
pub fn graph_to_plan(graph: &FactorGraph, train: Option<&Train>) -> Result<(Plan, Vec<PlanError>), Vec<PlanError>> {
    let model = &graph.model;
    let mut problems = Vec::new();
    let planned_from = ir::program_to_ir(model);
    // The planner adds nodes as it analyses; the plan keeps the IR as lowered.
    let mut lowered = planned_from.clone();
    let total = lowered.total;
    let ir = &mut lowered.ir;

    // Discrete variables whose units do not interact can be updated as whole blocks.
    let discrete: Vec<&crate::analysis::program::Variable> =
        model.variables.iter().filter(|v| v.domain.is_discrete()).collect();
    let blockable: Vec<String> =
        discrete.iter().filter(|v| graph.self_couplings(&v.name).is_empty()).map(|v| v.name.clone()).collect();
    let adjacency: Vec<Vec<usize>> = blockable
        .iter()
        .map(|v| {
            let n = graph.neighbours(v);
            blockable.iter().enumerate().filter(|(_, w)| n.contains(*w)).map(|(j, _)| j).collect()
        })
        .collect();
    let block_colour = colour(&adjacency);
    // Blocks holding only latents go first, so a sweep starts from the data.
    let mut order: Vec<usize> = block_colour.iter().copied().collect::<BTreeSet<_>>().into_iter().collect();
    order.sort_by_key(|c| {
        (
            blockable
                .iter()
                .zip(&block_colour)
                .any(|(v, k)| k == c && model.variable(v).is_some_and(|v| v.role == Role::Visible)),
            *c,
        )
    });
    let block_of = |v: &str| {
        blockable
            .iter()
            .position(|b| b == v)
            // Cannot fire: `order` holds every colour `colour` assigned.
            .map(|i| order.iter().position(|c| *c == block_colour[i]).expect("colour is ordered"))
    };
    let bipartite = graph.bipartite(&blockable);

    let overrides: BTreeMap<&str, &crate::analysis::program::Override> =
        model.overrides.iter().map(|o| (o.var.as_str(), o)).collect();
    let objective = train.map(|t| &t.options.objective);

    let lowered_energies = lowered.energies.clone();
    let mut variables = Vec::new();
    for v in &model.variables {
        let override_ = overrides.get(v.name.as_str());
        let mut overridden = false;
        // A bounded real's conditional is the same normal truncated to its box.
        let gaussian = match v.domain {
            Domain::Real { .. } if graph.total_degree(&v.name) == Degree::Quadratic => {
                crate::analysis::gaussian::conditional(ir, total, &v.name, &v.shape)
            }
            _ => None,
        };
        // Past a diagonal precision: a quadratic form with one precision matrix for every chain.
        let full = match v.domain {
            Domain::Real { bounds: None }
                if gaussian.is_none()
                    && graph.total_degree(&v.name) == Degree::Quadratic
                    && v.shape.iter().product::<usize>() <= crate::analysis::gaussian::FULL_DIMS_LIMIT =>
            {
                crate::analysis::gaussian::linear(ir, total, &v.name)
            }
            _ => crate::analysis::gaussian::Linear::No,
        };
        let shared = full == crate::analysis::gaussian::Linear::Shared;
        if let Some(o) = override_ {
            match (v.domain.is_discrete(), o.kernel.name.as_str()) {
                (false, "gibbs") if gaussian.is_none() && !shared => {
                    problems.push(PlanError::GibbsOnContinuous { var: v.name.clone(), span: o.span })
                }
                (true, k @ ("langevin" | "mala" | "hmc")) => problems.push(PlanError::LangevinOnDiscrete {
                    var: v.name.clone(),
                    span: o.span,
                    kernel: k.to_string(),
                }),
                _ => overridden = true,
            }
        }
        let (kernel, reason, conditional) = if v.domain.is_discrete() {
            // Only Gibbs kernels with an exact conditional print one; deriving
            // it costs a gradient and a printout, so only those pay.
            let conditional = |ir: &mut Ir| {
                ir.grad(total, &v.name).map(|g| {
                    let minus = ir.neg(g);
                    conditional_text(ir, v, minus)
                })
            };
            if let Some(block) = block_of(&v.name) {
                let blocks = order.len();
                let partners: Vec<String> = graph
                    .neighbours(&v.name)
                    .into_iter()
                    .filter(|n| model.variable(n).is_some_and(|w| w.domain.is_discrete()))
                    .collect();
                let all: Vec<String> = graph.neighbours(&v.name).into_iter().collect();
                let reason = match (partners.is_empty(), bipartite) {
                    (true, _) if all.is_empty() => "units are independent".to_string(),
                    (true, _) => format!("units are conditionally independent given {}", all.join(", ")),
                    (false, true) => format!("bipartite with {}", partners.join(", ")),
                    (false, false) => format!(
                        "interaction graph is not bipartite; {blocks}-colour blocks, coupled to {}",
                        partners.join(", ")
                    ),
                };
                (Kernel::BlockGibbs { block, blocks }, reason, conditional(ir))
            } else if let Some((adjacency, consts)) = graph.unit_graph(&v.name) {
                let (kernel, reason) = chromatic(model, &adjacency, &consts);
                (kernel, reason, conditional(ir))
            } else {
                let via = graph.self_couplings(&v.name).join(", ");
                let degree = graph.total_degree(&v.name);
                let reason = if degree == Degree::Quadratic {
                    format!("units coupled densely through {via} (no known sparsity)")
                } else {
                    format!("energy is not quadratic in {} (through {via})", v.name)
                };
                let text = match v.domain {
                    Domain::Spin => format!("p({}_i = +1 | rest) = sigmoid(E({0}_i = -1) - E({0}_i = +1))", v.name),
                    Domain::Binary => format!("p({}_i = 1 | rest) = sigmoid(E({0}_i = 0) - E({0}_i = 1))", v.name),
                    _ => format!("p({}_i = k | rest) = softmax_k(-E({0}_i = k))", v.name),
                };
                (Kernel::SequentialGibbs, reason, Some(text))
            }
        } else {
            let bounds = match v.domain {
                Domain::Real { bounds } => bounds,
                _ => None,
            };
            let degree = graph.total_degree(&v.name);
            match (degree, bounds) {
                (Degree::Constant | Degree::Linear, None) => {
                    problems.push(PlanError::NoFiniteZ { var: v.name.clone(), span: v.span, degree })
                }
                // A positive precision proves the Gaussian proper. A shared precision
                // matrix is refused at run time if its factor fails; the warning stays
                // where the form cannot prove it positive definite.
                (_, None) if gaussian.is_some() => {}
                (_, None) => match normalisability(graph, ir, total, v) {
                    Normalisability::Proved => {}
                    Normalisability::Falls { term } => {
                        problems.push(PlanError::LeadingTermFalls { var: v.name.clone(), span: v.span, term })
                    }
                    Normalisability::Bounded { term } => {
                        problems.push(PlanError::BoundedEnergy { var: v.name.clone(), span: v.span, term })
                    }
                    Normalisability::Unproved(why) => {
                        problems.push(PlanError::NotProvablyNormalisable { var: v.name.clone(), span: v.span, why })
                    }
                },
                _ => {}
            }
            let asked = override_.filter(|_| overridden).map(|o| &o.sampler);
            match gaussian {
                _ if matches!(asked, Some(Sampler::Reparam { .. })) => {
                    let (Some(o), Some(Sampler::Reparam { latent, langevin: l })) = (override_, asked) else {
                        unreachable!("matched above")
                    };
                    match reparameterisation(ir, model, &lowered_energies, &v.name, latent) {
                        Ok(c) => {
                            let Kernel::Langevin { step, noise, steps, clip, .. } =
                                langevin(Some(&Sampler::Langevin(l.clone())), objective, None)
                            else {
                                unreachable!("a langevin override plans Langevin")
                            };
                            let root = ir.map(Unary::Sqrt, c.precision);
                            let one = ir.num(1.0);
                            let scale = ir.div(one, root);
                            let kernel = Kernel::Reparam {
                                var: v.name.clone(),
                                latent: latent.clone(),
                                mean: ir.show(c.mean),
                                scale: ir.show(scale),
                                step,
                                noise,
                                steps,
                                clip,
                            };
                            let reason = format!(
                                "the terms coupling {0} and {latent} are Gaussian in {0} with a constant diagonal precision: Langevin moves ({latent}, ε) with {0} = mean({latent}) + scale ⊙ ε",
                                v.name
                            );
                            let text = format!(
                                "{} = mean + scale ⊙ ε, mean: {}, scale: {}",
                                v.name,
                                ir.show(c.mean),
                                ir.show(scale)
                            );
                            (kernel, reason, Some(text))
                        }
                        Err(why) => {
                            problems.push(PlanError::Reparam {
                                var: v.name.clone(),
                                latent: latent.clone(),
                                span: o.span,
                                why,
                            });
                            (langevin(None, objective, bounds), String::new(), None)
                        }
                    }
                }
                Some(c)
                    if !matches!(asked, Some(Sampler::Langevin(_) | Sampler::Mala { .. } | Sampler::Hmc { .. })) =>
                {
                    let (mean, precision) = (ir.show(c.mean), ir.show(c.precision));
                    let (law, truncated) = match bounds {
                        None => ("Gaussian".to_string(), String::new()),
                        Some((lo, hi)) => {
                            (format!("a normal truncated to [{lo}, {hi}]"), format!(" truncated to [{lo}, {hi}]"))
                        }
                    };
                    let reason = format!(
                        "the energy is quadratic in {} with a diagonal positive precision: its conditional is {law}",
                        v.name
                    );
                    let text = format!(
                        "p({} | rest) = normal(mean: {mean}, precision: {precision}){truncated}, unit by unit",
                        v.name
                    );
                    (Kernel::GaussianGibbs { mean, precision, bounds }, reason, Some(text))
                }
                None if shared
                    && !matches!(asked, Some(Sampler::Langevin(_) | Sampler::Mala { .. } | Sampler::Hmc { .. })) =>
                {
                    // Cannot fire: `linear` found the gradient.
                    let g = ir.grad(total, &v.name).expect("a quadratic energy has a gradient");
                    let gradient = ir.show(g);
                    let reason = format!(
                        "the energy is a quadratic form in {} with one precision matrix for every chain: its conditional is Gaussian, drawn through a Cholesky factor of the precision",
                        v.name
                    );
                    let text = format!(
                        "p({0} | rest) = normal(mean: {0} - P⁻¹ ∂E/∂{0}, precision: P), P = ∂²E/∂{0}² (positive definite, checked when factored), ∂E/∂{0} = {gradient}",
                        v.name
                    );
                    (Kernel::FullGaussianGibbs { gradient }, reason, Some(text))
                }
                _ => {
                    let kernel = langevin(asked, objective, bounds);
                    let mut reason = match (bounds, degree) {
                        (Some((lo, hi)), _) => format!("continuous, reflected at the bounds [{lo}, {hi}]"),
                        (None, Degree::Quadratic) => "continuous, energy grows quadratically".to_string(),
                        (None, _) => "continuous, unbounded".to_string(),
                    };
                    if let crate::analysis::gaussian::Linear::PerChain(readers) = &full {
                        let _ = write!(
                            reason,
                            "; its precision matrix depends on {}, so it differs from chain to chain and no one Cholesky factor draws it exactly",
                            readers.join(", ")
                        );
                    }
                    if let Kernel::Langevin { mala: true, .. } | Kernel::Hmc { .. } = kernel {
                        reason.push_str("; Metropolis-adjusted");
                    }
                    (kernel, reason, None)
                }
            }
        };
        variables.push(VarPlan {
            name: v.name.clone(),
            role: v.role,
            type_text: type_text(v),
            kernel,
            reason,
            conditional,
            overridden,
        });
    }

    // A reparameterised variable's latent moves with it, in its stage.
    let reparam: Vec<Kernel> = variables
        .iter()
        .filter(|v| matches!(&v.kernel, Kernel::Reparam { var, .. } if *var == v.name))
        .map(|v| v.kernel.clone())
        .collect();
    for kernel in reparam {
        let Kernel::Reparam { var, latent, .. } = &kernel else { unreachable!("filtered above") };
        if let Some(z) = variables.iter_mut().find(|w| w.name == *latent) {
            z.reason = format!("moved with {var} in ({latent}, ε) space");
            z.conditional = None;
            z.kernel = kernel.clone();
        }
    }
    let sweep = sweep(&variables);
    let (summed_out, kept) = sum_out_latents(graph, ir, total);
    let label_marginal = label_marginal(graph, ir, total);
    if let Some(t) = train {
        problems.extend(check_objective(graph, t, &kept, &label_marginal));
        problems.extend(check_improved_cd(model, t, &variables));
    }
    let langevin = variables.iter().any(|v| matches!(v.kernel, Kernel::Langevin { .. }));
    let objective_text =
        train.map(|t| objective_text(&t.objective, &summed_out, &label_marginal, langevin, t.outliers.is_some()));
    if problems.iter().any(|p| !p.is_warning()) {
        return Err(problems);
    }
    let plan = Plan {
        model: model.name.clone(),
        variables,
        sweep,
        temperature: model.temperature.clone(),
        summed_out,
        kept,
        label_marginal,
        objective: objective_text,
        staged: train.filter(|t| t.init.is_some() || !t.frozen.is_empty()).map(|t| Staged {
            init: t.init.clone(),
            frozen: t.frozen.clone(),
            trained: planned_from.params.iter().map(|p| p.name.clone()).filter(|p| !t.frozen.contains(p)).collect(),
        }),
        short_run: ShortRun::of(objective, langevin),
        lowered: planned_from,
    };
    Ok((plan, problems))
}

fn conditional_text(ir: &mut Ir, v: &crate::analysis::program::Variable, minus_grad: Id) -> String {
    let given = "rest";
    match v.domain {
        Domain::Binary => format!("p({} = 1 | {given}) = sigmoid({})", v.name, ir.show(minus_grad)),
        Domain::Spin => {
            let two = ir.num(2.0);
            let field = ir.mul(two, minus_grad);
            format!("p({} = +1 | {given}) = sigmoid({})", v.name, ir.show(field))
        }
        _ if v.shape.len() >= 2 => format!("p({} | {given}) = softmax_rows({})", v.name, ir.show(minus_grad)),
        _ => format!("p({} | {given}) = softmax({})", v.name, ir.show(minus_grad)),
    }
}

fn chromatic(model: &crate::analysis::program::Model, adjacency: &[Vec<usize>], consts: &[String]) -> (Kernel, String) {
    let mut names = Vec::new();
    for c in consts {
        if let Some(ConstValue::Graph(g)) = model.constant(c).map(|c| &c.value) {
            let kind = format!("{:?}", g.lattice).to_lowercase();
            let periodic = if g.periodic { ", periodic" } else { "" };
            names.push(if g.rows > 1 {
                format!("{kind} {}x{}{periodic} via {c}", g.rows, g.cols)
            } else {
                format!("{kind} of {}{periodic} via {c}", g.cols)
            });
        }
    }
    let unit_colours = colour(adjacency);
    let colours = unit_colours.iter().max().map_or(1, |m| m + 1);
    let lattice = names.join(", ");
    let reason = format!("{lattice}; units of one colour are conditionally independent");
    (Kernel::ChromaticGibbs { colours, lattice, unit_colours }, reason)
}

fn langevin(override_: Option<&Sampler>, objective: Option<&Objective>, bounds: Option<(f64, f64)>) -> Kernel {
    // A `sample` block's kernel wins; what it leaves out comes from a
    // persistent objective's chains, then from Langevin's own defaults.
    let persistent = objective.and_then(Objective::persistent);
    let base = crate::analysis::check::default_langevin();
    let step_default = persistent.map_or(base.step, |p| p.step);
    let noise_of =
        |step: f64, own: Option<f64>| own.or(persistent.and_then(|p| p.noise)).unwrap_or((2.0 * step).sqrt());
    let clip_of = |own: Option<f64>| own.or(persistent.and_then(|p| p.clip));
    // One step per sweep unless a `sample` block says otherwise: training's
    // `k` counts sweeps, so a `pcd(k: 20)` update runs 20 Langevin steps.
    let (mala, step, noise, steps, clip) = match override_ {
        Some(Sampler::Langevin(l)) => (false, l.step, noise_of(l.step, l.noise), l.steps, clip_of(l.clip)),
        Some(Sampler::Mala { step, steps }) => (true, *step, (2.0 * step).sqrt(), *steps, clip_of(None)),
        Some(Sampler::Hmc { step, leapfrog, steps }) => {
            return Kernel::Hmc { step: *step, leapfrog: *leapfrog, steps: *steps, bounds };
        }
        _ => (false, step_default, noise_of(step_default, None), base.steps, clip_of(None)),
    };
    Kernel::Langevin { mala, step, noise, steps, clip, bounds }
}

fn sweep(vars: &[VarPlan]) -> Vec<Vec<String>> {
    let mut blocks: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    let mut rest = Vec::new();
    let mut continuous = Vec::new();
    let mut hamiltonian = Vec::new();
    for v in vars {
        match &v.kernel {
            Kernel::BlockGibbs { block, .. } => blocks.entry(*block).or_default().push(v.name.clone()),
            // One stage per reparameterised variable: it, then its latent.
            Kernel::Reparam { var, latent, .. } if *var == v.name => rest.push(vec![var.clone(), latent.clone()]),
            Kernel::Reparam { .. } => {}
            Kernel::Langevin { .. } => continuous.push(v.name.clone()),
            Kernel::Hmc { .. } => hamiltonian.push(v.name.clone()),
            _ => rest.push(vec![v.name.clone()]),
        }
    }
    let mut out: Vec<Vec<String>> = blocks.into_values().collect();
    out.extend(rest);
    out.extend([continuous, hamiltonian].into_iter().filter(|g| !g.is_empty()));
    out
}

/// Sums out hidden discrete blocks that enter the energy linearly and do not
/// touch one another, giving the free energy of what is left.
fn sum_out_latents(graph: &FactorGraph, ir: &mut Ir, total: Id) -> (Option<Marginal>, Vec<(String, String)>) {
    let model = &graph.model;
    let mut chosen: Vec<String> = Vec::new();
    let mut kept = Vec::new();
    for v in model.variables.iter().filter(|v| v.role == Role::Hidden) {
        let why = if !v.domain.is_discrete() {
            Some("it is continuous; only discrete latents have closed-form sums".to_string())
        } else if graph.total_degree(&v.name) > Degree::Linear {
            Some(format!("the energy is not linear in {}", v.name))
        } else {
            chosen
                .iter()
                .find(|c| graph.neighbours(&v.name).contains(*c))
                .map(|other| format!("it is coupled to {other}, which is summed out"))
        };
        match why {
            Some(w) => kept.push((v.name.clone(), w)),
            None => chosen.push(v.name.clone()),
        }
    }
    if chosen.is_empty() {
        return (None, kept);
    }
    let mut f = total;
    let mut rules = Vec::new();
    for name in &chosen {
        // Cannot fire: `name` was taken from the model's own variables.
        let v = model.variable(name).expect("chosen from the model");
        let (reduced, rule) = sum_out(ir, f, v);
        f = reduced;
        rules.push(rule);
    }
    let over: Vec<String> =
        model.variables.iter().filter(|v| !chosen.contains(&v.name)).map(|v| v.name.clone()).collect();
    rules.dedup();
    let marginal = Marginal {
        var: chosen.join(", "),
        summed: chosen.clone(),
        rule: rules.join(", "),
        free_energy: format!("F({}) = {}", over.join(", "), ir.show(f)),
        over,
    };
    (Some(marginal), kept)
}

/// `E = E0 + a · x` summed over the values of `x`: E0 - Σ softplus(-a) for
/// binary units, E0 - Σ log 2cosh(a) for spins, E0 - logsumexp(-a) for one-hot.
pub fn sum_out(ir: &mut Ir, energy: Id, v: &crate::analysis::program::Variable) -> (Id, &'static str) {
    let Some(a) = ir.grad(energy, &v.name) else { return (energy, "constant") };
    let zeros = ir.zeros(&v.shape);
    let e0 = ir.substitute(energy, &v.name, zeros);
    let minus_a = ir.neg(a);
    let (log_z, rule) = match v.domain {
        Domain::Binary => {
            let sp = ir.map(Unary::Softplus, minus_a);
            (ir.sum(sp), "softplus")
        }
        Domain::Spin => {
            let lc = ir.map(Unary::Log2Cosh, a);
            (ir.sum(lc), "log 2cosh")
        }
        _ if v.shape.len() >= 2 => {
            let rows = ir.logsumexp_last(minus_a);
            (ir.sum(rows), "logsumexp")
        }
        _ => (ir.logsumexp(minus_a), "logsumexp"),
    };
    (ir.sub(e0, log_z), rule)
}

/// A visible categorical label entering the energy linearly can be summed out
/// for the marginal energy of the other visibles (JEM's `-logsumexp f(x)`).
fn label_marginal(graph: &FactorGraph, ir: &mut Ir, total: Id) -> Option<Marginal> {
    let model = &graph.model;
    let label = model.variables.iter().find(|v| {
        v.role == Role::Visible
            && matches!(v.domain, Domain::Categorical { .. })
            && graph.total_degree(&v.name) <= Degree::Linear
    })?;
    if !model.variables.iter().any(|v| v.role == Role::Visible && !v.domain.is_discrete()) {
        return None;
    }
    let (f, rule) = sum_out(ir, total, label);
    let over: Vec<String> = model.variables.iter().filter(|v| v.name != label.name).map(|v| v.name.clone()).collect();
    Some(Marginal {
        var: label.name.clone(),
        summed: vec![label.name.clone()],
        rule: rule.to_string(),
        free_energy: format!("F({}) = {}", over.join(", "), ir.show(f)),
        over,
    })
}

fn check_objective(
    graph: &FactorGraph,
    train: &Train,
    kept: &[(String, String)],
    label: &Option<Marginal>,
) -> Vec<PlanError> {
    let model = &graph.model;
    let o = &train.objective;
    let name = o.name.clone();
    let mut out = Vec::new();
    let visible = || model.variables.iter().filter(|v| v.role == Role::Visible);
    if let Some(spec) = &train.outliers
        && name != "classify"
    {
        out.push(PlanError::OutliersNeedClassify { span: spec.span, objective: name.clone() });
    }
    match name.as_str() {
        "sm" | "dsm" | "ssm" | "nce" | "cnce" | "lsd" => {
            for v in visible().filter(|v| v.domain.is_discrete()) {
                out.push(PlanError::NeedsContinuous {
                    objective: name.clone(),
                    span: o.span,
                    var: v.name.clone(),
                    var_span: v.span,
                    type_text: type_text(v),
                });
            }
            for (var, why) in kept {
                let span = model.variable(var).map_or(o.span, |v| v.span);
                out.push(PlanError::NeedsFreeEnergy {
                    objective: name.clone(),
                    span: o.span,
                    var: var.clone(),
                    var_span: span,
                    why: why.clone(),
                });
            }
            if matches!(name.as_str(), "sm" | "dsm" | "ssm" | "lsd") {
                for v in visible() {
                    if let Domain::Real { bounds: Some(bounds) } = v.domain {
                        out.push(PlanError::ScoreMatchingBounded {
                            objective: name.clone(),
                            span: o.span,
                            var: v.name.clone(),
                            var_span: v.span,
                            bounds,
                        });
                    }
                }
            }
            if let Objective::Lsd { critic, .. } = &train.options.objective {
                out.extend(check_critic(model, critic, o.span));
            }
            if name == "sm" {
                let dims: usize = visible().map(|v| v.shape.iter().product::<usize>()).sum();
                if dims > SM_DIMENSION_LIMIT {
                    out.push(PlanError::ScoreMatchingDimension { span: o.span, dims });
                }
            }
        }
        "elbo" => {
            if let Objective::Elbo { encoder, .. } = &train.options.objective {
                out.extend(check_elbo(model, encoder, o.span));
            }
        }
        "jem" if label.is_none() => {
            if visible().any(|v| matches!(v.domain, Domain::Categorical { .. }))
                && visible().any(|v| !v.domain.is_discrete())
            {
                // Cannot fire: the `any` in the condition above found one.
                let v = visible().find(|v| matches!(v.domain, Domain::Categorical { .. })).expect("checked");
                out.push(PlanError::NeedsFreeEnergy {
                    objective: name,
                    span: o.span,
                    var: v.name.clone(),
                    var_span: v.span,
                    why: format!("the energy is not linear in {}", v.name),
                });
            } else if visible().any(|v| matches!(v.domain, Domain::Categorical { .. })) {
                out.push(PlanError::JemNeedsContinuous { span: o.span });
            } else {
                out.push(PlanError::JemNeedsLabel { span: o.span });
            }
        }
        "classify" => {
            if label.is_none() {
                let categorical = visible().find(|v| matches!(v.domain, Domain::Categorical { .. }));
                let why = match categorical {
                    None => "the model has no visible `categorical` variable".to_string(),
                    Some(_) if !visible().any(|v| !v.domain.is_discrete()) => {
                        "the model has no visible `real` input besides the label".to_string()
                    }
                    Some(v) => format!("the energy is not linear in `{}`", v.name),
                };
                out.push(PlanError::ClassifyNeedsLabel { span: o.span, why });
            }
            if train.outliers.is_none()
                && let Some(option) = ["m_in", "m_out", "weight"].into_iter().find(|k| o.options.contains_key(*k))
            {
                out.push(PlanError::MarginsNeedOutliers { span: o.span, option: option.to_string() });
            }
        }
        "pl" => {
            for v in model.variables.iter() {
                let why = if v.role == Role::Hidden {
                    Some(format!("{} is hidden", v.name))
                } else if !v.domain.is_discrete() {
                    Some(format!("{} is continuous", v.name))
                } else {
                    None
                };
                if let Some(why) = why {
                    out.push(PlanError::PlNeedsFullyVisible {
                        span: o.span,
                        var: v.name.clone(),
                        var_span: v.span,
                        why,
                    });
                }
            }
        }
        _ => {}
    }
    out
}

/// `lsd`'s critic maps the one visible variable, a vector `real[d]`, to `R^d`.
fn check_critic(model: &crate::analysis::program::Model, critic: &str, span: Span) -> Option<PlanError> {
    // Cannot fire: the checker refuses a critic the model does not declare.
    let net = model.nets.iter().find(|n| n.name == critic)?;
    let visible: Vec<_> = model.variables.iter().filter(|v| v.role == Role::Visible).collect();
    let (first, last) = (net.layers[0], net.layers[net.layers.len() - 1]);
    let outputs = if last == 1 { "output" } else { "outputs" };
    let found = match net.conv {
        Some(_) => format!("a convnet from {first} channels to {last} {outputs}"),
        None => format!("a net from {first} inputs to {last} {outputs}"),
    };
    let problem = |expected: String, found: String| PlanError::CriticShape {
        span,
        critic: critic.to_string(),
        critic_span: net.span,
        expected,
        found,
    };
    let mut in_energy = false;
    for e in &model.energies {
        e.expr.walk(&mut |t| {
            in_energy |= matches!(&t.kind, crate::analysis::program::TExprKind::Net { net, .. } if net == critic)
        });
    }
    if in_energy {
        // The critic ascends what the energy descends: one net cannot be both.
        return Some(problem("a net no energy term calls".to_string(), "called by an energy term".to_string()));
    }
    match visible.as_slice() {
        [v] if v.shape.len() == 1 => {
            let d = v.shape[0];
            let fits = net.conv.is_none() && net.layers[0] == d && net.layers[net.layers.len() - 1] == d;
            (!fits)
                .then(|| problem(format!("a `linear` or `mlp` net from {d} to {d}, the size of `{}`", v.name), found))
        }
        _ => Some(problem("one visible variable, a vector `real[d]`, and a net from d to d".to_string(), found)),
    }
}

/// Improved CD's terms differentiate the last Langevin step of the
/// negative samples, so every variable must be visible, continuous and moved
/// by plain Langevin (one step, no accept/reject, which has no gradient).
fn check_improved_cd(model: &crate::analysis::program::Model, train: &Train, variables: &[VarPlan]) -> Vec<PlanError> {
    let on = match &train.options.objective {
        Objective::Pcd(p) => p.kl > 0.0 || p.entropy > 0.0,
        _ => false,
    };
    if !on {
        return Vec::new();
    }
    variables
        .iter()
        .filter_map(|v| {
            let why = if v.role == Role::Hidden {
                format!("{} is hidden", v.name)
            } else {
                match v.kernel {
                    Kernel::Langevin { mala: false, .. } => return None,
                    Kernel::Langevin { mala: true, .. } => format!("{} is sampled by MALA", v.name),
                    Kernel::Reparam { .. } => format!("{} is sampled by `reparam`", v.name),
                    _ => format!("{} is discrete", v.name),
                }
            };
            let var_span = model.variable(&v.name).map_or(train.objective.span, |d| d.span);
            Some(PlanError::ImprovedCdNeedsLangevin { span: train.objective.span, var: v.name.clone(), var_span, why })
        })
        .collect()
}

/// `elbo`'s model: one visible variable, one unbounded real latent `z`, and
/// an encoder no energy term calls, from the visible variable (as a call
/// `encoder(x)` would take it) to `2·|z|` outputs.
fn check_elbo(model: &crate::analysis::program::Model, encoder: &str, span: Span) -> Option<PlanError> {
    let variables = |why: String, var_span: Option<Span>| Some(PlanError::ElboVariables { span, why, var_span });
    let names =
        |vs: &[&crate::analysis::program::Variable]| vs.iter().map(|v| v.name.as_str()).collect::<Vec<_>>().join(", ");
    let visible: Vec<_> = model.variables.iter().filter(|v| v.role == Role::Visible).collect();
    let hidden: Vec<_> = model.variables.iter().filter(|v| v.role == Role::Hidden).collect();
    let z = match hidden.as_slice() {
        [] => return variables("the model has no hidden variable".to_string(), None),
        [z] => *z,
        more => {
            return variables(
                format!("the model has {} hidden variables ({})", more.len(), names(more)),
                Some(more[1].span),
            );
        }
    };
    match z.domain {
        Domain::Real { bounds: None } => {}
        Domain::Real { bounds: Some((lo, hi)) } => {
            return variables(format!("the latent `{}` is bounded to [{lo}, {hi}]", z.name), Some(z.span));
        }
        _ => return variables(format!("the latent `{}` is {}", z.name, type_text(z)), Some(z.span)),
    }
    let [x] = visible.as_slice() else {
        return variables(format!("the model has {} visible variables ({})", visible.len(), names(&visible)), None);
    };
    // Cannot fire: the checker refuses an encoder the model does not declare.
    let net = model.nets.iter().find(|n| n.name == encoder)?;
    let problem = |expected: String, found: String| {
        Some(PlanError::EncoderShape { span, encoder: encoder.to_string(), encoder_span: net.span, expected, found })
    };
    let mut in_energy = false;
    for e in &model.energies {
        e.expr.walk(&mut |t| {
            in_energy |= matches!(&t.kind, crate::analysis::program::TExprKind::Net { net, .. } if net == encoder)
        });
    }
    if in_energy {
        // The energy is read as -log p(x, z): the posterior's net is no part of it.
        return problem("a net no energy term calls".to_string(), "called by an energy term".to_string());
    }
    let (first, last) = (net.layers[0], net.layers[net.layers.len() - 1]);
    let outputs = if last == 1 { "output" } else { "outputs" };
    let (takes_x, from, found) = match net.conv {
        Some(_) => (
            x.shape.len() == 3 && x.shape[0] == first,
            format!("from `{}` ({} channels)", x.name, x.shape.first().copied().unwrap_or(0)),
            format!("a convnet from {first} channels to {last} {outputs}"),
        ),
        None => (
            x.shape == [first] || (first == 1 && x.shape.is_empty()),
            format!("from `{}` ({} inputs)", x.name, x.shape.iter().product::<usize>()),
            format!("a net from {first} inputs to {last} {outputs}"),
        ),
    };
    let d: usize = z.shape.iter().product();
    (!takes_x || last != 2 * d).then_some(())?;
    problem(
        format!(
            "a net {from} to {} outputs, the mean and log standard deviation of each of `{}`'s {d} units",
            2 * d,
            z.name
        ),
        found,
    )
}

/// The objective as a call with the options that apply: Langevin's only
/// when some variable is sampled by Langevin dynamics.
fn objective_text(
    o: &Call,
    summed: &Option<Marginal>,
    label: &Option<Marginal>,
    langevin: bool,
    outliers: bool,
) -> String {
    let opts: Vec<String> = o
        .options
        .iter()
        .filter(|(k, _)| langevin || !crate::analysis::schema::LANGEVIN_OPTIONS.contains(&k.as_str()))
        .filter(|(k, v)| {
            !crate::analysis::schema::IMPROVED_CD_OPTIONS.contains(&k.as_str()) || v.as_f64().is_some_and(|x| x > 0.0)
        })
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    let call = format!("{}({})", o.name, opts.join(", "));
    let positive = match summed {
        Some(m) => format!("positive phase on the free energy F({}), {} summed out", m.over.join(", "), m.var),
        None => "positive phase on the energy with latents sampled".to_string(),
    };
    let how = match o.name.as_str() {
        "cd" => format!("contrastive divergence, chains restart at the data; {positive}"),
        "pcd" if improved_cd(o) => {
            let terms: Vec<&str> = [("kl", "the KL term"), ("entropy", "the nearest-neighbour entropy of the samples")]
                .into_iter()
                .filter_map(|(k, what)| improved_on(o, k).then_some(what))
                .collect();
            format!(
                "persistent chains; {positive}; improved CD: {} differentiated through the last Langevin step",
                terms.join(" and ")
            )
        }
        "pcd" => format!("persistent chains; {positive}"),
        "pl" => "exact pseudo-likelihood over the visible units".to_string(),
        "sm" => "exact score matching: sum_i 0.5 (dE/dx_i)^2 - d2E/dx_i^2".to_string(),
        "dsm" => "denoising score matching on x + sigma z".to_string(),
        "ssm" => "sliced score matching with random projections".to_string(),
        "nce" => "noise-contrastive estimation with a learned log-normaliser".to_string(),
        "cnce" => "conditional NCE: softplus(E(x) - E(x'))".to_string(),
        "lsd" => format!(
            "learned Stein discrepancy: the critic {} ascends E[s(x).f(x) + tr df/dx] - penalty E[|f(x)|^2], the energy descends it, s = -dE/dx",
            o.options.get("critic").map_or(String::new(), ToString::to_string)
        ),
        "elbo" => format!(
            "evidence lower bound: z = mu(x) + exp(log_sd(x)) * eps with mu, log_sd the halves of {}(x); loss E(x, z) - sum(log_sd) - (d/2)(1 + log 2 pi), the energy read as -log p(x, z)",
            o.options.get("encoder").map_or(String::new(), ToString::to_string)
        ),
        "classify" => match label {
            Some(m) => format!(
                "cross-entropy of p({} | rest) alone; OOD score {}{}",
                m.var,
                m.free_energy,
                if outliers { "; energy-bounded term on the outlier rows" } else { "" }
            ),
            None => "cross-entropy".to_string(),
        },
        _ => match label {
            Some(m) => format!("cross-entropy of p({} | rest) plus PCD on {}", m.var, m.free_energy),
            None => "cross-entropy plus PCD".to_string(),
        },
    };
    format!("{call}: {how}")
}

/// Whether a `pcd` call turns on an improved-CD term.
fn improved_cd(o: &Call) -> bool {
    crate::analysis::schema::IMPROVED_CD_OPTIONS.iter().any(|k| improved_on(o, k))
}

/// Whether improved CD's term `k` (`kl` or `entropy`) is on: weighed above 0.
fn improved_on(o: &Call, k: &str) -> bool {
    o.options.get(k).and_then(crate::analysis::schema::Value::as_f64).is_some_and(|x| x > 0.0)
}

impl Plan {
    /// Colour classes of the Gibbs-sampled variables, for drawing.
    pub fn colour_classes(&self) -> BTreeMap<String, ColourClass> {
        self.variables
            .iter()
            .filter_map(|v| match v.kernel {
                Kernel::BlockGibbs { block, .. } => Some((v.name.clone(), ColourClass::Block(block))),
                Kernel::ChromaticGibbs { colours, .. } => Some((v.name.clone(), ColourClass::Units(colours))),
                _ => None,
            })
            .collect()
    }

    /// The plan as `ebmc plan` prints it.
    pub fn to_text(&self) -> String {
        let mut out = format!("plan for model {}\n", self.model);
        for v in &self.variables {
            let role = if v.role == Role::Visible { "visible" } else { "hidden" };
            let _ = writeln!(out, "  {} : {} ({role})", v.name, v.type_text);
            let kernel = match &v.kernel {
                Kernel::BlockGibbs { block, blocks } => format!("block Gibbs, block {} of {blocks}", block + 1),
                Kernel::ChromaticGibbs { colours, .. } => format!("chromatic Gibbs, {colours} colours"),
                Kernel::SequentialGibbs => "sequential Gibbs, one unit at a time".to_string(),
                Kernel::GaussianGibbs { bounds: None, .. } => "exact Gaussian Gibbs".to_string(),
                Kernel::GaussianGibbs { bounds: Some(_), .. } => "exact truncated-Gaussian Gibbs".to_string(),
                Kernel::FullGaussianGibbs { .. } => "exact Gaussian Gibbs, full precision".to_string(),
                Kernel::Langevin { mala, step, noise, steps, clip, .. } => {
                    let name = if *mala { "MALA" } else { "Langevin" };
                    let clip = clip.map(|c| format!(", gradient clipped at {c}")).unwrap_or_default();
                    format!("{name}, step {step}, noise {noise:.4}, {steps} step(s) per sweep{clip}")
                }
                Kernel::Hmc { step, leapfrog, steps, .. } => {
                    format!("HMC, {leapfrog} leapfrog steps of {step}, {steps} trajectory(ies) per sweep")
                }
                Kernel::Reparam { var, latent, step, noise, steps, clip, .. } => {
                    let clip = clip.map(|c| format!(", gradient clipped at {c}")).unwrap_or_default();
                    format!(
                        "Langevin in ({latent}, ε) with {var} = mean + scale ⊙ ε, step {step}, noise {noise:.4}, {steps} step(s) per sweep{clip}"
                    )
                }
            };
            // `gibbs` takes no options: on a discrete variable it only confirms
            // Gibbs, and which Gibbs kernel runs stays the planner's choice.
            let by = match (&v.kernel, v.overridden) {
                (_, false) => "",
                (
                    Kernel::Langevin { .. }
                    | Kernel::GaussianGibbs { .. }
                    | Kernel::FullGaussianGibbs { .. }
                    | Kernel::Hmc { .. }
                    | Kernel::Reparam { .. },
                    true,
                ) => ", as the sample block asks",
                (_, true) => " (the sample block asks for `gibbs`; the planner picks the blocking)",
            };
            let _ = writeln!(out, "    {kernel}{by}: {}", v.reason);
            if let Some(c) = &v.conditional {
                let _ = writeln!(out, "    {c}");
            }
        }
        let sweep: Vec<String> = self.sweep.iter().map(|g| format!("[{}]", g.join(", "))).collect();
        let _ = writeln!(out, "  sweep: {}", sweep.join(" then "));
        match &self.temperature {
            Some(Temperature::Ladder { temperatures }) => {
                let ts: Vec<String> = temperatures.iter().map(|t| format!("{t:.3}")).collect();
                let _ = writeln!(
                    out,
                    "  parallel tempering: {} replicas at T = {}; adjacent replicas swap after each sweep, samples from T = 1",
                    temperatures.len(),
                    ts.join(", ")
                );
            }
            Some(Temperature::Anneal { beta0, geometric, sweeps }) => {
                let ramp = if *geometric { "geometrically" } else { "linearly" };
                let _ = writeln!(out, "  annealed: β rises {ramp} from {beta0} to 1 over the first {sweeps} sweeps");
            }
            None => {}
        }
        if let Some(m) = &self.summed_out {
            let _ = writeln!(out, "  {} summed out ({}): {}", m.var, m.rule, m.free_energy);
        }
        for (v, why) in &self.kept {
            let _ = writeln!(out, "  {v} stays sampled: {why}");
        }
        if let Some(m) = &self.label_marginal {
            let _ = writeln!(out, "  {} summed out for the marginal ({}): {}", m.var, m.rule, m.free_energy);
        }
        if let Some(o) = &self.objective {
            let _ = writeln!(out, "  objective {o}");
        }
        if let Some(s) = &self.staged {
            let list = |names: &[String]| names.join(", ");
            if let Some(init) = &s.init {
                let _ = writeln!(
                    out,
                    "  init from {init:?}: every parameter it holds; the others from their initialisers (a resumed run from its own checkpoint)"
                );
            }
            if !s.frozen.is_empty() {
                let _ = writeln!(out, "  frozen (no gradient, no optimiser state): {}", list(&s.frozen));
            }
            let _ = writeln!(out, "  trained: {}", list(&s.trained));
        }
        if let Some(s) = &self.short_run {
            let _ = writeln!(out, "  {}", crate::messages::short_run_note(s.sweeps, s.reinit));
        }
        out
    }
}
