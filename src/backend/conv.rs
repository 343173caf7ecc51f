//! Convolution, pooling and axis-run kernels on host slices, batched: a
//! per-example value is `batch` row-major blocks one after another, a kernel
//! is shared by the batch.
//!
//! A convolution is an im2col and one GEMM over the whole batch. The columns
//! are laid out `[tap, example, pixel]` (a tap is an input channel and a
//! kernel offset), so the batch and the output pixels merge into one GEMM
//! axis of unit stride: the forward product, the input adjoint and the
//! batch-summed kernel adjoint are each a single GEMM, the last contracting
//! over examples × pixels, and no per-example kernel gradient is ever made
//! when only the sum is wanted. Outputs and output gradients cross between
//! the `[example, channel, pixel]` layout of values and the GEMM's
//! `[channel, example, pixel]` by copying whole pixel runs.

use crate::backend::host;
use crate::backend::step::PAR_ELEMENTS;
use rayon::prelude::*;

/// A square-kernel convolution's sizes: input `[c, h, w]`, kernel
/// `[o, c, k, k]`, zero padding `pad` on every side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Conv {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
}

impl Conv {
    /// The sizes of convolving an input shaped `[c, h, w]` by a kernel shaped `[o, c, k, k]`.
    pub fn of(input: &[usize], kernel: &[usize], stride: usize, pad: usize) -> Conv {
        let (&[c, h, w], &[o, _, k, _]) = (input, kernel) else {
            // Cannot fire: the IR's constructors shape every convolution's operands so.
            unreachable!("a convolution of [c, h, w] by [o, c, k, k]")
        };
        Conv { c, h, w, o, k, stride, pad }
    }

    /// The output's rows and columns (floor division, as the IR shapes them).
    pub fn out_hw(&self) -> (usize, usize) {
        let side = |n: usize| (n + 2 * self.pad - self.k) / self.stride + 1;
        (side(self.h), side(self.w))
    }

    /// Taps per output value: input channels × kernel offsets.
    fn taps(&self) -> usize {
        self.c * self.k * self.k
    }

    fn pixels(&self) -> usize {
        let (oh, ow) = self.out_hw();
        oh * ow
    }

    /// Floats of scratch the kernels need for `batch` examples: the columns
    /// and one GEMM-layout output, or one example's columns where each
    /// example runs on its own (`PER_EXAMPLE_PIXELS`).
    pub fn scratch(&self, batch: usize) -> usize {
        if self.per_example() { self.taps() * self.pixels() } else { batch * self.pixels() * (self.taps() + self.o) }
    }

    fn per_example(&self) -> bool {
        self.pixels() >= PER_EXAMPLE_PIXELS
    }

    /// Elements of one example's input.
    pub fn input_len(&self) -> usize {
        self.c * self.h * self.w
    }

    /// Elements of one example's output.
    pub fn output_len(&self) -> usize {
        self.o * self.pixels()
    }

    pub fn kernel_len(&self) -> usize {
        self.o * self.taps()
    }

    /// Multiply-adds of one example's convolution (each kernel does as many).
    pub fn macs(&self) -> usize {
        self.kernel_len() * self.pixels()
    }
}

/// Which convolution kernel `run` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `out = a ⋆ b`: the input `a` convolved with the kernel `b`.
    Forward,
    /// The adjoint in the input: from the output gradient `a` and the kernel `b`.
    Input,
    /// The adjoint in the kernel, per example: from the input `a` and the output gradient `b`.
    Kernel,
    /// The same summed over the batch, into a shared `out`.
    KernelSum,
}

/// Runs `f` on each `len`-element piece of `out` (with its index), over
/// threads when `threaded` and the whole is big enough to pay for them.
fn pieces(out: &mut [f32], len: usize, threaded: bool, f: impl Fn(usize, &mut [f32]) + Sync) {
    if len == 0 {
        return;
    }
    if threaded && out.len() >= PAR_ELEMENTS {
        // Enough pieces per task that each hand-off moves a few thousand values.
        let per = (PAR_ELEMENTS / 4).div_ceil(len).max(1);
        out.par_chunks_mut(per * len).enumerate().for_each(|(t, chunk)| {
            host::wide(
                #[inline(always)]
                || chunk.chunks_mut(len).enumerate().for_each(|(i, piece)| f(t * per + i, piece)),
            )
        });
    } else {
        host::wide(
            #[inline(always)]
            || out.chunks_mut(len).enumerate().for_each(|(i, piece)| f(i, piece)),
        );
    }
}

/// The output columns `j` whose input column `j·stride + q − pad` lies inside `0..w`: `lo..hi`.
#[inline(always)]
fn inside(q: usize, pad: usize, stride: usize, w: usize, ow: usize) -> (usize, usize) {
    // j·stride + q >= pad, and j·stride + q < pad + w.
    let lo = pad.saturating_sub(q).div_ceil(stride);
    let hi = if pad + w > q { (pad + w - q).div_ceil(stride).min(ow) } else { 0 };
    (lo.min(hi), hi)
}

/// Kernel offsets × output pixels up to which `im2col` and `col2im` of a
/// strided convolution, or of output rows under 8 pixels, read through a
/// table of each offset's source pixels (on the stack) instead of row by
/// row, where rows are too short for the per-row work to pay. Measured at
/// batch 64 (32 channels of 8×8 at stride 2 to 4×4): im2col 2.2× and
/// col2im 1.6× faster; stride-1 rows of 8 copy faster row by row (1.2×).
const TABLE: usize = 4096;

/// Marks a table entry whose source lies in the zero padding.
const PADDING: u32 = u32::MAX;

/// For each kernel offset, each output pixel's source index in an input
/// plane, or `PADDING`: `table[offset * pixels + pixel]`, when it fits.
fn sources(g: &Conv) -> Option<[u32; TABLE]> {
    let (oh, ow) = g.out_hw();
    let (p, kk) = (oh * ow, g.k * g.k);
    if p * kk > TABLE || g.h * g.w >= PADDING as usize || (g.stride == 1 && ow >= 8) {
        return None;
    }
    let mut table = [PADDING; TABLE];
    for (t, entries) in table.chunks_mut(p).take(kk).enumerate() {
        let (dy, dx) = (t / g.k, t % g.k);
        for (q, entry) in entries.iter_mut().enumerate() {
            let y = ((q / ow) * g.stride + dy).wrapping_sub(g.pad);
            let x = ((q % ow) * g.stride + dx).wrapping_sub(g.pad);
            if y < g.h && x < g.w {
                // Cannot fail: checked against PADDING just above.
                *entry = u32::try_from(y * g.w + x).unwrap_or(PADDING);
            }
        }
    }
    Some(table)
}

/// Fills `cols` `[tap, example, pixel]` from `x` (`batch` inputs).
fn im2col(g: &Conv, batch: usize, x: &[f32], cols: &mut [f32], threaded: bool) {
    let (oh, ow) = g.out_hw();
    let (p, kk) = (oh * ow, g.k * g.k);
    if let Some(table) = sources(g) {
        pieces(&mut cols[..g.taps() * batch * p], batch * p, threaded, |tap, row| {
            let (c, offset) = (tap / kk, tap % kk);
            let from = &table[offset * p..][..p];
            for (e, out) in row.chunks_mut(p).enumerate() {
                let plane = &x[e * g.input_len() + c * g.h * g.w..][..g.h * g.w];
                out.iter_mut().zip(from).for_each(|(o, &s)| *o = plane.get(s as usize).copied().unwrap_or(0.0));
            }
        });
        return;
    }
    pieces(&mut cols[..g.taps() * batch * p], batch * p, threaded, |tap, row| {
        let (c, dy, dx) = (tap / kk, tap % kk / g.k, tap % g.k);
        let (lo, hi) = inside(dx, g.pad, g.stride, g.w, ow);
        for e in 0..batch {
            let plane = &x[e * g.input_len() + c * g.h * g.w..][..g.h * g.w];
            for i in 0..oh {
                let out = &mut row[e * p + i * ow..][..ow];
                let y = (i * g.stride + dy).wrapping_sub(g.pad);
                if y >= g.h {
                    out.fill(0.0);
                    continue;
                }
                out[..lo].fill(0.0);
                out[hi..].fill(0.0);
                if lo == hi {
                    continue;
                }
                let src = &plane[y * g.w..][..g.w];
                let base = lo * g.stride + dx - g.pad;
                if g.stride == 1 {
                    out[lo..hi].copy_from_slice(&src[base..base + hi - lo]);
                } else {
                    out[lo..hi].iter_mut().enumerate().for_each(|(j, o)| *o = src[base + j * g.stride]);
                }
            }
        }
    });
}

/// Output pixels per example from which each example's product is a GEMM
/// of its own, on its own columns, written in place (the scratch then holds
/// one example's columns); below, one GEMM for the batch and a pass between
/// layouts. Measured on 2 cores at batch 64 (forward): 28×28
/// pixels from 1 channel run 2.2× faster per example, 14×14 from 32 channels
/// break even, and 4×4 or 2×2 (from 1 or 32 channels) run 2.7× faster batched.
/// Each example's columns made just before its GEMM (kept in cache) ran
/// 1.2–1.7× faster than the whole batch's made first.
const PER_EXAMPLE_PIXELS: usize = 256;

/// `x` (`batch` inputs) convolved with `kernel`: `out` `[batch, o, oh, ow]`.
pub(crate) fn forward(
    g: &Conv,
    batch: usize,
    x: &[f32],
    kernel: &[f32],
    out: &mut [f32],
    scratch: &mut [f32],
    threaded: bool,
) {
    let (p, t) = (g.pixels(), g.taps());
    if g.per_example() {
        let cols = &mut scratch[..t * p];
        for (e, out_e) in out.chunks_mut(g.o * p).take(batch).enumerate() {
            im2col(g, 1, &x[e * g.input_len()..][..g.input_len()], cols, threaded);
            host::gemm((out_e, (p, 1)), (kernel, (t, 1)), (cols, (p, 1)), (g.o, t, p), (false, 1.0), threaded);
        }
        return;
    }
    let (cols, z) = scratch[..g.scratch(batch)].split_at_mut(t * batch * p);
    im2col(g, batch, x, cols, threaded);
    let n = batch * p;
    // z[o, (e, pixel)] = Σ_tap kernel[o, tap] cols[tap, (e, pixel)].
    host::gemm((z, (n, 1)), (kernel, (t, 1)), (cols, (n, 1)), (g.o, t, n), (false, 1.0), threaded);
    to_examples(g.o, batch, p, z, &mut out[..batch * g.o * p], threaded);
}

/// `[channel, example, pixel]` → `[example, channel, pixel]`, by pixel runs.
fn to_examples(channels: usize, batch: usize, p: usize, z: &[f32], out: &mut [f32], threaded: bool) {
    pieces(out, p, threaded, |run, dst| {
        let (e, ch) = (run / channels, run % channels);
        dst.copy_from_slice(&z[(ch * batch + e) * p..][..p]);
    });
}

/// `[example, channel, pixel]` → `[channel, example, pixel]`, by pixel runs.
fn to_channels(channels: usize, batch: usize, p: usize, gy: &[f32], z: &mut [f32], threaded: bool) {
    pieces(&mut z[..channels * batch * p], p, threaded, |run, dst| {
        let (ch, e) = (run / batch, run % batch);
        dst.copy_from_slice(&gy[(e * channels + ch) * p..][..p]);
    });
}

/// The adjoint of `forward` in its input: `gx` `[batch, c, h, w]` from the
/// output gradient `gy` `[batch, o, oh, ow]` (a GEMM, then col2im).
pub(crate) fn input_adjoint(
    g: &Conv,
    batch: usize,
    gy: &[f32],
    kernel: &[f32],
    gx: &mut [f32],
    scratch: &mut [f32],
    threaded: bool,
) {
    let (p, t) = (g.pixels(), g.taps());
    // cols[tap, (e, pixel)] = Σ_o kernel[o, tap] gy[e, o, pixel].
    if g.per_example() {
        let cols = &mut scratch[..t * p];
        for (e, gx_e) in gx.chunks_mut(g.input_len()).take(batch).enumerate() {
            let gy_e = (&gy[e * g.o * p..][..g.o * p], (p, 1));
            host::gemm((cols, (p, 1)), (kernel, (1, t)), gy_e, (t, g.o, p), (false, 1.0), threaded);
            col2im(g, 1, cols, gx_e, threaded);
        }
        return;
    }
    let (cols, z) = scratch[..g.scratch(batch)].split_at_mut(t * batch * p);
    let n = batch * p;
    to_channels(g.o, batch, p, gy, z, threaded);
    host::gemm((cols, (n, 1)), (kernel, (1, t)), (z, (n, 1)), (t, g.o, n), (false, 1.0), threaded);
    col2im(g, batch, cols, &mut gx[..batch * g.input_len()], threaded);
}

/// Adds each column back where `im2col` read it from: `gx` `[batch, c, h, w]`.
fn col2im(g: &Conv, batch: usize, cols: &[f32], gx: &mut [f32], threaded: bool) {
    let (oh, ow) = g.out_hw();
    let (p, kk) = (oh * ow, g.k * g.k);
    if let Some(table) = sources(g) {
        pieces(gx, g.h * g.w, threaded, |plane_at, plane| {
            let (e, c) = (plane_at / g.c, plane_at % g.c);
            plane.fill(0.0);
            for (offset, from) in table.chunks(p).take(kk).enumerate() {
                let row = &cols[((c * kk + offset) * batch + e) * p..][..p];
                for (&s, v) in from.iter().zip(row) {
                    if let Some(d) = plane.get_mut(s as usize) {
                        *d += v;
                    }
                }
            }
        });
        return;
    }
    // One input plane per piece: pieces write apart, so threads need no locks.
    pieces(gx, g.h * g.w, threaded, |plane_at, plane| {
        let (e, c) = (plane_at / g.c, plane_at % g.c);
        plane.fill(0.0);
        for dy in 0..g.k {
            for dx in 0..g.k {
                let tap = c * kk + dy * g.k + dx;
                let (lo, hi) = inside(dx, g.pad, g.stride, g.w, ow);
                let row = &cols[(tap * batch + e) * p..][..p];
                for i in 0..oh {
                    let y = (i * g.stride + dy).wrapping_sub(g.pad);
                    if y >= g.h || lo == hi {
                        continue;
                    }
                    let dst = &mut plane[y * g.w..][..g.w];
                    let src = &row[i * ow + lo..i * ow + hi];
                    let base = lo * g.stride + dx - g.pad;
                    if g.stride == 1 {
                        dst[base..base + hi - lo].iter_mut().zip(src).for_each(|(d, s)| *d += s);
                    } else {
                        src.iter().enumerate().for_each(|(j, s)| dst[base + j * g.stride] += s);
                    }
                }
            }
        }
    });
}

/// The adjoint of `forward` in its kernel, summed over the batch:
/// `gw (+)= alpha Σ_e gy_e ⋆ x_e`, one GEMM contracting over examples × pixels
/// (or, with many pixels, one per example adding into `gw`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn kernel_adjoint_sum(
    g: &Conv,
    batch: usize,
    x: &[f32],
    gy: &[f32],
    gw: &mut [f32],
    (accumulate, alpha): (bool, f32),
    scratch: &mut [f32],
    threaded: bool,
) {
    let (p, t) = (g.pixels(), g.taps());
    let gw = &mut gw[..g.kernel_len()];
    if g.per_example() {
        let cols = &mut scratch[..t * p];
        for e in 0..batch {
            im2col(g, 1, &x[e * g.input_len()..][..g.input_len()], cols, threaded);
            let gy_e = (&gy[e * g.o * p..][..g.o * p], (p, 1));
            let add = accumulate || e > 0;
            host::gemm((&mut *gw, (t, 1)), gy_e, (cols, (1, p)), (g.o, p, t), (add, alpha), threaded);
        }
        return;
    }
    let (cols, z) = scratch[..g.scratch(batch)].split_at_mut(t * batch * p);
    im2col(g, batch, x, cols, threaded);
    let n = batch * p;
    to_channels(g.o, batch, p, gy, z, threaded);
    // gw[o, tap] = Σ_(e, pixel) z[o, (e, pixel)] cols[tap, (e, pixel)].
    host::gemm((gw, (t, 1)), (z, (n, 1)), (cols, (1, n)), (g.o, n, t), (accumulate, alpha), threaded);
}

/// The adjoint of `forward` in its kernel for each example: `gw` `[batch, o, c, k, k]`.
pub(crate) fn kernel_adjoint(
    g: &Conv,
    batch: usize,
    x: &[f32],
    gy: &[f32],
    gw: &mut [f32],
    scratch: &mut [f32],
    threaded: bool,
) {
    let (p, t) = (g.pixels(), g.taps());
    let cols = &mut scratch[..t * p];
    for (e, gw_e) in gw.chunks_mut(g.kernel_len()).take(batch).enumerate() {
        im2col(g, 1, &x[e * g.input_len()..][..g.input_len()], cols, threaded);
        let gy_e = (&gy[e * g.o * p..][..g.o * p], (p, 1));
        host::gemm((gw_e, (t, 1)), gy_e, (cols, (1, p)), (g.o, p, t), (false, 1.0), threaded);
    }
}

/// An operand's values and how many examples they hold (1 for a shared one).
pub(crate) type Batched<'a> = (&'a [f32], usize);

/// Runs one convolution kernel: operands `(data, batch)`, batch 1 for a shared
/// one. With a shared kernel (or both operands per example, for the kernel
/// adjoints) the kernel runs over the whole batch at once; otherwise
/// example by example, a shared operand read for each.
pub(crate) fn run(
    kind: Kind,
    g: &Conv,
    out: &mut [f32],
    ((a, ba), (b, bb)): (Batched, Batched),
    scratch: &mut [f32],
    (accumulate, alpha): (bool, f32),
    threaded: bool,
) {
    let batch = ba.max(bb);
    match kind {
        Kind::Forward if bb == 1 => return forward(g, ba, a, b, out, scratch, threaded),
        Kind::Input if bb == 1 => return input_adjoint(g, ba, a, b, out, scratch, threaded),
        Kind::Kernel if ba == bb => return kernel_adjoint(g, batch, a, b, out, scratch, threaded),
        Kind::KernelSum if ba == bb => {
            return kernel_adjoint_sum(g, batch, a, b, out, (accumulate, alpha), scratch, threaded);
        }
        _ => {}
    }
    // Each operand's and the output's length per example.
    let (la, lb, lo) = match kind {
        Kind::Forward => (g.input_len(), g.kernel_len(), g.output_len()),
        Kind::Input => (g.output_len(), g.kernel_len(), g.input_len()),
        Kind::Kernel | Kind::KernelSum => (g.input_len(), g.output_len(), g.kernel_len()),
    };
    for e in 0..batch {
        let a_e = &a[if ba > 1 { e * la } else { 0 }..][..la];
        let b_e = &b[if bb > 1 { e * lb } else { 0 }..][..lb];
        match kind {
            Kind::Forward => forward(g, 1, a_e, b_e, &mut out[e * lo..], scratch, threaded),
            Kind::Input => input_adjoint(g, 1, a_e, b_e, &mut out[e * lo..], scratch, threaded),
            Kind::Kernel => kernel_adjoint(g, 1, a_e, b_e, &mut out[e * lo..], scratch, threaded),
            Kind::KernelSum => {
                let add = (accumulate || e > 0, alpha);
                kernel_adjoint_sum(g, 1, a_e, b_e, out, add, scratch, threaded);
            }
        }
    }
}

/// The planes and `(h, w)` of each that pooling sees in `batch` values
/// shaped `image` (windows run over its last two axes).
pub(crate) fn pool_planes(image: &[usize], batch: usize) -> (usize, (usize, usize)) {
    let (lead, hw) = image.split_at(image.len().saturating_sub(2));
    let (h, w) = match hw {
        [h, w] => (*h, *w),
        // Cannot fire: the IR's constructor pools values of rank 2 and more.
        _ => unreachable!("pooling over two axes"),
    };
    (batch * lead.iter().product::<usize>(), (h, w))
}

/// Average pooling over `k × k` windows: `x` `[planes, h, w]` → `out`
/// `[planes, h / k, w / k]`, rows and columns past the last whole window dropped.
pub(crate) fn avg_pool(planes: usize, (h, w): (usize, usize), k: usize, x: &[f32], out: &mut [f32], threaded: bool) {
    let (oh, ow) = (h / k, w / k);
    let scale = 1.0 / (k * k) as f32;
    pieces(&mut out[..planes * oh * ow], oh * ow, threaded, |at, dst| {
        let plane = &x[at * h * w..][..h * w];
        for i in 0..oh {
            let row = &mut dst[i * ow..][..ow];
            row.fill(0.0);
            for dy in 0..k {
                let src = &plane[(i * k + dy) * w..][..ow * k];
                row.iter_mut().zip(src.chunks_exact(k)).for_each(|(o, s)| *o += s.iter().sum::<f32>());
            }
            row.iter_mut().for_each(|o| *o *= scale);
        }
    });
}

/// The adjoint of `avg_pool`: each value of `g` `[planes, h / k, w / k]`,
/// over k², across its window of `out` `[planes, h, w]`; 0 past the windows.
pub(crate) fn unpool(planes: usize, (h, w): (usize, usize), k: usize, g: &[f32], out: &mut [f32], threaded: bool) {
    let (oh, ow) = (h / k, w / k);
    let scale = 1.0 / (k * k) as f32;
    pieces(&mut out[..planes * h * w], h * w, threaded, |at, plane| {
        let src = &g[at * oh * ow..][..oh * ow];
        for y in 0..h {
            let row = &mut plane[y * w..][..w];
            if y / k >= oh {
                row.fill(0.0);
                continue;
            }
            let from = &src[y / k * ow..][..ow];
            row[ow * k..].fill(0.0);
            row[..ow * k].chunks_exact_mut(k).zip(from).for_each(|(d, s)| d.fill(s * scale));
        }
    });
}

/// `x` viewed as `[p, a, q]` summed over its middle axis: `out` `[p, q]`.
pub(crate) fn sum_axes((p, a, q): (usize, usize, usize), x: &[f32], out: &mut [f32], threaded: bool) {
    pieces(&mut out[..p * q], q, threaded, |i, dst| {
        let block = &x[i * a * q..][..a * q];
        if q == 1 {
            dst[0] = host::sum(block);
            return;
        }
        dst.copy_from_slice(&block[..q]);
        for run in block[q..].chunks_exact(q) {
            dst.iter_mut().zip(run).for_each(|(d, s)| *d += s);
        }
    });
}

/// The adjoint of `sum_axes`: `x` `[p, q]` repeated along a middle axis, `out` `[p, a, q]`.
pub(crate) fn broadcast_axes((p, a, q): (usize, usize, usize), x: &[f32], out: &mut [f32], threaded: bool) {
    if a == 0 {
        return;
    }
    if q == 1 {
        // One value repeated a times: a fill per value, not a piece per element.
        return pieces(&mut out[..p * a], a, threaded, |i, dst| dst.fill(x[i]));
    }
    pieces(&mut out[..p * a * q], q, threaded, |run, dst| dst.copy_from_slice(&x[run / a * q..][..q]));
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn random(rng: &mut StdRng, n: usize) -> Vec<f32> {
        (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect()
    }

    /// The input index `conv` reads for output `(i, j)` at offset `(dy, dx)`, if inside.
    fn source(g: &Conv, i: usize, j: usize, dy: usize, dx: usize) -> Option<(usize, usize)> {
        let y = (i * g.stride + dy).checked_sub(g.pad)?;
        let x = (j * g.stride + dx).checked_sub(g.pad)?;
        (y < g.h && x < g.w).then_some((y, x))
    }

    /// The definition, in f64: out[e, o, i, j] = Σ w[o, c, dy, dx] x[e, c, i·s + dy − pad, j·s + dx − pad].
    fn naive_forward(g: &Conv, batch: usize, x: &[f32], w: &[f32]) -> Vec<f64> {
        let (oh, ow) = g.out_hw();
        let mut out = vec![0.0; batch * g.o * oh * ow];
        for e in 0..batch {
            for o in 0..g.o {
                for i in 0..oh {
                    for j in 0..ow {
                        let mut s = 0.0f64;
                        for c in 0..g.c {
                            for dy in 0..g.k {
                                for dx in 0..g.k {
                                    if let Some((y, xx)) = source(g, i, j, dy, dx) {
                                        let wv = w[((o * g.c + c) * g.k + dy) * g.k + dx];
                                        s += f64::from(wv) * f64::from(x[e * g.input_len() + (c * g.h + y) * g.w + xx]);
                                    }
                                }
                            }
                        }
                        out[((e * g.o + o) * oh + i) * ow + j] = s;
                    }
                }
            }
        }
        out
    }

    /// The adjoints by the definition: every product `w · x · gy` that the forward sum holds, credited to its other factor.
    fn naive_adjoints(g: &Conv, batch: usize, x: &[f32], w: &[f32], gy: &[f32]) -> (Vec<f64>, Vec<f64>) {
        let (oh, ow) = g.out_hw();
        let mut gx = vec![0.0; batch * g.input_len()];
        let mut gw = vec![0.0; batch * g.kernel_len()];
        for e in 0..batch {
            for o in 0..g.o {
                for i in 0..oh {
                    for j in 0..ow {
                        let d = f64::from(gy[((e * g.o + o) * oh + i) * ow + j]);
                        for c in 0..g.c {
                            for dy in 0..g.k {
                                for dx in 0..g.k {
                                    if let Some((y, xx)) = source(g, i, j, dy, dx) {
                                        let wi = ((o * g.c + c) * g.k + dy) * g.k + dx;
                                        let xi = e * g.input_len() + (c * g.h + y) * g.w + xx;
                                        gx[xi] += f64::from(w[wi]) * d;
                                        gw[e * g.kernel_len() + wi] += f64::from(x[xi]) * d;
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        (gx, gw)
    }

    /// f32 against f64: each output sums `terms` products of values in [−1, 1],
    /// so rounding stays below about terms · 2⁻²⁴ (with room for GEMM's order).
    fn close(got: &[f32], want: &[f64], terms: usize, what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: lengths");
        let tol = 4.0 * terms as f64 * f64::from(f32::EPSILON);
        for (i, (a, b)) in got.iter().zip(want).enumerate() {
            assert!((f64::from(*a) - b).abs() <= tol, "{what}[{i}]: {a} vs {b}");
        }
    }

    /// Checks every kernel on `g` at `batch` against the definitions.
    fn check(rng: &mut StdRng, g: Conv, batch: usize) {
        let (oh, ow) = g.out_hw();
        let x = random(rng, batch * g.input_len());
        let kernel = random(rng, g.kernel_len());
        let gy = random(rng, batch * g.o * oh * ow);
        let what = format!("{g:?} batch {batch}");
        let mut scratch = vec![f32::NAN; g.scratch(batch)];
        // Outputs start as NaN: every element must be written, none read.
        let mut out = vec![f32::NAN; batch * g.o * oh * ow];
        forward(&g, batch, &x, &kernel, &mut out, &mut scratch, false);
        close(&out, &naive_forward(&g, batch, &x, &kernel), g.taps(), &format!("forward {what}"));
        let (want_gx, want_gw) = naive_adjoints(&g, batch, &x, &kernel, &gy);
        let mut gx = vec![f32::NAN; batch * g.input_len()];
        input_adjoint(&g, batch, &gy, &kernel, &mut gx, &mut scratch, false);
        close(&gx, &want_gx, g.o * g.k * g.k, &format!("input adjoint {what}"));
        let mut gw = vec![f32::NAN; batch * g.kernel_len()];
        kernel_adjoint(&g, batch, &x, &gy, &mut gw, &mut scratch, false);
        close(&gw, &want_gw, oh * ow, &format!("kernel adjoint {what}"));
        // Summed: written at ½, then ¼ more added, is ¾ of the sum.
        let want_sum: Vec<f64> = (0..g.kernel_len())
            .map(|i| 0.75 * (0..batch).map(|e| want_gw[e * g.kernel_len() + i]).sum::<f64>())
            .collect();
        let mut sum = vec![f32::NAN; g.kernel_len()];
        kernel_adjoint_sum(&g, batch, &x, &gy, &mut sum, (false, 0.5), &mut scratch, false);
        kernel_adjoint_sum(&g, batch, &x, &gy, &mut sum, (true, 0.25), &mut scratch, false);
        close(&sum, &want_sum, batch * oh * ow, &format!("kernel adjoint sum {what}"));
    }

    #[test]
    fn convolutions_match_their_definitions() {
        let mut rng = StdRng::seed_from_u64(13);
        let mut cases = 0;
        for stride in [1, 2, 3] {
            for pad in [0, 1, 2] {
                for k in [1, 3, 5] {
                    let (c, o) = (rng.gen_range(1..=4), rng.gen_range(1..=4));
                    let (h, w) = (rng.gen_range(k.max(2)..=9), rng.gen_range(k..=11));
                    let batch = rng.gen_range(1..=3);
                    check(&mut rng, Conv { c, h, w, o, k, stride, pad }, batch);
                    cases += 1;
                }
            }
        }
        assert_eq!(cases, 27, "every stride, padding and kernel");
        // Images with at least `PER_EXAMPLE_PIXELS` output pixels take the per-example GEMMs.
        for g in [
            Conv { c: 2, h: 17, w: 19, o: 3, k: 3, stride: 1, pad: 1 },
            Conv { c: 1, h: 20, w: 16, o: 2, k: 5, stride: 1, pad: 2 },
            Conv { c: 2, h: 40, w: 39, o: 2, k: 5, stride: 2, pad: 2 },
        ] {
            assert!(g.pixels() >= PER_EXAMPLE_PIXELS, "{g:?} takes the per-example path");
            check(&mut rng, g, 2);
        }
        // Images too big for a table of sources go row by row.
        for g in [
            Conv { c: 2, h: 30, w: 24, o: 2, k: 7, stride: 2, pad: 3 },
            Conv { c: 1, h: 9, w: 44, o: 2, k: 5, stride: 1, pad: 0 },
            Conv { c: 1, h: 20, w: 16, o: 2, k: 5, stride: 1, pad: 2 },
        ] {
            assert!(sources(&g).is_none(), "{g:?} goes row by row");
            check(&mut rng, g, 3);
        }
    }

    /// `run` with operands shared or per example: each example's value by the definitions.
    #[test]
    fn shared_and_per_example_operands_match_their_definitions() {
        let mut rng = StdRng::seed_from_u64(8);
        let g = Conv { c: 2, h: 5, w: 6, o: 3, k: 3, stride: 2, pad: 1 };
        let batch = 3;
        let per = |rng: &mut StdRng, len: usize, many: bool| random(rng, if many { batch * len } else { len });
        let at = |xs: &[f32], len: usize, e: usize| xs[if xs.len() > len { e * len } else { 0 }..][..len].to_vec();
        let mut scratch = vec![0.0; g.scratch(batch)];
        for (xb, wb) in [(true, false), (true, true), (false, true)] {
            let (x, kernel) = (per(&mut rng, g.input_len(), xb), per(&mut rng, g.kernel_len(), wb));
            let operands = |a: &[f32], many_a: bool, b: &[f32], many_b: bool| {
                let n = |many: bool| if many { batch } else { 1 };
                ((a.to_vec(), n(many_a)), (b.to_vec(), n(many_b)))
            };
            let ((a, ba), (b, bb)) = operands(&x, xb, &kernel, wb);
            let mut out = vec![f32::NAN; batch * g.output_len()];
            run(Kind::Forward, &g, &mut out, ((&a, ba), (&b, bb)), &mut scratch, (false, 1.0), false);
            let gy = random(&mut rng, batch * g.output_len());
            let mut sum = vec![f32::NAN; g.kernel_len()];
            run(Kind::KernelSum, &g, &mut sum, ((&a, ba), (&gy, batch)), &mut scratch, (false, 1.0), false);
            let mut want_sum = vec![0.0; g.kernel_len()];
            for e in 0..batch {
                let (x_e, w_e) = (at(&x, g.input_len(), e), at(&kernel, g.kernel_len(), e));
                let want = naive_forward(&g, 1, &x_e, &w_e);
                let got = &out[e * g.output_len()..][..g.output_len()];
                close(got, &want, g.taps(), &format!("forward, example {e}, shared {:?}", (!xb, !wb)));
                let gy_e = &gy[e * g.output_len()..][..g.output_len()];
                let (_, gw) = naive_adjoints(&g, 1, &x_e, &w_e, gy_e);
                want_sum.iter_mut().zip(gw).for_each(|(s, v)| *s += v);
            }
            close(&sum, &want_sum, batch * g.pixels(), &format!("kernel sum, shared input {}", !xb));
        }
    }

    /// Big enough that the loops and GEMMs split across threads: the same values as on one thread.
    #[test]
    fn threaded_convolutions_match_one_thread() {
        let mut rng = StdRng::seed_from_u64(5);
        // Row by row, and through the table of sources.
        for g in [
            Conv { c: 3, h: 16, w: 14, o: 8, k: 3, stride: 1, pad: 1 },
            Conv { c: 8, h: 8, w: 8, o: 8, k: 3, stride: 2, pad: 1 },
        ] {
            let batch = 64;
            let (oh, ow) = g.out_hw();
            let x = random(&mut rng, batch * g.input_len());
            let kernel = random(&mut rng, g.kernel_len());
            let gy = random(&mut rng, batch * g.o * oh * ow);
            let mut scratch = vec![0.0; g.scratch(batch)];
            let run = |threaded: bool, scratch: &mut [f32]| {
                let mut out = vec![0.0; batch * g.o * oh * ow];
                let mut gx = vec![0.0; batch * g.input_len()];
                let mut gw = vec![0.0; g.kernel_len()];
                forward(&g, batch, &x, &kernel, &mut out, scratch, threaded);
                input_adjoint(&g, batch, &gy, &kernel, &mut gx, scratch, threaded);
                kernel_adjoint_sum(&g, batch, &x, &gy, &mut gw, (false, 1.0), scratch, threaded);
                (out, gx, gw)
            };
            let one = run(false, &mut scratch);
            let many = run(true, &mut scratch);
            assert!(batch * g.input_len() >= PAR_ELEMENTS, "the test reaches the threaded loops");
            assert_eq!(one.0, many.0, "forward {g:?}");
            assert_eq!(one.1, many.1, "input adjoint {g:?}");
            // The GEMM stays below PAR_GEMM, so it runs the same serial kernel either way.
            assert_eq!(one.2, many.2, "kernel adjoint {g:?}");
        }
    }

    #[test]
    fn pooling_and_axis_runs_match_their_definitions() {
        let mut rng = StdRng::seed_from_u64(21);
        for (planes, h, w, k) in [(1, 4, 4, 2), (3, 5, 7, 2), (2, 9, 6, 3), (4, 3, 3, 1), (2, 8, 8, 8)] {
            let (oh, ow) = (h / k, w / k);
            let x = random(&mut rng, planes * h * w);
            let g = random(&mut rng, planes * oh * ow);
            let mut pooled = vec![f32::NAN; planes * oh * ow];
            avg_pool(planes, (h, w), k, &x, &mut pooled, false);
            let mut spread = vec![f32::NAN; planes * h * w];
            unpool(planes, (h, w), k, &g, &mut spread, false);
            for pl in 0..planes {
                for i in 0..oh {
                    for j in 0..ow {
                        let s: f64 =
                            (0..k * k).map(|t| f64::from(x[(pl * h + i * k + t / k) * w + j * k + t % k])).sum::<f64>()
                                / (k * k) as f64;
                        close(&[pooled[(pl * oh + i) * ow + j]], &[s], k * k, "avg_pool");
                    }
                }
                for y in 0..h {
                    for xx in 0..w {
                        let want = if y / k < oh && xx / k < ow {
                            f64::from(g[(pl * oh + y / k) * ow + xx / k]) / (k * k) as f64
                        } else {
                            0.0
                        };
                        close(&[spread[(pl * h + y) * w + xx]], &[want], 1, "unpool");
                    }
                }
            }
            // Adjoints: <pool(x), g> = <x, unpool(g)>.
            let lhs: f64 = pooled.iter().zip(&g).map(|(a, b)| f64::from(*a) * f64::from(*b)).sum();
            let rhs: f64 = x.iter().zip(&spread).map(|(a, b)| f64::from(*a) * f64::from(*b)).sum();
            close(&[lhs as f32], &[rhs], planes * h * w, "pool adjoint");
        }
        for (p, a, q) in [(1, 1, 1), (3, 4, 5), (2, 7, 1), (1, 6, 3), (5, 1, 2)] {
            let x = random(&mut rng, p * a * q);
            let mut out = vec![f32::NAN; p * q];
            sum_axes((p, a, q), &x, &mut out, false);
            let want: Vec<f64> =
                (0..p * q).map(|i| (0..a).map(|t| f64::from(x[(i / q * a + t) * q + i % q])).sum()).collect();
            close(&out, &want, a, "sum_axes");
            let y = random(&mut rng, p * q);
            let mut wide = vec![f32::NAN; p * a * q];
            broadcast_axes((p, a, q), &y, &mut wide, false);
            let want: Vec<f64> = (0..p * a * q).map(|i| f64::from(y[i / (a * q) * q + i % q])).collect();
            close(&wide, &want, 1, "broadcast_axes");
        }
    }
}
