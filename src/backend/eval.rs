//! Evaluates IR nodes on dfdx tensors, batched. Every value is a rank-3
//! tensor `(b, rows, cols)`: `b` is the batch size for values that depend on
//! a variable and 1 for shared ones (parameters, constants, numbers); a
//! per-example scalar is `(1, 1)`, a vector `[n]` is the row `(1, n)`, a
//! matrix is itself. Shared operands are broadcast along the batch only when
//! an op needs it, and products of a batch with a shared matrix run as one
//! GEMM.

use super::{Kernels, T3, conv, host::Arith};
use crate::ir::{Id, Ir, Op, Unary};
use dfdx::prelude::*;
use std::collections::{BTreeMap, HashMap};

/// The value of the one root an evaluation was asked for.
pub(super) fn one<T>(mut values: Vec<T>) -> T {
    // Cannot fire: the evaluators return one value per root, and every caller passes one root.
    values.pop().expect("one value per root")
}

/// Canonical (rows, cols) of a per-example shape: an image or any value of
/// rank 3 and more is its leading axes as rows, its last axis as columns.
pub fn canon(shape: &[usize]) -> (usize, usize) {
    match shape {
        [] => (1, 1),
        [n] => (1, *n),
        [lead @ .., n] => (lead.iter().product(), *n),
    }
}

/// Shared tensors of a model: parameters and constants, by name, and the
/// neighbour lists of lattice constants (products with them are sparse).
pub struct Leaves<D: Device<f32>, T> {
    pub tensors: BTreeMap<String, T3<D, T>>,
    pub lattices: BTreeMap<String, Vec<Vec<usize>>>,
}

/// Broadcasts `t` to `(b, m, n)` along whichever axes are 1 in `t` and not in the target.
pub fn expand<D: Device<f32>, T: Tape<f32, D>>(t: T3<D, T>, b: usize, m: usize, n: usize) -> T3<D, T> {
    let (tb, tm, tn) = *t.shape();
    let target = (b, m, n);
    match (tb != b, tm != m, tn != n) {
        (false, false, false) => t,
        (true, false, false) => t.reshape_like(&(tm, tn)).broadcast_like::<_, Axis<0>>(&target),
        (false, true, false) => t.reshape_like(&(tb, tn)).broadcast_like::<_, Axis<1>>(&target),
        (false, false, true) => t.reshape_like(&(tb, tm)).broadcast_like::<_, Axis<2>>(&target),
        (true, true, false) => t.reshape_like(&(tn,)).broadcast_like::<_, Axes2<0, 1>>(&target),
        (true, false, true) => t.reshape_like(&(tm,)).broadcast_like::<_, Axes2<0, 2>>(&target),
        (false, true, true) => t.reshape_like(&(tb,)).broadcast_like::<_, Axes2<1, 2>>(&target),
        (true, true, true) => t.reshape_like(&()).broadcast_like::<_, Axes3<0, 1, 2>>(&target),
    }
}

/// Evaluates the cones of `roots`. `vars` are batched `(batch, rows, cols)`
/// tensors; values used more than once are shared through `retaped` copies so
/// that a tape, when there is one, records every use.
pub struct Evaluator<'a, D: Device<f32>, T> {
    pub ir: &'a Ir,
    pub dev: &'a D,
    pub leaves: &'a Leaves<D, T>,
}

/// Under a tape, the two operands of one op must be distinct tensors (dfdx
/// reads one gradient and writes the other), so a value used more than once
/// is given a fresh identity for its earlier uses. The tape is the test
/// oracle of the objectives' symbolic gradients.
#[cfg(test)]
pub struct Taped<'a, D: Device<f32>, T>(pub Evaluator<'a, D, T>);

impl<'a, D: Kernels, T: Tape<f32, D> + Merge<T> + Merge<NoneTape>> Evaluator<'a, D, T> {
    pub fn eval(&self, roots: &[Id], vars: &BTreeMap<String, T3<D, T>>) -> Vec<T3<D, T>> {
        self.eval_with(roots, vars, false)
    }

    fn eval_with(&self, roots: &[Id], vars: &BTreeMap<String, T3<D, T>>, fresh: bool) -> Vec<T3<D, T>> {
        let mut order: Vec<Id> = roots.iter().flat_map(|r| self.ir.cone(*r)).collect();
        order.sort();
        order.dedup();
        let mut uses: HashMap<Id, usize> = HashMap::new();
        for id in &order {
            for c in self.ir.children(*id) {
                *uses.entry(c).or_default() += 1;
            }
        }
        for r in roots {
            *uses.entry(*r).or_default() += 1;
        }
        let mut values: HashMap<Id, T3<D, T>> = HashMap::new();
        for &id in &order {
            let v = self.node(id, &mut values, &mut uses, vars, fresh);
            values.insert(id, v);
        }
        roots.iter().map(|r| take(&mut values, &mut uses, *r, fresh)).collect()
    }

    fn node(
        &self,
        id: Id,
        values: &mut HashMap<Id, T3<D, T>>,
        uses: &mut HashMap<Id, usize>,
        vars: &BTreeMap<String, T3<D, T>>,
        fresh: bool,
    ) -> T3<D, T> {
        let node = self.ir.node(id);
        let (m, n) = canon(&node.shape);
        let mut arg = |x: Id| take(values, uses, x, fresh);
        match &node.op {
            Op::Num(bits) => self.dev.tensor_from_vec(vec![f64::from_bits(*bits) as f32], (1, 1, 1)).retaped::<T>(),
            Op::Var(name) => {
                // Cannot fire: callers bind every variable of the root's cone (`check_rows`/`vars_of` at the boundary).
                vars.get(name).unwrap_or_else(|| panic!("no value bound for variable `{name}`")).retaped::<T>()
            }
            Op::Param(name) | Op::Const(name) => {
                // Cannot fire: `device_leaves` uploads every parameter and constant the model declares, checked by `check_params`.
                self.leaves.tensors.get(name).unwrap_or_else(|| panic!("no tensor for `{name}`")).retaped::<T>()
            }
            Op::Neg(a) => arg(*a).negate(),
            Op::Add(a, b) | Op::Sub(a, b) | Op::Mul(a, b) | Op::Div(a, b) => {
                let (x, y) = (arg(*a), arg(*b));
                let batch = x.shape().0.max(y.shape().0);
                let op = match node.op {
                    Op::Add(..) => Arith::Add,
                    Op::Sub(..) => Arith::Sub,
                    Op::Mul(..) => Arith::Mul,
                    _ => Arith::Div,
                };
                if !T::OWNS_TAPE {
                    // Untaped values take the device's fused kernel.
                    let ((x, tx), (y, ty)) = (x.split_tape(), y.split_tape());
                    return self.dev.zip(op, x, y, (batch, m, n)).put_tape(tx.merge(ty));
                }
                arith(op, expand(x, batch, m, n), expand(y, batch, m, n))
            }
            Op::MatMul(a, b) => {
                let (ra, rb) = (self.ir.shape(*a).len(), self.ir.shape(*b).len());
                if let Some(neighbours) = self.lattice_product(*a, *b) {
                    let (dense, y) = (arg(*a), arg(*b));
                    let (by, my, ny) = *y.shape();
                    // A vector is a column of units; a matrix has units as rows.
                    let col = if rb == 1 { y.reshape_like(&(by, ny, 1usize)) } else { y };
                    let untaped = col.retaped::<NoneTape>();
                    let out = self.dev.neighbour_sum(untaped, neighbours, &dense.retaped::<NoneTape>()).retaped::<T>();
                    return if rb == 1 { out.reshape_like(&(by, 1usize, ny)) } else { out.reshape_like(&(by, my, ny)) };
                }
                let (x, y) = (arg(*a), arg(*b));
                matmul(x, y, ra, rb)
            }
            Op::Outer(a, b) => {
                let (x, y) = (arg(*a), arg(*b));
                let batch = x.shape().0.max(y.shape().0);
                let (bx, _, nx) = *x.shape();
                let col = x.reshape_like(&(bx, nx, 1usize));
                expand(col, batch, m, n) * expand(y, batch, m, n)
            }
            Op::Transpose(a) => arg(*a).permute::<_, Axes3<0, 2, 1>>(),
            Op::Pow(a, e) => {
                let x = arg(*a);
                match self.ir.num_value(*e) {
                    Some(c) => x.powf(c),
                    None => {
                        let e = arg(*e);
                        let batch = x.shape().0.max(e.shape().0);
                        (expand(e, batch, m, n) * expand(x, batch, m, n).ln()).exp()
                    }
                }
            }
            Op::Map(f, a) if !T::OWNS_TAPE => {
                let (x, tape) = arg(*a).split_tape();
                self.dev.map(*f, x).put_tape(tape)
            }
            Op::Map(f, a) => unary(*f, arg(*a), fresh),
            Op::Sum(a) if !T::OWNS_TAPE => {
                let (x, tape) = arg(*a).split_tape();
                self.dev.sum_examples(x).put_tape(tape)
            }
            Op::Sum(a) => {
                let x = arg(*a);
                let b = x.shape().0;
                x.sum::<(usize,), Axes2<1, 2>>().reshape_like(&(b, 1usize, 1usize))
            }
            Op::LogSumExp(a) => {
                let x = arg(*a);
                let (b, xm, xn) = *x.shape();
                x.reshape_like(&(b, xm * xn)).logsumexp::<(usize,), Axis<1>>().reshape_like(&(b, 1usize, 1usize))
            }
            Op::LogSumExpLast(a) => {
                let x = arg(*a);
                let b = x.shape().0;
                x.logsumexp::<(usize, usize), Axis<2>>().reshape_like(&(b, m, n))
            }
            Op::Softmax(a) => {
                let x = arg(*a);
                let (b, xm, xn) = *x.shape();
                x.reshape_like(&(b, xm * xn)).softmax::<Axis<1>>().reshape_like(&(b, xm, xn))
            }
            Op::SoftmaxLast(a) => arg(*a).softmax::<Axis<2>>(),
            Op::Broadcast(a) => {
                let x = arg(*a);
                let (b, xm, xn) = *x.shape();
                if (xm == 1 || xm == m) && (xn == 1 || xn == n) {
                    return expand(x, b, m, n);
                }
                // A matrix repeated along the leading axes of an image.
                let q = xm * xn;
                on_host(self.dev, vec![x], (m, n), |ops, b, out| {
                    conv::broadcast_axes((b, m * n / q, q), &ops[0], out, true)
                })
            }
            Op::SumTo(a) if self.ir.shape(*a).len() > 2 => {
                let x = arg(*a);
                let (_, xm, xn) = *x.shape();
                let q = m * n;
                on_host(self.dev, vec![x], (m, n), |ops, b, out| {
                    conv::sum_axes((b, xm * xn / q, q), &ops[0], out, true)
                })
            }
            Op::Conv(a, b, geom) | Op::ConvInput(a, b, geom) | Op::ConvKernel(a, b, geom) => {
                let (kind, input, kernel) = match node.op {
                    Op::Conv(..) => (conv::Kind::Forward, self.ir.shape(*a), self.ir.shape(*b)),
                    Op::ConvInput(..) => (conv::Kind::Input, &node.shape, self.ir.shape(*b)),
                    _ => (conv::Kind::Kernel, self.ir.shape(*a), &node.shape),
                };
                let g = conv::Conv::of(input, kernel, geom.stride, geom.pad);
                let (x, y) = (arg(*a), arg(*b));
                let batches = (x.shape().0, y.shape().0);
                on_host(self.dev, vec![x, y], (m, n), |ops, batch, out| {
                    let mut scratch = vec![0.0; g.scratch(batch)];
                    let operands = ((ops[0].as_slice(), batches.0), (ops[1].as_slice(), batches.1));
                    conv::run(kind, &g, out, operands, &mut scratch, (false, 1.0), true);
                })
            }
            Op::AvgPool(a, k) | Op::Unpool(a, k) => {
                let unpool = matches!(node.op, Op::Unpool(..));
                let image = if unpool { &node.shape } else { self.ir.shape(*a) };
                let x = arg(*a);
                on_host(self.dev, vec![x], (m, n), |ops, batch, out| {
                    let (planes, hw) = conv::pool_planes(image, batch);
                    if unpool {
                        conv::unpool(planes, hw, *k, &ops[0], out, true);
                    } else {
                        conv::avg_pool(planes, hw, *k, &ops[0], out, true);
                    }
                })
            }
            Op::SumAxes(a, start, count) | Op::BroadcastAxes(a, start, count) => {
                let broadcast = matches!(node.op, Op::BroadcastAxes(..));
                let shape = if broadcast { &node.shape } else { self.ir.shape(*a) };
                let product = |axes: &[usize]| axes.iter().product::<usize>();
                let (p, c, q) = (
                    product(&shape[..*start]),
                    product(&shape[*start..start + count]),
                    product(&shape[start + count..]),
                );
                let x = arg(*a);
                on_host(self.dev, vec![x], (m, n), |ops, batch, out| {
                    if broadcast {
                        conv::broadcast_axes((batch * p, c, q), &ops[0], out, true);
                    } else {
                        conv::sum_axes((batch * p, c, q), &ops[0], out, true);
                    }
                })
            }
            Op::Reshape(a) => {
                let x = arg(*a);
                let b = x.shape().0;
                x.reshape_like(&(b, m, n))
            }
            Op::SumTo(a) => {
                let x = arg(*a);
                let (b, xm, xn) = *x.shape();
                match (m == 1 && xm != 1, n == 1 && xn != 1) {
                    (true, true) => x.sum::<(usize,), Axes2<1, 2>>().reshape_like(&(b, 1usize, 1usize)),
                    (true, false) => x.sum::<(usize, usize), Axis<1>>().reshape_like(&(b, 1usize, xn)),
                    (false, true) => x.sum::<(usize, usize), Axis<2>>().reshape_like(&(b, xm, 1usize)),
                    (false, false) => x,
                }
            }
            // Cannot fire: every root is passed through `Ir::inline_nets` before it is evaluated.
            Op::Net(..) => unreachable!("nets are inlined before evaluation"),
            Op::SpectralNorm(a) | Op::SpectralOuter(a) => {
                let w = arg(*a);
                let (wm, wn) = canon(self.ir.shape(*a));
                let data: Vec<f64> = w.retaped::<NoneTape>().as_vec().into_iter().map(f64::from).collect();
                let (_, u, v) = crate::ir::top_singular(&data, wm, wn);
                let uv: T3<D> = self.dev.tensor_from_vec(
                    u.iter().flat_map(|p| v.iter().map(move |q| (p * q) as f32)).collect(),
                    (1, wm, wn),
                );
                if matches!(node.op, Op::SpectralOuter(_)) {
                    return uv.put_tape(w.split_tape().1);
                }
                // σ = Σ W ⊙ u vᵀ: under a tape its gradient is u vᵀ, with u and v held fixed.
                (w * uv).sum::<(usize,), Axes2<1, 2>>().reshape_like(&(1usize, 1usize, 1usize))
            }
        }
    }
}

impl<'a, D: Kernels, T: Tape<f32, D> + Merge<T> + Merge<NoneTape>> Evaluator<'a, D, T> {
    /// The neighbour lists when `a @ b` multiplies a lattice constant by
    /// something that holds no parameter (so no gradient has to pass through).
    fn lattice_product(&self, a: Id, b: Id) -> Option<&'a Vec<Vec<usize>>> {
        let Op::Const(name) = &self.ir.node(a).op else { return None };
        let neighbours = self.leaves.lattices.get(name)?;
        let free = self.ir.cone(b).iter().all(|n| !matches!(self.ir.node(*n).op, Op::Param(_)));
        free.then_some(neighbours)
    }
}

#[cfg(test)]
impl<'a, D: Kernels, T: Tape<f32, D> + Merge<T> + Merge<NoneTape>> Taped<'a, D, T> {
    pub fn eval(&self, roots: &[Id], vars: &BTreeMap<String, T3<D, T>>) -> Vec<T3<D, T>> {
        self.0.eval_with(roots, vars, true)
    }
}

/// `f(operands, batch, out)` on host copies of the operands, `batch` the
/// largest of theirs, as a new value `(batch, m, n)`: the image ops, which
/// run through the host kernels (`conv`) on every device.
fn on_host<D: Device<f32>, T: Tape<f32, D>>(
    dev: &D,
    operands: Vec<T3<D, T>>,
    (m, n): (usize, usize),
    f: impl FnOnce(&[Vec<f32>], usize, &mut [f32]),
) -> T3<D, T> {
    // Cannot fire: a tape records dfdx's ops only, and the taped evaluator (a test oracle) runs on models without images.
    assert!(!T::OWNS_TAPE, "image ops are evaluated untaped");
    let batch = operands.iter().map(|x| x.shape().0).max().unwrap_or(1);
    let host: Vec<Vec<f32>> = operands.iter().map(|x| x.as_vec()).collect();
    let mut out = vec![0.0; batch * m * n];
    f(&host, batch, &mut out);
    dev.tensor_from_vec(out, (batch, m, n)).retaped::<T>()
}

/// Takes a value for one use: the last use gets the tensor itself (with its
/// tape), earlier uses a copy that shares data and records onto a fresh tape
/// (with a fresh identity too, when `fresh`).
fn take<D: Device<f32>, T: Tape<f32, D>>(
    values: &mut HashMap<Id, T3<D, T>>,
    uses: &mut HashMap<Id, usize>,
    id: Id,
    fresh: bool,
) -> T3<D, T> {
    // Cannot fire: uses are counted over the same cone that is evaluated.
    let left = uses.get_mut(&id).expect("every use is counted");
    *left -= 1;
    if *left == 0 {
        // Cannot fire: the cone is evaluated in topological order.
        values.remove(&id).expect("value computed before use")
    } else if fresh {
        values[&id].retaped::<T>() * 1.0
    } else {
        values[&id].retaped::<T>()
    }
}

fn matmul<D: Device<f32>, T: Tape<f32, D> + Merge<T>>(x: T3<D, T>, y: T3<D, T>, ra: usize, rb: usize) -> T3<D, T> {
    let (bx, mx, nx) = *x.shape();
    let (by, my, ny) = *y.shape();
    let batch = bx.max(by);
    match (ra, rb) {
        // batch of vectors . shared vector: one matrix-vector product.
        (1, 1) if by == 1 && bx > 1 => {
            x.reshape_like(&(bx, nx)).matmul(y.reshape_like(&(ny, 1usize))).reshape_like(&(bx, 1usize, 1usize))
        }
        (1, 1) if bx == 1 && by > 1 => {
            y.reshape_like(&(by, ny)).matmul(x.reshape_like(&(nx, 1usize))).reshape_like(&(by, 1usize, 1usize))
        }
        // vector . vector
        (1, 1) => {
            let p = expand(x, batch, 1, nx) * expand(y, batch, 1, ny);
            p.sum::<(usize,), Axes2<1, 2>>().reshape_like(&(batch, 1usize, 1usize))
        }
        // vector @ shared matrix: one GEMM over the batch.
        (1, 2) if by == 1 => {
            x.reshape_like(&(bx, nx)).matmul(y.reshape_like(&(my, ny))).reshape_like(&(bx, 1usize, ny))
        }
        (1, 2) => expand(x, batch, 1, nx).matmul(y),
        // shared matrix @ vector: x_b @ W^T.
        (2, 1) if bx == 1 => {
            let w = x.reshape_like(&(mx, nx)).permute::<_, Axes2<1, 0>>();
            y.reshape_like(&(by, ny)).matmul(w).reshape_like(&(by, 1usize, mx))
        }
        (2, 1) => {
            let col = expand(y, batch, 1, ny).permute::<_, Axes3<0, 2, 1>>();
            x.matmul(col).reshape_like(&(batch, 1usize, mx))
        }
        (2, 2) if by == 1 => {
            x.reshape_like(&(bx * mx, nx)).matmul(y.reshape_like(&(my, ny))).reshape_like(&(bx, mx, ny))
        }
        _ => expand(x, batch, mx, nx).matmul(expand(y, batch, my, ny)),
    }
}

/// `x op y` for operands of one shape, through dfdx (taped or not).
pub fn arith<D: Device<f32>, T: Tape<f32, D> + Merge<T>>(op: Arith, x: T3<D, T>, y: T3<D, T>) -> T3<D, T> {
    match op {
        Arith::Add => x + y,
        Arith::Sub => x - y,
        Arith::Mul => x * y,
        Arith::Div => x / y,
    }
}

/// ln(1 + exp(y)) for y <= 0.
fn log1p_exp_neg<D: Device<f32>, T: Tape<f32, D>>(y: T3<D, T>) -> T3<D, T> {
    (y.exp() + 1.0).ln()
}

/// Applies an elementwise function; `taped` selects forms whose dfdx
/// derivative is right everywhere (see softplus).
pub fn unary<D: Device<f32>, T: Tape<f32, D> + Merge<T> + Merge<NoneTape>>(
    f: Unary,
    x: T3<D, T>,
    taped: bool,
) -> T3<D, T> {
    match f {
        Unary::Exp => x.exp(),
        Unary::Log => x.ln(),
        Unary::Sigmoid => x.sigmoid(),
        Unary::Tanh => x.tanh(),
        Unary::Relu => x.relu(),
        Unary::Abs => x.abs(),
        Unary::Sqrt => x.sqrt(),
        Unary::Square => x.square(),
        Unary::Softplus if taped => {
            // log(e^0 + e^x): stable for any x, and its gradient (a softmax) is
            // right at x = 0, where relu(x) + ln(1 + e^-|x|) would give 0 under
            // dfdx's zero derivatives of relu and abs.
            let zeros = x.device().zeros_like(x.shape()).retaped::<T>();
            [x, zeros].stack().logsumexp::<(usize, usize, usize), Axis<0>>()
        }
        Unary::Softplus => {
            // max(x, 0) + ln(1 + exp(-|x|)): stable, fewer passes, no gradient needed.
            let a = x.retaped::<T>().abs().negate();
            x.relu() + log1p_exp_neg(a)
        }
        Unary::Swish => {
            let s = x.retaped::<T>().sigmoid();
            x * s
        }
        Unary::Log2Cosh => {
            // |x| + ln(1 + exp(-2|x|))
            let a = x.abs();
            let e = a.retaped::<T>() * -2.0;
            a + log1p_exp_neg(e)
        }
        Unary::Step | Unary::Sign => {
            let dev = x.device().clone();
            let shape = *x.shape();
            let ones: T3<D, NoneTape> = dev.ones_like(&shape);
            let zeros: T3<D, NoneTape> = dev.zeros_like(&shape);
            let positive = x.gt(0.0).choose(ones.clone(), zeros.clone());
            let out = if f == Unary::Step { positive } else { positive - x.lt(0.0).choose(ones, zeros) };
            out.retaped::<T>()
        }
    }
}

/// One term of a per-example sum: `coefficient * scale * atom`, with `scale`
/// an optional shared factor: a scalar, or a value of the sum's shape when
/// `atom` is a per-example scalar.
struct Term {
    coefficient: f32,
    scale: Option<Id>,
    atom: Id,
}

/// Whether the value of `id` depends on some variable (differs across a batch).
pub(super) fn has_var(ir: &Ir, id: Id) -> bool {
    ir.cone(id).iter().any(|n| matches!(ir.node(*n).op, Op::Var(_)))
}

/// Splits a per-example expression into terms through `+`, `-`, negation
/// and scaling by numbers or shared scalars.
fn terms(ir: &Ir, id: Id, coefficient: f32, scale: Option<Id>, out: &mut Vec<Term>) {
    match ir.node(id).op {
        Op::Add(a, b) => {
            terms(ir, a, coefficient, scale, out);
            terms(ir, b, coefficient, scale, out);
        }
        Op::Sub(a, b) => {
            terms(ir, a, coefficient, scale, out);
            terms(ir, b, -coefficient, scale, out);
        }
        Op::Neg(a) => terms(ir, a, -coefficient, scale, out),
        Op::Mul(s, x) if ir.shape(s).is_empty() && ir.num_value(s).is_some() => {
            terms(ir, x, coefficient * ir.num_value(s).unwrap_or(1.0) as f32, scale, out)
        }
        Op::Mul(s, x) if ir.shape(s).is_empty() && scale.is_none() && !has_var(ir, s) => {
            terms(ir, x, coefficient, Some(s), out)
        }
        // A per-example scalar times a shared value: the scalars sum first.
        Op::Mul(a, b) if scale.is_none() && ir.shape(a).is_empty() != ir.shape(b).is_empty() => {
            let (scalar, other) = if ir.shape(a).is_empty() { (a, b) } else { (b, a) };
            if has_var(ir, scalar) && !has_var(ir, other) {
                terms(ir, scalar, coefficient, Some(other), out);
            } else {
                out.push(Term { coefficient, scale, atom: id });
            }
        }
        _ => out.push(Term { coefficient, scale, atom: id }),
    }
}

impl<'a, D: Kernels> Evaluator<'a, D, NoneTape> {
    /// Weighted sums over batches, `Σ_p w_p Σ_i r(x_pi)`, of the per-example
    /// values of `roots`, each `(1, rows, cols)`, for phases `p` given as
    /// (variables, weight). An outer product of two per-example vectors sums
    /// to a GEMM (`aᵀ b` over the batch) and all phases accumulate into one
    /// result, so parameter gradients cost what a tape's backward pass
    /// would, without its elementwise passes. With weights `1/n` and `-1/m`
    /// this is a contrastive gradient: data mean minus sample mean.
    pub fn eval_phase_sums(&self, roots: &[Id], phases: &[(&BTreeMap<String, T3<D>>, f32)]) -> Vec<T3<D>> {
        let split: Vec<Vec<Term>> = roots
            .iter()
            .map(|r| {
                let mut t = Vec::new();
                terms(self.ir, *r, 1.0, None, &mut t);
                t
            })
            .collect();
        // Everything the terms need, evaluated together so shared subexpressions are computed once.
        let mut needed: Vec<Id> = Vec::new();
        for term in split.iter().flatten() {
            match self.ir.node(term.atom).op {
                Op::Outer(a, b) | Op::ConvKernel(a, b, _) => needed.extend([a, b]),
                _ => needed.push(term.atom),
            }
            needed.extend(term.scale);
        }
        needed.sort();
        needed.dedup();
        let values: Vec<(HashMap<Id, T3<D>>, usize, f32)> = phases
            .iter()
            .map(|(vars, weight)| {
                let batch = vars.values().next().map_or(1, |t| t.shape().0);
                (needed.iter().copied().zip(self.eval(&needed, vars)).collect(), batch, *weight)
            })
            .collect();
        let shared = |id: Id| values[0].0[&id].shape().0 == 1;
        roots
            .iter()
            .zip(&split)
            .map(|(root, parts)| {
                let (m, n) = canon(self.ir.shape(*root));
                let mut acc: Option<T3<D>> = None;
                for term in parts {
                    let value = match self.ir.node(term.atom).op {
                        Op::Outer(a, b) => {
                            let outers = values
                                .iter()
                                .map(|(v, batch, w)| {
                                    (
                                        expand(v[&a].clone(), *batch, 1, m),
                                        expand(v[&b].clone(), *batch, 1, n),
                                        w * term.coefficient,
                                    )
                                })
                                .collect();
                            self.dev.outer_sums(outers, (m, n))
                        }
                        // One contraction over examples × pixels per phase, on the host, never a kernel per example.
                        Op::ConvKernel(a, b, geom) => {
                            let g = conv::Conv::of(self.ir.shape(a), self.ir.shape(*root), geom.stride, geom.pad);
                            let mut sum = vec![0.0; m * n];
                            for (k, (v, batch, w)) in values.iter().enumerate() {
                                let (x, y) = (v[&a].as_vec(), v[&b].as_vec());
                                let operands = ((x.as_slice(), v[&a].shape().0), (y.as_slice(), v[&b].shape().0));
                                let mut scratch = vec![0.0; g.scratch(*batch)];
                                // Shared operands give every example the same kernel gradient.
                                let shared = operands.0.1 == 1 && operands.1.1 == 1;
                                let repeat = if shared { *batch as f32 } else { 1.0 };
                                let add = (k > 0, w * term.coefficient * repeat);
                                conv::run(conv::Kind::KernelSum, &g, &mut sum, operands, &mut scratch, add, true);
                            }
                            self.dev.tensor_from_vec(sum, (1, m, n))
                        }
                        // A shared value is the same for every example: its sum is a multiple.
                        _ if shared(term.atom) => {
                            expand(values[0].0[&term.atom].clone(), 1, m, n)
                                * (term.coefficient * values.iter().map(|(_, batch, w)| *batch as f32 * w).sum::<f32>())
                        }
                        _ => values
                            .iter()
                            .map(|(v, _, w)| {
                                expand(self.dev.sum_batch(v[&term.atom].clone()), 1, m, n) * (w * term.coefficient)
                            })
                            .reduce(|x, y| x + y)
                            // Cannot fire: every caller passes at least one phase (`objectives::phase_sums` one at a time).
                            .expect("at least one phase"),
                    };
                    let value = match term.scale {
                        Some(s) => value * expand(values[0].0[&s].clone(), 1, m, n),
                        None => value,
                    };
                    acc = Some(match acc {
                        Some(a) => a + value,
                        None => value,
                    });
                }
                acc.unwrap_or_else(|| self.dev.zeros_like(&(1, m, n)))
            })
            .collect()
    }
}
