//! The compiled program against the dfdx evaluator, on every zoo model and
//! on models that reach each op: per-example values (the free energy, its
//! gradient and Hessian-vector products in the data) and batch sums (the
//! per-example parameter gradients of the free energy and of a
//! denoising-score-matching loss built on its data gradient).

use super::{Output, compile};
use crate::backend::eval::{Evaluator, Leaves, expand};
use crate::backend::{T3, train};
use crate::ir::{ConvGeom, Ir, Op, Unary};
use dfdx::prelude::*;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;

fn close(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    let scale = b.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= 1e-4 * (1.0 + scale), "{what}[{i}]: compiled {x} vs evaluator {y}");
    }
}

fn check(src: &str, batch: usize) {
    let (on, leaves) = on_device(src);
    let params: Vec<String> = on.params.keys().cloned().collect();
    check_energy(&on.ir, on.free_energy, &on.visible, &params, &leaves, batch, src);
}

/// The model of `src` on the CPU (with a pseudo-likelihood train block if it has none), and its leaves.
fn on_device(src: &str) -> (crate::backend::objectives::OnDevice<Cpu>, Leaves<Cpu, NoneTape>) {
    let c = crate::compile(src).expect("compiles");
    let (plans, _) = crate::plan(&c.program).expect("plans");
    let (name, model) = c.program.models.iter().next().expect("a model");
    let train = c.program.trains.get(name).cloned().unwrap_or_else(|| {
        let src =
            format!("{src}\ntrain {name} {{ data = csv(\"x.csv\") -> {}; objective = pl; }}", model.variables[0].name);
        crate::compile(&src).expect("compiles with a train block").program.trains[name].clone()
    });
    let params = crate::tensor::initialise(&crate::ir::param_specs(model), 3);
    let dev = Cpu::seed_from_u64(0);
    let (on, _) = train::on_device(dev.clone(), model, &plans[0], &train, &params, 1).expect("on device");
    let leaves = Leaves {
        tensors: on.params.iter().chain(&on.consts).map(|(k, t)| (k.clone(), t.clone())).collect(),
        lattices: on.lattices.clone(),
    };
    (on, leaves)
}

/// The compiled program against the evaluator (and, with `reference`, the
/// f64 interpreter) on the energy `f` of `ir`: per-example values (`f`, its
/// gradient and Hessian-vector products in each visible variable) and batch
/// sums (the parameter gradients of `f` and of a denoising-score-matching
/// loss on its gradient), with `leaves` the parameters' and constants' values.
/// Returns the per-example outputs and the sums, with the variables bound.
fn check_energy(
    ir: &Ir,
    f: crate::ir::Id,
    visible: &[String],
    param_names: &[String],
    leaves: &Leaves<Cpu, NoneTape>,
    batch: usize,
    src: &str,
) -> Checked {
    let dev = Cpu::seed_from_u64(0);
    let mut ir: Ir = ir.clone();
    let mut per = vec![f];
    let mut sums = Vec::new();
    for v in visible {
        if let Some(g) = ir.grad(f, v) {
            per.push(g);
            if let Some(h) = ir.hessian_vector(f, v, &format!("__dir.{v}")) {
                per.push(h);
            }
            // ½|σ g − z|², as denoising score matching writes it.
            let shape = ir.shape(g).clone();
            let z = ir.var(&format!("__noise.{v}"), &shape);
            let s = ir.num(0.1);
            let sg = ir.mul(s, g);
            let d = ir.sub(sg, z);
            let sq = ir.map(Unary::Square, d);
            let loss = ir.sum(sq);
            sums.extend(param_names.iter().filter_map(|p| ir.grad_param(loss, p)));
        }
    }
    sums.extend(param_names.iter().filter_map(|p| ir.grad_param(f, p)));
    let mut outputs: Vec<Output> = per.iter().map(|r| Output::PerExample(*r)).collect();
    outputs.extend(sums.iter().map(|r| Output::BatchSum(*r)));
    // Every variable the roots read, bound to random values.
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut vars: BTreeMap<String, T3<Cpu>> = BTreeMap::new();
    for id in per.iter().chain(&sums).flat_map(|r| ir.cone(*r)) {
        if let Op::Var(name) = &ir.node(id).op
            && !vars.contains_key(name)
        {
            let (m, n) = crate::backend::eval::canon(ir.shape(id));
            let data: Vec<f32> = (0..batch * m * n).map(|_| rng.gen_range(-1.0..1.0)).collect();
            vars.insert(name.clone(), dev.tensor_from_vec(data, (batch, m, n)));
        }
    }
    let mut program = compile(&ir, &outputs, batch);
    let host: BTreeMap<String, Vec<f32>> =
        leaves.tensors.iter().chain(&vars).map(|(k, t)| (k.clone(), t.as_vec())).collect();
    let rows: Vec<(usize, String)> = program
        .inputs()
        .iter()
        .enumerate()
        .filter(|(_, (_, _, per_row))| *per_row)
        .map(|(i, (n, _, _))| (i, n.clone()))
        .collect();
    for (i, name) in rows {
        program.input_mut(i).copy_from_slice(&host[&name]);
    }
    program.run(&host, &[]);
    // The same outputs through shards (a batch above `SHARD_ROWS` splits).
    let mut sharded = super::Compiled::new(outputs.clone());
    let mut shared = super::Shared::new();
    super::mirror(&leaves.tensors, &mut shared);
    let done = sharded.run(&ir, batch, &[&vars], &shared);
    for i in 0..outputs.len() {
        close(&done.tensor(&dev, i).as_vec(), program.output(i), &format!("shards, output {i}\n{src}"));
    }
    // Sums written, then added, into the caller's buffers with weights: ½ and then ¼ of each sum.
    let mut into = super::Compiled::new(sums.iter().map(|r| Output::BatchSum(*r)).collect());
    let mut bufs: Vec<Vec<f32>> = vec![Vec::new(); sums.len()];
    into.run_into(&ir, batch, &[&vars], &shared, &mut bufs, 0.5, &vec![false; sums.len()]);
    into.run_into(&ir, batch, &[&vars], &shared, &mut bufs, 0.25, &vec![true; sums.len()]);
    for (i, buf) in bufs.iter().enumerate() {
        let want: Vec<f32> = program.output(per.len() + i).iter().map(|x| 0.75 * x).collect();
        close(buf, &want, &format!("weighted sums, output {i}\n{src}"));
    }
    let ev = Evaluator { ir: &ir, dev: &dev, leaves };
    for (i, (root, value)) in per.iter().zip(ev.eval(&per, &vars)).enumerate() {
        let (b, m, n) = program.output_dims(i);
        close(program.output(i), &expand(value, b, m, n).as_vec(), &format!("{}\n{src}", ir.show(*root)));
    }
    for (i, value) in sums.iter().zip(ev.eval_phase_sums(&sums, &[(&vars, 1.0)])).map(|(_, v)| v).enumerate() {
        let j = per.len() + i;
        close(program.output(j), &value.as_vec(), &format!("batch sum {i}\n{src}"));
    }
    Checked {
        per: per.iter().enumerate().map(|(i, r)| (*r, program.output(i).to_vec())).collect(),
        sums: sums.iter().enumerate().map(|(i, r)| (*r, program.output(per.len() + i).to_vec())).collect(),
        vars: host.into_iter().filter(|(k, _)| vars.contains_key(k)).collect(),
        ir,
    }
}

/// What `check_energy` compiled and computed: the IR with its roots, each
/// root's output (per example, or summed), and the variables' values.
struct Checked {
    ir: Ir,
    per: Vec<(crate::ir::Id, Vec<f32>)>,
    sums: Vec<(crate::ir::Id, Vec<f32>)>,
    vars: BTreeMap<String, Vec<f32>>,
}

#[test]
fn compiled_programs_match_the_evaluator_on_the_zoo() {
    let mut files: Vec<_> = glob_models(std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/models")));
    files.sort();
    assert!(files.len() >= 10, "the zoo is found");
    for path in files {
        let src = std::fs::read_to_string(&path).expect("reads");
        let batch = if src.contains("784") { 2 } else { 5 };
        check(&src, batch);
    }
}

fn glob_models(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("models/").flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(glob_models(&p));
        } else if p.extension().is_some_and(|e| e == "ebm") {
            out.push(p);
        }
    }
    out
}

#[test]
fn compiled_programs_match_the_evaluator_on_every_op() {
    let models = [
        // Matrix variables and products on both sides, transposes, powers, divisions.
        "model m { visible x : real[3, 2]; param W : real[2, 4] = normal(0, 1); param A : real[3, 3] = normal(0, 1); param c : real = 1.5;
           energy e = 0.5 * sum(square(x)) + sum(softplus(x @ W)) + sum(x.T @ A @ x) / (c * c + 1) + sum(abs(x) ^ 3) + sum(exp(-square(x))); }",
        // Vectors: dot products, outer products, tanh/sigmoid/log, log-sum-exp and softmax.
        "model m { visible x : real[4]; param W : real[4, 4] = normal(0, 1); param b : real[4] = normal(0, 1);
           energy e = 0.5 * x @ x + logsumexp(x @ W + b) + sum(tanh(x) * sigmoid(b)) - sum(log(1 + square(x))) + sum(W * (b @ W)) * (x @ b); }",
        // Spectral normalisation and relu nets, a scalar-width input.
        "model m { visible x : real[2]; net f = mlp(2 -> 8 -> 8 -> 1, act: relu, spectral_norm: true); net g = mlp(2 -> 6 -> 3, act: tanh);
           energy e = f(x) + sum(square(g(x))) + 0.1 * sum(square(x)); }",
        // A net wide enough that sharded products read a weight matrix from one transposed copy.
        "model m { visible x : real[3]; net f = mlp(3 -> 24 -> 20 -> 1, act: swish); energy e = f(x) + 0.1 * sum(square(x)); }",
        // Images: convnets with residual blocks and spectral normalisation, pooled stages, axis means, reshapes.
        "model m { visible x : real[2, 6, 5]; net f = convnet(2 -> 3 -> 4 -> 1, blocks: 1, spectral_norm: true);
           net g = convnet(2 -> 3 -> 2 -> 3, pool: true, act: leaky_relu, bias: false);
           energy e = f(x) + sum(square(g(x))) + sum(square(mean(x, axis: 0))) + 0.1 * sum(square(flatten(x))); }",
    ];
    for src in models {
        check(src, 4);
        check(src, 2 * super::SHARD_ROWS + 3);
    }
}

/// A small image energy through every image op: two convolutions (strides 1
/// and 2, paddings 1 and 0; a bias broadcast over the pixels; a kernel
/// divided by a shared scalar), swish and tanh, average pooling with a
/// dropped row, a reshape, and a sum over the pixels into a linear head.
fn image_energy() -> (Ir, crate::ir::Id, Vec<(String, Vec<usize>)>) {
    let mut ir = Ir::default();
    let shapes: Vec<(String, Vec<usize>)> =
        [("k0", vec![3, 2, 3, 3]), ("b0", vec![3]), ("k1", vec![4, 3, 3, 3]), ("s", vec![]), ("v", vec![4])]
            .into_iter()
            .map(|(n, s)| (n.to_string(), s))
            .collect();
    let x = ir.var("x", &[2, 7, 6]);
    let [k0, b0, k1, s, v] = [0, 1, 2, 3, 4].map(|i| ir.param(&shapes[i].0, &shapes[i].1));
    let a = ir.conv(x, k0, ConvGeom { stride: 1, pad: 1 });
    let shape = ir.shape(a).clone();
    let bias = ir.broadcast_axes(b0, 1, &shape);
    let biased = ir.add(a, bias);
    let h = ir.map(Unary::Swish, biased);
    let (one, s2) = (ir.num(1.0), ir.map(Unary::Square, s));
    let scale = ir.add(one, s2);
    let k1 = ir.div(k1, scale);
    let h2 = ir.conv(h, k1, ConvGeom { stride: 2, pad: 0 });
    let t = ir.map(Unary::Tanh, h2);
    let pooled = ir.avg_pool(h, 2);
    let numel: usize = ir.shape(pooled).iter().product();
    let flat = ir.reshape(pooled, &[numel]);
    let sq = ir.map(Unary::Square, flat);
    let e1 = ir.sum(sq);
    let half = ir.num(0.5);
    let e1 = ir.mul(half, e1);
    let features = ir.sum_axes(t, 1, 2);
    let e2 = ir.matmul(features, v);
    let e = ir.add(e1, e2);
    (ir, e, shapes)
}

/// `check_energy` on an image energy `f` of `ir` (variable `x`) with random
/// parameters, at a small batch and a sharded one, and the compiled outputs
/// against the f64 interpreter: at the small batch every example and the
/// sums, at the sharded one (whose sums `check_energy` holds to the
/// evaluator's) an example of each shard.
fn check_image_energy(ir: &Ir, f: crate::ir::Id, seed: u64, what: &str) {
    let dev = Cpu::seed_from_u64(0);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let shapes: Vec<(String, Vec<usize>)> = ir
        .cone(f)
        .into_iter()
        .filter_map(|id| match &ir.node(id).op {
            Op::Param(name) => Some((name.clone(), ir.shape(id).clone())),
            _ => None,
        })
        .collect();
    let tensors: BTreeMap<String, T3<Cpu>> = shapes
        .iter()
        .map(|(name, shape)| {
            let (m, n) = crate::backend::eval::canon(shape);
            let data = (0..m * n).map(|_| rng.gen_range(-1.0..1.0)).collect();
            (name.clone(), dev.tensor_from_vec(data, (1, m, n)))
        })
        .collect();
    let leaves = Leaves { tensors, lattices: BTreeMap::new() };
    let names: Vec<String> = shapes.iter().map(|(n, _)| n.clone()).collect();
    for batch in [3, 2 * super::SHARD_ROWS + 3] {
        let checked = check_energy(ir, f, &["x".to_string()], &names, &leaves, batch, what);
        let mut refs: BTreeMap<String, crate::ir::RefValue> = shapes
            .iter()
            .map(|(name, shape)| {
                let data = leaves.tensors[name].as_vec().into_iter().map(f64::from).collect();
                (name.clone(), crate::ir::RefValue { shape: shape.clone(), data })
            })
            .collect();
        let var_shapes: BTreeMap<String, Vec<usize>> = checked
            .ir
            .nodes
            .iter()
            .filter_map(|node| match &node.op {
                Op::Var(name) => Some((name.clone(), node.shape.clone())),
                _ => None,
            })
            .collect();
        let mut sums: Vec<Vec<f64>> = checked.sums.iter().map(|(_, s)| vec![0.0; s.len()]).collect();
        let every = batch < super::SHARD_ROWS;
        let examples: Vec<usize> = if every { (0..batch).collect() } else { vec![0, batch / 2, batch - 1] };
        for e in examples {
            for (name, shape) in &var_shapes {
                let len: usize = shape.iter().product();
                let data = checked.vars[name][e * len..(e + 1) * len].iter().map(|x| f64::from(*x)).collect();
                refs.insert(name.clone(), crate::ir::RefValue { shape: shape.clone(), data });
            }
            for (root, got) in &checked.per {
                let want = checked.ir.eval_reference(*root, &refs).data;
                let got = &got[e * want.len()..(e + 1) * want.len()];
                let want: Vec<f32> = want.iter().map(|x| *x as f32).collect();
                close(got, &want, &format!("{what}: reference, example {e}: {}", checked.ir.show(*root)));
            }
            for ((root, _), sum) in checked.sums.iter().zip(&mut sums).filter(|_| every) {
                let value = checked.ir.eval_reference(*root, &refs).data;
                sum.iter_mut().zip(value).for_each(|(s, x)| *s += x);
            }
        }
        for ((root, got), want) in checked.sums.iter().zip(&sums).filter(|_| every) {
            let want: Vec<f32> = want.iter().map(|x| *x as f32).collect();
            close(got, &want, &format!("{what}: reference sum: {}", checked.ir.show(*root)));
        }
    }
}

#[test]
fn compiled_image_ops_match_the_evaluator_and_the_reference() {
    let (ir, f, _) = image_energy();
    check_image_energy(&ir, f, 11, "image energy");
}

/// Expanded convnets: strided and pooled stages, residual blocks, spectral
/// normalisation, with and without biases, a scalar and a vector output.
#[test]
fn compiled_convnets_match_the_evaluator_and_the_reference() {
    use crate::analysis::program::{Activation, ConvLayout, Net, NetKind};
    let nets = [
        (vec![2, 3, 4, 1], Activation::Swish, true, false, ConvLayout { kernel: 3, stride: 2, blocks: 1, pool: false }),
        (
            vec![2, 3, 2, 2],
            Activation::LeakyRelu,
            false,
            true,
            ConvLayout { kernel: 3, stride: 2, blocks: 0, pool: true },
        ),
        (vec![2, 2, 3, 1], Activation::Tanh, true, true, ConvLayout { kernel: 1, stride: 3, blocks: 1, pool: false }),
    ];
    for (i, (layers, activation, bias, spectral_norm, layout)) in nets.into_iter().enumerate() {
        let mut ir = Ir::default();
        let net = Net {
            name: "f".into(),
            kind: NetKind::Conv,
            layers,
            activation,
            bias,
            spectral_norm,
            conv: Some(layout),
            span: Default::default(),
        };
        let scalar = net.output_shape().is_empty();
        ir.nets.insert("f".into(), net);
        let x = ir.var("x", &[2, 7, 6]);
        let y = ir.net("f", x);
        let y = ir.inline_nets(y);
        // A vector output enters the energy through its squares.
        let f = if scalar {
            y
        } else {
            let sq = ir.map(Unary::Square, y);
            ir.sum(sq)
        };
        check_image_energy(&ir, f, 20 + i as u64, &format!("convnet {i}"));
    }
}

/// A kernel's gradient summed over the batch is one contraction over
/// examples × pixels: no per-example kernel gradient is made.
#[test]
fn kernel_gradients_sum_in_one_contraction() {
    let (mut ir, f, shapes) = image_energy();
    let sums: Vec<Output> = ["k0", "k1"].iter().filter_map(|p| ir.grad_param(f, p)).map(Output::BatchSum).collect();
    assert_eq!(sums.len(), 2, "both kernels have gradients");
    let listing = compile(&ir, &sums, 16).to_string();
    assert_eq!(listing.matches("conv_kernel_sum(").count(), 2, "{listing}");
    assert!(!listing.contains("conv_kernel("), "no per-example kernel gradient:\n{listing}");
    assert!(shapes.iter().all(|(n, _)| listing.contains(n.as_str())), "the listing names its inputs:\n{listing}");
}

/// One host copy serves every reader until the parameters change: the
/// first reader after a change copies them, the rest read that copy.
#[test]
fn a_mirror_copies_once_per_change() {
    let dev = Cpu::seed_from_u64(0);
    let at = |x: f32| BTreeMap::from([("W".to_string(), dev.tensor_from_vec(vec![x; 6], (1, 2, 3)))]);
    let mirror = super::SharedMirror::default();
    assert_eq!(super::Mirror::read(&mirror, &at(1.0)).shared()["W"], vec![1.0; 6]);
    // Still fresh: a second reader gets the first one's copy.
    assert_eq!(super::Mirror::read(&mirror, &at(2.0)).shared()["W"], vec![1.0; 6]);
    super::Mirror::stale(&mirror);
    assert_eq!(super::Mirror::read(&mirror, &at(3.0)).shared()["W"], vec![3.0; 6]);
}

/// With the batch in shards, a product that reads a weight matrix against
/// the grain (the backward pass's `δ Wᵀ`) reads one transposed copy made
/// per run; one shard reads the weights where they are.
#[test]
fn sharded_products_share_one_transposed_copy() {
    let (on, _) =
        on_device("model m { visible x : real[3]; net f = mlp(3 -> 24 -> 20 -> 1, act: swish); energy e = f(x); }");
    let mut ir = on.ir.clone();
    let g = ir.grad(on.free_energy, "x").expect("a data gradient");
    let mut compiled = super::Compiled::new(vec![Output::PerExample(g)]);
    compiled.prepare(&ir, 2 * super::SHARD_ROWS);
    let listing = compiled.listing().expect("compiled");
    assert!(listing.starts_with("# 2 shard(s)") && listing.contains("transpose of"), "{listing}");
    compiled.prepare(&ir, 4);
    let listing = compiled.listing().expect("compiled");
    assert!(!listing.contains("transpose of"), "{listing}");
}
