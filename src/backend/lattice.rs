//! Chromatic Gibbs on the host. A variable whose units interact only along
//! `const` lattices has conditional logits affine in its own state,
//! `logits = W x + bias`, with `W` nonzero only along the unit graph. The
//! sampler reads `W` off the compiled logits once per parameter setting: a
//! distance-2 colouring of the unit graph gives each unit's closed
//! neighbourhood distinct colours, so one probe per colour and category
//! recovers every block. A sweep then visits the sites of one colour at a
//! time, gathers each site's field through its CSR row and draws in the same
//! pass; chains run in blocks on rayon's threads, each chain with its own
//! generator, so a seed gives the same draws whatever the thread count.

use super::host::{fast_exp, wide};
use rand::rngs::SmallRng;
use rand::{Rng, RngCore};
use rayon::prelude::*;

/// How a unit's value is drawn from its logits.
#[derive(Debug, Clone, Copy)]
pub enum Draw {
    /// `hi` with probability sigmoid(scale * logit), else `lo` (binary, spin).
    Bernoulli { scale: f32, hi: f32, lo: f32 },
    /// One-hot over the unit's values from softmax(scale * logits).
    Categorical { scale: f32 },
}

impl Draw {
    /// The same draw at inverse temperature `beta`: the logits scaled by it.
    pub fn at(self, beta: f32) -> Draw {
        match self {
            Draw::Bernoulli { scale, hi, lo } => Draw::Bernoulli { scale: scale * beta, hi, lo },
            Draw::Categorical { scale } => Draw::Categorical { scale: scale * beta },
        }
    }
}

/// `logits = W x + bias` over `units` units of `width` values each, `W` as
/// CSR rows with one `width × width` block an entry. Rows are stored in the
/// order a sweep visits the units (colour class after colour class), so a
/// sweep reads the operator front to back.
#[derive(Debug, Clone)]
pub struct Operator {
    width: usize,
    /// Units in visit order, and where each colour class ends in it.
    order: Vec<u32>,
    class_ends: Vec<usize>,
    /// Row of each unit.
    row_of: Vec<usize>,
    starts: Vec<usize>,
    /// Entries per row when every row has the same number (a regular lattice).
    degree: Option<usize>,
    cols: Vec<u32>,
    /// Entry `e`'s block by columns: `[e * width² + l * width + r]` = ∂ logit(i, r) / ∂ x(u, l).
    blocks: Vec<f32>,
    /// Per row.
    bias: Vec<f32>,
}

/// Probe states for reading an affine map off its values: the zero state,
/// then per distance-2 colour `d` and value `l` the state with x(u, l) = 1 at
/// every unit `u` of colour `d`.
pub struct Probes {
    width: usize,
    colour: Vec<usize>,
    /// `count × units × width` values, probe after probe.
    pub states: Vec<f32>,
    pub count: usize,
}

/// A colouring in which units within distance 2 differ (greedy, in order).
fn distance2_colouring(adjacency: &[Vec<usize>]) -> Vec<usize> {
    let mut colour = vec![usize::MAX; adjacency.len()];
    let mut used = Vec::new();
    for u in 0..adjacency.len() {
        used.clear();
        for &v in &adjacency[u] {
            used.push(colour[v]);
            used.extend(adjacency[v].iter().map(|&w| colour[w]));
        }
        used.sort_unstable();
        // Cannot fire: `used` is finite, so some colour is free.
        colour[u] = (0..).find(|c| used.binary_search(c).is_err()).expect("a free colour");
    }
    colour
}

impl Probes {
    pub fn new(adjacency: &[Vec<usize>], width: usize) -> Probes {
        let units = adjacency.len();
        let colour = distance2_colouring(adjacency);
        let colours = colour.iter().max().map_or(0, |c| c + 1);
        let count = 1 + colours * width;
        let mut states = vec![0.0; count * units * width];
        for (u, &d) in colour.iter().enumerate() {
            for l in 0..width {
                states[((1 + d * width + l) * units + u) * width + l] = 1.0;
            }
        }
        Probes { width, colour, states, count }
    }
}

impl Operator {
    /// The operator from the affine map's values on `probes` (`responses`,
    /// laid out like the probe states), with entries where `adjacency` (or
    /// the unit itself) allows and the block is not zero; rows in the order
    /// of `classes` (the units of each colour).
    pub fn from_probes(adjacency: &[Vec<usize>], probes: &Probes, responses: &[f32], classes: &[Vec<u32>]) -> Operator {
        let (units, width) = (adjacency.len(), probes.width);
        let stride = units * width;
        let order: Vec<u32> = classes.concat();
        let class_ends = classes
            .iter()
            .scan(0, |end, c| {
                *end += c.len();
                Some(*end)
            })
            .collect();
        let mut row_of = vec![0; units];
        for (r, &i) in order.iter().enumerate() {
            row_of[i as usize] = r;
        }
        let zero = &responses[..stride];
        let bias = order.iter().flat_map(|&i| &zero[i as usize * width..][..width]).copied().collect();
        let (mut starts, mut cols, mut blocks) = (vec![0], Vec::new(), Vec::new());
        let mut block = vec![0.0; width * width];
        for &i in &order {
            let i = i as usize;
            let mut closed: Vec<usize> = adjacency[i].iter().copied().chain([i]).collect();
            closed.sort_unstable();
            closed.dedup();
            for u in closed {
                let d = probes.colour[u];
                for l in 0..width {
                    let probe = &responses[(1 + d * width + l) * stride..][..stride];
                    for r in 0..width {
                        block[l * width + r] = probe[i * width + r] - zero[i * width + r];
                    }
                }
                if block.iter().any(|w| *w != 0.0) {
                    cols.push(u as u32);
                    blocks.extend_from_slice(&block);
                }
            }
            starts.push(cols.len());
        }
        let first = starts.get(1).copied().unwrap_or(0);
        let degree = starts.windows(2).all(|s| s[1] - s[0] == first).then_some(first);
        Operator { width, order, class_ends, row_of, starts, degree, cols, blocks, bias }
    }

    pub fn units(&self) -> usize {
        self.order.len()
    }

    /// Adds a term that every chain shares (laid out by unit) to the bias.
    pub fn add_bias(&mut self, shared: &[f32]) {
        let w = self.width;
        for (r, &i) in self.order.iter().enumerate() {
            for (b, s) in self.bias[r * w..][..w].iter_mut().zip(&shared[i as usize * w..][..w]) {
                *b += s;
            }
        }
    }

    /// The coupling part of row `r`'s logits at state `x` (one chain), added into `out`.
    #[inline(always)]
    fn field(&self, r: usize, x: &[f32], out: &mut [f32]) {
        let w = self.width;
        for e in self.starts[r]..self.starts[r + 1] {
            let xu = &x[self.cols[e] as usize * w..][..w];
            let block = &self.blocks[e * w * w..][..w * w];
            // A one-hot state has one nonzero value: one column of the block.
            for (column, &v) in block.chunks_exact(w).zip(xu) {
                if v != 0.0 {
                    out.iter_mut().zip(column).for_each(|(o, c)| *o += c * v);
                }
            }
        }
    }

    /// Whether `W x + bias` equals `responses` on each state of `states`
    /// (rows of `units × width`), to f32 round-off of the terms summed.
    pub fn agrees(&self, states: &[f32], responses: &[f32]) -> bool {
        let stride = self.units() * self.width;
        let w = self.width;
        states.chunks(stride).zip(responses.chunks(stride)).all(|(x, y)| {
            (0..self.units()).all(|i| {
                let row = self.row_of[i];
                let mut got = self.bias[row * w..][..w].to_vec();
                self.field(row, x, &mut got);
                let mut scale = vec![1.0f32; w];
                for e in self.starts[row]..self.starts[row + 1] {
                    let xu = &x[self.cols[e] as usize * w..][..w];
                    for (k, s) in scale.iter_mut().enumerate() {
                        *s += (0..w).map(|l| (self.blocks[e * w * w + l * w + k] * xu[l]).abs()).sum::<f32>();
                    }
                }
                (0..w).all(|k| {
                    let tol = 1e-4 * (scale[k] + self.bias[row * w + k].abs());
                    (got[k] - y[i * w + k]).abs() <= tol
                })
            })
        })
    }

    /// One chromatic sweep over `chains` chains laid out one after another in
    /// `state`: for each colour class in turn, every site of the class drawn
    /// from its exact conditional. `chained` holds per-chain terms of the
    /// logits (laid out like `state`); `rngs` one generator per chain.
    pub fn sweep(&self, draw: Draw, state: &mut [f32], chained: Option<&[f32]>, rngs: &mut [SmallRng]) {
        let stride = self.units() * self.width;
        let chains = rngs.len();
        debug_assert_eq!(state.len(), chains * stride);
        let one = |x: &mut [f32], c: Option<&[f32]>, rng: &mut SmallRng| match (draw, self.degree) {
            // The usual lattices' degrees get fixed-length loops.
            (Draw::Bernoulli { scale, hi, lo }, Some(4)) => wide(
                #[inline(always)]
                || self.bernoulli_chain::<4>(x, c, rng, scale, hi, lo),
            ),
            (Draw::Bernoulli { scale, hi, lo }, Some(6)) => wide(
                #[inline(always)]
                || self.bernoulli_chain::<6>(x, c, rng, scale, hi, lo),
            ),
            (Draw::Bernoulli { scale, hi, lo }, _) => wide(
                #[inline(always)]
                || self.bernoulli_chain::<0>(x, c, rng, scale, hi, lo),
            ),
            // Small category counts get fixed-length loops.
            (Draw::Categorical { scale }, _) => match self.width {
                2 => self.categorical_chain(x, c, rng, scale, [0.0; 2]),
                3 => self.categorical_chain(x, c, rng, scale, [0.0; 3]),
                4 => self.categorical_chain(x, c, rng, scale, [0.0; 4]),
                w => self.categorical_chain(x, c, rng, scale, vec![0.0; w]),
            },
        };
        // Blocks of about PIECE site updates: enough work to pay for a hand-off.
        const PIECE: usize = 1 << 15;
        let per_block = PIECE.div_ceil(stride.max(1)).max(1);
        let run = |(x, rngs): (&mut [f32], &mut [SmallRng]), c: Option<&[f32]>| {
            for (k, (x, rng)) in x.chunks_mut(stride).zip(rngs).enumerate() {
                one(x, c.map(|c| &c[k * stride..][..stride]), rng);
            }
        };
        if chains <= per_block {
            return run((state, rngs), chained);
        }
        state
            .par_chunks_mut(per_block * stride)
            .zip(rngs.par_chunks_mut(per_block))
            .enumerate()
            .for_each(|(b, block)| run(block, chained.map(|c| &c[b * per_block * stride..])));
    }

    /// The Bernoulli draws of one chain; `D` > 0 when every row has `D`
    /// entries (fixed-length loops), 0 for rows of any length. Sites go in
    /// runs of `RUN`: their fields gathered first, then drawn in one loop
    /// that vectorises (sites of one colour do not read each other).
    #[inline(always)]
    fn bernoulli_chain<const D: usize>(
        &self,
        x: &mut [f32],
        chained: Option<&[f32]>,
        rng: &mut SmallRng,
        scale: f32,
        hi: f32,
        lo: f32,
    ) {
        const RUN: usize = 64;
        let mut words = vec![0u32; self.units()];
        rng.fill(&mut words[..]);
        let mut start = 0;
        for &end in &self.class_ends {
            for run in (start..end).step_by(RUN) {
                let n = RUN.min(end - run);
                let mut z = [0.0f32; RUN];
                for (k, z) in z[..n].iter_mut().enumerate() {
                    let r = run + k;
                    let mut field = self.bias[r] + chained.map_or(0.0, |c| c[self.order[r] as usize]);
                    if D > 0 {
                        // Cannot fire: the slices are taken `D` long.
                        let cols: &[u32; D] = self.cols[r * D..][..D].try_into().expect("D entries");
                        let ws: &[f32; D] = self.blocks[r * D..][..D].try_into().expect("D entries");
                        for (&u, &w) in cols.iter().zip(ws) {
                            field += w * x[u as usize];
                        }
                    } else {
                        for e in self.starts[r]..self.starts[r + 1] {
                            field += self.blocks[e] * x[self.cols[e] as usize];
                        }
                    }
                    *z = field;
                }
                let mut word = [0u32; RUN];
                word[..n].copy_from_slice(&words[run..run + n]);
                for (z, w) in z.iter_mut().zip(&word) {
                    let p = 1.0 / (1.0 + fast_exp(-scale * *z));
                    let u = (w >> 8) as f32 * (1.0 / 16_777_216.0);
                    *z = if u < p { hi } else { lo };
                }
                for (&i, &v) in self.order[run..run + n].iter().zip(&z) {
                    x[i as usize] = v;
                }
            }
            start = end;
        }
    }

    /// The one-hot draws of one chain, with `logits` a buffer of one unit's width.
    #[inline(always)]
    fn categorical_chain(
        &self,
        x: &mut [f32],
        chained: Option<&[f32]>,
        rng: &mut SmallRng,
        scale: f32,
        mut logits: impl AsMut<[f32]>,
    ) {
        let logits = logits.as_mut();
        let w = logits.len();
        for (r, &i) in self.order.iter().enumerate() {
            let i = i as usize;
            logits.copy_from_slice(&self.bias[r * w..][..w]);
            if let Some(c) = chained {
                logits.iter_mut().zip(&c[i * w..][..w]).for_each(|(l, c)| *l += c);
            }
            self.field(r, x, logits);
            // Inverse CDF with one uniform: exact to f32 rounding, no ties.
            let top = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut total = 0.0f32;
            for l in logits.iter_mut() {
                *l = fast_exp(scale * (*l - top));
                total += *l;
            }
            let u = (rng.next_u32() >> 8) as f32 * (1.0 / 16_777_216.0) * total;
            // The first k whose cumulative weight exceeds u, counted without branches (they mispredict).
            let mut cumulative = 0.0;
            let mut pick = 0;
            for l in &logits[..w - 1] {
                cumulative += *l;
                pick += usize::from(cumulative <= u);
            }
            for (k, v) in x[i * w..][..w].iter_mut().enumerate() {
                *v = f32::from(u8::from(k == pick));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance2_colours_differ_within_two_steps() {
        // A ring of 7: closed neighbourhoods of three need 3+ colours.
        let ring: Vec<Vec<usize>> = (0..7).map(|i| vec![(i + 6) % 7, (i + 1) % 7]).collect();
        let c = distance2_colouring(&ring);
        for (u, ns) in ring.iter().enumerate() {
            for &v in ns {
                assert_ne!(c[u], c[v]);
                for &w in &ring[v] {
                    assert!(w == u || c[u] != c[w], "{u} and {w} are two steps apart");
                }
            }
        }
    }

    #[test]
    fn probes_recover_a_sparse_affine_map_and_catch_a_dense_one() {
        // A chain of 5 units with 2 values each: logits(i) = B_i x(i-1) + C_i x(i+1) + b_i.
        let adjacency: Vec<Vec<usize>> =
            (0..5).map(|i: usize| [i.wrapping_sub(1), i + 1].into_iter().filter(|&j| j < 5).collect()).collect();
        let weight = |i: usize, u: usize, r: usize, l: usize| (i * 7 + u * 3 + r * 2 + l) as f32 * 0.1 - 0.9;
        let map = |x: &[f32], dense: bool| -> Vec<f32> {
            let mut out = vec![0.0; 10];
            for i in 0..5 {
                for r in 0..2 {
                    out[i * 2 + r] = 0.25 * r as f32 - 0.5;
                    for u in 0..5 {
                        if dense || adjacency[i].contains(&u) {
                            out[i * 2 + r] += (0..2).map(|l| weight(i, u, r, l) * x[u * 2 + l]).sum::<f32>();
                        }
                    }
                }
            }
            out
        };
        let probes = Probes::new(&adjacency, 2);
        let respond = |dense| probes.states.chunks(10).flat_map(|x| map(x, dense)).collect::<Vec<f32>>();
        let classes = vec![vec![0, 2, 4], vec![1, 3]];
        let op = Operator::from_probes(&adjacency, &probes, &respond(false), &classes);
        let test: Vec<f32> = (0..20).map(|k| ((k * 37 % 11) as f32 - 5.0) / 5.0).collect();
        let truth: Vec<f32> = test.chunks(10).flat_map(|x| map(x, false)).collect();
        assert!(op.agrees(&test, &truth));
        let dense = Operator::from_probes(&adjacency, &probes, &respond(true), &classes);
        let truth: Vec<f32> = test.chunks(10).flat_map(|x| map(x, true)).collect();
        assert!(!dense.agrees(&test, &truth), "couplings outside the unit graph must be caught");
    }
}
