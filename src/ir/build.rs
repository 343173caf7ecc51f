//! The simplifying constructors (constant folding, zero and one elimination,
//! scalars pulled out of products) and the rewrites built on them:
//! `rebuild`, `substitute`, net inlining.

use super::{ConvGeom, Id, Ir, Node, Op, Unary};
use crate::analysis::program::{Activation, ConvLayout, Net, Shape};
use std::collections::{BTreeSet, HashMap};

fn matmul_shape(a: &[usize], b: &[usize]) -> Shape {
    a[..a.len() - 1].iter().chain(&b[1..]).copied().collect()
}

fn broadcast_shape(a: &[usize], b: &[usize]) -> Shape {
    if a.len() >= b.len() { a.to_vec() } else { b.to_vec() }
}

/// The map between layers as one elementwise function; `None` for the
/// identity and for leaky ReLU, which `Ir::activate` composes.
fn activation(a: Activation) -> Option<Unary> {
    match a {
        Activation::Identity | Activation::LeakyRelu => None,
        Activation::Swish => Some(Unary::Swish),
        Activation::Relu => Some(Unary::Relu),
        Activation::Tanh => Some(Unary::Tanh),
        Activation::Softplus => Some(Unary::Softplus),
        Activation::Sigmoid => Some(Unary::Sigmoid),
    }
}

/// Leaky ReLU's slope below zero (as in IGEBM and JEM's nets).
const LEAKY_SLOPE: f64 = 0.2;

impl Ir {
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

    /// The scalar literal `x` (`-0.0` is `0.0`).
    pub fn num(&mut self, x: f64) -> Id {
        // -0.0 and 0.0 are one constant.
        let x = if x == 0.0 { 0.0 } else { x };
        self.intern(Op::Num(x.to_bits()), vec![])
    }

    /// The value of a literal, or of a broadcast literal.
    pub fn num_value(&self, id: Id) -> Option<f64> {
        match self.node(id).op {
            Op::Num(bits) => Some(f64::from_bits(bits)),
            Op::Broadcast(c) => self.num_value(c),
            _ => None,
        }
    }

    /// True when `id` is the literal 0, or a broadcast of it.
    pub fn is_zero(&self, id: Id) -> bool {
        self.num_value(id) == Some(0.0)
    }

    /// Zeros of `shape`.
    pub fn zeros(&mut self, shape: &[usize]) -> Id {
        let z = self.num(0.0);
        self.broadcast(z, shape)
    }

    /// The variable `name`, of `shape`.
    pub fn var(&mut self, name: &str, shape: &[usize]) -> Id {
        self.intern(Op::Var(name.to_string()), shape.to_vec())
    }

    /// The parameter `name`, of `shape`.
    pub fn param(&mut self, name: &str, shape: &[usize]) -> Id {
        self.intern(Op::Param(name.to_string()), shape.to_vec())
    }

    /// The constant `name`, of `shape`.
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

    /// `-a`, simplified.
    pub fn neg(&mut self, a: Id) -> Id {
        let shape = self.shape(a).clone();
        let mut t = Vec::new();
        self.terms(a, -1.0, &mut t);
        self.sum_of_terms(t, &shape)
    }

    /// `a + b`, broadcasting, simplified.
    pub fn add(&mut self, a: Id, b: Id) -> Id {
        let shape = broadcast_shape(self.shape(a), self.shape(b));
        let mut t = Vec::new();
        self.terms(a, 1.0, &mut t);
        self.terms(b, 1.0, &mut t);
        self.sum_of_terms(t, &shape)
    }

    /// `a - b`, broadcasting, simplified.
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

    /// `a * b` elementwise, broadcasting, simplified.
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

    /// `a / b` elementwise, broadcasting, simplified.
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

    /// `a @ b`, simplified.
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

    /// The outer product of vectors `a` and `b`.
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

    /// The transpose of matrix `a`, simplified (`a` itself when known symmetric).
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

    /// `a ^ e` elementwise, for a scalar `e`, simplified.
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

    /// `f` applied to each element of `a`; folded when `a` is a literal.
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

    /// The sum of every element of `a`, a scalar.
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

    /// `log Σ exp` over every element of `a`, a scalar.
    pub fn logsumexp(&mut self, a: Id) -> Id {
        self.intern(Op::LogSumExp(a), vec![])
    }

    /// `log Σ exp` over the last axis of `a`.
    pub fn logsumexp_last(&mut self, a: Id) -> Id {
        let s = self.shape(a).clone();
        self.intern(Op::LogSumExpLast(a), s[..s.len() - 1].to_vec())
    }

    /// Softmax over every element of `a`.
    pub fn softmax(&mut self, a: Id) -> Id {
        let s = self.shape(a).clone();
        self.intern(Op::Softmax(a), s)
    }

    /// Softmax over the last axis of `a`.
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

    /// `a` summed over leading axes down to `shape` (the adjoint of broadcasting).
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

    /// Both operands of a bilinear op with their numeric coefficients split
    /// off, so `conv(-g, 2 * w)` becomes `-2 * conv(g, w)`; `None` when either
    /// is a bare number.
    fn split_coefficients(&mut self, a: Id, b: Id) -> Option<(f64, Id, Id)> {
        match (self.coefficient(a), self.coefficient(b)) {
            ((ca, Some(ra)), (cb, Some(rb))) => Some((ca * cb, ra, rb)),
            _ => None,
        }
    }

    /// A bilinear op of `a` and `b` in `shape`: zero when either is, with
    /// numeric coefficients pulled out in front.
    fn bilinear(&mut self, a: Id, b: Id, shape: Shape, op: impl Fn(Id, Id) -> Op) -> Id {
        if self.is_zero(a) || self.is_zero(b) {
            return self.zeros(&shape);
        }
        match self.split_coefficients(a, b) {
            Some((c, ra, rb)) if (ra, rb) != (a, b) => {
                let inner = self.intern(op(ra, rb), shape);
                self.times(c, Some(inner))
            }
            _ => self.intern(op(a, b), shape),
        }
    }

    /// A linear op of `a` in `shape`: zero when `a` is, with `a`'s numeric
    /// coefficient pulled out in front.
    fn linear(&mut self, a: Id, shape: Shape, op: impl Fn(Id) -> Op) -> Id {
        if self.is_zero(a) {
            return self.zeros(&shape);
        }
        match self.coefficient(a) {
            (c, Some(r)) if r != a => {
                let inner = self.intern(op(r), shape);
                self.times(c, Some(inner))
            }
            _ => self.intern(op(a), shape),
        }
    }

    /// The image `x : [C, H, W]` convolved with the kernel `w : [O, C, k, k]`.
    pub fn conv(&mut self, x: Id, w: Id, geom: ConvGeom) -> Id {
        let (xs, ws) = (self.shape(x).clone(), self.shape(w).clone());
        let shape = vec![ws[0], geom.out_side(xs[1], ws[2]), geom.out_side(xs[2], ws[3])];
        self.bilinear(x, w, shape, |a, b| Op::Conv(a, b, geom))
    }

    /// The adjoint of `conv` in its image: gradients `g : [O, H', W']` of
    /// the output mapped back to an image of `shape` `[C, H, W]`.
    pub fn conv_input(&mut self, g: Id, w: Id, geom: ConvGeom, shape: &[usize]) -> Id {
        self.bilinear(g, w, shape.to_vec(), |a, b| Op::ConvInput(a, b, geom))
    }

    /// The adjoint of `conv` in its kernel: the image `x` against output
    /// gradients `g`, a kernel of `shape` `[O, C, k, k]`.
    pub fn conv_kernel(&mut self, x: Id, g: Id, geom: ConvGeom, shape: &[usize]) -> Id {
        self.bilinear(x, g, shape.to_vec(), |a, b| Op::ConvKernel(a, b, geom))
    }

    /// The mean of every `k`×`k` window of the last two axes of `[C, H, W]`.
    pub fn avg_pool(&mut self, x: Id, k: usize) -> Id {
        if k == 1 {
            return x;
        }
        let xs = self.shape(x).clone();
        let shape = vec![xs[0], xs[1] / k, xs[2] / k];
        self.linear(x, shape, |a| Op::AvgPool(a, k))
    }

    /// The adjoint of `avg_pool`, back to an image of `shape`.
    pub fn unpool(&mut self, g: Id, k: usize, shape: &[usize]) -> Id {
        if k == 1 {
            return g;
        }
        self.linear(g, shape.to_vec(), |a| Op::Unpool(a, k))
    }

    /// `x` with `count` axes from `start` summed away.
    pub fn sum_axes(&mut self, x: Id, start: usize, count: usize) -> Id {
        if count == 0 {
            return x;
        }
        let xs = self.shape(x).clone();
        let shape: Shape = xs[..start].iter().chain(&xs[start + count..]).copied().collect();
        if let Op::BroadcastAxes(y, s, c) = self.node(x).op
            && (s, c) == (start, count)
        {
            let n = self.num(xs[start..start + count].iter().product::<usize>() as f64);
            return self.mul(n, y);
        }
        self.linear(x, shape, |a| Op::SumAxes(a, start, count))
    }

    /// `x` repeated along the axes `shape` has from `start` that `x` lacks.
    pub fn broadcast_axes(&mut self, x: Id, start: usize, shape: &[usize]) -> Id {
        let count = shape.len() - self.shape(x).len();
        if count == 0 {
            return x;
        }
        if let Some(c) = self.num_value(x) {
            let n = self.num(c);
            return self.broadcast(n, shape);
        }
        self.linear(x, shape.to_vec(), |a| Op::BroadcastAxes(a, start, count))
    }

    /// The elements of `x`, row-major, in `shape`.
    pub fn reshape(&mut self, x: Id, shape: &[usize]) -> Id {
        if self.shape(x) == shape {
            return x;
        }
        if let Some(c) = self.num_value(x) {
            let n = self.num(c);
            return self.broadcast(n, shape);
        }
        let x = if let Op::Reshape(y) = self.node(x).op { y } else { x };
        if self.shape(x) == shape {
            return x;
        }
        self.linear(x, shape.to_vec(), Op::Reshape)
    }

    /// The net `name` applied to `x`.
    pub fn net(&mut self, name: &str, x: Id) -> Id {
        let shape = self.nets[name].output_shape();
        self.intern(Op::Net(name.to_string(), x), shape)
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
                        Op::Conv(a, b, g) => self.conv(m(a), m(b), g),
                        Op::ConvInput(a, b, g) => self.conv_input(m(a), m(b), g, &node.shape),
                        Op::ConvKernel(a, b, g) => self.conv_kernel(m(a), m(b), g, &node.shape),
                        Op::AvgPool(a, k) => self.avg_pool(m(a), k),
                        Op::Unpool(a, k) => self.unpool(m(a), k, &node.shape),
                        Op::SumAxes(a, start, count) => self.sum_axes(m(a), start, count),
                        Op::BroadcastAxes(a, start, _) => self.broadcast_axes(m(a), start, &node.shape),
                        Op::Reshape(a) => self.reshape(m(a), &node.shape),
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

    /// The ids `id`'s op reads, in operand order.
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
            | Op::AvgPool(a, _)
            | Op::Unpool(a, _)
            | Op::SumAxes(a, ..)
            | Op::BroadcastAxes(a, ..)
            | Op::Reshape(a)
            | Op::Net(_, a) => vec![*a],
            Op::Add(a, b)
            | Op::Sub(a, b)
            | Op::Mul(a, b)
            | Op::Div(a, b)
            | Op::MatMul(a, b)
            | Op::Outer(a, b)
            | Op::Pow(a, b)
            | Op::Conv(a, b, _)
            | Op::ConvInput(a, b, _)
            | Op::ConvKernel(a, b, _) => vec![*a, *b],
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
    pub(super) fn inline_nets_where(&mut self, root: Id, var: Option<&str>) -> Id {
        self.rebuild(root, &mut |ir, id| match &ir.node(id).op {
            Op::Net(name, x) if var.is_none_or(|v| ir.depends_on(*x, v)) => {
                let (name, x) = (name.clone(), *x);
                Some(ir.expand_net(&name, x))
            }
            _ => None,
        })
    }

    /// `a(h)`; leaky ReLU as `relu(h) - slope · relu(-h)`, so its derivative
    /// is built from relu's.
    fn activate(&mut self, a: Activation, h: Id) -> Id {
        match (a, activation(a)) {
            (_, Some(f)) => self.map(f, h),
            (Activation::LeakyRelu, None) => {
                let pos = self.map(Unary::Relu, h);
                let minus = self.neg(h);
                let neg = self.map(Unary::Relu, minus);
                let slope = self.num(LEAKY_SLOPE);
                let scaled = self.mul(slope, neg);
                self.sub(pos, scaled)
            }
            _ => h,
        }
    }

    fn expand_net(&mut self, name: &str, x: Id) -> Id {
        let net = self.nets[name].clone();
        let x = self.inline_nets(x);
        if let Some(layout) = net.conv {
            return self.expand_convnet(&net, layout, x);
        }
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
                h = self.activate(net.activation, h);
            }
        }
        if net.output_shape().is_empty() { self.sum(h) } else { h }
    }

    /// A `convnet` applied to the image `x`, as `ConvLayout` describes.
    fn expand_convnet(&mut self, net: &Net, layout: ConvLayout, x: Id) -> Id {
        let name = &net.name;
        let stages = net.layers.len() - 2;
        let mut h = x;
        for i in 0..stages {
            let (from, to) = (net.layers[i], net.layers[i + 1]);
            let stride = if i == 0 || layout.pool { 1 } else { layout.stride };
            let names = [format!("{name}.k{i}"), format!("{name}.b{i}")];
            h = self.conv_layer(net, [&names[0], &names[1]], h, [from, to], layout.kernel, stride);
            h = self.activate(net.activation, h);
            if layout.pool && i > 0 {
                h = self.avg_pool(h, layout.stride);
            }
            for j in 0..layout.blocks {
                let (ka, kb) = (format!("{name}.k{i}.{j}a"), format!("{name}.k{i}.{j}b"));
                let (ba, bb) = (format!("{name}.b{i}.{j}a"), format!("{name}.b{i}.{j}b"));
                let r = self.conv_layer(net, [&ka, &ba], h, [to, to], layout.kernel, 1);
                let r = self.activate(net.activation, r);
                let r = self.conv_layer(net, [&kb, &bb], r, [to, to], layout.kernel, 1);
                let sum = self.add(h, r);
                h = self.activate(net.activation, sum);
            }
        }
        // Global average pooling: one value per channel whatever the image size.
        let hs = self.shape(h).clone();
        let pooled = self.sum_axes(h, 1, 2);
        let mean = self.num(1.0 / (hs[1] * hs[2]) as f64);
        let features = self.mul(mean, pooled);
        let out = *net.layers.last().unwrap_or(&1);
        let weight = self.param(&format!("{name}.w"), &[hs[0], out]);
        let mut y = self.matmul(features, weight);
        if net.spectral_norm {
            let sigma = self.spectral_norm(weight);
            y = self.div(y, sigma);
        }
        if net.bias {
            let b = self.param(&format!("{name}.b"), &[out]);
            y = self.add(y, b);
        }
        if net.output_shape().is_empty() { self.sum(y) } else { y }
    }

    /// One convolution of a `convnet`, `[from, to]` channels, zero-padded to
    /// keep the size at stride 1; spectrally normalised and biased as the
    /// net says. The kernel's σ is that of its `[to, from·k·k]` matrix
    /// (Miyato et al., 2018), dividing the output so the kernel's gradient
    /// stays one `ConvKernel`.
    fn conv_layer(
        &mut self,
        net: &Net,
        [kernel, bias]: [&str; 2],
        h: Id,
        [from, to]: [usize; 2],
        k: usize,
        stride: usize,
    ) -> Id {
        let w = self.param(kernel, &[to, from, k, k]);
        let mut y = self.conv(h, w, ConvGeom { stride, pad: k / 2 });
        if net.spectral_norm {
            let matrix = self.reshape(w, &[to, from * k * k]);
            let sigma = self.spectral_norm(matrix);
            y = self.div(y, sigma);
        }
        if net.bias {
            let b = self.param(bias, &[to]);
            let shape = self.shape(y).clone();
            let spread = self.broadcast_axes(b, 1, &shape);
            y = self.add(y, spread);
        }
        y
    }
}
