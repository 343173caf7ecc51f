//! Exact Gaussian conditionals: when the energy is a polynomial of degree at
//! most 2 in a real variable `x` with a diagonal quadratic part,
//! `x | rest ~ N(mean, diag(1 / precision))` (truncated to the box of a
//! bounded `x`), which can be drawn exactly instead of by Langevin dynamics.
//!
//! The test reads the IR of the gradient `g = ∂E/∂x`: `E` is such a
//! polynomial exactly when `g = precision ⊙ x − precision ⊙ mean` with
//! `precision` and `mean` free of `x`. The gradient is walked once, children
//! first; every node that depends on `x` must be `x` itself, a sum,
//! difference or negation of such nodes, or a product or quotient of one
//! with a node free of `x`, and must have `x`'s shape. So unit `i` of the
//! gradient reads unit `i` of `x` only (the precision is diagonal), and
//! linearly. A coupling between units (`x @ P @ x`, a sum over `x` inside a
//! non-linear function), a power above 2 or a net in `x` fails the walk.
//! The precision must also be positive by its form (a positive number, an
//! `exp`, `softplus` or `sigmoid`, products and sums of those, a quotient by
//! a square), so the Gaussian is proper whatever the parameters' values.

use crate::ir::{Id, Ir, Op, Unary};
use std::collections::HashMap;

/// `x | rest ~ N(mean, 1 / precision)` unit by unit, as IR nodes; both may
/// depend on the other variables and on parameters, not on `x`. `precision`
/// may be a scalar (isotropic) or have `x`'s shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conditional {
    /// The conditional mean of each unit.
    pub mean: Id,
    /// The conditional precision (inverse variance) of each unit.
    pub precision: Id,
}

/// A node of the gradient as a function of `x`.
#[derive(Clone, Copy)]
enum Form {
    /// Free of `x`.
    Free,
    /// `coefficient ⊙ x + offset`, both free of `x`.
    Affine(Id, Id),
    /// Anything else.
    Other,
}

/// The exact Gaussian conditional of `x` (of shape `shape`) under the energy
/// `total`, when the energy is quadratic in `x` with a positive diagonal
/// precision; `None` otherwise.
pub fn conditional(ir: &mut Ir, total: Id, x: &str, shape: &[usize]) -> Option<Conditional> {
    let g = ir.grad(total, x)?;
    let (coefficient, offset) = match affine(ir, g, x, shape) {
        Form::Affine(c, o) => (c, o),
        _ => return None,
    };
    if !positive(ir, coefficient) {
        return None;
    }
    // g = P x + o = 0 at the mean: mean = -o / P.
    let minus = ir.neg(offset);
    let mean = ir.div(minus, coefficient);
    Some(Conditional { mean, precision: coefficient })
}

fn affine(ir: &mut Ir, g: Id, x: &str, shape: &[usize]) -> Form {
    let mut form: HashMap<Id, Form> = HashMap::new();
    for id in ir.cone(g) {
        let children = ir.children(id);
        let f = if children.iter().all(|c| matches!(form[c], Form::Free))
            && !matches!(&ir.node(id).op, Op::Var(v) if v == x)
        {
            Form::Free
        } else if ir.shape(id).as_slice() != shape {
            // A node in `x` of another shape mixes or broadcasts units.
            Form::Other
        } else {
            let of = |c: &Id| form[c];
            let op = ir.node(id).op.clone();
            match op {
                Op::Var(_) => {
                    let (one, zero) = (ir.num(1.0), ir.num(0.0));
                    Form::Affine(one, zero)
                }
                Op::Neg(a) => match of(&a) {
                    Form::Affine(c, o) => {
                        let (c, o) = (ir.neg(c), ir.neg(o));
                        Form::Affine(c, o)
                    }
                    _ => Form::Other,
                },
                Op::Add(a, b) | Op::Sub(a, b) => {
                    let minus = matches!(op, Op::Sub(..));
                    let parts = |ir: &mut Ir, f: Form, node: Id| match f {
                        Form::Free => Some((ir.num(0.0), node)),
                        Form::Affine(c, o) => Some((c, o)),
                        Form::Other => None,
                    };
                    match (parts(ir, of(&a), a), parts(ir, of(&b), b)) {
                        (Some((ca, oa)), Some((cb, ob))) if minus => {
                            let (c, o) = (ir.sub(ca, cb), ir.sub(oa, ob));
                            Form::Affine(c, o)
                        }
                        (Some((ca, oa)), Some((cb, ob))) => {
                            let (c, o) = (ir.add(ca, cb), ir.add(oa, ob));
                            Form::Affine(c, o)
                        }
                        _ => Form::Other,
                    }
                }
                Op::Mul(a, b) => match (of(&a), of(&b)) {
                    (Form::Affine(c, o), Form::Free) | (Form::Free, Form::Affine(c, o)) => {
                        let k = if matches!(of(&a), Form::Free) { a } else { b };
                        let (c, o) = (ir.mul(c, k), ir.mul(o, k));
                        Form::Affine(c, o)
                    }
                    _ => Form::Other,
                },
                Op::Div(a, b) => match (of(&a), of(&b)) {
                    (Form::Affine(c, o), Form::Free) => {
                        let (c, o) = (ir.div(c, b), ir.div(o, b));
                        Form::Affine(c, o)
                    }
                    _ => Form::Other,
                },
                _ => Form::Other,
            }
        };
        form.insert(id, f);
    }
    form[&g]
}

/// Whether `id` is positive by its form, whatever the values it reads.
fn positive(ir: &Ir, id: Id) -> bool {
    match ir.node(id).op {
        Op::Num(bits) => f64::from_bits(bits) > 0.0,
        Op::Map(Unary::Exp | Unary::Softplus | Unary::Sigmoid, _) => true,
        Op::Broadcast(a) | Op::Reshape(a) => positive(ir, a),
        Op::Add(a, b) | Op::Mul(a, b) => positive(ir, a) && positive(ir, b),
        // What is never negative is positive wherever a quotient by it is finite.
        Op::Div(a, b) => positive(ir, a) && never_negative(ir, b),
        _ => false,
    }
}

/// Whether `id` is at least 0 by its form: positive, or a square, or products and sums of those.
fn never_negative(ir: &Ir, id: Id) -> bool {
    match ir.node(id).op {
        Op::Map(Unary::Square | Unary::Abs, _) => true,
        Op::Broadcast(a) | Op::Reshape(a) => never_negative(ir, a),
        Op::Add(a, b) | Op::Mul(a, b) => never_negative(ir, a) && never_negative(ir, b),
        _ => positive(ir, id),
    }
}

/// The most units a full-precision Gaussian variable may have: its
/// precision is a dense `d × d` matrix, factored by Cholesky (`d³/3`
/// operations) whenever the parameters change.
pub const FULL_DIMS_LIMIT: usize = 1024;

/// How the gradient of the energy in `x` depends on `x` when the
/// precision need not be diagonal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Linear {
    /// `g = P x + o` with `P` free of every variable (the same matrix for
    /// every chain) and `o` free of `x`: the energy is a quadratic form in
    /// `x`, and `x | rest ~ N(−P⁻¹ o, P⁻¹)` when `P` is positive definite,
    /// which only its values can show.
    Shared,
    /// `g` is affine in `x`, but its coefficient reads these other
    /// variables, so the precision differs from chain to chain.
    PerChain(Vec<String>),
    /// `g` is not affine in `x`.
    No,
}

/// Whether the gradient of `total` in `x` is affine in `x` with a
/// coefficient matrix shared by all chains (`Linear::Shared`): every node
/// that depends on `x` must be `x`, a sum, difference, negation, transpose,
/// reshape, broadcast or sum of such nodes, or a product, quotient, matrix
/// product or outer product of one with a node free of `x`. Such a
/// multiplier that reads another variable makes the coefficient per chain
/// (`Linear::PerChain`); anything else in `x` (a square, a net) is `No`.
pub fn linear(ir: &mut Ir, total: Id, x: &str) -> Linear {
    let Some(g) = ir.grad(total, x) else { return Linear::No };
    #[derive(Clone, Copy, PartialEq)]
    enum F {
        /// Free of `x`; `true` when it reads another variable.
        Free(bool),
        /// Affine in `x`; `true` when its coefficient reads another variable.
        Affine(bool),
        Other,
    }
    let mut form: HashMap<Id, F> = HashMap::new();
    let mut readers = std::collections::BTreeSet::new();
    for id in ir.cone(g) {
        let children = ir.children(id);
        let of = |c: &Id| form[c];
        let op = ir.node(id).op.clone();
        let f = match &op {
            Op::Var(v) if v == x => F::Affine(false),
            Op::Var(_) => F::Free(true),
            _ if children.iter().all(|c| matches!(of(c), F::Free(_))) => {
                F::Free(children.iter().any(|c| of(c) == F::Free(true)))
            }
            Op::Neg(a)
            | Op::Transpose(a)
            | Op::Reshape(a)
            | Op::Broadcast(a)
            | Op::SumTo(a)
            | Op::Sum(a)
            | Op::SumAxes(a, ..)
            | Op::BroadcastAxes(a, ..) => of(a),
            Op::Add(a, b) | Op::Sub(a, b) => match (of(a), of(b)) {
                (F::Affine(p), F::Affine(q)) => F::Affine(p || q),
                (F::Affine(p), F::Free(_)) | (F::Free(_), F::Affine(p)) => F::Affine(p),
                _ => F::Other,
            },
            Op::Mul(a, b) | Op::MatMul(a, b) | Op::Outer(a, b) => match (of(a), of(b)) {
                (F::Affine(p), F::Free(q)) | (F::Free(q), F::Affine(p)) => {
                    if q {
                        let k = if matches!(of(a), F::Free(_)) { *a } else { *b };
                        readers.extend(vars_read(ir, k, x));
                    }
                    F::Affine(p || q)
                }
                _ => F::Other,
            },
            Op::Div(a, b) => match (of(a), of(b)) {
                (F::Affine(p), F::Free(q)) => {
                    if q {
                        readers.extend(vars_read(ir, *b, x));
                    }
                    F::Affine(p || q)
                }
                _ => F::Other,
            },
            _ => F::Other,
        };
        form.insert(id, f);
    }
    match form[&g] {
        F::Affine(false) => Linear::Shared,
        F::Affine(true) => Linear::PerChain(readers.into_iter().collect()),
        // A gradient free of `x` (or of no form) is not a quadratic form in it.
        _ => Linear::No,
    }
}

/// The variables other than `x` that `id` reads.
fn vars_read(ir: &Ir, id: Id, x: &str) -> Vec<String> {
    ir.cone(id)
        .into_iter()
        .filter_map(|n| match &ir.node(n).op {
            Op::Var(v) if v != x => Some(v.clone()),
            _ => None,
        })
        .collect()
}
