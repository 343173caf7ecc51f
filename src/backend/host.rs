//! Fused CPU loops over plain slices: the elementwise functions, broadcast
//! arithmetic and reductions that dfdx runs as one indexed pass (and one
//! allocation) per op. Each loop here is branch- and call-free in its hot
//! part so it vectorises; inputs a polynomial does not cover (overflow,
//! non-positive logarithms, NaN) are recomputed by the standard library in a
//! second pass. Accuracy: within 1e-6 relative of f64 (tested below).

use crate::backend::step::PAR_GEMM;
use crate::ir::Unary;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// exp(x) to within 2e-7 relative error: x = n ln 2 + r with n whole and
/// |r| <= ln 2 / 2 (Cody and Waite's two-part ln 2 keeps r exact), e^r by
/// its degree-7 Taylor polynomial, 2^n through the exponent bits. Adding
/// 1.5 * 2^23 rounds to a whole n and leaves n in the low bits, so no
/// float-to-int conversion (which does not vectorise) is needed. Saturates
/// at 2^±126 outside |x| < 87.3.
#[inline(always)]
pub fn fast_exp(x: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.33, 87.33);
    let k = x * std::f32::consts::LOG2_E + ROUND;
    let n = k - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    p * f32::from_bits(k.to_bits().wrapping_sub(ROUND.to_bits() - 127) << 23)
}

/// 2 atanh(s) = ln((1 + s) / (1 - s)) for |s| <= 1/3, by its odd series.
#[inline(always)]
fn two_atanh(s: f32) -> f32 {
    let z = s * s;
    let p = 1.0
        + z * (1.0 / 3.0
            + z * (1.0 / 5.0
                + z * (1.0 / 7.0 + z * (1.0 / 9.0 + z * (1.0 / 11.0 + z * (1.0 / 13.0 + z * (1.0 / 15.0)))))));
    2.0 * s * p
}

/// ln(1 + y) for 0 <= y <= 1, exact in relative terms down to tiny y.
#[inline(always)]
fn ln_1p_unit(y: f32) -> f32 {
    two_atanh(y / (2.0 + y))
}

/// ln(x) for positive normal finite x: x = 2^e m with m in [√½, √2).
#[inline(always)]
fn fast_ln(x: f32) -> f32 {
    let bits = x.to_bits();
    let e = ((bits >> 23) & 0xff) as i32 - 127;
    let m = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000);
    let big = m > std::f32::consts::SQRT_2;
    let (m, e) = if big { (m * 0.5, e + 1) } else { (m, e) };
    e as f32 * std::f32::consts::LN_2 + two_atanh((m - 1.0) / (m + 1.0))
}

/// tanh(x): the odd Taylor series below 1/4, else (1 - e^-2|x|)/(1 + e^-2|x|).
#[inline(always)]
fn fast_tanh(x: f32) -> f32 {
    let a = x.abs();
    let e = fast_exp(-2.0 * a);
    let far = ((1.0 - e) / (1.0 + e)).copysign(x);
    let z = x * x;
    let near = x
        * (1.0
            + z * (-1.0 / 3.0
                + z * (2.0 / 15.0 + z * (-17.0 / 315.0 + z * (62.0 / 2835.0 + z * (-1382.0 / 155_925.0))))));
    if a < 0.25 { near } else { far }
}

/// `f` of every element, as a new vector.
pub fn map(f: Unary, xs: &[f32]) -> Vec<f32> {
    let mut out = xs.to_vec();
    let piece = |chunk: &mut [f32]| {
        wide(
            #[inline(always)]
            || map_in_place(f, chunk),
        )
    };
    if out.len() > PIECE {
        super::partner::for_each_chunk(&mut out, PIECE, |_, chunk| piece(chunk));
    } else {
        piece(&mut out);
    }
    out
}

/// Applies `f` to every element in place, on this thread.
#[inline(always)]
pub fn map_in_place(f: Unary, xs: &mut [f32]) {
    match f {
        Unary::Exp => covered_or_exact(xs, |x| x.abs() < 87.0, fast_exp, f32::exp),
        Unary::Log => covered_or_exact(xs, |x| (f32::MIN_POSITIVE..f32::INFINITY).contains(&x), fast_ln, f32::ln),
        Unary::Sigmoid => each(xs, |x| 1.0 / (1.0 + fast_exp(-x))),
        Unary::Swish => each(xs, |x| x / (1.0 + fast_exp(-x))),
        Unary::Softplus => each(xs, |x| relu(x) + ln_1p_unit(fast_exp(-x.abs()))),
        Unary::Log2Cosh => each(xs, |x| x.abs() + ln_1p_unit(fast_exp(-2.0 * x.abs()))),
        Unary::Tanh => each(xs, fast_tanh),
        Unary::Relu => each(xs, relu),
        Unary::Abs => each(xs, f32::abs),
        Unary::Sqrt => each(xs, f32::sqrt),
        Unary::Square => each(xs, |x| x * x),
        Unary::Step => each(xs, |x| f32::from(u8::from(x > 0.0))),
        Unary::Sign => each(xs, |x| f32::from(u8::from(x > 0.0)) - f32::from(u8::from(x < 0.0))),
    }
}

/// Runs `f` compiled for AVX2 (8-wide vectors) where the CPU has it
/// (checked at run time), else for the baseline (4-wide). Loops reach the
/// wide form when they are inlined into `f`, and `f` into `wide_avx2`: so
/// every caller marks its closure `#[inline(always)]`. Left to LLVM, a large
/// closure stayed out of line after an unrelated change elsewhere, and the
/// step compiler's fused loops ran 4-wide (a Langevin step on an MLP took
/// 1.25× as long).
#[inline(always)]
pub fn wide<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { wide_avx2(f) };
    }
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn wide_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// Elements per piece of work handed to a thread: large enough that the
/// hand-off costs little beside it.
const PIECE: usize = 16_384;

/// `g` of every element, in place.
#[inline(always)]
fn each(xs: &mut [f32], g: impl Fn(f32) -> f32 + Copy) {
    xs.iter_mut().for_each(|x| *x = g(*x));
}

/// `hi` where u < sigmoid(scale * (x + bias)), else `lo`, with `bias` one
/// row repeated down `xs` and each `u` uniform on [0, 1): the top 24 bits of
/// a random 32-bit word. Pieces of whole rows run on this thread and the
/// partner (`partner::for_each_chunk`), each with its own generator seeded
/// from `rng`; the pieces' bounds do not depend on the number of threads,
/// so a seed gives the same draws anywhere.
pub fn bernoulli(xs: &[f32], bias: &[f32], scale: f32, hi: f32, lo: f32, rng: &mut impl Rng) -> Vec<f32> {
    let row = bias.len().max(1);
    let piece = (PIECE / row).max(1) * row;
    // Written once, from `xs`: the draw reads the logits where they lie.
    let mut out = vec![0.0; xs.len()];
    let draw = |at: usize, chunk: &mut [f32], seed: u64| {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut words = vec![0u32; row];
        for (chunk, xs) in chunk.chunks_mut(row).zip(xs[at..].chunks(row)) {
            // The random words first, in bulk, so the draw itself is one vectorised pass.
            rng.fill(&mut words[..]);
            let words = &words;
            // `move`: values, not references, so the select below is a vector blend.
            wide(
                #[inline(always)]
                move || {
                    for (((o, x), b), w) in chunk.iter_mut().zip(xs).zip(bias).zip(words) {
                        let p = 1.0 / (1.0 + fast_exp(-scale * (x + b)));
                        let u = (w >> 8) as i32 as f32 * (1.0 / 16_777_216.0);
                        *o = if u < p { hi } else { lo };
                    }
                },
            );
        }
    };
    let seeds: Vec<u64> = (0..out.len().div_ceil(piece)).map(|_| rng.next_u64()).collect();
    if seeds.len() > 1 {
        super::partner::for_each_chunk(&mut out, piece, |i, chunk| draw(i * piece, chunk, seeds[i]));
    } else if let Some(&seed) = seeds.first() {
        draw(0, &mut out, seed);
    }
    out
}

/// `fast` where every input is `covered`; otherwise `exact` for the inputs
/// that are not (a scan that vectorises decides).
#[inline(always)]
fn covered_or_exact(
    xs: &mut [f32],
    covered: impl Fn(f32) -> bool + Copy,
    fast: impl Fn(f32) -> f32 + Copy,
    exact: impl Fn(f32) -> f32,
) {
    if xs.iter().fold(true, |all, &x| all & covered(x)) {
        each(xs, fast)
    } else {
        xs.iter_mut().for_each(|x| *x = if covered(*x) { fast(*x) } else { exact(*x) });
    }
}

/// max(x, 0), keeping NaN.
#[inline(always)]
fn relu(x: f32) -> f32 {
    if x < 0.0 { 0.0 } else { x }
}

/// Elementwise arithmetic of two operands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arith {
    Add,
    Sub,
    Mul,
    Div,
}

/// `x op y` broadcast to `(b, m, n)`; each operand's shape has, on every
/// axis, either the target's extent or 1.
pub fn zip(
    op: Arith,
    x: &[f32],
    xs: (usize, usize, usize),
    y: &[f32],
    ys: (usize, usize, usize),
    (b, m, n): (usize, usize, usize),
) -> Vec<f32> {
    wide(
        #[inline(always)]
        || match op {
            Arith::Add => zip_with(x, xs, y, ys, (b, m, n), |p, q| p + q),
            Arith::Sub => zip_with(x, xs, y, ys, (b, m, n), |p, q| p - q),
            Arith::Mul => zip_with(x, xs, y, ys, (b, m, n), |p, q| p * q),
            Arith::Div => zip_with(x, xs, y, ys, (b, m, n), |p, q| p / q),
        },
    )
}

#[inline(always)]
fn zip_with(
    x: &[f32],
    xs: (usize, usize, usize),
    y: &[f32],
    ys: (usize, usize, usize),
    (b, m, n): (usize, usize, usize),
    f: impl Fn(f32, f32) -> f32 + Copy,
) -> Vec<f32> {
    let mut out = Vec::with_capacity(b * m * n);
    let offset = |s: (usize, usize, usize), i: usize, j: usize| {
        (if s.0 == 1 { 0 } else { i }) * s.1 * s.2 + (if s.1 == 1 { 0 } else { j }) * s.2
    };
    for i in 0..b {
        for j in 0..m {
            let (px, py) = (offset(xs, i, j), offset(ys, i, j));
            match (xs.2 == n, ys.2 == n) {
                (true, true) => out.extend(x[px..px + n].iter().zip(&y[py..py + n]).map(|(p, q)| f(*p, *q))),
                (true, false) => out.extend(x[px..px + n].iter().map(|p| f(*p, y[py]))),
                (false, true) => out.extend(y[py..py + n].iter().map(|q| f(x[px], *q))),
                (false, false) => out.extend(std::iter::repeat_n(f(x[px], y[py]), n)),
            }
        }
    }
    out
}

/// `c aᵀ b` for row-major `a` `(k, m)` and `b` `(k, n)`, written into `out`
/// `(m, n)`, or added to it when `accumulate`; by the `gemm` crate. A written product fills `out` directly, with no
/// zeroing pass first.
pub fn gemm_at_b_into(
    out: &mut Vec<f32>,
    a: &[f32],
    b: &[f32],
    (m, k, n): (usize, usize, usize),
    accumulate: bool,
    c: f32,
) {
    assert!(
        a.len() == k * m && b.len() == k * n && (!accumulate || out.len() == m * n),
        "gemm operands match their shapes"
    );
    if !accumulate {
        out.clear();
        if k == 0 {
            out.resize(m * n, 0.0);
            return;
        }
        out.reserve(m * n);
    }
    // Cannot fire: `limits` bounds every tensor far below isize::MAX elements.
    let stride = |x: usize| isize::try_from(x).expect("tensor extents fit isize");
    // SAFETY: `out` has room for m * n values (reserved or checked above),
    // `a` and `b` hold the extents checked above under the strides given
    // (aᵀ: rows step 1, columns m), and none overlaps another. Without
    // `accumulate`, gemm reads nothing from `out` and, with k > 0, writes
    // every one of its m * n values before the length is set.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            stride(n),
            accumulate,
            a.as_ptr(),
            stride(m),
            1,
            b.as_ptr(),
            1,
            stride(n),
            1.0,
            c,
            false,
            false,
            false,
            // Serial below 2^28 multiply-adds, as the step compiler's GEMMs (`step::exec`).
            if m * n * k >= 1 << 28 {
                gemm::Parallelism::Rayon(rayon::current_num_threads())
            } else {
                gemm::Parallelism::None
            },
        );
        out.set_len(m * n);
    }
}

/// The sum of each consecutive run of `width` elements.
pub fn sum_runs(xs: &[f32], width: usize) -> Vec<f32> {
    xs.chunks(width.max(1)).map(sum).collect()
}

/// Sum over the leading axis: `batch` runs of equal length, added elementwise.
pub fn sum_leading(xs: &[f32], batch: usize) -> Vec<f32> {
    let width = xs.len() / batch.max(1);
    let mut out = vec![0.0; width];
    for run in xs.chunks(width.max(1)) {
        out.iter_mut().zip(run).for_each(|(o, x)| *o += x);
    }
    out
}

/// A sum in eight lanes, so it vectorises (a plain fold keeps strict order).
pub fn sum(xs: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let chunks = xs.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        lanes.iter_mut().zip(c).for_each(|(l, x)| *l += x);
    }
    lanes.iter().sum::<f32>() + tail
}

/// The sum of squares, in eight lanes accumulated in f64 every 1024 elements.
pub fn sum_squares(xs: &[f32]) -> f64 {
    xs.chunks(1024)
        .map(|block| {
            let mut lanes = [0.0f32; 8];
            let chunks = block.chunks_exact(8);
            let tail: f32 = chunks.remainder().iter().map(|x| x * x).sum();
            for c in chunks {
                lanes.iter_mut().zip(c).for_each(|(l, x)| *l += x * x);
            }
            f64::from(lanes.iter().sum::<f32>() + tail)
        })
        .sum()
}

/// `dst[r * cols + c] = src[r + c * stride]`: the `rows × cols` row-major
/// transpose of a matrix stored as `cols` rows of `stride`. In 16×16 tiles,
/// so each tile's lines stay in L1 (the `gemm` crate's own packing of such
/// an operand reads 64 lines a power of two apart, which share few cache
/// sets, and took longer than the product at 128×512×512), and in blocks of
/// rows shared with the partner thread.
pub fn transpose_into(src: &[f32], stride: usize, (rows, cols): (usize, usize), dst: &mut [f32]) {
    const T: usize = 16;
    assert!(
        rows <= stride && (cols == 0 || (cols - 1) * stride + rows <= src.len()) && dst.len() >= rows * cols,
        "transpose operands match their shapes"
    );
    // Rows per block: whole tiles, about `PIECE` elements.
    let block = (PIECE / cols.max(1)).div_ceil(T).max(1) * T;
    super::partner::for_each_chunk(&mut dst[..rows * cols], block * cols, |b, out| {
        let r0 = b * block;
        let r1 = (r0 + block).min(rows);
        wide(
            #[inline(always)]
            || {
                for c0 in (0..cols).step_by(T) {
                    for t0 in (r0..r1).step_by(T) {
                        for c in c0..(c0 + T).min(cols) {
                            let from = &src[c * stride + t0..c * stride + (t0 + T).min(r1)];
                            for (r, x) in (t0 - r0..).zip(from) {
                                out[r * cols + c] = *x;
                            }
                        }
                    }
                }
            },
        )
    });
}

/// A GEMM operand: its buffer and (row, column) strides.
pub type Operand<'a> = (&'a [f32], (usize, usize));

/// Multiply-adds from which a threaded product is cut into pieces along its
/// output's longer side, each piece one single-threaded `gemm` call, shared
/// by two threads: the `gemm` crate's own threading only pays from `PAR_GEMM`.
/// Run one after the other on one core, the pieces cost about what the whole
/// call does from 2^21 (the RBM's and the MLP layer's shapes, `taskset -c 1`,
/// `docs/performance.md`), so on two free cores they approach half its time;
/// below 2^21 a product takes under ~25 µs, too little to pay for a hand-off.
pub(crate) const SPLIT_GEMM: usize = 1 << 21;

/// The pieces a cut product is run in, at most: enough that a thread that
/// stalls mid-piece holds up little of the product, few enough that each
/// piece keeps whole tiles. Run one after the other on one core, 16 pieces
/// of the RBM's products cost what one call does, within 5%.
const PIECES: usize = 8;

/// How a product is cut: `Some((along_rows, width))` splits the output's
/// rows (or columns) into blocks of `width`, the last one shorter. Fixed by
/// the shape and the output's layout alone, never by the machine's threads,
/// so a seed gives the same sums anywhere. Only outputs whose rows or
/// columns are contiguous and disjoint are cut, so the pieces write
/// disjoint elements. The cut runs along the output's longer side, whose
/// pieces re-read the smaller operand: at the RBM's batch of 10 that is a
/// 10×784 block of the chains, the columns of `W` each piece's own.
fn split_point((m, k, n): (usize, usize, usize), (ors, ocs): (usize, usize)) -> Option<(bool, usize)> {
    let disjoint = (ocs == 1 && ors >= n) || (ors == 1 && ocs >= m);
    if !disjoint || m * n * k < SPLIT_GEMM || m * n * k >= PAR_GEMM {
        return None;
    }
    // Widths a multiple of 16 (one AVX-512 register of f32) so each piece
    // keeps whole microkernel tiles: the one nearest len / PIECES, so the
    // pieces come near PIECES, not one fewer. Rounded up, 784 rows came in
    // 7 pieces of 112, and one thread ran four while the other waited.
    let (rows, len) = if m >= n { (true, m) } else { (false, n) };
    let width = ((len + PIECES * 8) / (PIECES * 16)).max(1) * 16;
    (width < len).then_some((rows, width))
}

/// `out` for a product's output shared by the threads running its pieces;
/// the pieces write disjoint elements (`split_point`).
#[derive(Clone, Copy)]
struct Out(*mut f32);
impl Out {
    /// The pointer `offset` elements on. A method, so closures capture the
    /// whole `Out` (which is `Send`) rather than its raw pointer (which is not).
    ///
    /// # Safety
    /// `offset` lies inside the output buffer.
    unsafe fn at(self, offset: usize) -> *mut f32 {
        // SAFETY: the caller keeps `offset` inside the buffer.
        unsafe { self.0.add(offset) }
    }
}

// SAFETY: each thread writes only its own pieces' elements through the pointer (`split_point`).
unsafe impl Send for Out {}
// SAFETY: as for `Send`: the pieces' elements are disjoint, and `out` outlives every thread's use (joined before return).
unsafe impl Sync for Out {}

/// `out (+)= alpha a b` for `a` `(m×k)` and `b` `(k×n)` and `out` `(m×n)`,
/// any strides, bounds-checked; the one call into the `gemm` crate. When
/// `threaded` (a program's choice, fixed by its shapes), from `SPLIT_GEMM`
/// multiply-adds it runs in pieces on two threads (`split_point`), and
/// from `PAR_GEMM` as one call over all of rayon's threads. Unthreaded, one
/// call: its pieces run one after the other would cost up to 5% more.
pub fn gemm(
    (out, (ors, ocs)): (&mut [f32], (usize, usize)),
    (a, (ars, acs)): Operand,
    (b, (brs, bcs)): Operand,
    (m, k, n): (usize, usize, usize),
    (accumulate, alpha): (bool, f32),
    threaded: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            (0..m).for_each(|i| (0..n).for_each(|j| out[i * ors + j * ocs] = 0.0));
        }
        return;
    }
    let reach = |rows: usize, cols: usize, rs: usize, cs: usize| (rows - 1) * rs + (cols - 1) * cs;
    assert!(
        reach(m, n, ors, ocs) < out.len() && reach(m, k, ars, acs) < a.len() && reach(k, n, brs, bcs) < b.len(),
        "GEMM operands lie inside their buffers"
    );
    let par = if threaded && m * n * k >= PAR_GEMM {
        gemm::Parallelism::Rayon(rayon::current_num_threads())
    } else {
        gemm::Parallelism::None
    };
    let dst = Out(out.as_mut_ptr());
    // One block of the product: output rows `rows` and columns `cols`.
    let block = |rows: std::ops::Range<usize>, cols: std::ops::Range<usize>| {
        // Cannot fire: buffers are far below isize::MAX elements (`limits`).
        let s = |x: usize| isize::try_from(x).expect("strides fit isize");
        // SAFETY: every index read or written lies inside its buffer (the
        // whole product's reach is checked above, and a block lies inside
        // it); `out` is borrowed mutably, so it overlaps neither `a` nor
        // `b`; two blocks write disjoint elements (`split_point`). Without
        // `accumulate`, gemm reads nothing from `out`.
        unsafe {
            gemm::gemm(
                rows.len(),
                cols.len(),
                k,
                dst.at(rows.start * ors + cols.start * ocs),
                s(ocs),
                s(ors),
                accumulate,
                a.as_ptr().add(rows.start * ars),
                s(acs),
                s(ars),
                b.as_ptr().add(cols.start * bcs),
                s(bcs),
                s(brs),
                1.0,
                alpha,
                false,
                false,
                false,
                par,
            );
        }
    };
    match split_point((m, k, n), (ors, ocs)).filter(|_| threaded) {
        None => block(0..m, 0..n),
        Some((rows, width)) => {
            let len = if rows { m } else { n };
            super::partner::for_each(len.div_ceil(width), |i| {
                let span = i * width..((i + 1) * width).min(len);
                if rows { block(span, 0..n) } else { block(0..m, span) }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tiles and blocks of rows that do not divide the matrix, and columns with room between them.
    #[test]
    fn transpose_into_copies_every_element() {
        let (rows, cols, stride) = (1100, 33, 1105);
        let src: Vec<f32> = (0..cols * stride).map(|i| i as f32).collect();
        let mut dst = vec![f32::NAN; rows * cols];
        transpose_into(&src, stride, (rows, cols), &mut dst);
        for r in 0..rows {
            for c in 0..cols {
                assert_eq!(dst[r * cols + c], src[r + c * stride], "({r}, {c})");
            }
        }
    }

    fn reference(f: Unary, x: f64) -> f64 {
        match f {
            Unary::Exp => x.exp(),
            Unary::Log => x.ln(),
            Unary::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Unary::Swish => x / (1.0 + (-x).exp()),
            Unary::Softplus => x.max(0.0) + (-x.abs()).exp().ln_1p(),
            Unary::Log2Cosh => x.abs() + (-2.0 * x.abs()).exp().ln_1p(),
            Unary::Tanh => x.tanh(),
            Unary::Relu => x.max(0.0),
            Unary::Abs => x.abs(),
            Unary::Sqrt => x.sqrt(),
            Unary::Square => x * x,
            Unary::Step => f64::from(u8::from(x > 0.0)),
            Unary::Sign => x.signum() * f64::from(u8::from(x != 0.0)),
        }
    }

    /// Every function within 1e-6 relative (or 1e-30 absolute, for results
    /// that underflow) of f64 on a log-spaced sweep of both signs, plus the
    /// edges the polynomials do not cover.
    #[test]
    fn functions_match_f64() {
        let mut inputs: Vec<f32> = (-400..=400).map(|k| (k as f32 / 40.0).exp() - 1.0).collect();
        inputs.extend(inputs.clone().iter().map(|x| -x));
        inputs.extend([
            0.0,
            -0.0,
            1e-30,
            1e-39,
            80.0,
            88.0,
            89.0,
            100.0,
            -100.0,
            0.25,
            -0.25,
            0.2499,
            1.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MAX,
        ]);
        let all = [
            Unary::Exp,
            Unary::Log,
            Unary::Sigmoid,
            Unary::Swish,
            Unary::Softplus,
            Unary::Log2Cosh,
            Unary::Tanh,
            Unary::Relu,
            Unary::Abs,
            Unary::Sqrt,
            Unary::Square,
            Unary::Step,
            Unary::Sign,
        ];
        for f in all {
            let out = map(f, &inputs);
            for (x, got) in inputs.iter().zip(&out) {
                let want = reference(f, f64::from(*x)) as f32;
                let ok = if !want.is_finite() {
                    !got.is_finite()
                } else {
                    (f64::from(*got) - f64::from(want)).abs() <= 1e-6 * f64::from(want.abs()) + 1e-30
                };
                assert!(ok, "{f:?}({x}) = {got}, want {want}");
            }
            let nan = map(f, &[f32::NAN]);
            assert!(nan[0].is_nan() || matches!(f, Unary::Step | Unary::Sign | Unary::Relu), "{f:?}(NaN) = {}", nan[0]);
        }
    }

    #[test]
    fn broadcast_arithmetic_and_sums() {
        let x: Vec<f32> = (0..6).map(|i| i as f32).collect(); // (2, 1, 3)
        let y = [10.0, 20.0, 30.0]; // (1, 1, 3)
        assert_eq!(zip(Arith::Sub, &x, (2, 1, 3), &y, (1, 1, 3), (2, 1, 3)), [-10.0, -19.0, -28.0, -7.0, -16.0, -25.0]);
        assert_eq!(zip(Arith::Mul, &[2.0], (1, 1, 1), &x, (2, 1, 3), (2, 1, 3)), [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        assert_eq!(
            zip(Arith::Add, &[1.0, 2.0], (2, 1, 1), &y, (1, 1, 3), (2, 1, 3)),
            [11.0, 21.0, 31.0, 12.0, 22.0, 32.0]
        );
        assert_eq!(zip(Arith::Div, &x, (1, 2, 3), &[1.0, 2.0], (1, 2, 1), (1, 2, 3)), [0.0, 1.0, 2.0, 1.5, 2.0, 2.5]);
        assert_eq!(sum_runs(&x, 3), [3.0, 12.0]);
        assert_eq!(sum_leading(&x, 2), [3.0, 5.0, 7.0]);
        let long: Vec<f32> = (0..2051).map(|i| (i % 7) as f32 - 3.0).collect();
        assert_eq!(f64::from(sum(&long)), long.iter().map(|x| f64::from(*x)).sum::<f64>());
        assert_eq!(sum_squares(&long), long.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>());
    }

    /// `out (+)= alpha a b` by `gemm`, threaded, for `a` stored transposed or
    /// not and `out` row- or column-major, against an f64 loop. Small whole
    /// numbers make every sum exact, so a misplaced piece shows as a mismatch.
    fn split_against_loop((m, k, n): (usize, usize, usize), a_t: bool, out_rows: bool, accumulate: bool) {
        assert!(split_point((m, k, n), if out_rows { (n, 1) } else { (1, m) }).is_some(), "the product is cut");
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 - 3.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 - 2.0).collect();
        let a_s = if a_t { (1, m) } else { (k, 1) };
        let o_s = if out_rows { (n, 1) } else { (1, m) };
        let start: Vec<f32> = (0..m * n).map(|i| (i % 3) as f32).collect();
        let mut out = start.clone();
        gemm((&mut out, o_s), (&a, a_s), (&b, (n, 1)), (m, k, n), (accumulate, 2.0), true);
        for i in 0..m {
            for j in 0..n {
                let dot: f64 = (0..k).map(|p| f64::from(a[i * a_s.0 + p * a_s.1]) * f64::from(b[p * n + j])).sum();
                let at = i * o_s.0 + j * o_s.1;
                let want = if accumulate { f64::from(start[at]) } else { 0.0 } + 2.0 * dot;
                assert_eq!(f64::from(out[at]), want, "({i}, {j}) of {m}x{k}x{n}");
            }
        }
    }

    #[test]
    fn split_products_match_a_loop() {
        // m ≥ n cuts the rows (in 8 pieces of 32, the last 6), m < n the columns; both reach SPLIT_GEMM.
        assert_eq!(split_point((230, 128, 112), (112, 1)), Some((true, 32)));
        split_against_loop((230, 128, 112), false, true, false);
        split_against_loop((112, 128, 230), true, true, true);
        split_against_loop((230, 128, 112), true, false, true);
        split_against_loop((112, 128, 230), false, false, false);
        // The RBM's products at batch 10 are cut along their long side.
        assert_eq!(split_point((10, 784, 500), (500, 1)), Some((false, 64)));
        split_against_loop((10, 784, 500), false, true, true);
        split_against_loop((784, 10, 500), true, true, false);
        // Below SPLIT_GEMM, or an output whose rows overlap, is never cut.
        assert_eq!(split_point((64, 128, 128), (128, 1)), None);
        assert_eq!(split_point((160, 128, 112), (64, 1)), None);
    }

    #[test]
    fn split_products_do_not_depend_on_the_threads() {
        let (m, k, n) = (100, 784, 500);
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 37) % 101) as f32 / 101.0 - 0.5).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i * 53) % 97) as f32 / 97.0 - 0.5).collect();
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("a pool");
            let mut out = vec![0.0f32; m * n];
            pool.install(|| gemm((&mut out, (n, 1)), (&a, (k, 1)), (&b, (n, 1)), (m, k, n), (false, 1.0), true));
            out
        };
        let one = run(1);
        // Outside any pool, the caller shares the pieces with the partner thread.
        let mut outside = vec![0.0f32; m * n];
        gemm((&mut outside, (n, 1)), (&a, (k, 1)), (&b, (n, 1)), (m, k, n), (false, 1.0), true);
        assert!(one.iter().zip(outside).all(|(x, y)| x.to_bits() == y.to_bits()));
        assert!(one.iter().zip(run(2)).all(|(x, y)| x.to_bits() == y.to_bits()));
        assert!(one.iter().zip(run(3)).all(|(x, y)| x.to_bits() == y.to_bits()));
    }
}
