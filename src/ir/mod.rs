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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Id(pub usize);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Unary {
    Exp,
    Log,
    Softplus,
    Sigmoid,
    Tanh,
    Relu,
    Swish,
    Abs,
    Sqrt,
    Square,
    /// log(2 cosh x): the spin partition function of one unit.
    Log2Cosh,
    /// 1 where x > 0, else 0 (the derivative of relu).
    Step,
    Sign,
}

impl Unary {
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
    Var(String),
    Param(String),
    Const(String),
    Neg(Id),
    Add(Id, Id),
    Sub(Id, Id),
    Mul(Id, Id),
    Div(Id, Id),
    /// Contracts the last axis of the left with the first of the right.
    MatMul(Id, Id),
    /// Outer product of two vectors.
    Outer(Id, Id),
    Transpose(Id),
    /// Elementwise power with a scalar exponent.
    Pow(Id, Id),
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
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Node {
    pub op: Op,
    pub shape: Shape,
}

/// A learned tensor of the lowered model, including the layers of nets.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParamSpec {
    pub name: String,
    pub shape: Shape,
    pub init: Init,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Ir {
    pub nodes: Vec<Node>,
    #[serde(skip)]
    dedup: HashMap<Node, Id>,
    /// Constant matrices known to be symmetric (graph adjacencies).
    pub symmetric: BTreeSet<String>,
    pub nets: BTreeMap<String, Net>,
}

/// A model lowered to IR: one root per energy term plus their sum.
#[derive(Debug, Clone, Serialize)]
pub struct Lowered {
    pub ir: Ir,
    pub energies: Vec<(String, Id)>,
    pub total: Id,
    pub params: Vec<ParamSpec>,
}

impl Ir {
    pub fn node(&self, id: Id) -> &Node {
        &self.nodes[id.0]
    }

    pub fn shape(&self, id: Id) -> &Shape {
        &self.nodes[id.0].shape
    }
}
