//! The compiled program against the dfdx evaluator, on every zoo model and
//! on models that reach each op: per-example values (the free energy, its
//! gradient and Hessian-vector products in the data) and batch sums (the
//! per-example parameter gradients of the free energy and of a
//! denoising-score-matching loss built on its data gradient).

use super::{Output, compile};
use crate::backend::eval::{Evaluator, Leaves, expand};
use crate::backend::{T3, train};
use crate::ir::{Ir, Op, Unary};
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
    let mut ir: Ir = on.ir.clone();
    let f = on.free_energy;
    let mut per = vec![f];
    let mut sums = Vec::new();
    for v in &on.visible {
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
            sums.extend(on.params.keys().filter_map(|p| ir.grad_param(loss, p)));
        }
    }
    sums.extend(on.params.keys().filter_map(|p| ir.grad_param(f, p)));
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
    let leaves = Leaves {
        tensors: on.params.iter().chain(&on.consts).map(|(k, t)| (k.clone(), t.clone())).collect(),
        lattices: on.lattices.clone(),
    };
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
    program.run(&host);
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
    let ev = Evaluator { ir: &ir, dev: &dev, leaves: &leaves };
    for (i, (root, value)) in per.iter().zip(ev.eval(&per, &vars)).enumerate() {
        let (b, m, n) = program.output_dims(i);
        close(program.output(i), &expand(value, b, m, n).as_vec(), &format!("{}\n{src}", ir.show(*root)));
    }
    for (i, value) in sums.iter().zip(ev.eval_phase_sums(&sums, &[(&vars, 1.0)])).map(|(_, v)| v).enumerate() {
        let j = per.len() + i;
        close(program.output(j), &value.as_vec(), &format!("batch sum {i}\n{src}"));
    }
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
    ];
    for src in models {
        check(src, 4);
        check(src, 2 * super::SHARD_ROWS + 3);
    }
}
