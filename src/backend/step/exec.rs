//! Runs one instruction of a schedule on the arena.

use super::schedule::MAX_CODE;
use super::{Buf, FOp, Instr, Mat, Reduction, View};
use crate::backend::conv;
use crate::backend::host::{self, Arith};

/// Values per register of a fused loop: small enough that a loop's
/// registers stay in L1 or L2, long enough to vectorise.
const TILE: usize = 256;

/// Elements below which a loop runs on one thread.
pub(crate) const PAR_ELEMENTS: usize = 1 << 15;

/// Multiply-adds below which a GEMM runs on one thread. Measured on 2
/// cores with gemm 0.19 (its AVX-512 kernels): a second thread only pays
/// from about 2^28 (a 1024×512×512 product gains 1.5–1.8×); from 2^22 to
/// 2^27 it costs up to 1.9× (`cargo bench --bench gemm`). Batches of 256
/// rows and more get their parallelism from shards instead.
pub(crate) const PAR_GEMM: usize = 1 << 28;

/// The data of buffer `b`.
fn data<'a>(arena: &'a [Vec<f32>], inputs: &[&'a [f32]], b: Buf) -> &'a [f32] {
    match b {
        Buf::Slot(s) => &arena[s],
        Buf::Input(i) => inputs[i],
    }
}

pub(super) fn run(instr: &Instr, arena: &mut [Vec<f32>], inputs: &[&[f32]], threaded: bool) {
    let out_slot = match instr {
        Instr::Fused { out, .. }
        | Instr::Reduce { out, .. }
        | Instr::SumBatch { out, .. }
        | Instr::Spectral { out, .. }
        | Instr::Conv { out, .. }
        | Instr::Pool { out, .. }
        | Instr::Axes { out, .. }
        | Instr::Zero { out } => *out,
        Instr::Gemm { out, .. } => match out.buf {
            Buf::Slot(s) => s,
            // Cannot fire: the compiler writes products into arena buffers only.
            Buf::Input(_) => unreachable!("outputs are arena buffers"),
        },
    };
    // The output is taken out of the arena while the inputs are read: the
    // allocator never gives an instruction's output the buffer of an input.
    let mut out = std::mem::take(&mut arena[out_slot]);
    // A convolution's scratch is live at its instruction alone, so it is no input's buffer either.
    let scratch_slot = match instr {
        Instr::Conv { scratch, .. } => Some(*scratch),
        _ => None,
    };
    let mut scratch = scratch_slot.map(|s| std::mem::take(&mut arena[s])).unwrap_or_default();
    {
        let arena: &[Vec<f32>] = arena;
        match instr {
            Instr::Fused { dims, inputs: views, code, .. } => {
                let srcs: Vec<&[f32]> = views.iter().map(|v| data(arena, inputs, v.buf)).collect();
                fused(&mut out, *dims, views, &srcs, code, threaded);
            }
            Instr::Gemm { out: o, a, b, m, k, n, batch, accumulate, alpha } => {
                let (da, db) = (data(arena, inputs, a.buf), data(arena, inputs, b.buf));
                gemm(&mut out, *o, (da, *a), (db, *b), (*m, *k, *n), *batch, (*accumulate, *alpha), threaded);
            }
            Instr::Reduce { kind, input, out_dims, .. } => {
                reduce(&mut out, *kind, *input, data(arena, inputs, input.buf), *out_dims);
            }
            Instr::SumBatch { input, alpha, accumulate, repeat, .. } => {
                sum_batch(&mut out, *input, data(arena, inputs, input.buf), *alpha * *repeat as f32, *accumulate);
            }
            Instr::Spectral { input, outer, .. } => {
                let (_, m, n) = input.dims;
                let src = data(arena, inputs, input.buf);
                let w: Vec<f64> =
                    (0..m * n).map(|i| f64::from(src[(i / n) * input.strides.1 + (i % n) * input.strides.2])).collect();
                let (sigma, u, v) = crate::ir::top_singular(&w, m, n);
                if *outer {
                    for (i, o) in out[..m * n].iter_mut().enumerate() {
                        *o = (u[i / n] * v[i % n]) as f32;
                    }
                } else {
                    out[0] = sigma as f32;
                }
            }
            Instr::Conv { kind, a, b, geom, accumulate, alpha, .. } => {
                let operands = ((data(arena, inputs, a.buf), a.dims.0), (data(arena, inputs, b.buf), b.dims.0));
                conv::run(*kind, geom, &mut out, operands, &mut scratch, (*accumulate, *alpha), threaded);
            }
            Instr::Pool { input, planes, hw, k, unpool, .. } => {
                let src = data(arena, inputs, input.buf);
                if *unpool {
                    conv::unpool(*planes, *hw, *k, src, &mut out, threaded);
                } else {
                    conv::avg_pool(*planes, *hw, *k, src, &mut out, threaded);
                }
            }
            Instr::Axes { input, dims, broadcast, .. } => {
                let src = data(arena, inputs, input.buf);
                if *broadcast {
                    conv::broadcast_axes(*dims, src, &mut out, threaded);
                } else {
                    conv::sum_axes(*dims, src, &mut out, threaded);
                }
            }
            Instr::Zero { .. } => out.iter_mut().for_each(|x| *x = 0.0),
        }
    }
    arena[out_slot] = out;
    if let Some(s) = scratch_slot {
        arena[s] = scratch;
    }
}

/// Element `(e, i, j)` of a view's data.
#[inline(always)]
fn at(src: &[f32], v: &View, e: usize, i: usize, j: usize) -> f32 {
    src[e * v.strides.0 + i * v.strides.1 + j * v.strides.2]
}

/// A fused loop: tiles of the output, each computed through the registers.
fn fused(out: &mut [f32], dims: (usize, usize, usize), views: &[View], srcs: &[&[f32]], code: &[FOp], threaded: bool) {
    let total = dims.0 * dims.1 * dims.2;
    let out = &mut out[..total];
    if threaded && total >= PAR_ELEMENTS {
        let piece = PAR_ELEMENTS / 4;
        crate::backend::partner::for_each_chunk(out, piece, |p, c| {
            host::wide(
                #[inline(always)]
                || fused_piece(p * piece, c, dims, views, srcs, code),
            )
        });
    } else {
        host::wide(
            #[inline(always)]
            || fused_piece(0, out, dims, views, srcs, code),
        );
    }
}

/// The elements of a fused loop's output from `start` on, tile by tile.
/// Tiles run over the output in order, across rows: a tile of a view read
/// in the output's own order is one copy, one of a single value one fill,
/// and any other view is read row segment by row segment. Inlined into
/// `host::wide`, so its loops get the wide vector instructions.
#[inline(always)]
fn fused_piece(
    start: usize,
    piece: &mut [f32],
    (_, m, n): (usize, usize, usize),
    views: &[View],
    srcs: &[&[f32]],
    code: &[FOp],
) {
    let mut regs: Registers = [[0.0; TILE]; MAX_CODE];
    for (t, tile) in piece.chunks_mut(TILE).enumerate() {
        let s = start + t * TILE;
        let len = tile.len();
        // A view read in the output's own order is read where it lies.
        let direct = |j: usize| {
            let v = &views[j];
            (!v.is_constant() && v.is_contiguous()).then(|| &srcs[j][s..s + len])
        };
        tile_run(&mut regs, tile, code, direct, |j, reg| {
            let (v, src) = (&views[j], srcs[j]);
            if v.is_constant() {
                reg[..len].fill(src[0]);
            } else if v.is_row_major() {
                // Row-major within each example (a per-example block shared by the batch, say): one copy per example the tile spans.
                let per = m * n;
                let mut pos = s;
                while pos < s + len {
                    let (e, q) = (pos / per, pos % per);
                    let seg = (per - q).min(s + len - pos);
                    let base = e * v.strides.0 + q;
                    reg[pos - s..pos - s + seg].copy_from_slice(&src[base..base + seg]);
                    pos += seg;
                }
            } else {
                let mut pos = s;
                while pos < s + len {
                    let (r, col) = (pos / n, pos % n);
                    let seg = (n - col).min(s + len - pos);
                    let base = (r / m) * v.strides.0 + (r % m) * v.strides.1 + col * v.strides.2;
                    let dst = &mut reg[pos - s..pos - s + seg];
                    match v.strides.2 {
                        1 => dst.copy_from_slice(&src[base..base + seg]),
                        0 => dst.fill(src[base]),
                        st => dst.iter_mut().enumerate().for_each(|(q, x)| *x = src[base + q * st]),
                    }
                    pos += seg;
                }
            }
        });
    }
}

/// A fused loop's registers, made once per loop (or per thread's share of it).
type Registers = [[f32; TILE]; MAX_CODE];

/// One tile through the loop's program. A load of input `j` reads the
/// tile's slice `direct(j)` in place where there is one, else `load(j, reg)`
/// fills a register from it; the last op writes the tile itself. Copies
/// into registers and out of the last one were a tenth of a wide MLP's
/// training step (`cargo bench --bench continuous`, W 512).
#[inline(always)]
fn tile_run<'s>(
    regs: &mut Registers,
    tile: &mut [f32],
    code: &[FOp],
    direct: impl Fn(usize) -> Option<&'s [f32]>,
    load: impl Fn(usize, &mut [f32]),
) {
    let len = tile.len();
    let last = code.len() - 1;
    // Registers that stand for an input's slice, read in place.
    let mut read: [Option<&'s [f32]>; MAX_CODE] = [None; MAX_CODE];
    for (i, op) in code.iter().enumerate() {
        if let FOp::Load(j) = *op
            && let Some(x) = direct(j)
        {
            if i == last {
                tile.copy_from_slice(x);
            }
            read[i] = Some(x);
            continue;
        }
        let (done, rest) = regs.split_at_mut(i);
        let arg = |a: usize| read[a].unwrap_or(&done[a][..len]);
        let dst: &mut [f32] = if i == last { &mut *tile } else { &mut rest[0][..len] };
        match *op {
            FOp::Load(j) => load(j, dst),
            FOp::Imm(c) => dst.fill(c),
            FOp::Neg(a) => dst.iter_mut().zip(arg(a)).for_each(|(d, x)| *d = -x),
            FOp::Bin(op, a, b) => {
                let (x, y) = (arg(a), arg(b));
                let it = dst.iter_mut().zip(x.iter().zip(y));
                match op {
                    Arith::Add => it.for_each(|(d, (p, q))| *d = p + q),
                    Arith::Sub => it.for_each(|(d, (p, q))| *d = p - q),
                    Arith::Mul => it.for_each(|(d, (p, q))| *d = p * q),
                    Arith::Div => it.for_each(|(d, (p, q))| *d = p / q),
                }
            }
            FOp::Map(f, a) => {
                dst.copy_from_slice(arg(a));
                host::map_in_place(f, dst);
            }
            FOp::Powf(a, e) => {
                let x = arg(a);
                let it = dst.iter_mut().zip(x);
                if e == 2.0 {
                    it.for_each(|(d, x)| *d = x * x);
                } else if e == 1.0 {
                    it.for_each(|(d, x)| *d = *x);
                } else if e == -1.0 {
                    it.for_each(|(d, x)| *d = 1.0 / x);
                } else if e == 0.5 {
                    it.for_each(|(d, x)| *d = x.sqrt());
                } else {
                    it.for_each(|(d, x)| *d = x.powf(e));
                }
            }
            FOp::Pow(a, b) => {
                let (x, y) = (arg(a), arg(b));
                dst.iter_mut().zip(x.iter().zip(y)).for_each(|(d, (p, q))| *d = p.powf(*q));
            }
        }
    }
}

/// The highest index a matrix operand reads, for the bounds check before the GEMM.
fn reach(x: &Mat, (rows, cols): (usize, usize), batch: usize) -> usize {
    (batch - 1) * x.sb + (rows - 1) * x.rs + (cols - 1) * x.cs
}

#[allow(clippy::too_many_arguments)]
fn gemm(
    out: &mut [f32],
    o: Mat,
    (da, a): (&[f32], Mat),
    (db, b): (&[f32], Mat),
    (m, k, n): (usize, usize, usize),
    batch: usize,
    (accumulate, alpha): (bool, f32),
    threaded: bool,
) {
    assert!(
        reach(&o, (m, n), batch) < out.len()
            && reach(&a, (m, k), batch) < da.len()
            && reach(&b, (k, n), batch) < db.len(),
        "GEMM operands lie inside their buffers"
    );
    for ex in 0..batch {
        // A shared output (stride 0) accumulates every example's product.
        let read = accumulate || (o.sb == 0 && ex > 0);
        host::gemm(
            (&mut out[ex * o.sb..], (o.rs, o.cs)),
            (&da[ex * a.sb..], (a.rs, a.cs)),
            (&db[ex * b.sb..], (b.rs, b.cs)),
            (m, k, n),
            (read, alpha),
            threaded,
        );
    }
}

fn reduce(out: &mut [f32], kind: Reduction, v: View, src: &[f32], (_, om, on): (usize, usize, usize)) {
    let (b, m, n) = v.dims;
    for e in 0..b {
        let x = |i: usize, j: usize| at(src, &v, e, i, j);
        let o = &mut out[e * om * on..(e + 1) * om * on];
        match kind {
            Reduction::Sum => {
                o[0] = (0..m).map(|i| (0..n).map(|j| x(i, j)).sum::<f32>()).sum();
            }
            Reduction::SumTo { rows, cols } => {
                o.iter_mut().for_each(|y| *y = 0.0);
                for i in 0..m {
                    for j in 0..n {
                        o[if rows { 0 } else { i } * on + if cols { 0 } else { j }] += x(i, j);
                    }
                }
            }
            Reduction::LogSumExp => {
                let max = (0..m * n).map(|q| x(q / n, q % n)).fold(f32::NEG_INFINITY, f32::max);
                let s: f32 = (0..m * n).map(|q| (x(q / n, q % n) - max).exp()).sum();
                o[0] = if max.is_finite() { max + s.ln() } else { max };
            }
            Reduction::LogSumExpLast => {
                for (i, y) in o.iter_mut().enumerate().take(m) {
                    let max = (0..n).map(|j| x(i, j)).fold(f32::NEG_INFINITY, f32::max);
                    let s: f32 = (0..n).map(|j| (x(i, j) - max).exp()).sum();
                    *y = if max.is_finite() { max + s.ln() } else { max };
                }
            }
            Reduction::Softmax => {
                let max = (0..m * n).map(|q| x(q / n, q % n)).fold(f32::NEG_INFINITY, f32::max);
                for (q, y) in o.iter_mut().enumerate().take(m * n) {
                    *y = (x(q / n, q % n) - max).exp();
                }
                let s: f32 = o.iter().sum();
                o.iter_mut().for_each(|y| *y /= s);
            }
            Reduction::SoftmaxLast => {
                for i in 0..m {
                    let max = (0..n).map(|j| x(i, j)).fold(f32::NEG_INFINITY, f32::max);
                    let row = &mut o[i * n..(i + 1) * n];
                    for (j, y) in row.iter_mut().enumerate() {
                        *y = (x(i, j) - max).exp();
                    }
                    let s: f32 = row.iter().sum();
                    row.iter_mut().for_each(|y| *y /= s);
                }
            }
        }
    }
}

/// `out (+)= alpha Σ_e v_e`.
fn sum_batch(out: &mut [f32], v: View, src: &[f32], alpha: f32, accumulate: bool) {
    let (b, m, n) = v.dims;
    let out = &mut out[..m * n];
    if !accumulate {
        out.iter_mut().for_each(|x| *x = 0.0);
    }
    host::wide(
        #[inline(always)]
        || {
            for e in 0..b {
                for i in 0..m {
                    let row = &mut out[i * n..(i + 1) * n];
                    let base = e * v.strides.0 + i * v.strides.1;
                    if v.strides.2 == 1 {
                        row.iter_mut().zip(&src[base..base + n]).for_each(|(o, x)| *o += alpha * x);
                    } else {
                        row.iter_mut().enumerate().for_each(|(j, o)| *o += alpha * src[base + j * v.strides.2]);
                    }
                }
            }
        },
    );
}
