//! Options that shape an objective's gradient: the regularisers act on the
//! model's declared parameters only (never on an objective's own, such as
//! NCE's learned log-normaliser), and `pcd(alpha)` is the energy penalty.

use ebmc::backend::{DeviceKind, Trainer};
use ebmc::tensor::{HostTensor, Tensors};

struct Setup {
    model: ebmc::analysis::program::Model,
    plan: ebmc::analysis::plan::Plan,
    train: ebmc::analysis::program::Train,
}

fn setup(src: &str) -> Setup {
    let c =
        ebmc::compile(src).unwrap_or_else(|d| panic!("{}", ebmc::front::diagnostic::render_plain("t.ebm", src, &d)));
    let (plans, _) = ebmc::plan(&c.program).unwrap();
    let model = c.program.models.values().next().unwrap().clone();
    let train = c.program.trains[&model.name].clone();
    Setup { model, plan: plans[0].clone(), train }
}

/// The parameters after one step of plain SGD from `params` on `batch`, and the chains it drew.
fn one_step(src: &str, params: &Tensors, batch: &Tensors) -> (Tensors, Option<Tensors>) {
    let s = setup(src);
    let mut t = Trainer::new(&s.model, &s.plan, &s.train, params, &Tensors::new(), 5, DeviceKind::Cpu).unwrap();
    t.prepare(batch).unwrap();
    t.begin_epoch(5);
    t.step(batch, 1.0, 0).unwrap();
    (t.params(), t.chains())
}

fn tensors(items: &[(&str, Vec<usize>, Vec<f32>)]) -> Tensors {
    items.iter().map(|(k, s, d)| (k.to_string(), HostTensor::new(s.clone(), d.clone()))).collect()
}

const NCE: &str = "model g { visible x : real[2]; param mu : real[2]; energy e = 0.5 * sum(square(x - mu)); }
    train g { data = csv(\"unused.csv\") -> x; objective = nce(ratio: 2); optimizer = sgd(lr: 0.1); REG batch = 8; }";

#[test]
fn regularisers_leave_nces_log_normaliser_alone() {
    let params = tensors(&[("mu", vec![2], vec![0.5, -0.5]), ("nce.log_z", vec![], vec![2.0])]);
    let x: Vec<f32> = (0..16).map(|i| (i as f32 * 0.37).sin()).collect();
    let batch = tensors(&[("x", vec![8, 2], x)]);
    let (plain, _) = one_step(&NCE.replace("REG", ""), &params, &batch);
    for reg in ["l2(10)", "l1(10)"] {
        let (regularised, _) = one_step(&NCE.replace("REG", &format!("regularize = {reg};")), &params, &batch);
        assert_eq!(regularised["nce.log_z"].data, plain["nce.log_z"].data, "{reg} moved nce.log_z");
        // The declared parameter does feel the regulariser (10 · 0.5 at lr 1 is far above rounding).
        assert!((regularised["mu"].data[0] - plain["mu"].data[0]).abs() > 1.0, "{reg} left mu alone");
    }
}

const PCD: &str = "model m { visible v : binary[3]; param b : real[3]; energy e = -(b @ v); }
    train m { data = csv(\"unused.csv\") -> v; objective = pcd(chains: 4, OPT); optimizer = sgd(lr: 1); REG batch = 4; }";

fn pcd_step(opt: &str, reg: &str) -> (Vec<f32>, Tensors) {
    let src = PCD.replace("OPT", opt).replace("REG", reg);
    let params = tensors(&[("b", vec![3], vec![0.5, -0.3, 1.0])]);
    let batch = tensors(&[("v", vec![4, 3], vec![1., 0., 1., 0., 1., 1., 1., 1., 0., 0., 0., 1.])]);
    let (p, chains) = one_step(&src, &params, &batch);
    (p["b"].data.clone(), chains.unwrap())
}

#[test]
fn pcd_alpha_adds_the_energy_penalty_gradient() {
    let alpha = 0.25f32;
    let (without, negatives) = pcd_step("k: 1", "");
    let (with, same) = pcd_step(&format!("k: 1, alpha: {alpha}"), "");
    // The penalty changes the loss, not the draw: the same negatives.
    assert_eq!(negatives, same);
    // F(v) = −b·v, so ∂/∂b of α (mean F(v⁺)² + mean F(v⁻)²) is α · mean 2 F(v) (−v) over each set.
    let b = [0.5f32, -0.3, 1.0];
    let data = [[1., 0., 1.], [0., 1., 1.], [1., 1., 0.], [0., 0., 1.]];
    let neg = &negatives["v"].data;
    let neg: Vec<[f32; 3]> = neg.chunks(3).map(|r| [r[0], r[1], r[2]]).collect();
    let penalty = |rows: &[[f32; 3]], i: usize| {
        rows.iter().map(|v| -2.0 * (-(b[0] * v[0] + b[1] * v[1] + b[2] * v[2])) * v[i]).sum::<f32>() / rows.len() as f32
    };
    for i in 0..3 {
        let grad = alpha * (penalty(&data, i) + penalty(&neg, i));
        // SGD at lr 1: the step moves by minus the gradient.
        assert!((without[i] - with[i] - grad).abs() < 1e-5, "b[{i}]: {} vs {grad}", without[i] - with[i]);
    }
    assert!((0..3).any(|i| (without[i] - with[i]).abs() > 1e-2), "the penalty moved nothing");
    // `regularize = energy_penalty(alpha)` is the same penalty.
    let (regularised, _) = pcd_step("k: 1", &format!("regularize = energy_penalty({alpha});"));
    assert_eq!(regularised, with);
}

#[test]
fn pcd_alpha_and_energy_penalty_together_are_refused() {
    let src = PCD.replace("OPT", "alpha: 0.1").replace("REG", "regularize = energy_penalty(0.1);");
    let Err(errors) = ebmc::compile(&src) else { panic!("both penalties are accepted") };
    let text = ebmc::front::diagnostic::render_plain("t.ebm", &src, &errors);
    assert!(text.contains("option `alpha` is given twice"), "{text}");
}

/// Langevin's `clip` clamps each component of `∇ₓE` (docs/language.md, docs/training.md), not its norm.
#[test]
fn langevin_clip_clamps_each_gradient_component() {
    let src = "model d { visible x : real[2]; param c : real[2];
        energy e = 0.5 * sum(square(x)) + c @ x; sample { x: langevin(step: 0.1, noise: 0, clip: 1); } }";
    let c = ebmc::compile(src).unwrap();
    let (plans, _) = ebmc::plan(&c.program).unwrap();
    let model = c.program.models["d"].clone();
    let values = tensors(&[("c", vec![2], vec![100.0, 0.5])]);
    let mut s = ebmc::backend::Sampler::new(&model, &plans[0], &values, 1, 1, Default::default()).unwrap();
    s.set_state(&tensors(&[("x", vec![1, 2], vec![0.0, 0.0])])).unwrap();
    s.sweep();
    // At x = 0, ∇ₓE = c = (100, 0.5): clamped to (1, 0.5), one step of 0.1 and no noise
    // gives (−0.1, −0.05); clipping the norm to 1 would give (−0.1, −0.0005).
    let x = &s.state()["x"].data;
    assert!((x[0] + 0.1).abs() < 1e-6 && (x[1] + 0.05).abs() < 1e-6, "{x:?}");
}

/// The ops of `root`'s cone after nets are inlined.
fn inlined_ops(ir: &mut ebmc::ir::Ir, root: ebmc::ir::Id) -> Vec<ebmc::ir::Op> {
    let root = ir.inline_nets(root);
    ir.cone(root).into_iter().map(|id| ir.node(id).op.clone()).collect()
}

#[test]
fn a_linear_net_is_linear() {
    let src = "model l { visible x : real[3]; net f = linear(3 -> 2); energy e = sum(f(x)) + 0.5 * sum(square(x)); }";
    let c = ebmc::compile(src).unwrap();
    let model = &c.program.models["l"];
    assert_eq!(model.nets[0].activation, ebmc::analysis::program::Activation::Identity);
    let mut lowered = ebmc::ir::program_to_ir(model);
    let ops = inlined_ops(&mut lowered.ir, lowered.energies[0].1);
    // Only `square` maps anything: the net adds a product and a bias, no activation.
    let maps: Vec<_> = ops.iter().filter(|op| matches!(op, ebmc::ir::Op::Map(..))).collect();
    assert_eq!(maps.len(), 1, "{maps:?}");
}

#[test]
fn an_identity_net_of_several_layers_adds_no_activation() {
    use ebmc::analysis::program::{Activation, Net, NetKind};
    let mut ir = ebmc::ir::Ir::default();
    let net = |activation| Net {
        name: "f".into(),
        kind: NetKind::Mlp,
        layers: vec![3, 4, 4, 1],
        activation,
        bias: true,
        spectral_norm: false,
        conv: None,
        span: Default::default(),
    };
    let count_maps = |ir: &mut ebmc::ir::Ir| {
        let x = ir.var("x", &[3]);
        let root = ir.net("f", x);
        inlined_ops(ir, root).iter().filter(|op| matches!(op, ebmc::ir::Op::Map(..))).count()
    };
    ir.nets.insert("f".into(), net(Activation::Identity));
    assert_eq!(count_maps(&mut ir), 0);
    let mut ir = ebmc::ir::Ir::default();
    ir.nets.insert("f".into(), net(Activation::Tanh));
    assert_eq!(count_maps(&mut ir), 2);
    // Every name `mlp(act: ...)` accepts is an activation, printed as given.
    for name in Activation::MLP {
        let a = Activation::from_name(name).unwrap();
        assert_eq!(serde_json::to_value(a).unwrap(), *name);
    }
}

/// The plan's text for the one model in `src`.
fn plan_text(src: &str) -> String {
    let c = ebmc::compile(src).unwrap();
    let (plans, _) = ebmc::plan(&c.program).unwrap();
    plans[0].to_text()
}

#[test]
fn the_plan_says_who_chose_each_kernel() {
    // `gibbs` takes no options: the planner still chooses block Gibbs, and the plan says so.
    let text = plan_text(
        "model r { visible v : binary[3]; hidden h : binary[2]; param W : real[3, 2];
           energy e = -(v @ W @ h); sample { v: gibbs; } }",
    );
    assert!(
        text.contains("block Gibbs, block 2 of 2 (the sample block asks for `gibbs`; the planner picks the blocking)"),
        "{text}"
    );
    assert!(!text.contains("as the sample block asks"), "{text}");
    // A Langevin kernel's options are the sample block's.
    let text = plan_text(
        "model d { visible x : real[2]; energy e = 0.5 * sum(square(x)); sample { x: langevin(step: 0.2); } }",
    );
    assert!(text.contains("Langevin, step 0.2, noise 0.6325, 1 step(s) per sweep, as the sample block asks"), "{text}");
}
