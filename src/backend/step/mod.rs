//! Stage: IR program → host schedule (`compile`), and the schedule's
//! execution (`Program::run`). This is the step compiler: the loss of a
//! training step, its parameter gradients summed over the batch, or the
//! energy's gradient in the data for a Langevin step, scheduled once per
//! model and batch size and then run with no tape and no allocation.
//!
//! What compiling does, in order (`schedule`):
//! - **Views.** Transposes and broadcasts cost nothing: they are strides on
//!   the buffer they read (0 along a broadcast axis).
//! - **Fusion.** A chain of elementwise ops (and their adjoints, which the
//!   symbolic derivatives made elementwise too) whose intermediate values
//!   nothing else reads becomes one loop: a small register program run over
//!   tiles of 256 values, so each intermediate lives in L1 and never in
//!   memory.
//! - **Products.** Every matrix product is one GEMM over the whole batch
//!   (per-example vectors against a shared matrix fold the batch into the
//!   GEMM's rows or columns), and a batch-summed outer product — the shape
//!   every per-example parameter gradient takes — is a GEMM whose
//!   contraction runs over the batch. With the batch in shards, a weight
//!   matrix that products read against the grain (`δ Wᵀ`) is transposed
//!   once per run into a copy every shard reads (`share_transposes`).
//! - **Threads by size.** A GEMM or a loop is split across threads only when
//!   it is big enough for the hand-off to pay.
//! - **Arena.** Buffers are assigned by liveness (a buffer is reused once
//!   its last reader has run) and allocated once, at compile time.
//!
//! `ebmc plan --schedule` prints a compiled schedule (`Display`).

mod exec;
mod schedule;

pub(crate) use exec::{PAR_ELEMENTS, PAR_GEMM};
pub(crate) use schedule::compile;

use crate::backend::T3;
use crate::ir::{Ir, Unary};
use dfdx::prelude::*;
use std::collections::BTreeMap;
use std::fmt;

/// What a compiled program hands back for one IR root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Output {
    /// The root's value for every example: `(batch, m, n)`.
    PerExample(crate::ir::Id),
    /// The root's values summed over the batch: `(1, m, n)`.
    BatchSum(crate::ir::Id),
}

/// Where a value lives: a buffer of the arena or one of the run's inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Buf {
    Slot(usize),
    Input(usize),
}

/// A strided view of a buffer as `(batch, rows, cols)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct View {
    buf: Buf,
    dims: (usize, usize, usize),
    strides: (usize, usize, usize),
}

impl View {
    fn contiguous(buf: Buf, dims: (usize, usize, usize)) -> View {
        View { buf, dims, strides: (dims.1 * dims.2, dims.2, 1) }
    }

    /// Whether the view reads its buffer in row-major order from the start.
    fn is_contiguous(&self) -> bool {
        let (b, m, n) = self.dims;
        let (sb, sm, sn) = self.strides;
        (n == 1 || sn == 1) && (m == 1 || sm == n) && (b == 1 || sb == m * n)
    }

    /// Whether the view reads each example's block in row-major order (at any example stride).
    fn is_row_major(&self) -> bool {
        let (_, m, n) = self.dims;
        let (_, sm, sn) = self.strides;
        (n == 1 || sn == 1) && (m == 1 || sm == n)
    }

    /// Whether every element reads the same value.
    fn is_constant(&self) -> bool {
        let (b, m, n) = self.dims;
        let (sb, sm, sn) = self.strides;
        (b == 1 || sb == 0) && (m == 1 || sm == 0) && (n == 1 || sn == 0)
    }
}

/// A matrix operand of a GEMM, per example: element `(i, j)` of example
/// `e` is at `e * sb + i * rs + j * cs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mat {
    buf: Buf,
    sb: usize,
    rs: usize,
    cs: usize,
}

/// A shared matrix that products read transposed, copied once per run as
/// `rows × cols` row-major (`host::transpose_into` of input `input`, whose
/// columns lie `stride` apart), and read as input `inputs.len()` + its
/// index: every shard's products read the one copy (`share_transposes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Transpose {
    input: usize,
    rows: usize,
    cols: usize,
    stride: usize,
}

/// One step of a fused loop; each writes the register numbered by its position.
#[derive(Debug, Clone, Copy, PartialEq)]
enum FOp {
    Load(usize),
    Imm(f32),
    Neg(usize),
    Bin(crate::backend::host::Arith, usize, usize),
    Map(Unary, usize),
    Powf(usize, f32),
    Pow(usize, usize),
}

/// How a reduction combines a per-example value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reduction {
    /// Everything to one value per example.
    Sum,
    /// Rows away (`(m, n)` → `(1, n)`), columns away, or both.
    SumTo {
        rows: bool,
        cols: bool,
    },
    LogSumExp,
    LogSumExpLast,
    Softmax,
    SoftmaxLast,
}

/// One instruction of a schedule.
#[derive(Debug, Clone, PartialEq)]
enum Instr {
    /// `out = code(inputs)` elementwise over `dims`.
    Fused { out: usize, dims: (usize, usize, usize), inputs: Vec<View>, code: Vec<FOp> },
    /// `out_e (+)= alpha · a_e b_e` for `batch` examples, each `(m×k)(k×n)`.
    Gemm { out: Mat, a: Mat, b: Mat, m: usize, k: usize, n: usize, batch: usize, accumulate: bool, alpha: f32 },
    /// A reduction of each example of `input` into `out` (contiguous, `out_dims`).
    Reduce { kind: Reduction, out: usize, input: View, out_dims: (usize, usize, usize) },
    /// `out (+)= alpha · Σ_e input_e`, `out` contiguous `(1, m, n)`; a shared
    /// input counts once per example (`repeat`).
    SumBatch { out: usize, input: View, alpha: f32, accumulate: bool, repeat: usize },
    /// The spectral norm of a shared matrix, or its `u vᵀ`.
    Spectral { out: usize, input: View, outer: bool },
    /// A convolution kernel over contiguous operands, each shared or one per
    /// example, with `scratch` as its working space; `out (+)= alpha ·` the
    /// sum for `KernelSum`, `out =` the value otherwise.
    Conv {
        kind: crate::backend::conv::Kind,
        out: usize,
        a: View,
        b: View,
        geom: crate::backend::conv::Conv,
        scratch: usize,
        accumulate: bool,
        alpha: f32,
    },
    /// Average pooling by `k` of each `hw` plane of a contiguous input (`planes` in all), or its adjoint (`unpool`).
    Pool { out: usize, input: View, planes: usize, hw: (usize, usize), k: usize, unpool: bool },
    /// A contiguous input `[p, a, q]` summed over its middle axis, or `[p, q]` repeated along one (`broadcast`).
    Axes { out: usize, input: View, dims: (usize, usize, usize), broadcast: bool },
    /// `out = 0`.
    Zero { out: usize },
}

/// A compiled program: its instructions, arena and outputs.
#[derive(Debug)]
pub(crate) struct Program {
    /// The inputs a run binds, in order: variables, parameters, constants by
    /// name, with their lengths and whether they hold one row per example.
    inputs: Vec<(String, usize, bool)>,
    /// The per-row inputs' values, one buffer each, filled before each run
    /// (empty for shared inputs, which are read where they are).
    host: Vec<Vec<f32>>,
    /// Shared matrices the products read from a transposed copy, bound after `inputs`.
    transposes: Vec<Transpose>,
    instrs: Vec<Instr>,
    /// The arena: one buffer per slot, sized at compile time.
    arena: Vec<Vec<f32>>,
    /// Each output's slot and dims.
    outputs: Vec<(usize, (usize, usize, usize))>,
    /// Each batch-summed output's writers (instruction, coefficient), the
    /// first of them writing and the rest adding (none for per-example outputs).
    writers: Vec<Vec<(usize, f32)>>,
    /// The batch size the program was compiled for.
    batch: usize,
    /// Whether ops may split across threads (not when shards run in parallel).
    threaded: bool,
    /// IR nodes the schedule covers, and how many fused loops hold them (for the listing).
    nodes: usize,
}

impl Program {
    /// The inputs `run` takes, in order, with their lengths and whether they hold a row per example.
    #[cfg(test)]
    pub(crate) fn inputs(&self) -> &[(String, usize, bool)] {
        &self.inputs
    }

    /// Input `i`'s buffer, to be filled before `run`.
    #[cfg(test)]
    pub(crate) fn input_mut(&mut self, i: usize) -> &mut [f32] {
        &mut self.host[i]
    }

    /// Runs the schedule: per-row inputs as last filled, shared ones
    /// (parameters, constants) read in place from `shared`, by name, and
    /// `copies` of its `transposes`.
    pub(crate) fn run(&mut self, shared: &Shared, copies: &[Vec<f32>]) {
        self.scale(1.0, &[]);
        self.execute(shared, copies);
    }

    /// Runs with every sum scaled by `weight` and written into `sums[i]`
    /// (one per output, each a sum), or added to it where `add[i]`: a
    /// phase's gradients land where the step collects them, with no pass of
    /// their own.
    pub(crate) fn run_into(
        &mut self,
        (shared, copies): (&Shared, &[Vec<f32>]),
        sums: &mut [Vec<f32>],
        weight: f32,
        add: &[bool],
    ) {
        self.scale(weight, add);
        for (i, sum) in sums.iter_mut().enumerate() {
            let (slot, (b, m, n)) = self.outputs[i];
            if !add[i] {
                sum.resize(b * m * n, 0.0);
            }
            std::mem::swap(&mut self.arena[slot], sum);
        }
        self.execute(shared, copies);
        for (i, sum) in sums.iter_mut().enumerate() {
            std::mem::swap(&mut self.arena[self.outputs[i].0], sum);
        }
    }

    /// Sets each sum's writers to `weight` times their coefficient, and
    /// the first of them to add (where `add[i]`) or write.
    fn scale(&mut self, weight: f32, add: &[bool]) {
        for (i, writers) in self.writers.iter().enumerate() {
            for (k, (at, base)) in writers.iter().enumerate() {
                match &mut self.instrs[*at] {
                    Instr::SumBatch { alpha, accumulate, .. }
                    | Instr::Gemm { alpha, accumulate, .. }
                    | Instr::Conv { alpha, accumulate, .. } => {
                        *alpha = weight * base;
                        *accumulate = k > 0 || add.get(i).copied().unwrap_or(false);
                    }
                    // Cannot fire: `compile` lists only these three as writers.
                    _ => unreachable!("a sum's writer"),
                }
            }
        }
    }

    fn execute(&mut self, shared: &Shared, copies: &[Vec<f32>]) {
        let Program { inputs, host, instrs, arena, threaded, .. } = self;
        let mut bound: Vec<&[f32]> = inputs
            .iter()
            .zip(host.iter())
            .map(|((name, len, per_row), own)| {
                if *per_row {
                    own.as_slice()
                } else {
                    // Cannot fire: callers mirror every parameter and constant of the IR they compiled.
                    let data = shared.get(name).unwrap_or_else(|| panic!("no value bound for `{name}`"));
                    assert_eq!(data.len(), *len, "`{name}` has the length it was compiled for");
                    data.as_slice()
                }
            })
            .collect();
        bound.extend(copies.iter().map(Vec::as_slice));
        for instr in instrs.iter() {
            exec::run(instr, arena, &bound, *threaded);
        }
    }

    /// Output `i` of the last run, row-major.
    pub(crate) fn output(&self, i: usize) -> &[f32] {
        let (slot, (b, m, n)) = self.outputs[i];
        &self.arena[slot][..b * m * n]
    }

    /// Output `i`'s dims `(batch, m, n)`.
    pub(crate) fn output_dims(&self, i: usize) -> (usize, usize, usize) {
        self.outputs[i].1
    }

    /// A rough count of the arithmetic one run does: multiply-adds of the
    /// products and convolutions, plus each fused loop's elements times its
    /// length (the rest moves memory, counted per element read).
    fn work(&self) -> usize {
        let elements = |(b, m, n): (usize, usize, usize)| b * m * n;
        self.instrs
            .iter()
            .map(|instr| match instr {
                Instr::Fused { dims, code, .. } => elements(*dims) * code.len(),
                Instr::Gemm { m, k, n, batch, .. } => m * k * n * batch,
                Instr::Conv { a, b, geom, .. } => geom.macs() * a.dims.0.max(b.dims.0),
                Instr::Reduce { input, .. }
                | Instr::SumBatch { input, .. }
                | Instr::Spectral { input, .. }
                | Instr::Pool { input, .. }
                | Instr::Axes { input, .. } => elements(input.dims),
                Instr::Zero { .. } => 0,
            })
            .sum()
    }

    /// Whether most of the work is products that `host::gemm` cuts in two
    /// halves of at least a shard's work each (below `PAR_GEMM`): such a
    /// program runs best as one shard, its products split, since shards
    /// would make the products thinner and add a pass over every summed
    /// output per shard (an RBM 784×500's weight gradient at batch 100).
    fn splits(&self) -> bool {
        let split: usize = self
            .instrs
            .iter()
            .map(|instr| match instr {
                Instr::Gemm { m, k, n, batch, .. } if (2 * SHARD_WORK..PAR_GEMM).contains(&(m * k * n)) => {
                    m * k * n * batch
                }
                _ => 0,
            })
            .sum();
        2 * split >= self.work()
    }

    /// Floats the arena holds.
    fn arena_len(&self) -> usize {
        self.arena.iter().map(Vec::len).sum()
    }
}

/// Host copies of the shared tensors a program reads (parameters and
/// constants), by name: made once per step, read in place by every shard.
pub(crate) type Shared = BTreeMap<String, Vec<f32>>;

/// Brings `into` up to date with `tensors`, reusing its buffers.
pub(crate) fn mirror<'a, D: Device<f32> + 'a>(
    tensors: impl IntoIterator<Item = (&'a String, &'a T3<D>)>,
    into: &mut Shared,
) {
    for (name, t) in tensors {
        let buf = into.entry(name.clone()).or_default();
        buf.resize(t.shape().num_elements(), 0.0);
        t.copy_into(buf);
    }
}

/// One host copy of a model's parameters and constants, shared by everything
/// that runs compiled programs on them in a training step (the chains'
/// sweep and the loss's phases), so a step copies each parameter out once.
#[derive(Debug, Default)]
pub(crate) struct Mirror {
    shared: Shared,
    /// Whether `shared` holds the current tensors.
    fresh: bool,
    /// Gradient buffers an update is done with, by parameter: the next
    /// step's sums write over them, so a step allocates and zeroes none.
    spare: BTreeMap<String, Vec<f32>>,
}

/// A mirror several owners read: a chain set and its trainer.
pub(crate) type SharedMirror = std::sync::Arc<std::sync::Mutex<Mirror>>;

impl Mirror {
    /// The parameters changed: the next reader copies them out again.
    pub(crate) fn stale(this: &SharedMirror) {
        lock(this).fresh = false;
    }

    /// The host copies, made from `tensors` first if they lag. Every reader
    /// of one mirror holds the same tensors, so whichever reads first copies.
    pub(crate) fn read<'m, 'a, D: Device<f32> + 'a>(
        this: &'m SharedMirror,
        tensors: impl IntoIterator<Item = (&'a String, &'a T3<D>)>,
    ) -> std::sync::MutexGuard<'m, Mirror> {
        let mut m = lock(this);
        if !m.fresh {
            mirror(tensors, &mut m.shared);
            m.fresh = true;
        }
        m
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }

    /// The host copy of parameter `name`, to update in place while the
    /// copies are current: the caller writes the same values into the
    /// tensor, so the two stay in step and nothing is copied out again.
    pub(crate) fn param_mut(&mut self, name: &str) -> Option<&mut [f32]> {
        if !self.fresh {
            return None;
        }
        self.shared.get_mut(name).map(Vec::as_mut_slice)
    }

    /// The gradient buffer `give_back` kept for `name`.
    pub(crate) fn take_back(&mut self, name: &str) -> Option<Vec<f32>> {
        self.spare.remove(name)
    }

    /// Keeps a gradient buffer for the next step's sums of `name`.
    pub(crate) fn give_back(&mut self, name: String, buffer: Vec<f32>) {
        self.spare.insert(name, buffer);
    }

    /// Adds `tensors` the copies lack (constants, which never change).
    pub(crate) fn add_missing<'a, D: Device<f32> + 'a>(
        &mut self,
        tensors: impl IntoIterator<Item = (&'a String, &'a T3<D>)>,
    ) {
        let missing: Vec<_> = tensors.into_iter().filter(|(k, _)| !self.shared.contains_key(*k)).collect();
        mirror(missing, &mut self.shared);
    }
}

/// A poisoned lock only means another step panicked; `fresh` is set only after a whole copy.
fn lock(this: &SharedMirror) -> std::sync::MutexGuard<'_, Mirror> {
    this.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Rows per shard: a batch is split into shards of at least this many rows
/// (a power of two of them, at most `MAX_SHARDS`), each run by its own copy
/// of the program on its own thread, with single-threaded ops inside. One
/// hand-off per run instead of one per op, and GEMMs still big enough to
/// run at full speed. Rows that cost more take fewer per shard: a shard
/// needs only `SHARD_WORK` of arithmetic (`Program::work`), so the batch of
/// 64 of a convolutional energy (about 2^19.4 a row for the digits net's
/// Langevin gradient) splits in two, where its GEMMs are all below
/// `PAR_GEMM` and would otherwise run on one thread. The split depends on
/// the program and the batch alone, not on the machine's threads, so a
/// seed gives the same sums anywhere.
const SHARD_ROWS: usize = 128;
const MAX_SHARDS: usize = 8;
const SHARD_WORK: usize = 1 << 24;

/// The largest power of two not above `n` (n ≥ 1).
fn prev_power_of_two(n: usize) -> usize {
    1 << n.ilog2()
}

/// A program for fixed outputs of one IR, compiled for the batch size it
/// last met (a run's last, smaller batch compiles once more), in shards.
#[derive(Debug)]
pub(crate) struct Compiled {
    outputs: Vec<Output>,
    batch: usize,
    shards: Vec<Program>,
    /// Each per-row input's values for the whole batch, staged before the shards take their rows (with several shards).
    staged: Vec<Vec<f32>>,
    /// Each output, gathered from the shards: rows concatenated, or sums added.
    results: Vec<Vec<f32>>,
    /// The shards' `transposes`, made before each run.
    copies: Vec<Vec<f32>>,
}

impl Compiled {
    pub(crate) fn new(outputs: Vec<Output>) -> Compiled {
        Compiled { outputs, batch: 0, shards: Vec::new(), staged: Vec::new(), results: Vec::new(), copies: Vec::new() }
    }

    /// Compiles for a batch of `batch` examples (`run` does so when the batch changes).
    pub(crate) fn prepare(&mut self, ir: &Ir, batch: usize) {
        let per_row = compile(ir, &self.outputs, 1).work().max(1);
        let rows = SHARD_WORK.div_ceil(per_row).clamp(1, SHARD_ROWS);
        // A power of two, so the shards share 2, 4 or 8 threads evenly.
        let count = prev_power_of_two((batch / rows).clamp(1, MAX_SHARDS));
        let count = if count > 1 && compile(ir, &self.outputs, batch).splits() { 1 } else { count };
        let threaded = count == 1;
        self.shards = (0..count)
            .map(|s| {
                let rows = batch / count + usize::from(s < batch % count);
                let mut p = compile(ir, &self.outputs, rows);
                p.threaded = threaded;
                // Each shard would pack the same transposed matrices again for every product.
                if count > 1 {
                    schedule::share_transposes(&mut p);
                }
                p
            })
            .collect();
        let first = &self.shards[0];
        self.copies = first.transposes.iter().map(|t| vec![0.0; t.rows * t.cols]).collect();
        self.staged = first
            .inputs
            .iter()
            .map(
                |(_, len, per_row)| {
                    if *per_row && count > 1 { vec![0.0; len / first.batch * batch] } else { Vec::new() }
                },
            )
            .collect();
        self.results = (0..if count > 1 { self.outputs.len() } else { 0 })
            .map(|i| {
                let (b, m, n) = first.output_dims(i);
                vec![
                    0.0;
                    if b == first.batch && matches!(self.outputs[i], Output::PerExample(_)) { batch } else { 1 } * m * n
                ]
            })
            .collect();
        self.batch = batch;
    }

    /// Runs with the variables (`batch` examples) found by name in the
    /// first map of `vars` that has them, and parameters and constants in
    /// `shared`.
    pub(crate) fn run<D: Device<f32>>(
        &mut self,
        ir: &Ir,
        batch: usize,
        vars: &[&BTreeMap<String, T3<D>>],
        shared: &Shared,
    ) -> &Self {
        self.stage(ir, batch, vars, shared);
        let copies = &self.copies;
        if self.shards.len() > 1 {
            use rayon::prelude::*;
            self.shards.par_iter_mut().for_each(|p| p.run(shared, copies));
        } else {
            self.shards[0].run(shared, copies);
        }
        self.gather();
        self
    }

    /// `run` for a program of sums only: each sum, times `weight`, is
    /// written into `sums[i]` (or added to it where `add[i]`), with the
    /// first shard writing there directly.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn run_into<D: Device<f32>>(
        &mut self,
        ir: &Ir,
        batch: usize,
        vars: &[&BTreeMap<String, T3<D>>],
        shared: &Shared,
        sums: &mut [Vec<f32>],
        weight: f32,
        add: &[bool],
    ) {
        self.stage(ir, batch, vars, shared);
        let copies = &self.copies;
        // Cannot fire: `prepare` makes at least one shard.
        let (first, rest) = self.shards.split_first_mut().expect("a shard");
        if rest.is_empty() {
            first.run_into((shared, copies), sums, weight, add);
            return;
        }
        use rayon::prelude::*;
        rayon::join(
            || first.run_into((shared, copies), sums, weight, add),
            || {
                rest.par_iter_mut().for_each(|p| {
                    p.scale(weight, &[]);
                    p.execute(shared, copies);
                })
            },
        );
        // Shared by two threads in pieces; each element adds the shards in
        // order wherever its piece runs, so the sums stay the same bits. A
        // serial pass over a wide MLP's eight partial weight gradients kept
        // the second core idle for a tenth of a millisecond per shard. Sums
        // below `PAR_ELEMENTS` (a convnet's kernels) stay on this thread.
        let piece = exec::PAR_ELEMENTS;
        for (i, sum) in sums.iter_mut().enumerate() {
            crate::backend::partner::for_each_chunk(sum, piece, |p, chunk| {
                for shard in rest.iter() {
                    let from = &shard.output(i)[p * piece..];
                    chunk.iter_mut().zip(from).for_each(|(s, x)| *s += x);
                }
            });
        }
    }

    /// Compiles for `batch` if needed, fills each shard's per-row inputs
    /// and makes the shared transposed copies.
    fn stage<D: Device<f32>>(&mut self, ir: &Ir, batch: usize, vars: &[&BTreeMap<String, T3<D>>], shared: &Shared) {
        if self.batch != batch {
            self.prepare(ir, batch);
        }
        let first = &self.shards[0];
        for (t, copy) in first.transposes.iter().zip(&mut self.copies) {
            let name = &first.inputs[t.input].0;
            // Cannot fire: callers mirror every parameter and constant of the IR they compiled.
            let src = shared.get(name).unwrap_or_else(|| panic!("no value bound for `{name}`"));
            crate::backend::host::transpose_into(src, t.stride, (t.rows, t.cols), copy);
        }
        // Per-row inputs are staged whole and each shard takes its rows (with one shard, straight in).
        let single = self.shards.len() == 1;
        for i in 0..self.staged.len() {
            let (name, _, per_row) = &self.shards[0].inputs[i];
            if !per_row {
                continue;
            }
            // Cannot fire: callers bind every variable of the IR they compiled.
            let t = vars.iter().find_map(|m| m.get(name)).unwrap_or_else(|| panic!("no value bound for `{name}`"));
            if single {
                t.copy_into(&mut self.shards[0].host[i]);
                continue;
            }
            t.copy_into(&mut self.staged[i]);
            let mut row = 0;
            for shard in &mut self.shards {
                let len = shard.inputs[i].1;
                let from = row * (len / shard.batch);
                shard.host[i].copy_from_slice(&self.staged[i][from..from + len]);
                row += shard.batch;
            }
        }
    }

    /// Gathers several shards' outputs: rows concatenated, sums added.
    fn gather(&mut self) {
        // One shard's outputs are read where they are (`value`).
        let gather = if self.shards.len() > 1 { self.results.len() } else { 0 };
        for (i, result) in self.results.iter_mut().enumerate().take(gather) {
            let per_row =
                matches!(self.outputs[i], Output::PerExample(_)) && result.len() != self.shards[0].output(i).len();
            let mut at = 0;
            for (s, shard) in self.shards.iter().enumerate() {
                let out = shard.output(i);
                if per_row {
                    result[at..at + out.len()].copy_from_slice(out);
                    at += out.len();
                } else if s == 0 {
                    result.copy_from_slice(out);
                } else if matches!(self.outputs[i], Output::BatchSum(_)) {
                    result.iter_mut().zip(out).for_each(|(r, x)| *r += x);
                }
            }
        }
    }

    /// Output `i` of the last run as a device tensor: `(batch, m, n)`
    /// per example, `(1, m, n)` summed (or for a value shared by the batch).
    pub(crate) fn tensor<D: Device<f32>>(&self, dev: &D, i: usize) -> T3<D> {
        let (_, m, n) = self.shards[0].output_dims(i);
        let data = self.value(i).to_vec();
        let rows = data.len() / (m * n);
        dev.tensor_from_vec(data, (rows, m, n))
    }

    /// Output `i` of the last run, row-major (`(1, m, n)` for a sum).
    pub(crate) fn value(&self, i: usize) -> &[f32] {
        match self.shards.as_slice() {
            [only] => only.output(i),
            _ => &self.results[i],
        }
    }

    /// Output `i`'s dims as `value` holds it: `(rows, m, n)`, rows 1 for a sum or a shared value.
    pub(crate) fn dims(&self, i: usize) -> (usize, usize, usize) {
        let (_, m, n) = self.shards[0].output_dims(i);
        (self.value(i).len() / (m * n), m, n)
    }

    /// The listing of the compiled schedule (its first shard's), if compiled.
    pub(crate) fn listing(&self) -> Option<String> {
        let first = self.shards.first()?;
        Some(format!("# {} shard(s) of about {} rows\n{first}", self.shards.len(), first.batch))
    }
}

impl fmt::Display for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fused = self.instrs.iter().filter(|i| matches!(i, Instr::Fused { .. })).count();
        let gemms = self.instrs.iter().filter(|i| matches!(i, Instr::Gemm { .. })).count();
        let convs = self.instrs.iter().filter(|i| matches!(i, Instr::Conv { .. })).count();
        writeln!(
            f,
            "# batch {}: {} IR nodes -> {} instructions ({} fused loops, {} GEMMs, {} convolutions); arena {} buffers, {} floats",
            self.batch,
            self.nodes,
            self.instrs.len(),
            fused,
            gemms,
            convs,
            self.arena.len(),
            self.arena_len()
        )?;
        for (i, (name, n, _)) in self.inputs.iter().enumerate() {
            writeln!(f, "in{i} = {name} ({n})")?;
        }
        for (i, t) in self.transposes.iter().enumerate() {
            writeln!(
                f,
                "in{} = transpose of in{} ({}x{}, copied once per run)",
                self.inputs.len() + i,
                t.input,
                t.rows,
                t.cols
            )?;
        }
        for instr in &self.instrs {
            writeln!(f, "{}", schedule::show(instr))?;
        }
        for (i, (slot, (b, m, n))) in self.outputs.iter().enumerate() {
            writeln!(f, "out{i} = t{slot} [{b}x{m}x{n}]")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
