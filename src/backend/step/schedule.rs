//! IR roots → a `Program`: views, fusion, products, arena (see `super`).

use super::{Buf, FOp, Instr, Mat, Output, Program, Reduction, Transpose, View};
use crate::backend::conv::{self, Kind, pool_planes};
use crate::backend::eval::{canon, has_var};
use crate::backend::host::Arith;
use crate::ir::{ConvGeom, Id, Ir, Op};
use std::collections::{BTreeSet, HashMap};

/// The most registers one fused loop holds (its program's length).
pub(super) const MAX_CODE: usize = 48;

/// Compiles `outputs` of `ir` for a batch of `batch` examples. Every root
/// must have its nets inlined (as `Ir::grad` and `Ir::inline_nets` leave them).
pub(crate) fn compile(ir: &Ir, outputs: &[Output], batch: usize) -> Program {
    let mut c = Compiler {
        ir,
        batch,
        batched: HashMap::new(),
        group: HashMap::new(),
        inline: BTreeSet::new(),
        values: HashMap::new(),
        instrs: Vec::new(),
        slots: Vec::new(),
        inputs: Vec::new(),
    };
    // What must be materialised: per-example roots, and each batch-summed root's terms (or their factors).
    let mut needed: Vec<Id> = Vec::new();
    for out in outputs {
        match *out {
            Output::PerExample(root) => needed.push(root),
            Output::BatchSum(root) => {
                for (_, atom) in terms(ir, root) {
                    needed.extend(c.term_needs(atom));
                }
            }
        }
    }
    let cone: BTreeSet<Id> = needed.iter().flat_map(|r| ir.cone(*r)).collect();
    let roots = outputs.iter().map(|o| match *o {
        Output::PerExample(r) | Output::BatchSum(r) => r,
    });
    let reach: BTreeSet<Id> = roots.flat_map(|r| ir.cone(r)).collect();
    for &id in &reach {
        let batched = matches!(ir.node(id).op, Op::Var(_)) || ir.children(id).iter().any(|ch| c.batched[ch]);
        c.batched.insert(id, batched);
    }
    c.assign_groups(&cone, &needed);
    let mut outs = Vec::new();
    for out in outputs {
        let (slot, dims) = match *out {
            Output::PerExample(root) => {
                let v = c.value(root);
                let v = if v.is_contiguous() && matches!(v.buf, Buf::Slot(_)) { v } else { c.copy(v) };
                let Buf::Slot(slot) = v.buf else { unreachable!("copied into a slot just above") };
                (slot, v.dims)
            }
            Output::BatchSum(root) => c.batch_sum(root),
        };
        outs.push((slot, dims));
    }
    let (arena, instrs, placed) = allocate(c.instrs, &c.slots, outs);
    // Each sum's writers, in order, with their coefficients: a run scales them by its phase's weight.
    let writers = outputs
        .iter()
        .zip(&placed)
        .map(|(out, (slot, _))| match out {
            Output::PerExample(_) => Vec::new(),
            Output::BatchSum(_) => instrs
                .iter()
                .enumerate()
                .filter_map(|(i, instr)| match instr {
                    Instr::SumBatch { out, alpha, .. } if out == slot => Some((i, *alpha)),
                    Instr::Gemm { out, alpha, .. } if out.buf == Buf::Slot(*slot) => Some((i, *alpha)),
                    Instr::Conv { out, alpha, kind: Kind::KernelSum, .. } if out == slot => Some((i, *alpha)),
                    _ => None,
                })
                .collect(),
        })
        .collect();
    let host = c.inputs.iter().map(|(_, n, per_row)| if *per_row { vec![0.0; *n] } else { Vec::new() }).collect();
    Program {
        inputs: c.inputs,
        host,
        instrs,
        arena,
        transposes: Vec::new(),
        outputs: placed,
        writers,
        batch,
        threaded: true,
        nodes: cone.len(),
    }
}

struct Compiler<'a> {
    ir: &'a Ir,
    batch: usize,
    /// Whether a node's value differs across the batch (depends on a variable).
    batched: HashMap<Id, bool>,
    /// Each elementwise node's fused loop, named by the node the loop computes.
    group: HashMap<Id, Id>,
    /// Cheap nodes recomputed inside every loop that reads them.
    inline: BTreeSet<Id>,
    /// Values already computed (or viewed).
    values: HashMap<Id, View>,
    instrs: Vec<Instr>,
    /// Each logical buffer's length; `allocate` maps them onto the arena.
    slots: Vec<usize>,
    inputs: Vec<(String, usize, bool)>,
}

fn elementwise(op: &Op) -> bool {
    matches!(
        op,
        Op::Neg(_) | Op::Add(..) | Op::Sub(..) | Op::Mul(..) | Op::Div(..) | Op::Map(..) | Op::Pow(..) | Op::Outer(..)
    )
}

/// A batch-summed root as a sum of `coefficient · atom` through `+`, `−`,
/// negation and numeric factors.
fn terms(ir: &Ir, root: Id) -> Vec<(f32, Id)> {
    fn walk(ir: &Ir, id: Id, c: f32, out: &mut Vec<(f32, Id)>) {
        match ir.node(id).op {
            Op::Add(a, b) => {
                walk(ir, a, c, out);
                walk(ir, b, c, out);
            }
            Op::Sub(a, b) => {
                walk(ir, a, c, out);
                walk(ir, b, -c, out);
            }
            Op::Neg(a) => walk(ir, a, -c, out),
            Op::Mul(s, x) | Op::Mul(x, s) if ir.shape(s).is_empty() && ir.num_value(s).is_some() => {
                walk(ir, x, c * ir.num_value(s).unwrap_or(1.0) as f32, out)
            }
            _ => out.push((c, id)),
        }
    }
    let mut out = Vec::new();
    walk(ir, root, 1.0, &mut out);
    out
}

impl Compiler<'_> {
    fn dims(&self, id: Id) -> (usize, usize, usize) {
        let (m, n) = canon(self.ir.shape(id));
        (if self.batched[&id] { self.batch } else { 1 }, m, n)
    }

    fn slot(&mut self, len: usize) -> usize {
        self.slots.push(len);
        self.slots.len() - 1
    }

    /// What a batch-summed term reads: the factors of a product (summed by
    /// one GEMM over the batch), or the term itself.
    fn term_needs(&self, atom: Id) -> Vec<Id> {
        let (inner, scale) = scaled(self.ir, atom);
        match self.ir.node(inner).op {
            Op::Outer(a, b) | Op::MatMul(a, b) | Op::ConvKernel(a, b, _) => {
                [peel(self.ir, a).1, peel(self.ir, b).1].into_iter().chain(scale.map(|(s, _)| s)).collect()
            }
            _ => vec![atom],
        }
    }

    /// `v` times or divided by (`op`) the shared scalar `s`, in a new buffer.
    fn scale_by(&mut self, v: View, (s, op): (Id, Arith)) -> View {
        let scalar = self.value(s);
        let out = self.slot(v.dims.0 * v.dims.1 * v.dims.2);
        let inputs = vec![v, broadcast_to(scalar, v.dims)];
        self.instrs.push(Instr::Fused {
            out,
            dims: v.dims,
            inputs,
            code: vec![FOp::Load(0), FOp::Load(1), FOp::Bin(op, 0, 1)],
        });
        View::contiguous(Buf::Slot(out), v.dims)
    }

    /// Groups elementwise nodes into fused loops, visiting consumers before
    /// producers: a node joins its consumers' loop when every consumer is in
    /// that one loop, elementwise over the same dims, and nothing else needs
    /// the node's value in memory. A cheap arithmetic node whose consumers
    /// sit in several loops is recomputed inside each (`inline`) rather than
    /// stored and loaded back: one operation instead of a pass over memory.
    /// A loop's size counts registers (an op and one per operand), so no
    /// loop's program outgrows `MAX_CODE`.
    fn assign_groups(&mut self, cone: &BTreeSet<Id>, needed: &[Id]) {
        let forced: BTreeSet<Id> = needed.iter().copied().collect();
        let mut consumers: HashMap<Id, Vec<Id>> = HashMap::new();
        for &id in cone {
            for ch in self.ir.children(id) {
                consumers.entry(ch).or_default().push(id);
            }
        }
        let mut size: HashMap<Id, usize> = HashMap::new();
        // The loops each inlined node is recomputed in.
        let mut resolved: HashMap<Id, BTreeSet<Id>> = HashMap::new();
        for &id in cone.iter().rev() {
            let op = &self.ir.node(id).op;
            if !elementwise(op) {
                continue;
            }
            let dims = self.dims(id);
            let cost = 1 + self.ir.children(id).len();
            // The loops that read this node, or None when something else (a product, a reduction, an output) does.
            let mut loops = BTreeSet::new();
            let mut fusable = !forced.contains(&id);
            for p in consumers.get(&id).map(Vec::as_slice).unwrap_or(&[]) {
                let pop = &self.ir.node(*p).op;
                if !elementwise(pop) || matches!(pop, Op::Outer(..)) || self.dims(*p) != dims {
                    fusable = false;
                } else if let Some(r) = resolved.get(p) {
                    loops.extend(r.iter().copied());
                } else if let Some(g) = self.group.get(p) {
                    loops.insert(*g);
                }
            }
            let fits =
                |loops: &BTreeSet<Id>, size: &HashMap<Id, usize>| loops.iter().all(|g| size[g] + cost <= MAX_CODE);
            let cheap = matches!(op, Op::Neg(_) | Op::Add(..) | Op::Sub(..) | Op::Mul(..) | Op::Div(..));
            if fusable && loops.len() == 1 && fits(&loops, &size) {
                let g = *loops.first().expect("one loop");
                self.group.insert(id, g);
                *size.entry(g).or_default() += cost;
            } else if fusable && cheap && loops.len() > 1 && fits(&loops, &size) {
                for g in &loops {
                    *size.entry(*g).or_default() += cost;
                }
                resolved.insert(id, loops);
            } else {
                self.group.insert(id, id);
                size.insert(id, cost);
            }
        }
        self.inline = resolved.into_keys().collect();
    }

    /// The value of `id`, computing it (and what it reads) on first use.
    fn value(&mut self, id: Id) -> View {
        if let Some(v) = self.values.get(&id) {
            return *v;
        }
        let dims = self.dims(id);
        let node = self.ir.node(id);
        let v = match &node.op {
            Op::Var(name) | Op::Param(name) | Op::Const(name) => {
                let index = self.inputs.len();
                self.inputs.push((name.clone(), dims.0 * dims.1 * dims.2, matches!(node.op, Op::Var(_))));
                View::contiguous(Buf::Input(index), dims)
            }
            Op::Num(_) => self.fused(id),
            op if elementwise(op) => self.fused(id),
            Op::Transpose(a) => {
                let v = self.value(*a);
                if self.ir.shape(*a).len() == 2 {
                    View {
                        buf: v.buf,
                        dims: (v.dims.0, v.dims.2, v.dims.1),
                        strides: (v.strides.0, v.strides.2, v.strides.1),
                    }
                } else {
                    v
                }
            }
            Op::Broadcast(a) => {
                let v = self.value(*a);
                let (_, am, an) = v.dims;
                if (am == 1 || am == dims.1) && (an == 1 || an == dims.2) {
                    broadcast_to(v, dims)
                } else {
                    // A matrix repeated along the leading axes of an image: not a strided view.
                    let q = am * an;
                    self.axes(*a, (v.dims.0, dims.1 * dims.2 / q, q), true, dims)
                }
            }
            Op::SumTo(a) if self.ir.shape(*a).len() > 2 => {
                let (b, am, an) = self.dims(*a);
                let q = dims.1 * dims.2;
                self.axes(*a, (b, am * an / q, q), false, dims)
            }
            Op::MatMul(a, b) => self.matmul(id, *a, *b),
            Op::Sum(a) => self.reduce(Reduction::Sum, *a, dims),
            Op::SumTo(a) => {
                let (_, am, an) = self.dims(*a);
                self.reduce(Reduction::SumTo { rows: dims.1 == 1 && am != 1, cols: dims.2 == 1 && an != 1 }, *a, dims)
            }
            Op::LogSumExp(a) => self.reduce(Reduction::LogSumExp, *a, dims),
            Op::LogSumExpLast(a) => self.reduce(Reduction::LogSumExpLast, *a, dims),
            Op::Softmax(a) => self.reduce(Reduction::Softmax, *a, dims),
            Op::SoftmaxLast(a) => self.reduce(Reduction::SoftmaxLast, *a, dims),
            Op::SpectralNorm(a) | Op::SpectralOuter(a) => {
                let input = self.value(*a);
                let out = self.slot(dims.0 * dims.1 * dims.2);
                let outer = matches!(node.op, Op::SpectralOuter(_));
                self.instrs.push(Instr::Spectral { out, input, outer });
                View::contiguous(Buf::Slot(out), dims)
            }
            Op::Conv(a, b, geom) => self.conv(id, Kind::Forward, *a, *b, *geom),
            Op::ConvInput(a, b, geom) => self.conv(id, Kind::Input, *a, *b, *geom),
            Op::ConvKernel(a, b, geom) => self.conv(id, Kind::Kernel, *a, *b, *geom),
            Op::AvgPool(a, k) | Op::Unpool(a, k) => {
                let unpool = matches!(node.op, Op::Unpool(..));
                let image = if unpool { &node.shape } else { self.ir.shape(*a) };
                let (planes, hw) = pool_planes(image, dims.0);
                let input = self.contiguous(*a);
                let out = self.slot(dims.0 * dims.1 * dims.2);
                self.instrs.push(Instr::Pool { out, input, planes, hw, k: *k, unpool });
                View::contiguous(Buf::Slot(out), dims)
            }
            Op::SumAxes(a, start, count) => {
                let (p, n, q) = runs(self.ir.shape(*a), *start, *count);
                if n == 1 { self.reshape(*a, dims) } else { self.axes(*a, (dims.0 * p, n, q), false, dims) }
            }
            Op::BroadcastAxes(a, start, count) => {
                let (p, n, q) = runs(&node.shape, *start, *count);
                let v = self.value(*a);
                if n == 1 {
                    self.reshape(*a, dims)
                } else if q == 1 && n == dims.2 && v.is_contiguous() {
                    // Along the last axis: each value across its row.
                    View { buf: v.buf, dims, strides: (v.strides.0, 1, 0) }
                } else if p == 1 && q == dims.2 && v.is_contiguous() {
                    // Along leading axes, each row the input.
                    View { buf: v.buf, dims, strides: (v.strides.0, 0, 1) }
                } else {
                    self.axes(*a, (dims.0 * p, n, q), true, dims)
                }
            }
            Op::Reshape(a) => self.reshape(*a, dims),
            // Cannot fire: `compile`'s callers inline nets first (its documented contract).
            Op::Net(..) => unreachable!("nets are inlined before compiling"),
            // Cannot fire: `elementwise` covers the remaining ops, matched above.
            _ => unreachable!("every op is handled"),
        };
        self.values.insert(id, v);
        v
    }

    /// The value of `id` in a contiguous buffer (copied there if it is a view).
    fn contiguous(&mut self, id: Id) -> View {
        let v = self.value(id);
        if v.is_contiguous() { v } else { self.copy(v) }
    }

    /// The same elements as `a`'s value, seen as `dims`.
    fn reshape(&mut self, a: Id, dims: (usize, usize, usize)) -> View {
        View::contiguous(self.contiguous(a).buf, dims)
    }

    /// `a` summed over, or repeated along, the middle of `[p, n, q]` into a new buffer of `dims`.
    fn axes(&mut self, a: Id, runs: (usize, usize, usize), broadcast: bool, dims: (usize, usize, usize)) -> View {
        let input = self.contiguous(a);
        let out = self.slot(dims.0 * dims.1 * dims.2);
        self.instrs.push(Instr::Axes { out, input, dims: runs, broadcast });
        View::contiguous(Buf::Slot(out), dims)
    }

    /// A convolution kernel's instruction for node `id` (see `conv::Kind` for its operands).
    fn conv(&mut self, id: Id, kind: Kind, a: Id, b: Id, geom: ConvGeom) -> View {
        let g = self.conv_sizes(id, kind, a, b, geom);
        let (a, b) = (self.contiguous(a), self.contiguous(b));
        let dims = self.dims(id);
        let out = self.slot(dims.0 * dims.1 * dims.2);
        let scratch = self.slot(g.scratch(dims.0));
        self.instrs.push(Instr::Conv { kind, out, a, b, geom: g, scratch, accumulate: false, alpha: 1.0 });
        View::contiguous(Buf::Slot(out), dims)
    }

    /// The sizes of the convolution that node `id` (of `kind`, on `a` and `b`) belongs to.
    fn conv_sizes(&self, id: Id, kind: Kind, a: Id, b: Id, geom: ConvGeom) -> conv::Conv {
        let shape = |x: Id| self.ir.shape(x);
        let (input, kernel) = match kind {
            Kind::Forward => (shape(a), shape(b)),
            Kind::Input => (shape(id), shape(b)),
            Kind::Kernel | Kind::KernelSum => (shape(a), shape(id)),
        };
        conv::Conv::of(input, kernel, geom.stride, geom.pad)
    }

    fn reduce(&mut self, kind: Reduction, a: Id, out_dims: (usize, usize, usize)) -> View {
        let input = self.value(a);
        let out = self.slot(out_dims.0 * out_dims.1 * out_dims.2);
        self.instrs.push(Instr::Reduce { kind, out, input, out_dims });
        View::contiguous(Buf::Slot(out), out_dims)
    }

    /// A contiguous copy of a view.
    fn copy(&mut self, v: View) -> View {
        let out = self.slot(v.dims.0 * v.dims.1 * v.dims.2);
        self.instrs.push(Instr::Fused { out, dims: v.dims, inputs: vec![v], code: vec![FOp::Load(0)] });
        View::contiguous(Buf::Slot(out), v.dims)
    }

    /// The fused loop that computes `head` (and the members of its group).
    fn fused(&mut self, head: Id) -> View {
        let dims = self.dims(head);
        let mut loop_ = Loop { code: Vec::new(), inputs: Vec::new(), regs: HashMap::new(), dims, head };
        self.code(head, &mut loop_);
        // Cannot fire: `assign_groups` bounds each loop's registers by MAX_CODE.
        assert!(loop_.code.len() <= MAX_CODE, "a fused loop within its registers");
        let out = self.slot(dims.0 * dims.1 * dims.2);
        self.instrs.push(Instr::Fused { out, dims, inputs: loop_.inputs, code: loop_.code });
        View::contiguous(Buf::Slot(out), dims)
    }

    /// The register holding `id` inside the loop being built.
    fn code(&mut self, id: Id, l: &mut Loop) -> usize {
        if let Some(&r) = l.regs.get(&id) {
            return r;
        }
        let op = if let Some(c) = self.ir.num_value(id) {
            FOp::Imm(c as f32)
        } else if self.group.get(&id) == Some(&l.head) || self.inline.contains(&id) {
            match self.ir.node(id).op {
                Op::Neg(a) => FOp::Neg(self.code(a, l)),
                Op::Add(a, b) | Op::Sub(a, b) | Op::Mul(a, b) | Op::Div(a, b) => {
                    let arith = match self.ir.node(id).op {
                        Op::Add(..) => Arith::Add,
                        Op::Sub(..) => Arith::Sub,
                        Op::Mul(..) => Arith::Mul,
                        _ => Arith::Div,
                    };
                    let (x, y) = (self.code(a, l), self.code(b, l));
                    FOp::Bin(arith, x, y)
                }
                Op::Map(f, a) => FOp::Map(f, self.code(a, l)),
                Op::Pow(a, e) => {
                    let x = self.code(a, l);
                    match self.ir.num_value(e) {
                        Some(c) => FOp::Powf(x, c as f32),
                        None => FOp::Pow(x, self.code(e, l)),
                    }
                }
                Op::Outer(a, b) => {
                    // a along the rows, b along the columns.
                    let (va, vb) = (self.value(a), self.value(b));
                    let (b0, m, n) = l.dims;
                    let sb = |v: View| if v.dims.0 == 1 && b0 > 1 { 0 } else { v.strides.0 };
                    let col = View { buf: va.buf, dims: l.dims, strides: (sb(va), va.strides.2, 0) };
                    let row = View { buf: vb.buf, dims: (b0, m, n), strides: (sb(vb), 0, vb.strides.2) };
                    let (x, y) = (l.load(col), l.load(row));
                    l.code.push(FOp::Load(x));
                    let rx = l.code.len() - 1;
                    l.code.push(FOp::Load(y));
                    FOp::Bin(Arith::Mul, rx, l.code.len() - 1)
                }
                // Cannot fire: only elementwise ops are grouped (`assign_groups`).
                _ => unreachable!("grouped nodes are elementwise"),
            }
        } else {
            let v = self.value(id);
            FOp::Load(l.load(broadcast_to(v, l.dims)))
        };
        l.code.push(op);
        let r = l.code.len() - 1;
        l.regs.insert(id, r);
        r
    }

    /// `a @ b`, one GEMM over the batch where the layout allows.
    fn matmul(&mut self, id: Id, a: Id, b: Id) -> View {
        let (ra, rb) = (self.ir.shape(a).len(), self.ir.shape(b).len());
        let (va, vb) = (self.value(a), self.value(b));
        let dims = self.dims(id);
        let (ba, bb) = (self.batched[&a], self.batched[&b]);
        if ba && bb && ra == 1 && rb == 1 {
            // A dot product per example: one fused multiply and a sum.
            let prod = self.slot(va.dims.0 * va.dims.2);
            let pd = va.dims;
            self.instrs.push(Instr::Fused {
                out: prod,
                dims: pd,
                inputs: vec![va, vb],
                code: vec![FOp::Load(0), FOp::Load(1), FOp::Bin(Arith::Mul, 0, 1)],
            });
            let out = self.slot(dims.0);
            self.instrs.push(Instr::Reduce {
                kind: Reduction::Sum,
                out,
                input: View::contiguous(Buf::Slot(prod), pd),
                out_dims: dims,
            });
            return View::contiguous(Buf::Slot(out), dims);
        }
        let out = self.slot(dims.0 * dims.1 * dims.2);
        let ov = View::contiguous(Buf::Slot(out), dims);
        let (am, k) = (if ra == 1 { 1 } else { va.dims.1 }, va.dims.2);
        let n = if rb == 1 { 1 } else { vb.dims.2 };
        let gemm = self.product(va, vb, ov, (ra, rb), (am, k, n), false, 1.0);
        self.instrs.push(gemm);
        ov
    }

    /// The GEMM for `out_e (+)= alpha a_e b_e` over the batch, folding the
    /// batch into the rows or columns when one side is shared and the
    /// layout allows, else a loop over the examples.
    #[allow(clippy::too_many_arguments)]
    fn product(
        &self,
        va: View,
        vb: View,
        ov: View,
        (ra, rb): (usize, usize),
        (m, k, n): (usize, usize, usize),
        accumulate: bool,
        alpha: f32,
    ) -> Instr {
        let batched = |v: View| v.dims.0 > 1;
        let sb = |v: View| if batched(v) { v.strides.0 } else { 0 };
        let a = if ra == 1 {
            Mat { buf: va.buf, sb: sb(va), rs: sb(va), cs: va.strides.2 }
        } else {
            Mat { buf: va.buf, sb: sb(va), rs: va.strides.1, cs: va.strides.2 }
        };
        let b = if rb == 1 {
            Mat { buf: vb.buf, sb: sb(vb), rs: vb.strides.2, cs: sb(vb) }
        } else {
            Mat { buf: vb.buf, sb: sb(vb), rs: vb.strides.1, cs: vb.strides.2 }
        };
        let osb = sb(ov);
        let o = match (ra, rb) {
            (1, 1) => Mat { buf: ov.buf, sb: osb, rs: osb, cs: osb },
            (1, _) => Mat { buf: ov.buf, sb: osb, rs: osb, cs: ov.strides.2 },
            (_, 1) => Mat { buf: ov.buf, sb: osb, rs: ov.strides.2, cs: osb },
            _ => Mat { buf: ov.buf, sb: osb, rs: ov.strides.1, cs: ov.strides.2 },
        };
        let batch = ov.dims.0;
        let whole = |m, k, n, batch| Instr::Gemm { out: o, a, b, m, k, n, batch, accumulate, alpha };
        if batch > 1 && batched(va) && !batched(vb) && a.sb == m * a.rs && o.sb == m * o.rs {
            return whole(batch * m, k, n, 1);
        }
        if batch > 1 && batched(vb) && !batched(va) && b.sb == n * b.cs && o.sb == n * o.cs {
            return whole(m, k, batch * n, 1);
        }
        whole(m, k, n, batch)
    }

    /// Writes `Σ_e root_e` into a fresh buffer, term by term: a product of
    /// two per-example factors is one GEMM whose contraction runs over the
    /// batch; a product with one shared factor sums the other first.
    fn batch_sum(&mut self, root: Id) -> (usize, (usize, usize, usize)) {
        let (m, n) = canon(self.ir.shape(root));
        let dims = (1, m, n);
        let out = self.slot(m * n);
        let zero = self.instrs.len();
        self.instrs.push(Instr::Zero { out });
        let ov = View::contiguous(Buf::Slot(out), dims);
        for (coefficient, atom) in terms(self.ir, root) {
            // A product over a shared scalar: its second factor is scaled instead, before the contraction.
            let (atom, scale) = scaled(self.ir, atom);
            let node = self.ir.node(atom).clone();
            if let Op::ConvKernel(x, g, geom) = node.op
                && self.batched[&atom]
            {
                // One GEMM contracting over examples × pixels, with signs and numbers on either factor in its coefficient.
                let ((cx, px), (cg, pg)) = (peel(self.ir, x), peel(self.ir, g));
                let sizes = self.conv_sizes(atom, Kind::KernelSum, x, g, geom);
                let (a, mut b) = (self.contiguous(px), self.contiguous(pg));
                if let Some(scale) = scale {
                    b = self.scale_by(b, scale);
                }
                let scratch = self.slot(sizes.scratch(self.batch));
                let alpha = coefficient * cx * cg;
                let kind = Kind::KernelSum;
                self.instrs.push(Instr::Conv { kind, out, a, b, geom: sizes, scratch, accumulate: true, alpha });
                continue;
            }
            let product = match node.op {
                Op::Outer(a, b) | Op::MatMul(a, b) if self.batched[&atom] => Some((a, b)),
                _ => None,
            };
            let Some((a, b)) = product else {
                let input = self.value(atom);
                let repeat = if input.dims.0 == 1 { self.batch } else { 1 };
                self.instrs.push(Instr::SumBatch { out, input, alpha: coefficient, accumulate: true, repeat });
                continue;
            };
            // Signs and numbers on either factor join the GEMM's coefficient.
            let ((ca, a), (cb, b)) = (peel(self.ir, a), peel(self.ir, b));
            let coefficient = coefficient * ca * cb;
            let outer = matches!(node.op, Op::Outer(..));
            // An outer product is a column times a row.
            let (ra, rb) = if outer { (2, 2) } else { (self.ir.shape(a).len(), self.ir.shape(b).len()) };
            let (mut va, mut vb) = (self.value(a), self.value(b));
            if let Some(scale) = scale {
                vb = self.scale_by(vb, scale);
            }
            if outer {
                va = View { buf: va.buf, dims: (va.dims.0, va.dims.2, 1), strides: (va.strides.0, va.strides.2, 0) };
                vb = View { buf: vb.buf, dims: (vb.dims.0, 1, vb.dims.2), strides: (vb.strides.0, 0, vb.strides.2) };
            }
            let (am, k) = (if ra == 1 { 1 } else { va.dims.1 }, va.dims.2);
            let bn = if rb == 1 { 1 } else { vb.dims.2 };
            let (ba, bb) = (va.dims.0 > 1, vb.dims.0 > 1);
            if ba != bb {
                // Σ_e a_e b = (Σ_e a_e) b: sum the per-example factor, then one product.
                let (per, shared_left) = if ba { (va, false) } else { (vb, true) };
                let sum = self.slot(per.dims.1 * per.dims.2);
                self.instrs.push(Instr::SumBatch { out: sum, input: per, alpha: 1.0, accumulate: false, repeat: 1 });
                let summed = View::contiguous(Buf::Slot(sum), (1, per.dims.1, per.dims.2));
                let (x, y) = if shared_left { (va, summed) } else { (summed, vb) };
                let gemm = self.product(x, y, ov, (ra, rb), (am, k, bn), true, coefficient);
                self.instrs.push(gemm);
                continue;
            }
            // Both per-example: contract over (example, k) when the strides merge.
            let gemm = self.product(va, vb, View { dims: (1, m, n), ..ov }, (ra, rb), (am, k, bn), true, coefficient);
            // Cannot fire: `product` returns a GEMM.
            let Instr::Gemm { a: ma, b: mb, out: mo, .. } = gemm else { unreachable!("`product` builds a GEMM") };
            let (sa, sb) = (va.strides.0, vb.strides.0);
            // A single column (row) has no column (row) stride of its own: the batch's serves.
            let instr = if k == 1 || (sa == k * ma.cs && sb == k * mb.rs) {
                let (a, b) = if k == 1 { (Mat { cs: sa, ..ma }, Mat { rs: sb, ..mb }) } else { (ma, mb) };
                Instr::Gemm {
                    out: mo,
                    a,
                    b,
                    m: am,
                    k: k * self.batch,
                    n: bn,
                    batch: 1,
                    accumulate: true,
                    alpha: coefficient,
                }
            } else {
                // Each example's product added into the one output.
                let (a, b, o) = (Mat { sb: sa, ..ma }, Mat { sb, ..mb }, Mat { sb: 0, ..mo });
                Instr::Gemm { out: o, a, b, m: am, k, n: bn, batch: self.batch, accumulate: true, alpha: coefficient }
            };
            self.instrs.push(instr);
        }
        // The first term writes the sum instead of adding to zeros.
        let writes = |i: &Instr| match i {
            Instr::SumBatch { out: o, .. } | Instr::Conv { out: o, kind: Kind::KernelSum, .. } => *o == out,
            Instr::Gemm { out: o, .. } => o.buf == Buf::Slot(out),
            _ => false,
        };
        if let Some(first) = self.instrs[zero + 1..].iter().position(writes) {
            match &mut self.instrs[zero + 1 + first] {
                Instr::SumBatch { accumulate, .. }
                | Instr::Gemm { accumulate, .. }
                | Instr::Conv { accumulate, .. } => *accumulate = false,
                // Cannot fire: `writes` matches these three only.
                _ => unreachable!("a writer of the sum"),
            }
            self.instrs.remove(zero);
        }
        (out, dims)
    }
}

/// A batch-summed atom `p / s`, `p · s` or `s · p` with `p` a per-example
/// product (whose sum is one contraction) and `s` a shared scalar: `p` and
/// how `s` applies. Anything else is itself, unscaled.
fn scaled(ir: &Ir, atom: Id) -> (Id, Option<(Id, Arith)>) {
    let shared_scalar = |s: Id| ir.shape(s).is_empty() && !has_var(ir, s);
    let product =
        |p: Id| matches!(ir.node(p).op, Op::Outer(..) | Op::MatMul(..) | Op::ConvKernel(..)) && has_var(ir, p);
    match ir.node(atom).op {
        Op::Div(p, s) if product(p) && shared_scalar(s) => (p, Some((s, Arith::Div))),
        Op::Mul(p, s) | Op::Mul(s, p) if product(p) && shared_scalar(s) => (p, Some((s, Arith::Mul))),
        _ => (atom, None),
    }
}

/// `c · x` for a factor written `−x`, `k · x` or `x · k` (k a number), peeled to the bottom.
fn peel(ir: &Ir, id: Id) -> (f32, Id) {
    match ir.node(id).op {
        Op::Neg(x) => {
            let (c, x) = peel(ir, x);
            (-c, x)
        }
        Op::Mul(k, x) | Op::Mul(x, k) if ir.shape(k).is_empty() && ir.num_value(k).is_some() => {
            let (c, x) = peel(ir, x);
            (c * ir.num_value(k).unwrap_or(1.0) as f32, x)
        }
        _ => (1.0, id),
    }
}

/// A fused loop being built.
struct Loop {
    code: Vec<FOp>,
    inputs: Vec<View>,
    regs: HashMap<Id, usize>,
    dims: (usize, usize, usize),
    head: Id,
}

impl Loop {
    /// The input number of `v`, added once.
    fn load(&mut self, v: View) -> usize {
        match self.inputs.iter().position(|w| *w == v) {
            Some(i) => i,
            None => {
                self.inputs.push(v);
                self.inputs.len() - 1
            }
        }
    }
}

/// A shape as `[p, n, q]`: the axes before `start`, the `count` from it, and the rest.
fn runs(shape: &[usize], start: usize, count: usize) -> (usize, usize, usize) {
    let product = |axes: &[usize]| axes.iter().product::<usize>();
    (product(&shape[..start]), product(&shape[start..start + count]), product(&shape[start + count..]))
}

/// `v` read as `dims`: stride 0 along every axis where `v` has extent 1.
fn broadcast_to(v: View, dims: (usize, usize, usize)) -> View {
    let s = |have: usize, want: usize, stride: usize| if have == 1 && want != 1 { 0 } else { stride };
    View {
        buf: v.buf,
        dims,
        strides: (s(v.dims.0, dims.0, v.strides.0), s(v.dims.1, dims.1, v.strides.1), s(v.dims.2, dims.2, v.strides.2)),
    }
}

/// An output's buffer and dims.
type Placed = (usize, (usize, usize, usize));

/// Maps logical buffers onto the arena by liveness: a buffer is free once
/// its last reader has run, and the next buffer defined reuses the
/// smallest free one that holds it (growing one only when none does).
fn allocate(mut instrs: Vec<Instr>, sizes: &[usize], outputs: Vec<Placed>) -> (Vec<Vec<f32>>, Vec<Instr>, Vec<Placed>) {
    let end = instrs.len();
    let mut first = vec![usize::MAX; sizes.len()];
    let mut last = vec![0usize; sizes.len()];
    for (i, instr) in instrs.iter().enumerate() {
        for s in slots_of(instr) {
            first[s] = first[s].min(i);
            last[s] = last[s].max(i);
        }
    }
    for (s, _) in &outputs {
        last[*s] = end;
    }
    let is_output: BTreeSet<usize> = outputs.iter().map(|(s, _)| *s).collect();
    let mut physical = vec![usize::MAX; sizes.len()];
    let mut capacity: Vec<usize> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut live: Vec<usize> = Vec::new();
    for i in 0..end {
        live.retain(|&s| {
            if last[s] < i {
                free.push(physical[s]);
                false
            } else {
                true
            }
        });
        for s in (0..sizes.len()).filter(|s| first[*s] == i) {
            // An output has a buffer of its own, so a run can swap in the caller's.
            let fit = if is_output.contains(&s) {
                None
            } else {
                free.iter()
                    .enumerate()
                    .filter(|(_, p)| capacity[**p] >= sizes[s])
                    .min_by_key(|(_, p)| capacity[**p])
                    .map(|(k, _)| k)
                    .or_else(|| (!free.is_empty()).then_some(0))
            };
            let p = match fit {
                Some(k) => free.swap_remove(k),
                None => {
                    capacity.push(0);
                    capacity.len() - 1
                }
            };
            capacity[p] = capacity[p].max(sizes[s]);
            physical[s] = p;
            live.push(s);
        }
    }
    for instr in &mut instrs {
        remap(instr, &physical);
    }
    let arena = capacity.into_iter().map(|n| vec![0.0; n]).collect();
    let outputs = outputs.into_iter().map(|(s, d)| (physical[s], d)).collect();
    (arena, instrs, outputs)
}

/// Points each product that reads a shared matrix against the grain at a
/// copy made once per run (`Program::transposes`). The `gemm` crate packs
/// its left operand by columns on every call, element by element where
/// their elements are strided: with the batch in shards, every shard packs
/// the same matrix again, and at 128×512×512 (an MLP's backward `δ Wᵀ`)
/// the packing took as long as the product. The crate computes a row-major
/// output as `Cᵀ = Bᵀ Aᵀ`, so there its left operand is `B`; for a
/// column-major output it is `A`.
pub(super) fn share_transposes(p: &mut Program) {
    let first = p.inputs.len();
    for instr in &mut p.instrs {
        let Instr::Gemm { out, a, b, m, k, n, batch, .. } = instr else { continue };
        let (x, (rows, cols)) = if out.cs == 1 && out.rs >= *n {
            // B (k×n) read by columns: a row-major B, `k × n`.
            if b.rs != 1 || b.cs < *k {
                continue;
            }
            (b, (*k, *n))
        } else if out.rs == 1 && out.cs >= *m {
            // A (m×k) read by columns: a column-major A, `k × m` row-major.
            if a.cs != 1 || a.rs < *k {
                continue;
            }
            (a, (*k, *m))
        } else {
            continue;
        };
        let Buf::Input(i) = x.buf else { continue };
        if i >= first || p.inputs[i].2 || (*batch > 1 && x.sb != 0) || rows < 16 || cols < 16 {
            continue;
        }
        let t = Transpose { input: i, rows, cols, stride: x.rs.max(x.cs) };
        let at = p.transposes.iter().position(|y| *y == t).unwrap_or_else(|| {
            p.transposes.push(t);
            p.transposes.len() - 1
        });
        // Row-major B is `(n, 1)`; column-major A is `(1, m)`: both `cols` apart along the contraction.
        let (rs, cs) = if x.rs == 1 { (cols, 1) } else { (1, cols) };
        *x = Mat { buf: Buf::Input(first + at), sb: 0, rs, cs };
    }
}

/// The logical buffers an instruction reads or writes.
fn slots_of(instr: &Instr) -> Vec<usize> {
    let slot = |b: Buf| match b {
        Buf::Slot(s) => Some(s),
        Buf::Input(_) => None,
    };
    match instr {
        Instr::Fused { out, inputs, .. } => {
            std::iter::once(*out).chain(inputs.iter().filter_map(|v| slot(v.buf))).collect()
        }
        Instr::Gemm { out, a, b, .. } => [slot(out.buf), slot(a.buf), slot(b.buf)].into_iter().flatten().collect(),
        Instr::Reduce { out, input, .. }
        | Instr::SumBatch { out, input, .. }
        | Instr::Spectral { out, input, .. }
        | Instr::Pool { out, input, .. }
        | Instr::Axes { out, input, .. } => std::iter::once(*out).chain(slot(input.buf)).collect(),
        Instr::Conv { out, a, b, scratch, .. } => {
            [Some(*out), slot(a.buf), slot(b.buf), Some(*scratch)].into_iter().flatten().collect()
        }
        Instr::Zero { out } => vec![*out],
    }
}

fn remap(instr: &mut Instr, physical: &[usize]) {
    let buf = |b: &mut Buf| {
        if let Buf::Slot(s) = b {
            *s = physical[*s];
        }
    };
    match instr {
        Instr::Fused { out, inputs, .. } => {
            *out = physical[*out];
            inputs.iter_mut().for_each(|v| buf(&mut v.buf));
        }
        Instr::Gemm { out, a, b, .. } => {
            buf(&mut out.buf);
            buf(&mut a.buf);
            buf(&mut b.buf);
        }
        Instr::Reduce { out, input, .. }
        | Instr::SumBatch { out, input, .. }
        | Instr::Spectral { out, input, .. }
        | Instr::Pool { out, input, .. }
        | Instr::Axes { out, input, .. } => {
            *out = physical[*out];
            buf(&mut input.buf);
        }
        Instr::Conv { out, a, b, scratch, .. } => {
            *out = physical[*out];
            *scratch = physical[*scratch];
            buf(&mut a.buf);
            buf(&mut b.buf);
        }
        Instr::Zero { out } => *out = physical[*out],
    }
}

/// One instruction as a line of the listing.
pub(super) fn show(instr: &Instr) -> String {
    let buf = |b: Buf| match b {
        Buf::Slot(s) => format!("t{s}"),
        Buf::Input(i) => format!("in{i}"),
    };
    let view = |v: &View| {
        let (sb, sm, sn) = v.strides;
        if v.is_contiguous() { buf(v.buf) } else { format!("{}<{sb},{sm},{sn}>", buf(v.buf)) }
    };
    let dims = |(b, m, n): (usize, usize, usize)| format!("[{b}x{m}x{n}]");
    match instr {
        Instr::Fused { out, dims: d, inputs, code } => {
            let ins: Vec<String> = inputs.iter().map(view).collect();
            let body: Vec<String> = code
                .iter()
                .enumerate()
                .map(|(i, op)| {
                    let rhs = match op {
                        FOp::Load(j) => format!("load {}", ins[*j]),
                        FOp::Imm(c) => format!("{c}"),
                        FOp::Neg(a) => format!("-r{a}"),
                        FOp::Bin(op, a, b) => {
                            let s = match op {
                                Arith::Add => "+",
                                Arith::Sub => "-",
                                Arith::Mul => "*",
                                Arith::Div => "/",
                            };
                            format!("r{a} {s} r{b}")
                        }
                        FOp::Map(f, a) => format!("{}(r{a})", f.name()),
                        FOp::Powf(a, e) => format!("r{a} ^ {e}"),
                        FOp::Pow(a, b) => format!("r{a} ^ r{b}"),
                    };
                    format!("r{i} = {rhs}")
                })
                .collect();
            format!("t{out}{} = fused {} ops {{ {} }}", dims(*d), code.len(), body.join("; "))
        }
        Instr::Gemm { out, a, b, m, k, n, batch, accumulate, alpha } => {
            let mat = |x: &Mat| format!("{}<{},{},{}>", buf(x.buf), x.sb, x.rs, x.cs);
            let op = if *accumulate { "+=" } else { "=" };
            let times = if *batch > 1 { format!(" x{batch}") } else { String::new() };
            format!("{} {op} {alpha} * gemm {m}x{k}x{n}{times} ({}, {})", mat(out), mat(a), mat(b))
        }
        Instr::Reduce { kind, out, input, out_dims } => {
            format!("t{out}{} = {kind:?}({})", dims(*out_dims), view(input))
        }
        Instr::SumBatch { out, input, alpha, accumulate, repeat } => {
            let op = if *accumulate { "+=" } else { "=" };
            let r = if *repeat > 1 { format!(" x{repeat}") } else { String::new() };
            format!("t{out} {op} {alpha} * sum_batch({}){r}", view(input))
        }
        Instr::Spectral { out, input, outer } => {
            format!("t{out} = {}({})", if *outer { "spectral_outer" } else { "spectral_norm" }, view(input))
        }
        Instr::Conv { kind, out, a, b, geom: g, scratch, accumulate, alpha } => {
            let (oh, ow) = g.out_hw();
            let name = match kind {
                Kind::Forward => "conv",
                Kind::Input => "conv_input",
                Kind::Kernel => "conv_kernel",
                Kind::KernelSum => "conv_kernel_sum",
            };
            let op = if *accumulate { "+=" } else { "=" };
            let scale = if *kind == Kind::KernelSum { format!("{alpha} * ") } else { String::new() };
            format!(
                "t{out} {op} {scale}{name}({}, {}) {}x{}x{} -> {}x{oh}x{ow}, k{} s{} p{}, x{} (scratch t{scratch})",
                view(a),
                view(b),
                g.c,
                g.h,
                g.w,
                g.o,
                g.k,
                g.stride,
                g.pad,
                a.dims.0.max(b.dims.0),
            )
        }
        Instr::Pool { out, input, planes, hw: (h, w), k, unpool } => {
            let name = if *unpool { "unpool" } else { "avg_pool" };
            format!("t{out} = {name}({}, {k}) {planes} planes of {h}x{w}", view(input))
        }
        Instr::Axes { out, input, dims: (p, a, q), broadcast } => {
            let name = if *broadcast { "broadcast_axes" } else { "sum_axes" };
            format!("t{out} = {name}({}) [{p}x{a}x{q}]", view(input))
        }
        Instr::Zero { out } => format!("t{out} = 0"),
    }
}
