//! Printing: expressions with the fewest brackets, and node listings.

use super::{Id, Ir, Op};
use std::collections::BTreeSet;
use std::fmt::Write;

impl Ir {
    /// Prints `id` as an expression a person reads, with the fewest
    /// parentheses. The DAG is printed as a tree, which can be exponentially
    /// longer than the DAG; past `SHOW_LIMIT` characters it is summarised
    /// (`<N operations, too long to print>`) instead.
    pub fn show(&self, id: Id) -> String {
        self.show_within(id, SHOW_LIMIT)
            .unwrap_or_else(|| format!("<{} operations, too long to print>", self.cone(id).len()))
    }

    /// The printed form of `root` if it fits in `budget` bytes. Iterative, so
    /// deep expressions cannot exhaust the stack, and linear in its output.
    fn show_within(&self, root: Id, budget: usize) -> Option<String> {
        let mut out = String::new();
        let mut stack = vec![Piece::Node(root, 0)];
        while let Some(piece) = stack.pop() {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Name(n) => out.push_str(n),
                Piece::Number(x) => {
                    let _ = write!(out, "{x}");
                }
                Piece::Node(id, min) => {
                    let (pieces, prec) = self.layout(id);
                    let wrap = prec < min;
                    if wrap {
                        stack.push(Piece::Text(")"));
                    }
                    stack.extend(pieces.into_iter().rev());
                    if wrap {
                        stack.push(Piece::Text("("));
                    }
                }
            }
            if out.len() > budget {
                return None;
            }
        }
        Some(out)
    }

    /// How one node prints: its pieces in order (children with the least
    /// precedence they may have unbracketed) and its own precedence.
    fn layout(&self, id: Id) -> (Vec<Piece<'_>>, u8) {
        use Piece::{Node as N, Text as T};
        let call = |name: &'static str, a: Id| (vec![T(name), T("("), N(a, 0), T(")")], 6);
        let call2 = |name: &'static str, a: Id, b: Id| (vec![T(name), T("("), N(a, 0), T(", "), N(b, 0), T(")")], 6);
        match &self.node(id).op {
            Op::Num(bits) => {
                let x = f64::from_bits(*bits);
                if x < 0.0 { (vec![T("-"), Piece::Number(-x)], 3) } else { (vec![Piece::Number(x)], 6) }
            }
            Op::Var(n) | Op::Param(n) | Op::Const(n) => (vec![Piece::Name(n)], 6),
            Op::Neg(a) => (vec![T("-"), N(*a, 4)], 3),
            Op::Add(a, b) => (vec![N(*a, 1), T(" + "), N(*b, 2)], 1),
            Op::Sub(a, b) => (vec![N(*a, 1), T(" - "), N(*b, 2)], 1),
            Op::Mul(a, b) => (vec![N(*a, 2), T(" * "), N(*b, 3)], 2),
            Op::Div(a, b) => (vec![N(*a, 2), T(" / "), N(*b, 3)], 2),
            Op::MatMul(a, b) => (vec![N(*a, 2), T(" @ "), N(*b, 3)], 2),
            Op::Pow(a, b) => (vec![N(*a, 5), T("^"), N(*b, 4)], 4),
            Op::Transpose(a) => (vec![N(*a, 6), T(".T")], 5),
            Op::Outer(a, b) => (vec![T("outer("), N(*a, 0), T(", "), N(*b, 0), T(")")], 6),
            Op::Map(f, a) => call(f.name(), *a),
            Op::Sum(a) => call("sum", *a),
            Op::LogSumExp(a) => call("logsumexp", *a),
            Op::LogSumExpLast(a) => call("logsumexp_rows", *a),
            Op::Softmax(a) => call("softmax", *a),
            Op::SoftmaxLast(a) => call("softmax_rows", *a),
            // Broadcasting is implicit in per-example notation.
            Op::Broadcast(a) => self.layout(*a),
            Op::SumTo(a) => call("sum_rows", *a),
            Op::Net(n, a) => (vec![Piece::Name(n), T("("), N(*a, 0), T(")")], 6),
            Op::SpectralNorm(a) => call("spectral_norm", *a),
            Op::SpectralOuter(a) => call("spectral_outer", *a),
            Op::Conv(a, b, _) => call2("conv", *a, *b),
            Op::ConvInput(a, b, _) => call2("conv_input", *a, *b),
            Op::ConvKernel(a, b, _) => call2("conv_kernel", *a, *b),
            Op::AvgPool(a, _) => call("avg_pool", *a),
            Op::Unpool(a, _) => call("unpool", *a),
            Op::SumAxes(a, ..) => call("sum_axes", *a),
            // Like broadcasting, spreading along new axes and reshaping are implicit.
            Op::BroadcastAxes(a, ..) | Op::Reshape(a) => self.layout(*a),
        }
    }

    /// One line per node in the cone of `roots`: `%id : shape = op`.
    pub fn listing(&self, roots: &[(String, Id)]) -> String {
        let mut ids = BTreeSet::new();
        for (_, r) in roots {
            ids.extend(self.cone(*r));
        }
        let mut out = String::new();
        for id in ids {
            let node = self.node(id);
            let args: Vec<String> = self.children(id).iter().map(|c| format!("%{}", c.0)).collect();
            let op = match &node.op {
                Op::Num(b) => format!("num {}", f64::from_bits(*b)),
                Op::Var(n) => format!("var {n}"),
                Op::Param(n) => format!("param {n}"),
                Op::Const(n) => format!("const {n}"),
                Op::Map(f, _) => format!("{} {}", f.name(), args.join(" ")),
                Op::Net(n, _) => format!("net {n} {}", args.join(" ")),
                Op::Conv(_, _, g) | Op::ConvInput(_, _, g) | Op::ConvKernel(_, _, g) => {
                    format!("{} {} stride {} pad {}", op_name(&node.op), args.join(" "), g.stride, g.pad)
                }
                Op::AvgPool(_, k) | Op::Unpool(_, k) => format!("{} {} {k}", op_name(&node.op), args.join(" ")),
                Op::SumAxes(_, s, c) | Op::BroadcastAxes(_, s, c) => {
                    format!("{} {} axes {s}..{}", op_name(&node.op), args.join(" "), s + c)
                }
                other => format!("{} {}", op_name(other), args.join(" ")),
            };
            let _ = writeln!(out, "%{} : {} = {}", id.0, crate::analysis::program::shape_str(&node.shape), op);
        }
        for (name, r) in roots {
            let _ = writeln!(out, "{name} = %{}", r.0);
        }
        out
    }
}

/// Longest expression `Ir::show` prints in full, in bytes.
pub const SHOW_LIMIT: usize = 10_000;

/// A piece of printed text, or a node still to print with the least
/// precedence it may have without brackets.
enum Piece<'a> {
    Node(Id, u8),
    Text(&'static str),
    Name(&'a str),
    Number(f64),
}

fn op_name(op: &Op) -> &'static str {
    match op {
        Op::Neg(_) => "neg",
        Op::Add(..) => "add",
        Op::Sub(..) => "sub",
        Op::Mul(..) => "mul",
        Op::Div(..) => "div",
        Op::MatMul(..) => "matmul",
        Op::Outer(..) => "outer",
        Op::Transpose(_) => "transpose",
        Op::Pow(..) => "pow",
        Op::Sum(_) => "sum",
        Op::LogSumExp(_) => "logsumexp",
        Op::LogSumExpLast(_) => "logsumexp_rows",
        Op::Softmax(_) => "softmax",
        Op::SoftmaxLast(_) => "softmax_rows",
        Op::Broadcast(_) => "broadcast",
        Op::SumTo(_) => "sum_to",
        Op::SpectralNorm(_) => "spectral_norm",
        Op::SpectralOuter(_) => "spectral_outer",
        Op::Conv(..) => "conv",
        Op::ConvInput(..) => "conv_input",
        Op::ConvKernel(..) => "conv_kernel",
        Op::AvgPool(..) => "avg_pool",
        Op::Unpool(..) => "unpool",
        Op::SumAxes(..) => "sum_axes",
        Op::BroadcastAxes(..) => "broadcast_axes",
        Op::Reshape(_) => "reshape",
        _ => "op",
    }
}
