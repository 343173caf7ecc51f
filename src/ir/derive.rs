//! Symbolic reverse-mode derivatives: gradients in a variable or a parameter,
//! and Hessian-vector products for score matching.

use super::{Id, Ir, Op, Unary};
use std::collections::{BTreeSet, HashMap};

impl Ir {
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
                    // Cannot fire: softmax/logsumexp over rows is built on values of rank >= 1.
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
                    // Cannot fire: softmax/logsumexp over rows is built on values of rank >= 1.
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
                // The conv family is closed under adjoints: each op is bilinear,
                // and its adjoint in either operand is another member.
                Op::Conv(x, w, geom) => {
                    if depends.contains(&x) {
                        let sx = shape_of(self, x);
                        let c = self.conv_input(g, w, geom, &sx);
                        push(self, x, c);
                    }
                    if depends.contains(&w) {
                        let sw = shape_of(self, w);
                        let c = self.conv_kernel(x, g, geom, &sw);
                        push(self, w, c);
                    }
                }
                Op::ConvInput(dy, w, geom) => {
                    if depends.contains(&dy) {
                        let c = self.conv(g, w, geom);
                        push(self, dy, c);
                    }
                    if depends.contains(&w) {
                        let sw = shape_of(self, w);
                        let c = self.conv_kernel(g, dy, geom, &sw);
                        push(self, w, c);
                    }
                }
                Op::ConvKernel(x, dy, geom) => {
                    if depends.contains(&x) {
                        let sx = shape_of(self, x);
                        let c = self.conv_input(dy, g, geom, &sx);
                        push(self, x, c);
                    }
                    if depends.contains(&dy) {
                        let c = self.conv(x, g, geom);
                        push(self, dy, c);
                    }
                }
                Op::AvgPool(a, k) => {
                    let sa = shape_of(self, a);
                    let c = self.unpool(g, k, &sa);
                    push(self, a, c);
                }
                Op::Unpool(a, k) => {
                    let c = self.avg_pool(g, k);
                    push(self, a, c);
                }
                Op::SumAxes(a, start, _) => {
                    let sa = shape_of(self, a);
                    let c = self.broadcast_axes(g, start, &sa);
                    push(self, a, c);
                }
                Op::BroadcastAxes(a, start, count) => {
                    let c = self.sum_axes(g, start, count);
                    push(self, a, c);
                }
                Op::Reshape(a) => {
                    let sa = shape_of(self, a);
                    let c = self.reshape(g, &sa);
                    push(self, a, c);
                }
                // Cannot fire: `grad`/`grad_param` inline the nets on the path first.
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
}
