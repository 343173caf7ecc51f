//! The reference interpreter: per-example f64 evaluation by the ops'
//! definitions, the oracle for derivatives and the backend.

use super::{ConvGeom, Id, Ir, Op};
use crate::analysis::program::Shape;
use std::collections::{BTreeMap, HashMap};

/// A per-example value in the reference interpreter: row-major, f64.
#[derive(Debug, Clone, PartialEq)]
pub struct RefValue {
    /// Per-example shape.
    pub shape: Shape,
    /// Elements, row-major.
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
                    // Cannot fire: the reference interpreter is a test oracle; its callers bind every leaf.
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
                    // Cannot fire: row-wise ops are built on values of rank >= 1.
                    let k = *x.shape.last().expect("rank >= 1");
                    x.data.chunks(k).map(lse).collect()
                }
                Op::Softmax(a) => softmax_ref(&v(a).data),
                Op::SoftmaxLast(a) => {
                    let x = v(a);
                    // Cannot fire: row-wise ops are built on values of rank >= 1.
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
                // Cannot fire: `eval_reference` inlines nets first.
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
                Op::Conv(x, w, geom) => {
                    let (x, w) = (v(x), v(w));
                    let mut out = vec![0.0; shape.iter().product()];
                    for_each_tap(&x.shape, &w.shape, &shape, *geom, |xi, wi, oi| out[oi] += w.data[wi] * x.data[xi]);
                    out
                }
                Op::ConvInput(dy, w, geom) => {
                    let (dy, w) = (v(dy), v(w));
                    let mut out = vec![0.0; shape.iter().product()];
                    for_each_tap(&shape, &w.shape, &dy.shape, *geom, |xi, wi, oi| out[xi] += w.data[wi] * dy.data[oi]);
                    out
                }
                Op::ConvKernel(x, dy, geom) => {
                    let (x, dy) = (v(x), v(dy));
                    let mut out = vec![0.0; shape.iter().product()];
                    for_each_tap(&x.shape, &shape, &dy.shape, *geom, |xi, wi, oi| out[wi] += x.data[xi] * dy.data[oi]);
                    out
                }
                Op::AvgPool(a, k) => {
                    let x = v(a);
                    let mut out = vec![0.0; shape.iter().product()];
                    for_each_window(&x.shape, &shape, *k, |xi, oi| out[oi] += x.data[xi] / (k * k) as f64);
                    out
                }
                Op::Unpool(a, k) => {
                    let g = v(a);
                    let mut out = vec![0.0; shape.iter().product()];
                    for_each_window(&shape, &g.shape, *k, |xi, oi| out[xi] += g.data[oi] / (k * k) as f64);
                    out
                }
                Op::SumAxes(a, start, count) => {
                    let x = v(a);
                    let (p, n, q) = runs(&x.shape, *start, *count);
                    let mut out = vec![0.0; p * q];
                    for (i, e) in x.data.iter().enumerate() {
                        out[(i / (n * q)) * q + i % q] += e;
                    }
                    out
                }
                Op::BroadcastAxes(a, start, count) => {
                    let x = v(a);
                    let (_, n, q) = runs(&shape, *start, *count);
                    (0..shape.iter().product::<usize>()).map(|i| x.data[(i / (n * q)) * q + i % q]).collect()
                }
                Op::Reshape(a) => v(a).data,
            };
            vals.insert(id, RefValue { shape, data });
        }
        // Cannot fire: the root is the last node of its own cone, evaluated in the loop.
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

/// Calls `tap(x index, kernel index, output index)` for every product a
/// convolution of an image `[C, H, W]` by a kernel `[O, C, k, k]` into
/// `[O, H', W']` adds, skipping the zero padding.
fn for_each_tap(x: &[usize], w: &[usize], out: &[usize], geom: ConvGeom, mut tap: impl FnMut(usize, usize, usize)) {
    let ([c, h, wd], [o, _, k, _], [_, oh, ow]) =
        ([x[0], x[1], x[2]], [w[0], w[1], w[2], w[3]], [out[0], out[1], out[2]]);
    for (oc, ic, p, q, i, j) in conv_taps(o, c, k, oh, ow) {
        let (y, z) =
            ((i * geom.stride + p) as isize - geom.pad as isize, (j * geom.stride + q) as isize - geom.pad as isize);
        if y < 0 || z < 0 || y as usize >= h || z as usize >= wd {
            continue;
        }
        let xi = (ic * h + y as usize) * wd + z as usize;
        let wi = ((oc * c + ic) * k + p) * k + q;
        tap(xi, wi, (oc * oh + i) * ow + j);
    }
}

/// Every (output channel, input channel, kernel row, kernel column, output
/// row, output column).
fn conv_taps(
    o: usize,
    c: usize,
    k: usize,
    oh: usize,
    ow: usize,
) -> impl Iterator<Item = (usize, usize, usize, usize, usize, usize)> {
    (0..o).flat_map(move |a| {
        (0..c).flat_map(move |b| {
            (0..k).flat_map(move |p| {
                (0..k).flat_map(move |q| (0..oh).flat_map(move |i| (0..ow).map(move |j| (a, b, p, q, i, j))))
            })
        })
    })
}

/// Calls `cell(x index, pooled index)` for every pixel of `[C, H, W]` inside
/// a whole `k`×`k` window of `pooled`'s `[C, H/k, W/k]`.
fn for_each_window(x: &[usize], pooled: &[usize], k: usize, mut cell: impl FnMut(usize, usize)) {
    let (c, h, w) = (x[0], x[1], x[2]);
    let (ph, pw) = (pooled[1], pooled[2]);
    for ch in 0..c {
        for y in 0..ph * k {
            for z in 0..pw * k {
                cell((ch * h + y) * w + z, (ch * ph + y / k) * pw + z / k);
            }
        }
    }
}

/// `shape` as `[P, N, Q]` around the `count` axes from `start`.
fn runs(shape: &[usize], start: usize, count: usize) -> (usize, usize, usize) {
    let p = shape[..start].iter().product();
    let n = shape[start..start + count].iter().product();
    (p, n, shape[start + count..].iter().product())
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
