//! The convolution family's symbolic derivatives against central finite
//! differences of the f64 reference interpreter, on random shapes, strides,
//! paddings and kernels (seeded, so every run checks the same cases): the
//! gradient in the image (Langevin's ∇ₓE), in the kernel (training), and the
//! Hessian-vector product (score matching).

use ebmc::ir::{ConvGeom, Id, Ir, RefValue};
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;

struct Case {
    ir: Ir,
    energy: Id,
    leaves: BTreeMap<String, RefValue>,
}

fn random(rng: &mut impl Rng, shape: &[usize]) -> RefValue {
    RefValue { shape: shape.to_vec(), data: (0..shape.iter().product()).map(|_| rng.gen_range(-1.0..1.0)).collect() }
}

/// `E = sum(r ⊙ swish(conv(x, w) + b))` pooled or not, then through a second
/// convolution: every conv-family op and the axis ops appear in E or in its
/// derivatives.
fn case(seed: u64) -> Case {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (c, o) = (rng.gen_range(1..4), rng.gen_range(1..4));
    let k = [1, 3, 5][rng.gen_range(0..3)];
    let geom = ConvGeom { stride: rng.gen_range(1..4), pad: rng.gen_range(0..3) };
    let (h, w) = (rng.gen_range(k.max(2)..9), rng.gen_range(k.max(2)..9));
    let mut ir = Ir::default();
    let x = ir.var("x", &[c, h, w]);
    let kernel = ir.param("w", &[o, c, k, k]);
    let bias = ir.param("b", &[o]);
    let y = ir.conv(x, kernel, geom);
    let ys = ir.shape(y).clone();
    let spread = ir.broadcast_axes(bias, 1, &ys);
    let pre = ir.add(y, spread);
    let act = ir.map(ebmc::ir::Unary::Swish, pre);
    let pooled = if ys[1] >= 2 && ys[2] >= 2 { ir.avg_pool(act, 2) } else { act };
    let ps = ir.shape(pooled).clone();
    let second = ir.param("v", &[2, ps[0], 1, 1]);
    let z = ir.conv(pooled, second, ConvGeom { stride: 1, pad: 0 });
    let zs = ir.shape(z).clone();
    let r = ir.param("r", &zs);
    let weighted = ir.mul(z, r);
    let per_channel = ir.sum_axes(weighted, 1, 2);
    let flat = ir.reshape(per_channel, &[2]);
    let sq = ir.map(ebmc::ir::Unary::Square, flat);
    let energy = ir.sum(sq);
    let mut leaves = BTreeMap::new();
    for (name, shape) in [("x", vec![c, h, w]), ("w", vec![o, c, k, k]), ("b", vec![o]), ("v", vec![2, ps[0], 1, 1])] {
        leaves.insert(name.to_string(), random(&mut rng, &shape));
    }
    leaves.insert("r".into(), random(&mut rng, &zs));
    Case { ir, energy, leaves }
}

/// Central differences of `f` at `leaves[name]`, one coordinate at a time.
fn central(
    ir: &Ir,
    root: Id,
    leaves: &BTreeMap<String, RefValue>,
    name: &str,
    f: impl Fn(&RefValue) -> f64,
) -> Vec<f64> {
    let h = 1e-5;
    let n = leaves[name].data.len();
    (0..n)
        .map(|i| {
            let mut at = leaves.clone();
            at.get_mut(name).expect("leaf").data[i] += h;
            let up = f(&ir.eval_reference(root, &at));
            at.get_mut(name).expect("leaf").data[i] -= 2.0 * h;
            let down = f(&ir.eval_reference(root, &at));
            (up - down) / (2.0 * h)
        })
        .collect()
}

fn close(symbolic: &[f64], numeric: &[f64], what: &str, seed: u64) {
    assert_eq!(symbolic.len(), numeric.len(), "{what} (seed {seed}): lengths");
    for (i, (s, n)) in symbolic.iter().zip(numeric).enumerate() {
        // Central differences at h = 1e-5 in f64 are good to ~1e-8 relative
        // on these smooth energies; 1e-5 leaves room for cancellation.
        assert!((s - n).abs() <= 1e-5 * (1.0 + n.abs()), "{what} (seed {seed}) [{i}]: symbolic {s} vs numeric {n}");
    }
}

#[test]
fn conv_gradients_in_the_image_and_the_kernel_match_central_differences() {
    for seed in 0..24 {
        let Case { mut ir, energy, leaves } = case(seed);
        let gx = ir.grad(energy, "x").expect("E depends on x");
        let numeric = central(&ir, energy, &leaves, "x", |v| v.data[0]);
        close(&ir.eval_reference(gx, &leaves).data, &numeric, "dE/dx", seed);
        for p in ["w", "b", "v"] {
            let gp = ir.grad_param(energy, p).expect("E depends on every parameter");
            let numeric = central(&ir, energy, &leaves, p, |v| v.data[0]);
            close(&ir.eval_reference(gp, &leaves).data, &numeric, &format!("dE/d{p}"), seed);
        }
    }
}

#[test]
fn conv_hessian_vector_products_and_mixed_derivatives_match_central_differences() {
    for seed in 0..12 {
        let Case { mut ir, energy, mut leaves } = case(seed);
        let shape = leaves["x"].shape.clone();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1000 + seed);
        let direction = random(&mut rng, &shape);
        leaves.insert("d".into(), direction.clone());
        let hv = ir.hessian_vector(energy, "x", "d").expect("E is not linear in x");
        // H d = d/dt ∇E(x + t d) at t = 0.
        let gx = ir.grad(energy, "x").expect("E depends on x");
        let h = 1e-5;
        let at = |t: f64| {
            let mut l = leaves.clone();
            let x = l.get_mut("x").expect("x");
            x.data.iter_mut().zip(&direction.data).for_each(|(a, d)| *a += t * d);
            ir.eval_reference(gx, &l).data
        };
        let numeric: Vec<f64> = at(h).iter().zip(at(-h)).map(|(u, d)| (u - d) / (2.0 * h)).collect();
        close(&ir.eval_reference(hv, &leaves).data, &numeric, "H d", seed);
        // The kernel gradient of a score-matching-like loss |∇ₓE|²: the mixed
        // derivative improved CD and SSM train through.
        let sq = ir.mul(gx, gx);
        let loss = ir.sum(sq);
        let gw = ir.grad_param(loss, "w").expect("∇ₓE depends on w");
        let numeric = central(&ir, loss, &leaves, "w", |v| v.data[0]);
        close(&ir.eval_reference(gw, &leaves).data, &numeric, "d|∇ₓE|²/dw", seed);
    }
}

/// A `convnet` (strided or pooled stages, residual blocks, spectral
/// normalisation, leaky ReLU) expanded into IR: ∇ₓE and every parameter's
/// gradient against central differences, and the parameters `net_params`
/// declares are exactly the ones the expansion reads.
#[test]
fn convnet_expansions_differentiate_correctly_and_declare_their_parameters() {
    use ebmc::analysis::program::{Activation, ConvLayout, Net, NetKind};
    let layouts = [
        (ConvLayout { kernel: 3, stride: 2, blocks: 1, pool: false }, Activation::Swish, false),
        (ConvLayout { kernel: 3, stride: 2, blocks: 0, pool: true }, Activation::LeakyRelu, true),
        (ConvLayout { kernel: 1, stride: 1, blocks: 2, pool: false }, Activation::Tanh, false),
    ];
    for (seed, (layout, activation, spectral_norm)) in layouts.into_iter().enumerate() {
        let net = Net {
            name: "f".into(),
            kind: NetKind::Conv,
            layers: vec![2, 3, 4, 1],
            activation,
            bias: true,
            spectral_norm,
            conv: Some(layout),
            span: Default::default(),
        };
        let mut ir = Ir::default();
        ir.nets.insert("f".into(), net.clone());
        let x = ir.var("x", &[2, 6, 6]);
        let out = ir.net("f", x);
        let energy = ir.inline_nets(out);
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed as u64);
        let mut leaves = BTreeMap::new();
        leaves.insert("x".to_string(), random(&mut rng, &[2, 6, 6]));
        let specs = ebmc::ir::net_params(&net);
        for p in &specs {
            leaves.insert(p.name.clone(), random(&mut rng, &p.shape));
        }
        let read: std::collections::BTreeSet<String> = ir
            .cone(energy)
            .iter()
            .filter_map(|id| match &ir.node(*id).op {
                ebmc::ir::Op::Param(n) => Some(n.clone()),
                _ => None,
            })
            .collect();
        let declared: std::collections::BTreeSet<String> = specs.iter().map(|p| p.name.clone()).collect();
        assert_eq!(read, declared, "layout {layout:?}");
        let gx = ir.grad(energy, "x").expect("E depends on x");
        let numeric = central(&ir, energy, &leaves, "x", |v| v.data[0]);
        close(&ir.eval_reference(gx, &leaves).data, &numeric, "convnet dE/dx", seed as u64);
        for p in &specs {
            let gp = ir.grad_param(energy, &p.name).expect("E depends on every parameter");
            let numeric = central(&ir, energy, &leaves, &p.name, |v| v.data[0]);
            close(&ir.eval_reference(gp, &leaves).data, &numeric, &format!("convnet dE/d{}", p.name), seed as u64);
        }
    }
}
