//! Stage: checked program → expression IR (`program_to_ir`). The IR is a
//! hash-consed DAG of shaped ops: building the same op twice returns the same
//! node, so shared subexpressions are computed once. Constructors simplify as
//! they build (constant folding, zero and one elimination, pulling scalars out
//! of products), so derivatives come out as the ops a person would write.
//!
//! Shapes are per example; the backend adds the batch axis. `grad` is
//! symbolic reverse-mode differentiation with respect to a variable.
//!
//! The rooms: `lower` (checked program → IR), `build` (the simplifying
//! constructors and rewrites), `derive` (gradients and Hessian-vector
//! products), `print` (expressions and listings), `reference` (the f64
//! interpreter the derivatives and the backend are tested against).

mod build;
mod derive;
mod lower;
mod print;
mod reference;

pub use lower::{net_params, param_specs, program_to_ir};
pub use print::SHOW_LIMIT;
pub use reference::{RefValue, top_singular};

use crate::analysis::program::{Init, Net, Shape};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// A node's index in `Ir::nodes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Id(pub usize);

/// An elementwise function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Unary {
    /// `exp(x)`.
    Exp,
    /// Natural logarithm.
    Log,
    /// `log(1 + exp(x))`, computed stably.
    Softplus,
    /// `1 / (1 + exp(-x))`.
    Sigmoid,
    /// Hyperbolic tangent.
    Tanh,
    /// `max(x, 0)`.
    Relu,
    /// `x · sigmoid(x)`.
    Swish,
    /// Absolute value.
    Abs,
    /// Square root.
    Sqrt,
    /// `x²`.
    Square,
    /// log(2 cosh x): the spin partition function of one unit.
    Log2Cosh,
    /// 1 where x > 0, else 0 (the derivative of relu).
    Step,
    /// -1, 0 or 1 by the sign of x (the derivative of abs).
    Sign,
}

impl Unary {
    /// The function's name in printed IR.
    pub fn name(self) -> &'static str {
        match self {
            Unary::Exp => "exp",
            Unary::Log => "log",
            Unary::Softplus => "softplus",
            Unary::Sigmoid => "sigmoid",
            Unary::Tanh => "tanh",
            Unary::Relu => "relu",
            Unary::Swish => "swish",
            Unary::Abs => "abs",
            Unary::Sqrt => "sqrt",
            Unary::Square => "square",
            Unary::Log2Cosh => "log2cosh",
            Unary::Step => "step",
            Unary::Sign => "sign",
        }
    }

    /// The function at one point, in f64.
    pub fn apply(self, x: f64) -> f64 {
        match self {
            Unary::Exp => x.exp(),
            Unary::Log => x.ln(),
            Unary::Softplus => x.max(0.0) + (-x.abs()).exp().ln_1p(),
            Unary::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Unary::Tanh => x.tanh(),
            Unary::Relu => x.max(0.0),
            Unary::Swish => x / (1.0 + (-x).exp()),
            Unary::Abs => x.abs(),
            Unary::Sqrt => x.sqrt(),
            Unary::Square => x * x,
            Unary::Log2Cosh => x.abs() + (-2.0 * x.abs()).exp().ln_1p(),
            Unary::Step => f64::from(u8::from(x > 0.0)),
            Unary::Sign => {
                if x > 0.0 {
                    1.0
                } else if x < 0.0 {
                    -1.0
                } else {
                    0.0
                }
            }
        }
    }
}

/// One IR operation. Children are `Id`s of earlier nodes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub enum Op {
    /// A scalar literal, stored as bits so ops can be hashed.
    Num(u64),
    /// A variable, by name.
    Var(String),
    /// A parameter, by name.
    Param(String),
    /// A constant, by name.
    Const(String),
    /// Negation.
    Neg(Id),
    /// Elementwise sum.
    Add(Id, Id),
    /// Elementwise difference.
    Sub(Id, Id),
    /// Elementwise product.
    Mul(Id, Id),
    /// Elementwise quotient.
    Div(Id, Id),
    /// Contracts the last axis of the left with the first of the right.
    MatMul(Id, Id),
    /// Outer product of two vectors.
    Outer(Id, Id),
    /// Matrix transpose.
    Transpose(Id),
    /// Elementwise power with a scalar exponent.
    Pow(Id, Id),
    /// An elementwise function.
    Map(Unary, Id),
    /// Sum of all elements.
    Sum(Id),
    /// log-sum-exp over all elements.
    LogSumExp(Id),
    /// log-sum-exp over the last axis (`[n, K]` → `[n]`).
    LogSumExpLast(Id),
    /// Softmax over all elements.
    Softmax(Id),
    /// Softmax over the last axis.
    SoftmaxLast(Id),
    /// Repeats the child along leading axes up to this node's shape.
    Broadcast(Id),
    /// Sums leading axes away down to this node's shape (the adjoint of Broadcast).
    SumTo(Id),
    /// A net applied to its input; `inline_nets` expands it into layers.
    Net(String, Id),
    /// The spectral norm σ of a matrix (its largest singular value), by
    /// power iteration.
    SpectralNorm(Id),
    /// `u vᵀ` for the matrix's top singular vectors: the derivative of σ.
    /// Held constant when differentiated, as spectral normalisation does.
    SpectralOuter(Id),
    /// 2-D cross-correlation of an image `[C, H, W]` with a kernel
    /// `[O, C, k, k]`: `[O, H', W']`, `H' = (H + 2 pad - k) / stride + 1`,
    /// `out[o,i,j] = Σ_{c,p,q} w[o,c,p,q] · x[c, i·stride + p - pad, j·stride + q - pad]`
    /// (zero outside the image).
    Conv(Id, Id, ConvGeom),
    /// The adjoint of `Conv` in its image: output gradients `[O, H', W']`
    /// and the kernel → `[C, H, W]` (the node's shape).
    ConvInput(Id, Id, ConvGeom),
    /// The adjoint of `Conv` in its kernel: the image `[C, H, W]` and output
    /// gradients `[O, H', W']` → `[O, C, k, k]` (the node's shape), per example.
    ConvKernel(Id, Id, ConvGeom),
    /// Mean over `k`×`k` windows of the last two axes, stride `k`; rows and
    /// columns past the last whole window are dropped.
    AvgPool(Id, usize),
    /// The adjoint of `AvgPool`: each value divided by `k²` over its window,
    /// zero on dropped rows and columns (the node's shape).
    Unpool(Id, usize),
    /// Sums `count` axes from `start` away: `[P.., A.., Q..]` → `[P.., Q..]`.
    SumAxes(Id, usize, usize),
    /// The adjoint of `SumAxes`: repeats the child along `count` axes
    /// inserted at `start` (the node's shape says their sizes).
    BroadcastAxes(Id, usize, usize),
    /// The same elements, row-major, in the node's shape.
    Reshape(Id),
}

/// The stride and zero padding of a convolution (kernels are square; the
/// channels and kernel size come from the operands' shapes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ConvGeom {
    /// Steps between output pixels, in input pixels.
    pub stride: usize,
    /// Zeros added on every side.
    pub pad: usize,
}

impl ConvGeom {
    /// The output side for an input side `n` and kernel side `k`; 0 when the
    /// kernel does not fit.
    pub fn out_side(self, n: usize, k: usize) -> usize {
        (n + 2 * self.pad).checked_sub(k).map_or(0, |r| r / self.stride + 1)
    }
}

/// An IR node: an op and its per-example shape.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Node {
    /// What the node computes.
    pub op: Op,
    /// Its per-example shape.
    pub shape: Shape,
}

/// A learned tensor of the lowered model, including the layers of nets.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParamSpec {
    /// The parameter's name (a net's layers as `f.w0`, `f.b0`, ...).
    pub name: String,
    /// Its shape.
    pub shape: Shape,
    /// How its values are first drawn.
    pub init: Init,
}

/// An expression DAG, hash-consed: each distinct node is stored once.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Ir {
    /// Every node, children before parents; `Id` indexes it.
    pub nodes: Vec<Node>,
    #[serde(skip)]
    dedup: HashMap<Node, Id>,
    /// Constant matrices known to be symmetric (graph adjacencies).
    pub symmetric: BTreeSet<String>,
    /// The nets `Op::Net` nodes name, by name.
    pub nets: BTreeMap<String, Net>,
}

/// A model lowered to IR: one root per energy term plus their sum.
#[derive(Debug, Clone, Serialize)]
pub struct Lowered {
    /// The IR holding every root.
    pub ir: Ir,
    /// Each energy term's name and root.
    pub energies: Vec<(String, Id)>,
    /// The root of the total energy.
    pub total: Id,
    /// Every learned tensor, nets' layers included.
    pub params: Vec<ParamSpec>,
}

impl Ir {
    /// The node `id`.
    pub fn node(&self, id: Id) -> &Node {
        &self.nodes[id.0]
    }

    /// The shape of node `id`.
    pub fn shape(&self, id: Id) -> &Shape {
        &self.nodes[id.0].shape
    }
}
