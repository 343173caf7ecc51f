//! Checked program → IR: one root per energy term, and the parameters the
//! model and its nets declare.

use super::{Id, Ir, Lowered, ParamSpec, Unary};
use crate::analysis::program::{ConstValue, ConvLayout, Func, Init, Model, Net, TExpr, TExprKind};
use crate::front::ast::BinOp;

/// Lowers a checked model to IR: each energy term and their sum, with every learned tensor.
pub fn program_to_ir(model: &Model) -> Lowered {
    let mut ir = Ir::default();
    for c in &model.consts {
        let square = c.shape.len() == 2 && c.shape[0] == c.shape[1];
        if matches!(c.value, ConstValue::Graph(_)) || (square && matches!(c.value, ConstValue::Fill(_))) {
            ir.symmetric.insert(c.name.clone());
        }
    }
    for n in &model.nets {
        ir.nets.insert(n.name.clone(), n.clone());
    }
    let energies: Vec<(String, Id)> = model.energies.iter().map(|e| (e.name.clone(), ir.lower(&e.expr))).collect();
    let total = energies.iter().skip(1).fold(energies[0].1, |acc, (_, id)| ir.add(acc, *id));
    Lowered { ir, energies, total, params: param_specs(model) }
}

/// Every parameter a model declares, its nets' weights included, without
/// lowering the energy.
pub fn param_specs(model: &Model) -> Vec<ParamSpec> {
    let mut params: Vec<ParamSpec> = model
        .params
        .iter()
        .map(|p| ParamSpec { name: p.name.clone(), shape: p.shape.clone(), init: p.init.clone() })
        .collect();
    for n in &model.nets {
        params.extend(net_params(n));
    }
    params
}

/// The weights of a net: `f.w0 : [in, h1]`, `f.b0 : [h1]`, ... Weights start
/// at normal(0, 1/sqrt(fan_in)), so activations keep their scale; biases at zero.
pub fn net_params(n: &Net) -> Vec<ParamSpec> {
    if let Some(layout) = n.conv {
        return convnet_params(n, layout);
    }
    let mut out = Vec::new();
    for (i, w) in n.layers.windows(2).enumerate() {
        out.push(ParamSpec {
            name: format!("{}.w{i}", n.name),
            shape: vec![w[0], w[1]],
            init: Init::Normal { mean: 0.0, std: 1.0 / (w[0] as f64).sqrt() },
        });
        if n.bias {
            out.push(ParamSpec { name: format!("{}.b{i}", n.name), shape: vec![w[1]], init: Init::Constant(0.0) });
        }
    }
    out
}

/// A `convnet`'s kernels, biases and head (`ConvLayout` names them). Kernels
/// start at normal(0, 1/sqrt(fan_in)), fan_in = channels·k·k; residual
/// blocks' second kernels at a tenth of that, so each block starts near the
/// identity and a deep net's activations keep their scale.
fn convnet_params(n: &Net, layout: ConvLayout) -> Vec<ParamSpec> {
    let k = layout.kernel;
    let mut out = Vec::new();
    let mut push = |name: String, shape: Vec<usize>, std: f64| {
        let init = if std == 0.0 { Init::Constant(0.0) } else { Init::Normal { mean: 0.0, std } };
        out.push(ParamSpec { name, shape, init });
    };
    let stages = n.layers.len() - 2;
    for i in 0..stages {
        let (from, to) = (n.layers[i], n.layers[i + 1]);
        push(format!("{}.k{i}", n.name), vec![to, from, k, k], 1.0 / ((from * k * k) as f64).sqrt());
        if n.bias {
            push(format!("{}.b{i}", n.name), vec![to], 0.0);
        }
        let std = 1.0 / ((to * k * k) as f64).sqrt();
        for j in 0..layout.blocks {
            for (part, scale) in [("a", 1.0), ("b", 0.1)] {
                push(format!("{}.k{i}.{j}{part}", n.name), vec![to, to, k, k], scale * std);
                if n.bias {
                    push(format!("{}.b{i}.{j}{part}", n.name), vec![to], 0.0);
                }
            }
        }
    }
    let (last, width) = (n.layers[stages], n.layers[stages + 1]);
    push(format!("{}.w", n.name), vec![last, width], 1.0 / (last as f64).sqrt());
    if n.bias {
        push(format!("{}.b", n.name), vec![width], 0.0);
    }
    out
}

fn unary_of(f: Func) -> Unary {
    match f {
        Func::Exp => Unary::Exp,
        Func::Log => Unary::Log,
        Func::Softplus => Unary::Softplus,
        Func::Sigmoid => Unary::Sigmoid,
        Func::Tanh => Unary::Tanh,
        Func::Relu => Unary::Relu,
        Func::Swish => Unary::Swish,
        Func::Abs => Unary::Abs,
        Func::Sqrt => Unary::Sqrt,
        Func::Square => Unary::Square,
        // Cannot fire: `lower` sends reductions to their own constructors before calling this.
        Func::Sum | Func::Mean | Func::Logsumexp => unreachable!("reductions are not elementwise"),
        // Cannot fire: the checker types `flatten` and `reshape` as `TExprKind::Reshape`.
        Func::Flatten | Func::Reshape => unreachable!("shape functions are not elementwise"),
    }
}

impl Ir {
    fn lower(&mut self, e: &TExpr) -> Id {
        match &e.kind {
            TExprKind::Number(x) => self.num(*x),
            TExprKind::Var(n) => self.var(n, &e.shape),
            TExprKind::Param(n) => self.param(n, &e.shape),
            TExprKind::Const(n) => self.constant(n, &e.shape),
            TExprKind::Neg(x) => {
                let x = self.lower(x);
                self.neg(x)
            }
            TExprKind::Transpose(x) => {
                let x = self.lower(x);
                self.transpose(x)
            }
            TExprKind::Binary { op, lhs, rhs } => {
                let (a, b) = (self.lower(lhs), self.lower(rhs));
                match op {
                    BinOp::Add => self.add(a, b),
                    BinOp::Sub => self.sub(a, b),
                    BinOp::Mul => self.mul(a, b),
                    BinOp::Div => self.div(a, b),
                    BinOp::MatMul => self.matmul(a, b),
                    BinOp::Pow => self.pow(a, b),
                }
            }
            TExprKind::Func { func, arg } => {
                let n: usize = arg.shape.iter().product();
                let a = self.lower(arg);
                match func {
                    Func::Sum => self.sum(a),
                    Func::Mean => {
                        let s = self.sum(a);
                        let inv = self.num(1.0 / n as f64);
                        self.mul(inv, s)
                    }
                    Func::Logsumexp => self.logsumexp(a),
                    f => self.map(unary_of(*f), a),
                }
            }
            TExprKind::Net { net, arg } => {
                let a = self.lower(arg);
                self.net(net, a)
            }
            TExprKind::Reshape(x) => {
                let a = self.lower(x);
                self.reshape(a, &e.shape)
            }
            TExprKind::SumAxis { arg, axis } => {
                let a = self.lower(arg);
                self.sum_axes(a, *axis, 1)
            }
            TExprKind::MeanAxis { arg, axis } => {
                let n = arg.shape[*axis];
                let a = self.lower(arg);
                let s = self.sum_axes(a, *axis, 1);
                let inv = self.num(1.0 / n as f64);
                self.mul(inv, s)
            }
        }
    }
}
