//! Stage: checked program → expression IR (`program_to_ir`). The IR is a
//! hash-consed DAG of shaped ops: building the same op twice returns the same
//! node, so shared subexpressions are computed once. Constructors simplify as
//! they build (constant folding, zero and one elimination, pulling scalars out
//! of products), so derivatives come out as the ops a person would write.
//!
//! Shapes are per example; the backend adds the batch axis. `grad` is
//! symbolic reverse-mode differentiation with respect to a variable.

use crate::analysis::program::{ConstValue, Func, Init, Model, Net, Shape, TExpr, TExprKind};
use crate::front::ast::BinOp;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write;

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

pub fn program_to_ir(model: &Model) -> Lowered {
    let mut ir = Ir::default();
    for c in &model.consts {
        let square = c.shape.len() == 2 && c.shape[0] == c.shape[1];
        if matches!(c.value, ConstValue::Graph(_)) || (square && matches!(c.value, ConstValue::Fill(_))) {
            ir.symmetric.insert(c.name.clone());
        }
    }
    for n in &model.nets {
        ir.nets.insert(n.name.clone(), n.clone());
    }
    let energies: Vec<(String, Id)> = model.energies.iter().map(|e| (e.name.clone(), ir.lower(&e.expr))).collect();
    let total = energies.iter().skip(1).fold(energies[0].1, |acc, (_, id)| ir.add(acc, *id));
    let mut params: Vec<ParamSpec> = model
        .params
        .iter()
        .map(|p| ParamSpec { name: p.name.clone(), shape: p.shape.clone(), init: p.init.clone() })
        .collect();
    for n in &model.nets {
        params.extend(net_params(n));
    }
    Lowered { ir, energies, total, params }
}

/// The weights of a net: `f.w0 : [in, h1]`, `f.b0 : [h1]`, ... Weights start
/// at normal(0, 1/sqrt(fan_in)), so activations keep their scale; biases at zero.
pub fn net_params(n: &Net) -> Vec<ParamSpec> {
    let mut out = Vec::new();
    for (i, w) in n.layers.windows(2).enumerate() {
        out.push(ParamSpec {
            name: format!("{}.w{i}", n.name),
            shape: vec![w[0], w[1]],
            init: Init::Normal { mean: 0.0, std: 1.0 / (w[0] as f64).sqrt() },
        });
        if n.bias {
            out.push(ParamSpec { name: format!("{}.b{i}", n.name), shape: vec![w[1]], init: Init::Constant(0.0) });
        }
    }
    out
}

fn unary_of(f: Func) -> Unary {
    match f {
        Func::Exp => Unary::Exp,
        Func::Log => Unary::Log,
        Func::Softplus => Unary::Softplus,
        Func::Sigmoid => Unary::Sigmoid,
        Func::Tanh => Unary::Tanh,
        Func::Relu => Unary::Relu,
        Func::Swish => Unary::Swish,
        Func::Abs => Unary::Abs,
        Func::Sqrt => Unary::Sqrt,
        Func::Square => Unary::Square,
        Func::Sum | Func::Mean | Func::Logsumexp => unreachable!("reductions are not elementwise"),
    }
}

fn activation(name: &str) -> Unary {
    match name {
        "relu" => Unary::Relu,
        "tanh" => Unary::Tanh,
        "softplus" => Unary::Softplus,
        "sigmoid" => Unary::Sigmoid,
        _ => Unary::Swish,
    }
}

fn matmul_shape(a: &[usize], b: &[usize]) -> Shape {
    a[..a.len() - 1].iter().chain(&b[1..]).copied().collect()
}

fn broadcast_shape(a: &[usize], b: &[usize]) -> Shape {
    if a.len() >= b.len() { a.to_vec() } else { b.to_vec() }
}

impl Ir {
    pub fn node(&self, id: Id) -> &Node {
        &self.nodes[id.0]
    }

    pub fn shape(&self, id: Id) -> &Shape {
        &self.nodes[id.0].shape
    }

    fn intern(&mut self, op: Op, shape: Shape) -> Id {
        let node = Node { op, shape };
        if let Some(id) = self.dedup.get(&node) {
            return *id;
        }
        let id = Id(self.nodes.len());
        self.nodes.push(node.clone());
        self.dedup.insert(node, id);
        id
    }

    pub fn num(&mut self, x: f64) -> Id {
        // -0.0 and 0.0 are one constant.
        let x = if x == 0.0 { 0.0 } else { x };
        self.intern(Op::Num(x.to_bits()), vec![])
    }

    pub fn num_value(&self, id: Id) -> Option<f64> {
        match self.node(id).op {
            Op::Num(bits) => Some(f64::from_bits(bits)),
            Op::Broadcast(c) => self.num_value(c),
            _ => None,
        }
    }

    pub fn is_zero(&self, id: Id) -> bool {
        self.num_value(id) == Some(0.0)
    }

    pub fn zeros(&mut self, shape: &[usize]) -> Id {
        let z = self.num(0.0);
        self.broadcast(z, shape)
    }

    pub fn var(&mut self, name: &str, shape: &[usize]) -> Id {
        self.intern(Op::Var(name.to_string()), shape.to_vec())
    }

    pub fn param(&mut self, name: &str, shape: &[usize]) -> Id {
        self.intern(Op::Param(name.to_string()), shape.to_vec())
    }

    pub fn constant(&mut self, name: &str, shape: &[usize]) -> Id {
        self.intern(Op::Const(name.to_string()), shape.to_vec())
    }

    /// Splits a numeric coefficient off a product: `c * x` → (c, Some(x)),
    /// `-x` → (-1, Some(x)), a number `c` → (c, None).
    fn coefficient(&mut self, id: Id) -> (f64, Option<Id>) {
        match self.node(id).op {
            Op::Num(bits) => (f64::from_bits(bits), None),
            Op::Neg(x) => {
                let (c, r) = self.coefficient(x);
                (-c, r)
            }
            Op::Mul(a, b) if self.num_value(a).is_some() && self.shape(a).is_empty() => {
                let k = self.num_value(a).unwrap_or(1.0);
                let (c, r) = self.coefficient(b);
                (k * c, r)
            }
            Op::Broadcast(x) => {
                let shape = self.shape(id).clone();
                let (c, r) = self.coefficient(x);
                (c, r.map(|r| self.broadcast(r, &shape)))
            }
            _ => (1.0, Some(id)),
        }
    }

    /// `c * x`, written as `x`, `-x` or `c * x`, broadcast to `shape`.
    fn scaled(&mut self, c: f64, x: Option<Id>, shape: &[usize]) -> Id {
        let value = self.times(c, x);
        self.broadcast(value, shape)
    }

    /// `c * x` in its own shape (`c` alone when `x` is `None`).
    fn times(&mut self, c: f64, x: Option<Id>) -> Id {
        match x {
            None => self.num(c),
            Some(x) if c == 0.0 => {
                let s = self.shape(x).clone();
                self.zeros(&s)
            }
            Some(x) if c == 1.0 => x,
            Some(x) if c == -1.0 => {
                let s = self.shape(x).clone();
                self.intern(Op::Neg(x), s)
            }
            Some(x) => {
                let n = self.num(c);
                let s = self.shape(x).clone();
                self.intern(Op::Mul(n, x), s)
            }
        }
    }

    /// The additive terms of `id` with their numeric coefficients, as the
    /// simplifier sees them: `a - 2 * b` → [(1, a), (-2, b)]; a bare number
    /// is `(c, None)`.
    pub fn signed_terms(&mut self, id: Id) -> Vec<(f64, Option<Id>)> {
        let mut out = Vec::new();
        self.terms(id, 1.0, &mut out);
        out
    }

    /// A sum as signed terms: `a - 2 * b` → [(1, a), (-2, b)]. Iterative:
    /// a sum of many energy terms is a deep left-leaning tree.
    fn terms(&mut self, id: Id, sign: f64, out: &mut Vec<(f64, Option<Id>)>) {
        let mut stack = vec![(id, sign)];
        while let Some((id, sign)) = stack.pop() {
            match self.node(id).op {
                Op::Add(a, b) => stack.extend([(b, sign), (a, sign)]),
                Op::Sub(a, b) => stack.extend([(b, -sign), (a, sign)]),
                Op::Neg(x) => stack.push((x, -sign)),
                Op::Mul(a, b) if self.num_value(a).is_some() && self.shape(a).is_empty() => {
                    let c = self.num_value(a).unwrap_or(1.0);
                    stack.push((b, sign * c));
                }
                _ => {
                    let (c, r) = self.coefficient(id);
                    out.push((sign * c, r));
                }
            }
        }
    }

    /// Rebuilds a sum from terms, merging like terms and moving signs out:
    /// `-x + -y` is `-(x + y)`, `x + -y` is `x - y`.
    fn sum_of_terms(&mut self, terms: Vec<(f64, Option<Id>)>, shape: &[usize]) -> Id {
        let mut merged: Vec<(f64, Option<Id>)> = Vec::new();
        let mut index: HashMap<Option<Id>, usize> = HashMap::new();
        for (c, r) in terms {
            match index.get(&r) {
                Some(&i) => merged[i].0 += c,
                None => {
                    index.insert(r, merged.len());
                    merged.push((c, r));
                }
            }
        }
        merged.retain(|m| m.0 != 0.0);
        if merged.is_empty() {
            return self.zeros(shape);
        }
        let flip = merged.len() > 1 && merged.iter().all(|m| m.0 < 0.0);
        let sign = if flip { -1.0 } else { 1.0 };
        let (c0, r0) = merged[0];
        let mut acc = self.times(sign * c0, r0);
        for &(c, r) in &merged[1..] {
            let c = sign * c;
            let term = self.times(c.abs(), r);
            let s = broadcast_shape(self.shape(acc), self.shape(term));
            acc = if c < 0.0 { self.intern(Op::Sub(acc, term), s) } else { self.intern(Op::Add(acc, term), s) };
        }
        if flip {
            let s = self.shape(acc).clone();
            acc = self.intern(Op::Neg(acc), s);
        }
        self.broadcast(acc, shape)
    }

    pub fn neg(&mut self, a: Id) -> Id {
        let shape = self.shape(a).clone();
        let mut t = Vec::new();
        self.terms(a, -1.0, &mut t);
        self.sum_of_terms(t, &shape)
    }

    pub fn add(&mut self, a: Id, b: Id) -> Id {
        let shape = broadcast_shape(self.shape(a), self.shape(b));
        let mut t = Vec::new();
        self.terms(a, 1.0, &mut t);
        self.terms(b, 1.0, &mut t);
        self.sum_of_terms(t, &shape)
    }

    pub fn sub(&mut self, a: Id, b: Id) -> Id {
        let shape = broadcast_shape(self.shape(a), self.shape(b));
        let mut t = Vec::new();
        self.terms(a, 1.0, &mut t);
        self.terms(b, -1.0, &mut t);
        self.sum_of_terms(t, &shape)
    }

    /// Products broadcast by themselves: an explicit broadcast operand is
    /// unwrapped when the other operand already has the full shape.
    fn unbroadcast(&self, a: Id, b: Id) -> (Id, Id) {
        let shape = broadcast_shape(self.shape(a), self.shape(b));
        let strip = |x: Id, other: Id| match self.node(x).op {
            Op::Broadcast(inner) if *self.shape(other) == shape => inner,
            _ => x,
        };
        (strip(a, b), strip(b, a))
    }

    pub fn mul(&mut self, a: Id, b: Id) -> Id {
        let shape = broadcast_shape(self.shape(a), self.shape(b));
        let (a, b) = self.unbroadcast(a, b);
        if self.is_zero(a) || self.is_zero(b) {
            return self.zeros(&shape);
        }
        let (ca, ra) = self.coefficient(a);
        let (cb, rb) = self.coefficient(b);
        let c = ca * cb;
        let rest = match (ra, rb) {
            (None, None) => None,
            (Some(x), None) | (None, Some(x)) => Some(x),
            (Some(x), Some(y)) => {
                // Keep scalars on the left: `J * (A @ s)`.
                let (x, y) = if self.shape(y).is_empty() && !self.shape(x).is_empty() { (y, x) } else { (x, y) };
                let s = broadcast_shape(self.shape(x), self.shape(y));
                Some(if x == y { self.intern(Op::Map(Unary::Square, x), s) } else { self.intern(Op::Mul(x, y), s) })
            }
        };
        self.scaled(c, rest, &shape)
    }

    pub fn div(&mut self, a: Id, b: Id) -> Id {
        let shape = broadcast_shape(self.shape(a), self.shape(b));
        let (a, b) = self.unbroadcast(a, b);
        if self.is_zero(a) {
            return self.zeros(&shape);
        }
        if let Some(c) = self.num_value(b) {
            let inv = self.num(1.0 / c);
            return self.mul(inv, a);
        }
        self.intern(Op::Div(a, b), shape)
    }

    pub fn matmul(&mut self, a: Id, b: Id) -> Id {
        let shape = matmul_shape(self.shape(a), self.shape(b));
        if self.is_zero(a) || self.is_zero(b) {
            return self.zeros(&shape);
        }
        // A constant-filled operand contracts to a sum, (c 1) @ v = c sum(v):
        // there is no literal for a filled vector to print.
        let (ra, rb) = (self.shape(a).len(), self.shape(b).len());
        let filled = match (self.num_value(a), self.num_value(b)) {
            (Some(c), _) if rb == 1 => Some((c, b)),
            (_, Some(c)) if ra == 1 => Some((c, a)),
            _ => None,
        };
        if let Some((c, v)) = filled {
            let total = self.sum(v);
            let k = self.num(c);
            let scaled = self.mul(k, total);
            return self.broadcast(scaled, &shape);
        }
        // (c 1) @ M = c times the column sums of M.
        if let (Some(c), 1, 2) = (self.num_value(a), ra, rb) {
            let columns = self.sum_to(b, &shape);
            let k = self.num(c);
            return self.mul(k, columns);
        }
        // Scalars and signs come out of products: (c * X) @ Y = c * (X @ Y).
        for (side, other, left) in [(a, b, true), (b, a, false)] {
            let pulled = match self.node(side).op {
                Op::Neg(x) => Some((None, x)),
                Op::Mul(s, x) if self.shape(s).is_empty() => Some((Some(s), x)),
                _ => None,
            };
            if let Some((s, x)) = pulled {
                let inner = if left { self.matmul(x, other) } else { self.matmul(other, x) };
                return match s {
                    Some(s) => self.mul(s, inner),
                    None => self.neg(inner),
                };
            }
        }
        // A vector times a symmetric matrix is written matrix-first: A @ s.
        if self.shape(a).len() == 1 && self.shape(b).len() == 2 && self.is_symmetric(b) {
            return self.intern(Op::MatMul(b, a), shape);
        }
        self.intern(Op::MatMul(a, b), shape)
    }

    fn is_symmetric(&self, id: Id) -> bool {
        match &self.node(id).op {
            Op::Const(name) => self.symmetric.contains(name),
            Op::Mul(s, x) => self.shape(*s).is_empty() && self.is_symmetric(*x),
            Op::Neg(x) => self.is_symmetric(*x),
            _ => false,
        }
    }

    pub fn outer(&mut self, a: Id, b: Id) -> Id {
        let shape = vec![self.shape(a)[0], self.shape(b)[0]];
        if self.is_zero(a) || self.is_zero(b) {
            return self.zeros(&shape);
        }
        // Rows that are all the same are a broadcast: outer(s * 1, v) = s * v per row.
        if let Op::Broadcast(s) = self.node(a).op {
            let row = self.mul(s, b);
            return self.broadcast(row, &shape);
        }
        self.intern(Op::Outer(a, b), shape)
    }

    pub fn transpose(&mut self, a: Id) -> Id {
        let s = self.shape(a).clone();
        let shape = vec![s[1], s[0]];
        if self.is_symmetric(a) {
            return a;
        }
        match self.node(a).op {
            Op::Transpose(x) => x,
            Op::Neg(x) => {
                let t = self.transpose(x);
                self.neg(t)
            }
            Op::Mul(c, x) if self.shape(c).is_empty() => {
                let t = self.transpose(x);
                self.mul(c, t)
            }
            Op::MatMul(x, y) if self.shape(x).len() == 2 && self.shape(y).len() == 2 => {
                let (ty, tx) = (self.transpose(y), self.transpose(x));
                self.matmul(ty, tx)
            }
            _ if self.num_value(a).is_some() => self.broadcast(a, &shape),
            _ => self.intern(Op::Transpose(a), shape),
        }
    }

    pub fn pow(&mut self, a: Id, e: Id) -> Id {
        let shape = self.shape(a).clone();
        match self.num_value(e) {
            Some(0.0) => {
                let one = self.num(1.0);
                self.broadcast(one, &shape)
            }
            Some(1.0) => a,
            Some(2.0) => self.map(Unary::Square, a),
            _ => match (self.num_value(a), self.num_value(e)) {
                (Some(x), Some(y)) => self.num(x.powf(y)),
                _ => self.intern(Op::Pow(a, e), shape),
            },
        }
    }

    pub fn map(&mut self, f: Unary, a: Id) -> Id {
        let shape = self.shape(a).clone();
        if let Some(x) = self.num_value(a) {
            let n = self.num(f.apply(x));
            return self.broadcast(n, &shape);
        }
        // Even functions drop a sign: square(-x) = square(x), log2cosh(-x) = log2cosh(x).
        if let (Unary::Square | Unary::Abs | Unary::Log2Cosh, Op::Neg(x)) = (f, &self.node(a).op) {
            let x = *x;
            return self.map(f, x);
        }
        self.intern(Op::Map(f, a), shape)
    }

    pub fn sum(&mut self, a: Id) -> Id {
        let n: usize = self.shape(a).iter().product();
        if self.shape(a).is_empty() {
            return a;
        }
        match self.node(a).op {
            Op::Broadcast(s) => {
                let n = self.num((n / self.shape(s).iter().product::<usize>()) as f64);
                let inner = self.sum(s);
                self.mul(n, inner)
            }
            Op::Neg(x) => {
                let s = self.sum(x);
                self.neg(s)
            }
            Op::Mul(c, x) if self.num_value(c).is_some() => {
                let s = self.sum(x);
                self.mul(c, s)
            }
            _ => self.intern(Op::Sum(a), vec![]),
        }
    }

    pub fn logsumexp(&mut self, a: Id) -> Id {
        self.intern(Op::LogSumExp(a), vec![])
    }

    pub fn logsumexp_last(&mut self, a: Id) -> Id {
        let s = self.shape(a).clone();
        self.intern(Op::LogSumExpLast(a), s[..s.len() - 1].to_vec())
    }

    pub fn softmax(&mut self, a: Id) -> Id {
        let s = self.shape(a).clone();
        self.intern(Op::Softmax(a), s)
    }

    pub fn softmax_last(&mut self, a: Id) -> Id {
        let s = self.shape(a).clone();
        self.intern(Op::SoftmaxLast(a), s)
    }

    /// Repeats `a` along leading axes to `shape` (trailing axes must match).
    pub fn broadcast(&mut self, a: Id, shape: &[usize]) -> Id {
        if self.shape(a) == shape {
            return a;
        }
        let inner = match self.node(a).op {
            Op::Broadcast(x) => x,
            _ => a,
        };
        self.intern(Op::Broadcast(inner), shape.to_vec())
    }

    /// Sums `a` over leading axes down to `shape` (the adjoint of `broadcast`).
    /// σ(a), the largest singular value of the matrix `a`.
    pub fn spectral_norm(&mut self, a: Id) -> Id {
        self.intern(Op::SpectralNorm(a), vec![])
    }

    /// `u vᵀ` for the top singular vectors of the matrix `a`.
    pub fn spectral_outer(&mut self, a: Id) -> Id {
        let shape = self.shape(a).to_vec();
        self.intern(Op::SpectralOuter(a), shape)
    }

    pub fn sum_to(&mut self, a: Id, shape: &[usize]) -> Id {
        if self.shape(a).as_slice() == shape {
            return a;
        }
        if shape.is_empty() {
            return self.sum(a);
        }
        if let Op::Broadcast(x) = self.node(a).op {
            let from: usize = self.shape(a).iter().product();
            let to: usize = shape.iter().product();
            let inner = self.broadcast(x, shape);
            let n = self.num((from / to) as f64);
            return self.mul(n, inner);
        }
        self.intern(Op::SumTo(a), shape.to_vec())
    }

    pub fn net(&mut self, name: &str, x: Id) -> Id {
        let shape = self.nets[name].output_shape();
        self.intern(Op::Net(name.to_string(), x), shape)
    }

    fn lower(&mut self, e: &TExpr) -> Id {
        match &e.kind {
            TExprKind::Number(x) => self.num(*x),
            TExprKind::Var(n) => self.var(n, &e.shape),
            TExprKind::Param(n) => self.param(n, &e.shape),
            TExprKind::Const(n) => self.constant(n, &e.shape),
            TExprKind::Neg(x) => {
                let x = self.lower(x);
                self.neg(x)
            }
            TExprKind::Transpose(x) => {
                let x = self.lower(x);
                self.transpose(x)
            }
            TExprKind::Binary { op, lhs, rhs } => {
                let (a, b) = (self.lower(lhs), self.lower(rhs));
                match op {
                    BinOp::Add => self.add(a, b),
                    BinOp::Sub => self.sub(a, b),
                    BinOp::Mul => self.mul(a, b),
                    BinOp::Div => self.div(a, b),
                    BinOp::MatMul => self.matmul(a, b),
                    BinOp::Pow => self.pow(a, b),
                }
            }
            TExprKind::Func { func, arg } => {
                let n: usize = arg.shape.iter().product();
                let a = self.lower(arg);
                match func {
                    Func::Sum => self.sum(a),
                    Func::Mean => {
                        let s = self.sum(a);
                        let inv = self.num(1.0 / n as f64);
                        self.mul(inv, s)
                    }
                    Func::Logsumexp => self.logsumexp(a),
                    f => self.map(unary_of(*f), a),
                }
            }
            TExprKind::Net { net, arg } => {
                let a = self.lower(arg);
                self.net(net, a)
            }
        }
    }

    /// Rebuilds the cone of `root` bottom-up through the simplifying
    /// constructors, letting `replace` substitute any node first.
    pub fn rebuild(&mut self, root: Id, replace: &mut dyn FnMut(&mut Ir, Id) -> Option<Id>) -> Id {
        let mut memo: HashMap<Id, Id> = HashMap::new();
        for id in self.cone(root) {
            let new = match replace(self, id) {
                Some(r) => r,
                None => {
                    let m = |x: Id| memo[&x];
                    let node = self.node(id).clone();
                    match node.op {
                        Op::Num(_) | Op::Var(_) | Op::Param(_) | Op::Const(_) => id,
                        Op::Neg(a) => self.neg(m(a)),
                        Op::Add(a, b) => self.add(m(a), m(b)),
                        Op::Sub(a, b) => self.sub(m(a), m(b)),
                        Op::Mul(a, b) => self.mul(m(a), m(b)),
                        Op::Div(a, b) => self.div(m(a), m(b)),
                        Op::MatMul(a, b) => self.matmul(m(a), m(b)),
                        Op::Outer(a, b) => self.outer(m(a), m(b)),
                        Op::Transpose(a) => self.transpose(m(a)),
                        Op::Pow(a, b) => self.pow(m(a), m(b)),
                        Op::Map(f, a) => self.map(f, m(a)),
                        Op::Sum(a) => self.sum(m(a)),
                        Op::LogSumExp(a) => self.logsumexp(m(a)),
                        Op::LogSumExpLast(a) => self.logsumexp_last(m(a)),
                        Op::Softmax(a) => self.softmax(m(a)),
                        Op::SoftmaxLast(a) => self.softmax_last(m(a)),
                        Op::Broadcast(a) => self.broadcast(m(a), &node.shape),
                        Op::SumTo(a) => self.sum_to(m(a), &node.shape),
                        Op::Net(n, a) => self.net(&n, m(a)),
                        Op::SpectralNorm(a) => self.spectral_norm(m(a)),
                        Op::SpectralOuter(a) => self.spectral_outer(m(a)),
                    }
                }
            };
            memo.insert(id, new);
        }
        memo[&root]
    }

    /// The nodes `root` depends on, children before parents.
    pub fn cone(&self, root: Id) -> Vec<Id> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![root];
        while let Some(id) = stack.pop() {
            if seen.insert(id) {
                stack.extend(self.children(id));
            }
        }
        seen.into_iter().collect() // ids are created children-first, so ascending order is topological
    }

    pub fn children(&self, id: Id) -> Vec<Id> {
        match &self.node(id).op {
            Op::Num(_) | Op::Var(_) | Op::Param(_) | Op::Const(_) => vec![],
            Op::Neg(a)
            | Op::Transpose(a)
            | Op::Map(_, a)
            | Op::Sum(a)
            | Op::LogSumExp(a)
            | Op::LogSumExpLast(a)
            | Op::Softmax(a)
            | Op::SoftmaxLast(a)
            | Op::Broadcast(a)
            | Op::SumTo(a)
            | Op::SpectralNorm(a)
            | Op::SpectralOuter(a)
            | Op::Net(_, a) => vec![*a],
            Op::Add(a, b)
            | Op::Sub(a, b)
            | Op::Mul(a, b)
            | Op::Div(a, b)
            | Op::MatMul(a, b)
            | Op::Outer(a, b)
            | Op::Pow(a, b) => vec![*a, *b],
        }
    }

    /// Whether `root` depends on variable `var`.
    pub fn depends_on(&self, root: Id, var: &str) -> bool {
        self.cone(root).iter().any(|id| matches!(&self.node(*id).op, Op::Var(v) if v == var))
    }

    /// Replaces variable `var` by `with` throughout `root`, simplifying.
    pub fn substitute(&mut self, root: Id, var: &str, with: Id) -> Id {
        self.rebuild(root, &mut |ir, id| matches!(&ir.node(id).op, Op::Var(v) if v == var).then_some(with))
    }

    /// Expands every net call in `root` into its layers:
    /// `h = act(x @ w0 + b0)`, ..., `out = h @ wL + bL`.
    pub fn inline_nets(&mut self, root: Id) -> Id {
        self.inline_nets_where(root, None)
    }

    /// `inline_nets`, limited to calls whose input depends on `var` when given.
    fn inline_nets_where(&mut self, root: Id, var: Option<&str>) -> Id {
        self.rebuild(root, &mut |ir, id| match &ir.node(id).op {
            Op::Net(name, x) if var.is_none_or(|v| ir.depends_on(*x, v)) => {
                let (name, x) = (name.clone(), *x);
                Some(ir.expand_net(&name, x))
            }
            _ => None,
        })
    }

    fn expand_net(&mut self, name: &str, x: Id) -> Id {
        let net = self.nets[name].clone();
        let x = self.inline_nets(x);
        let act = activation(&net.activation);
        let layers = net.layers.len() - 1;
        let mut h = x;
        for (i, w) in net.layers.windows(2).enumerate() {
            let weight = self.param(&format!("{name}.w{i}"), &[w[0], w[1]]);
            // A scalar input (width 1) is treated as a length-1 vector.
            if self.shape(h).is_empty() {
                h = self.broadcast(h, &[1]);
            }
            h = self.matmul(h, weight);
            if net.spectral_norm {
                // h @ (W / σ(W)): each layer 1-Lipschitz (Miyato et al., 2018).
                // Dividing the product rather than W keeps the per-example
                // gradient in W an outer product (one GEMM over a batch).
                let sigma = self.spectral_norm(weight);
                h = self.div(h, sigma);
            }
            if net.bias {
                let b = self.param(&format!("{name}.b{i}"), &[w[1]]);
                h = self.add(h, b);
            }
            if i + 1 < layers {
                h = self.map(act, h);
            }
        }
        if net.output_shape().is_empty() { self.sum(h) } else { h }
    }

    /// Reverse-mode symbolic gradient of the scalar `root` with respect to
    /// variable `var`; `None` when `root` does not depend on it.
    pub fn grad(&mut self, root: Id, var: &str) -> Option<Id> {
        let root = self.inline_nets_where(root, Some(var));
        self.grad_of(root, &Op::Var(var.to_string()))
    }

    /// The per-example gradient of the scalar `root` with respect to a
    /// parameter (net weights included, as `f.w0`, `f.b0`, ...).
    pub fn grad_param(&mut self, root: Id, param: &str) -> Option<Id> {
        let root = self.inline_nets(root);
        self.grad_of(root, &Op::Param(param.to_string()))
    }

    fn grad_of(&mut self, root: Id, leaf: &Op) -> Option<Id> {
        let cone = self.cone(root);
        let depends: BTreeSet<Id> = {
            let mut d = BTreeSet::new();
            for &id in &cone {
                if self.node(id).op == *leaf || self.children(id).iter().any(|c| d.contains(c)) {
                    d.insert(id);
                }
            }
            d
        };
        if !depends.contains(&root) {
            return None;
        }
        let mut adj: HashMap<Id, Id> = HashMap::new();
        let one = self.num(1.0);
        adj.insert(root, one);
        let mut result = None;
        for &id in cone.iter().rev() {
            let Some(&g) = adj.get(&id) else { continue };
            if !depends.contains(&id) {
                continue;
            }
            let node = self.node(id).clone();
            if node.op == *leaf {
                result = Some(g);
                continue;
            }
            let mut push = |ir: &mut Ir, child: Id, contribution: Id| {
                if depends.contains(&child) {
                    let total = match adj.get(&child) {
                        Some(&prev) => ir.add(prev, contribution),
                        None => contribution,
                    };
                    adj.insert(child, total);
                }
            };
            let shape_of = |ir: &Ir, x: Id| ir.shape(x).clone();
            match node.op {
                Op::Num(_) | Op::Var(_) | Op::Param(_) | Op::Const(_) => {}
                Op::Neg(a) => {
                    let c = self.neg(g);
                    push(self, a, c);
                }
                Op::Add(a, b) | Op::Sub(a, b) => {
                    let sa = shape_of(self, a);
                    let ca = self.sum_to(g, &sa);
                    push(self, a, ca);
                    let sb = shape_of(self, b);
                    let gb = if matches!(node.op, Op::Sub(..)) { self.neg(g) } else { g };
                    let cb = self.sum_to(gb, &sb);
                    push(self, b, cb);
                }
                Op::Mul(a, b) => {
                    for (x, other) in [(a, b), (b, a)] {
                        if depends.contains(&x) {
                            let sx = shape_of(self, x);
                            let p = self.mul(g, other);
                            let c = self.sum_to(p, &sx);
                            push(self, x, c);
                        }
                    }
                }
                Op::Div(a, b) => {
                    if depends.contains(&a) {
                        let sa = shape_of(self, a);
                        let p = self.div(g, b);
                        let c = self.sum_to(p, &sa);
                        push(self, a, c);
                    }
                    if depends.contains(&b) {
                        let sb = shape_of(self, b);
                        let q = self.div(id, b);
                        let p = self.mul(g, q);
                        let n = self.neg(p);
                        let c = self.sum_to(n, &sb);
                        push(self, b, c);
                    }
                }
                Op::MatMul(a, b) => {
                    let (ra, rb) = (self.shape(a).len(), self.shape(b).len());
                    if depends.contains(&a) {
                        let c = match (ra, rb) {
                            (1, 1) => self.mul(g, b),
                            (1, 2) => self.matmul(b, g),
                            (2, 1) => self.outer(g, b),
                            _ => {
                                let bt = self.transpose(b);
                                self.matmul(g, bt)
                            }
                        };
                        push(self, a, c);
                    }
                    if depends.contains(&b) {
                        let c = match (ra, rb) {
                            (1, 1) => self.mul(g, a),
                            (1, 2) => self.outer(a, g),
                            (2, 1) => self.matmul(g, a),
                            _ => {
                                let at = self.transpose(a);
                                self.matmul(at, g)
                            }
                        };
                        push(self, b, c);
                    }
                }
                Op::Outer(a, b) => {
                    let ca = self.matmul(g, b);
                    push(self, a, ca);
                    let cb = self.matmul(a, g);
                    push(self, b, cb);
                }
                Op::Transpose(a) => {
                    let c = self.transpose(g);
                    push(self, a, c);
                }
                Op::Pow(a, e) => {
                    if depends.contains(&a) {
                        let one = self.num(1.0);
                        let em1 = self.sub(e, one);
                        let p = self.pow(a, em1);
                        let d = self.mul(e, p);
                        let c = self.mul(g, d);
                        push(self, a, c);
                    }
                    if depends.contains(&e) {
                        let l = self.map(Unary::Log, a);
                        let d = self.mul(id, l);
                        let p = self.mul(g, d);
                        let c = self.sum(p);
                        push(self, e, c);
                    }
                }
                Op::Map(f, a) => {
                    let d = self.derivative(f, a, id);
                    if let Some(d) = d {
                        let c = self.mul(g, d);
                        push(self, a, c);
                    }
                }
                Op::Sum(a) => {
                    let sa = shape_of(self, a);
                    let c = self.broadcast(g, &sa);
                    push(self, a, c);
                }
                Op::LogSumExp(a) => {
                    let s = self.softmax(a);
                    let c = self.mul(g, s);
                    push(self, a, c);
                }
                Op::LogSumExpLast(a) => {
                    let k = *self.shape(a).last().expect("matrix");
                    let s = self.softmax_last(a);
                    let one = self.num(1.0);
                    let ones = self.broadcast(one, &[k]);
                    let rows = self.outer(g, ones);
                    let c = self.mul(rows, s);
                    push(self, a, c);
                }
                Op::Broadcast(a) => {
                    let sa = shape_of(self, a);
                    let c = self.sum_to(g, &sa);
                    push(self, a, c);
                }
                Op::SumTo(a) => {
                    let sa = shape_of(self, a);
                    let c = self.broadcast(g, &sa);
                    push(self, a, c);
                }
                Op::SpectralNorm(a) => {
                    // σ = uᵀ W v with u, v held fixed: dσ/dW = u vᵀ.
                    let d = self.spectral_outer(a);
                    let c = self.mul(g, d);
                    push(self, a, c);
                }
                Op::SpectralOuter(_) => {}
                Op::Softmax(a) => {
                    // d softmax: s * (g - sum(g * s))
                    let gs = self.mul(g, id);
                    let t = self.sum(gs);
                    let diff = self.sub(g, t);
                    let c = self.mul(id, diff);
                    push(self, a, c);
                }
                Op::SoftmaxLast(a) => {
                    let k = *self.shape(a).last().expect("matrix");
                    let gs = self.mul(g, id);
                    let one = self.num(1.0);
                    let ones = self.broadcast(one, &[k]);
                    let t = self.matmul(gs, ones);
                    let rows = self.outer(t, ones);
                    let diff = self.sub(g, rows);
                    let c = self.mul(id, diff);
                    push(self, a, c);
                }
                Op::Net(..) => unreachable!("nets on the path to the variable are inlined first"),
            }
        }
        result
    }

    /// The directional second derivative `H v` of the scalar `root` in
    /// variable `var`, along the direction held in variable `direction`
    /// (same shape): the gradient of `∇E · v`. Score matching needs
    /// `vᵀ H v` (sliced) or the diagonal of `H` (exact, one direction per
    /// coordinate).
    pub fn hessian_vector(&mut self, root: Id, var: &str, direction: &str) -> Option<Id> {
        let g = self.grad(root, var)?;
        let shape = self.shape(g).clone();
        let v = self.var(direction, &shape);
        let gv = self.mul(g, v);
        let dot = self.sum(gv);
        self.grad(dot, var)
    }

    /// f'(a) for `node = f(a)`; `None` where it is zero almost everywhere.
    fn derivative(&mut self, f: Unary, a: Id, node: Id) -> Option<Id> {
        Some(match f {
            Unary::Exp => node,
            Unary::Log => {
                let one = self.num(1.0);
                self.div(one, a)
            }
            Unary::Softplus => self.map(Unary::Sigmoid, a),
            Unary::Sigmoid => {
                let one = self.num(1.0);
                let om = self.sub(one, node);
                self.mul(node, om)
            }
            Unary::Tanh => {
                let one = self.num(1.0);
                let sq = self.map(Unary::Square, node);
                self.sub(one, sq)
            }
            Unary::Relu => self.map(Unary::Step, a),
            Unary::Swish => {
                // d/dx x σ(x) = σ(x) (1 + x (1 - σ(x)))
                let s = self.map(Unary::Sigmoid, a);
                let one = self.num(1.0);
                let om = self.sub(one, s);
                let xo = self.mul(a, om);
                let inner = self.add(one, xo);
                self.mul(s, inner)
            }
            Unary::Abs => self.map(Unary::Sign, a),
            Unary::Sqrt => {
                let half = self.num(0.5);
                self.div(half, node)
            }
            Unary::Square => {
                let two = self.num(2.0);
                self.mul(two, a)
            }
            Unary::Log2Cosh => self.map(Unary::Tanh, a),
            Unary::Step | Unary::Sign => return None,
        })
    }

    /// Prints `id` as an expression a person reads, with the fewest
    /// parentheses. The DAG is printed as a tree, which can be exponentially
    /// longer than the DAG; past `SHOW_LIMIT` characters it is summarised
    /// (`<N operations, too long to print>`) instead.
    pub fn show(&self, id: Id) -> String {
        self.show_within(id, SHOW_LIMIT)
            .unwrap_or_else(|| format!("<{} operations, too long to print>", self.cone(id).len()))
    }

    /// The printed form of `root` if it fits in `budget` bytes. Iterative, so
    /// deep expressions cannot exhaust the stack, and linear in its output.
    fn show_within(&self, root: Id, budget: usize) -> Option<String> {
        let mut out = String::new();
        let mut stack = vec![Piece::Node(root, 0)];
        while let Some(piece) = stack.pop() {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Name(n) => out.push_str(n),
                Piece::Number(x) => {
                    let _ = write!(out, "{x}");
                }
                Piece::Node(id, min) => {
                    let (pieces, prec) = self.layout(id);
                    let wrap = prec < min;
                    if wrap {
                        stack.push(Piece::Text(")"));
                    }
                    stack.extend(pieces.into_iter().rev());
                    if wrap {
                        stack.push(Piece::Text("("));
                    }
                }
            }
            if out.len() > budget {
                return None;
            }
        }
        Some(out)
    }

    /// How one node prints: its pieces in order (children with the least
    /// precedence they may have unbracketed) and its own precedence.
    fn layout(&self, id: Id) -> (Vec<Piece<'_>>, u8) {
        use Piece::{Node as N, Text as T};
        let call = |name: &'static str, a: Id| (vec![T(name), T("("), N(a, 0), T(")")], 6);
        match &self.node(id).op {
            Op::Num(bits) => {
                let x = f64::from_bits(*bits);
                if x < 0.0 { (vec![T("-"), Piece::Number(-x)], 3) } else { (vec![Piece::Number(x)], 6) }
            }
            Op::Var(n) | Op::Param(n) | Op::Const(n) => (vec![Piece::Name(n)], 6),
            Op::Neg(a) => (vec![T("-"), N(*a, 4)], 3),
            Op::Add(a, b) => (vec![N(*a, 1), T(" + "), N(*b, 2)], 1),
            Op::Sub(a, b) => (vec![N(*a, 1), T(" - "), N(*b, 2)], 1),
            Op::Mul(a, b) => (vec![N(*a, 2), T(" * "), N(*b, 3)], 2),
            Op::Div(a, b) => (vec![N(*a, 2), T(" / "), N(*b, 3)], 2),
            Op::MatMul(a, b) => (vec![N(*a, 2), T(" @ "), N(*b, 3)], 2),
            Op::Pow(a, b) => (vec![N(*a, 5), T("^"), N(*b, 4)], 4),
            Op::Transpose(a) => (vec![N(*a, 6), T(".T")], 5),
            Op::Outer(a, b) => (vec![T("outer("), N(*a, 0), T(", "), N(*b, 0), T(")")], 6),
            Op::Map(f, a) => call(f.name(), *a),
            Op::Sum(a) => call("sum", *a),
            Op::LogSumExp(a) => call("logsumexp", *a),
            Op::LogSumExpLast(a) => call("logsumexp_rows", *a),
            Op::Softmax(a) => call("softmax", *a),
            Op::SoftmaxLast(a) => call("softmax_rows", *a),
            // Broadcasting is implicit in per-example notation.
            Op::Broadcast(a) => self.layout(*a),
            Op::SumTo(a) => call("sum_rows", *a),
            Op::Net(n, a) => (vec![Piece::Name(n), T("("), N(*a, 0), T(")")], 6),
            Op::SpectralNorm(a) => call("spectral_norm", *a),
            Op::SpectralOuter(a) => call("spectral_outer", *a),
        }
    }

    /// One line per node in the cone of `roots`: `%id : shape = op`.
    pub fn listing(&self, roots: &[(String, Id)]) -> String {
        let mut ids = BTreeSet::new();
        for (_, r) in roots {
            ids.extend(self.cone(*r));
        }
        let mut out = String::new();
        for id in ids {
            let node = self.node(id);
            let args: Vec<String> = self.children(id).iter().map(|c| format!("%{}", c.0)).collect();
            let op = match &node.op {
                Op::Num(b) => format!("num {}", f64::from_bits(*b)),
                Op::Var(n) => format!("var {n}"),
                Op::Param(n) => format!("param {n}"),
                Op::Const(n) => format!("const {n}"),
                Op::Map(f, _) => format!("{} {}", f.name(), args.join(" ")),
                Op::Net(n, _) => format!("net {n} {}", args.join(" ")),
                other => format!("{} {}", op_name(other), args.join(" ")),
            };
            let _ = writeln!(out, "%{} : {} = {}", id.0, crate::analysis::program::shape_str(&node.shape), op);
        }
        for (name, r) in roots {
            let _ = writeln!(out, "{name} = %{}", r.0);
        }
        out
    }
}

/// Longest expression `Ir::show` prints in full, in bytes.
pub const SHOW_LIMIT: usize = 10_000;

/// A piece of printed text, or a node still to print with the least
/// precedence it may have without brackets.
enum Piece<'a> {
    Node(Id, u8),
    Text(&'static str),
    Name(&'a str),
    Number(f64),
}

fn op_name(op: &Op) -> &'static str {
    match op {
        Op::Neg(_) => "neg",
        Op::Add(..) => "add",
        Op::Sub(..) => "sub",
        Op::Mul(..) => "mul",
        Op::Div(..) => "div",
        Op::MatMul(..) => "matmul",
        Op::Outer(..) => "outer",
        Op::Transpose(_) => "transpose",
        Op::Pow(..) => "pow",
        Op::Sum(_) => "sum",
        Op::LogSumExp(_) => "logsumexp",
        Op::LogSumExpLast(_) => "logsumexp_rows",
        Op::Softmax(_) => "softmax",
        Op::SoftmaxLast(_) => "softmax_rows",
        Op::Broadcast(_) => "broadcast",
        Op::SumTo(_) => "sum_to",
        Op::SpectralNorm(_) => "spectral_norm",
        Op::SpectralOuter(_) => "spectral_outer",
        _ => "op",
    }
}

/// A per-example value in the reference interpreter: row-major, f64.
#[derive(Debug, Clone, PartialEq)]
pub struct RefValue {
    pub shape: Shape,
    pub data: Vec<f64>,
}

impl Ir {
    /// Evaluates `root` for one example in f64, by the definitions of the ops.
    /// Slow and simple: the oracle that derivatives and the dfdx backend are
    /// tested against. `leaves` holds every variable, parameter and constant.
    pub fn eval_reference(&self, root: Id, leaves: &BTreeMap<String, RefValue>) -> RefValue {
        let mut copy = self.clone();
        let root = copy.inline_nets(root);
        copy.eval_inlined(root, leaves)
    }

    fn eval_inlined(&self, root: Id, leaves: &BTreeMap<String, RefValue>) -> RefValue {
        let mut vals: HashMap<Id, RefValue> = HashMap::new();
        for id in self.cone(root) {
            let node = self.node(id);
            let shape = node.shape.clone();
            let v = |x: &Id| vals[x].clone();
            let data: Vec<f64> = match &node.op {
                Op::Num(b) => vec![f64::from_bits(*b)],
                Op::Var(n) | Op::Param(n) | Op::Const(n) => {
                    leaves.get(n).unwrap_or_else(|| panic!("no value for `{n}`")).data.clone()
                }
                Op::Neg(a) => v(a).data.iter().map(|x| -x).collect(),
                Op::Add(a, b) | Op::Sub(a, b) | Op::Mul(a, b) | Op::Div(a, b) | Op::Pow(a, b) => {
                    let (x, y) = (broadcast_ref(&v(a), &shape), broadcast_ref(&v(b), &shape));
                    x.iter()
                        .zip(&y)
                        .map(|(p, q)| match node.op {
                            Op::Add(..) => p + q,
                            Op::Sub(..) => p - q,
                            Op::Mul(..) => p * q,
                            Op::Div(..) => p / q,
                            _ => p.powf(*q),
                        })
                        .collect()
                }
                Op::MatMul(a, b) => {
                    let (x, y) = (v(a), v(b));
                    let (m, k) = if x.shape.len() == 2 { (x.shape[0], x.shape[1]) } else { (1, x.shape[0]) };
                    let n = if y.shape.len() == 2 { y.shape[1] } else { 1 };
                    let mut out = vec![0.0; m * n];
                    for i in 0..m {
                        for j in 0..n {
                            out[i * n + j] = (0..k).map(|l| x.data[i * k + l] * y.data[l * n + j]).sum();
                        }
                    }
                    out
                }
                Op::Outer(a, b) => {
                    let (x, y) = (v(a), v(b));
                    x.data.iter().flat_map(|p| y.data.iter().map(move |q| p * q)).collect()
                }
                Op::Transpose(a) => {
                    let x = v(a);
                    let (m, n) = (x.shape[0], x.shape[1]);
                    (0..n).flat_map(|j| (0..m).map(move |i| (i, j))).map(|(i, j)| x.data[i * n + j]).collect()
                }
                Op::Map(f, a) => v(a).data.iter().map(|x| f.apply(*x)).collect(),
                Op::Sum(a) => vec![v(a).data.iter().sum()],
                Op::LogSumExp(a) => vec![lse(&v(a).data)],
                Op::LogSumExpLast(a) => {
                    let x = v(a);
                    let k = *x.shape.last().expect("rank >= 1");
                    x.data.chunks(k).map(lse).collect()
                }
                Op::Softmax(a) => softmax_ref(&v(a).data),
                Op::SoftmaxLast(a) => {
                    let x = v(a);
                    let k = *x.shape.last().expect("rank >= 1");
                    x.data.chunks(k).flat_map(softmax_ref).collect()
                }
                Op::Broadcast(a) => broadcast_ref(&v(a), &shape),
                Op::SumTo(a) => {
                    let x = v(a);
                    let n: usize = shape.iter().product::<usize>().max(1);
                    let mut out = vec![0.0; n];
                    for (i, p) in x.data.iter().enumerate() {
                        out[i % n] += p;
                    }
                    out
                }
                Op::Net(..) => unreachable!("inlined"),
                Op::SpectralNorm(a) => {
                    let x = v(a);
                    vec![top_singular(&x.data, x.shape[0], x.shape[1]).0]
                }
                Op::SpectralOuter(a) => {
                    let x = v(a);
                    let (_, u, w) = top_singular(&x.data, x.shape[0], x.shape[1]);
                    u.iter().flat_map(|p| w.iter().map(move |q| p * q)).collect()
                }
            };
            vals.insert(id, RefValue { shape, data });
        }
        vals.remove(&root).expect("root evaluated")
    }
}

/// The largest singular value of the row-major `m x n` matrix `w` and its
/// singular vectors `(σ, u, v)`, by power iteration from a fixed start (so
/// every evaluation of the same matrix agrees), until σ settles to within
/// rounding or after 200 rounds.
pub fn top_singular(w: &[f64], m: usize, n: usize) -> (f64, Vec<f64>, Vec<f64>) {
    let norm = |x: &[f64]| x.iter().map(|a| a * a).sum::<f64>().sqrt();
    // Four lanes, so the dot products vectorise.
    let dot = |a: &[f64], b: &[f64]| {
        let mut lanes = [0.0f64; 4];
        let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
        let tail: f64 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
        for (x, y) in ca.zip(cb) {
            for k in 0..4 {
                lanes[k] += x[k] * y[k];
            }
        }
        lanes.iter().sum::<f64>() + tail
    };
    // A start with no special alignment to any axis.
    let mut v: Vec<f64> = (0..n).map(|j| 1.0 + 0.5 * (j as f64 * 0.618_034).fract()).collect();
    let first = norm(&v);
    v.iter_mut().for_each(|a| *a /= first);
    let (mut u, mut sigma) = (vec![0.0; m], 0.0);
    for _ in 0..200 {
        u = w.chunks(n).map(|row| dot(row, &v)).collect();
        let next = norm(&u);
        if next == 0.0 {
            return (0.0, u, v);
        }
        u.iter_mut().for_each(|a| *a /= next);
        v.iter_mut().for_each(|a| *a = 0.0);
        for (row, ui) in w.chunks(n).zip(&u) {
            v.iter_mut().zip(row).for_each(|(a, x)| *a += ui * x);
        }
        let nv = norm(&v);
        v.iter_mut().for_each(|a| *a /= nv);
        let settled = (next - sigma).abs() <= 1e-15 * next;
        sigma = next;
        if settled {
            break;
        }
    }
    (u.iter().zip(w.chunks(n)).map(|(ui, row)| ui * dot(row, &v)).sum(), u, v)
}

fn broadcast_ref(x: &RefValue, shape: &[usize]) -> Vec<f64> {
    let n: usize = shape.iter().product::<usize>().max(1);
    let len = x.data.len();
    (0..n).map(|i| x.data[i % len]).collect()
}

fn lse(x: &[f64]) -> f64 {
    let m = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    m + x.iter().map(|v| (v - m).exp()).sum::<f64>().ln()
}

fn softmax_ref(x: &[f64]) -> Vec<f64> {
    let l = lse(x);
    x.iter().map(|v| (v - l).exp()).collect()
}
