//! Shapes of any rank, the shape functions (`flatten`, `reshape`, `sum` and
//! `mean` along an axis) and `convnet` nets, through the parser, the
//! formatter and the checker.

use ebmc::analysis::check::{CheckError, ast_to_program};
use ebmc::analysis::graph::units;
use ebmc::analysis::program::{Activation, ConvLayout, Domain, Model, NetKind, TExpr, TExprKind};
use ebmc::front::parse::source_to_ast;

/// The checked model `m` of `body`, or the checker's errors.
fn check(body: &str) -> Result<Model, Vec<CheckError>> {
    let source = format!("model m {{\n{body}\n}}\n");
    let ast = source_to_ast(&source).unwrap_or_else(|e| panic!("parse failed: {e:?}\n{source}"));
    ast_to_program(&ast).map(|(mut p, _)| p.models.remove("m").expect("model m"))
}

fn ok(body: &str) -> Model {
    check(body).unwrap_or_else(|e| panic!("expected to check: {e:?}\n{body}"))
}

fn errors(body: &str) -> Vec<CheckError> {
    match check(body) {
        Ok(_) => panic!("expected errors:\n{body}"),
        Err(e) => e.into_iter().filter(|e| !e.is_warning()).collect(),
    }
}

/// The one error of `body`.
fn error(body: &str) -> CheckError {
    let mut e = errors(body);
    assert_eq!(e.len(), 1, "{e:?}");
    e.remove(0)
}

/// The typed expression of the model's energy `e`, under its outer `sum(...)`.
fn summed(m: &Model) -> &TExpr {
    let e = &m.energies[0].expr;
    match &e.kind {
        TExprKind::Func { arg, .. } => arg,
        _ => e,
    }
}

#[test]
fn variables_parameters_and_constants_take_any_rank_up_to_the_limit() {
    let m = ok("visible x : real[1, 8, 8] in [0, 1];
        hidden h : binary[2, 4, 4];
        hidden y : categorical(5)[3, 4];
        param W : real[5, 4, 3];
        const c : real[2, 4, 4] = 0.5;
        energy e = sum(x * x) + sum(h * c) + sum(y * reshape(W, [3, 4, 5]));");
    let shape = |n: &str| m.variable(n).unwrap().shape.clone();
    assert_eq!(shape("x"), [1, 8, 8]);
    assert_eq!(shape("h"), [2, 4, 4]);
    // The categories are the last axis.
    assert_eq!(shape("y"), [3, 4, 5]);
    assert_eq!(m.variable("y").unwrap().domain, Domain::Categorical { categories: 5 });
    assert_eq!(m.params[0].shape, [5, 4, 3]);
    assert_eq!(m.consts[0].shape, [2, 4, 4]);
    // Units: every entry of a binary array, every one-hot row of a categorical one.
    assert_eq!(units(m.variable("h").unwrap()), 32);
    assert_eq!(units(m.variable("y").unwrap()), 12);

    let six = ok("visible x : real[1, 2, 1, 2, 1, 2]; energy e = sum(x * x);");
    assert_eq!(six.variables[0].shape.len(), ebmc::analysis::limits::MAX_RANK);
    assert!(matches!(
        error("visible x : real[1, 2, 1, 2, 1, 2, 1]; energy e = sum(x * x);"),
        CheckError::TooManyDims { max: 6, .. }
    ));
    // A categorical's categories take one of the axes.
    assert!(matches!(
        error("visible y : categorical(3)[2, 2, 2, 2, 2, 2]; energy e = sum(y);"),
        CheckError::TooManyDims { max: 5, .. }
    ));
    assert!(matches!(error("param W : real[2, 0, 3]; energy e = sum(W);"), CheckError::ZeroDim { .. }));
}

#[test]
fn elementwise_operators_broadcast_along_trailing_axes() {
    let m = ok("visible x : real[2, 3, 4]; param b : real[3, 4]; param c : real[4];
        energy e = sum(x * b + c - 1);");
    assert_eq!(summed(&m).shape, [2, 3, 4]);
    // [3] does not end [2, 3, 4], and [2, 3] does not either.
    for other in ["real[3]", "real[2, 3]", "real[1, 3, 4]"] {
        let e = error(&format!("visible x : real[2, 3, 4]; param b : {other}; energy e = sum(x * b);"));
        assert!(matches!(e, CheckError::ElementwiseMismatch { .. }), "{other}: {e:?}");
    }
}

#[test]
fn matmul_and_transpose_keep_their_rank_two_rules() {
    ok("visible v : real[4]; param W : real[4, 3]; visible h : real[3]; energy e = -(v @ W @ h) + sum(W.T @ v);");
    let e = error("visible x : real[2, 3, 4]; param W : real[4, 2]; energy e = sum(x @ W);");
    assert!(matches!(&e, CheckError::MatMulRank { shape, .. } if *shape == [2, 3, 4]), "{e:?}");
    let e = error("visible x : real[4]; param W : real[4, 2, 2]; energy e = sum(x @ W);");
    assert!(matches!(&e, CheckError::MatMulRank { shape, .. } if *shape == [4, 2, 2]), "{e:?}");
    let e = error("visible x : real[2, 3, 4]; energy e = sum(x.T);");
    assert!(matches!(e, CheckError::TransposeRank { .. }), "{e:?}");
}

#[test]
fn flatten_and_reshape_keep_the_element_count() {
    let m = ok("visible x : real[1, 8, 8]; param w : real[64]; energy e = w @ flatten(x);");
    let TExprKind::Binary { rhs, .. } = &m.energies[0].expr.kind else { panic!() };
    assert_eq!(rhs.shape, [64]);
    assert!(matches!(rhs.kind, TExprKind::Reshape(_)));

    let m = ok("const H = 4; visible x : real[16]; energy e = sum(reshape(x, [H, 2, 2]));");
    assert_eq!(summed(&m).shape, [4, 2, 2]);
    assert!(matches!(summed(&m).kind, TExprKind::Reshape(_)));
    // A scalar flattens to one element.
    assert_eq!(summed(&ok("visible s : real; energy e = sum(flatten(s) * s);")).shape, [1]);

    let e = error("visible x : real[2, 3]; energy e = sum(reshape(x, [4, 2]));");
    match e {
        CheckError::ReshapeSize { from, to, .. } => {
            assert_eq!(from.1, [2, 3]);
            assert_eq!(to, [4, 2]);
        }
        e => panic!("{e:?}"),
    }
    assert!(matches!(error("visible x : real[4]; energy e = sum(reshape(x, 4));"), CheckError::NotAShape { .. }));
    assert!(matches!(error("visible x : real[4]; energy e = sum(reshape(x, []));"), CheckError::NotAShape { .. }));
    assert!(matches!(
        error("visible x : real[4]; energy e = sum(reshape(x, [2.5, 2]));"),
        CheckError::NotAShape { .. }
    ));
    assert!(matches!(error("visible x : real[4]; energy e = sum(reshape(x, [0, 4]));"), CheckError::ZeroDim { .. }));
    assert!(matches!(error("visible x : real[4]; energy e = sum(reshape(x, [k, 2]));"), CheckError::Undefined { .. }));
    let e = error("visible x : real[4]; energy e = sum(reshape(x));");
    assert!(matches!(e, CheckError::Arity { expected: 2, found: 1, .. }), "{e:?}");
    let e = error("visible x : real[4]; energy e = sum(flatten(x, [4]));");
    assert!(matches!(e, CheckError::Arity { expected: 1, found: 2, .. }), "{e:?}");
}

#[test]
fn sum_and_mean_along_an_axis_remove_it() {
    let m = ok("visible x : real[2, 3, 4]; energy e = sum(square(sum(x, axis: 1)));");
    let TExprKind::Func { arg, .. } = &summed(&m).kind else { panic!() };
    assert_eq!(arg.shape, [2, 4]);
    assert!(matches!(arg.kind, TExprKind::SumAxis { axis: 1, .. }));

    let m = ok("const A = 2; visible x : real[2, 3, 4]; energy e = sum(mean(x, axis: A));");
    assert_eq!(summed(&m).shape, [2, 3]);
    assert!(matches!(summed(&m).kind, TExprKind::MeanAxis { axis: 2, .. }));
    // Without an axis they reduce every element, as before.
    let m = ok("visible x : real[2, 3, 4]; energy e = mean(x) + sum(x);");
    assert!(m.energies[0].expr.shape.is_empty());
    // The last axis of a vector leaves a scalar.
    assert!(ok("visible x : real[3]; energy e = sum(x, axis: 0);").energies[0].expr.shape.is_empty());

    let e = error("visible x : real[2, 3]; energy e = sum(sum(x, axis: 2));");
    assert!(matches!(e, CheckError::BadAxis { axis: 2, .. }), "{e:?}");
    let e = error("visible x : real; energy e = sum(x, axis: 0);");
    assert!(matches!(e, CheckError::BadAxis { axis: 0, .. }), "{e:?}");
    let e = error("visible x : real[2, 3]; energy e = sum(sum(x, axis: -1));");
    assert!(matches!(e, CheckError::BadOptionValue { .. }), "{e:?}");
    let e = error("visible x : real[2, 3]; energy e = sum(sum(x, axes: 1));");
    assert!(matches!(&e, CheckError::FunctionOptions { option, .. } if option == "axes"), "{e:?}");
    let e = error("visible x : real[2, 3]; energy e = sum(sum(x, axis: 1, axis: 0));");
    assert!(matches!(e, CheckError::DuplicateOption { .. }), "{e:?}");
    let e = error("visible x : real[2, 3]; energy e = sum(exp(x, axis: 1));");
    assert!(matches!(e, CheckError::FunctionOptions { .. }), "{e:?}");
}

#[test]
fn convnet_binds_its_layout_with_defaults() {
    let m = ok("visible x : real[1, 8, 8] in [0, 1];
        net f = convnet(1 -> 32 -> 64 -> 1);
        energy e = f(x);");
    let f = m.net("f").unwrap();
    assert_eq!(f.kind, NetKind::Conv);
    assert_eq!(f.layers, [1, 32, 64, 1]);
    assert_eq!(f.conv, Some(ConvLayout { kernel: 3, stride: 2, blocks: 0, pool: false }));
    assert_eq!(f.activation, Activation::Swish);
    assert!(f.bias);
    assert!(!f.spectral_norm);
    // A last width of 1 is a scalar energy.
    assert!(m.energies[0].expr.shape.is_empty());

    let m = ok("visible x : real[3, 32, 32]; visible y : categorical(10);
        net f = convnet(3 -> 16 -> 32 -> 10, kernel: 5, stride: 1, blocks: 2, pool: true,
                        act: leaky_relu, bias: false, spectral_norm: true);
        energy e = -(f(x) @ y);");
    let f = m.net("f").unwrap();
    assert_eq!(f.conv, Some(ConvLayout { kernel: 5, stride: 1, blocks: 2, pool: true }));
    assert_eq!(f.activation, Activation::LeakyRelu);
    assert!(!f.bias);
    assert!(f.spectral_norm);
    let TExprKind::Neg(inner) = &m.energies[0].expr.kind else { panic!() };
    let TExprKind::Binary { lhs, .. } = &inner.kind else { panic!() };
    assert_eq!(lhs.shape, [10]);
    // `mlp` takes leaky ReLU too; `linear` and `mlp` nets have no layout.
    let m = ok("visible x : real[4]; net g = mlp(4 -> 8 -> 1, act: leaky_relu); energy e = g(x);");
    assert_eq!(m.net("g").unwrap().activation, Activation::LeakyRelu);
    assert_eq!(m.net("g").unwrap().conv, None);
}

#[test]
fn convnet_options_and_widths_are_checked() {
    let e = error("visible x : real[1, 8, 8]; net f = convnet(1 -> 1); energy e = f(x);");
    assert!(matches!(e, CheckError::NetLayers { kind: NetKind::Conv, found: 2, .. }), "{e:?}");
    let e = error("visible x : real[1, 8, 8]; net f = convnet(1 -> 8 -> 1, kernel: 4); energy e = f(x);");
    assert!(matches!(e, CheckError::ConvKernel { kernel: 4, .. }), "{e:?}");
    let e = error("visible x : real[1, 8, 8]; net f = convnet(1 -> 8 -> 1, kernel: 0); energy e = f(x);");
    assert!(matches!(e, CheckError::BadOptionValue { .. }), "{e:?}");
    let e = error("visible x : real[1, 8, 8]; net f = convnet(1 -> 8 -> 1, stride: 0); energy e = f(x);");
    assert!(matches!(e, CheckError::BadOptionValue { .. }), "{e:?}");
    let max = ebmc::analysis::limits::MAX_CONV_BLOCKS;
    ok(&format!("visible x : real[1, 8, 8]; net f = convnet(1 -> 8 -> 1, blocks: {max}); energy e = f(x);"));
    let e = error(&format!(
        "visible x : real[1, 8, 8]; net f = convnet(1 -> 8 -> 1, blocks: {}); energy e = f(x);",
        max + 1
    ));
    assert!(matches!(e, CheckError::ConvBlocks { .. }), "{e:?}");
    let e = error("visible x : real[1, 8, 8]; net f = convnet(1 -> 8 -> 1, act: gelu); energy e = f(x);");
    assert!(matches!(e, CheckError::BadOptionValue { .. }), "{e:?}");
    let e = error("visible x : real[1, 8, 8]; net f = convnet(1 -> 8 -> 1, width: 3); energy e = f(x);");
    assert!(matches!(e, CheckError::UnknownOption { .. }), "{e:?}");
}

#[test]
fn convnet_inputs_are_images_with_the_first_width_as_channels() {
    for found in ["real[64]", "real[8, 8]", "real[3, 8, 8]", "real[1, 1, 8, 8]", "real"] {
        let e = error(&format!("visible x : {found}; net f = convnet(1 -> 8 -> 1); energy e = f(x);"));
        assert!(matches!(e, CheckError::ConvInput { channels: 1, .. }), "{found}: {e:?}");
    }
    // Strided convolutions never shrink a side below 1; two poolings by 4 take 8 to 0.
    ok("visible x : real[1, 2, 2]; net f = convnet(1 -> 4 -> 4 -> 4 -> 1, stride: 4); energy e = f(x);");
    ok("visible x : real[1, 16, 16]; net f = convnet(1 -> 4 -> 4 -> 4 -> 1, stride: 4, pool: true); energy e = f(x);");
    let e = error(
        "visible x : real[1, 8, 8]; net f = convnet(1 -> 4 -> 4 -> 4 -> 1, stride: 4, pool: true); energy e = f(x);",
    );
    assert!(matches!(e, CheckError::ConvTooSmall { stages: 2, stride: 4, .. }), "{e:?}");
    // Vector nets keep their rule, and an image fed to one is told to flatten.
    let e = error("visible x : real[1, 8, 8]; net g = mlp(64 -> 8 -> 1); energy e = g(x);");
    assert!(matches!(e, CheckError::NetInput { expected: 64, .. }), "{e:?}");
    ok("visible x : real[1, 8, 8]; net g = mlp(64 -> 8 -> 1); energy e = g(flatten(x));");
}

#[test]
fn new_syntax_formats_back_to_the_same_tree() {
    let source = "model m {
    visible x : real[1, 8, 8] in [0, 1];
    hidden y : categorical(K)[h, w];
    param W : real[5, 4, 3] = normal(0, 0.1);
    net f = convnet(1 -> 32 -> 64 -> 10, kernel: 3, stride: 2, blocks: 1, pool: false, act: swish, bias: true, spectral_norm: false);
    energy e = sum(mean(reshape(x, [8, 8]), axis: 0)) + sum(flatten(x), axis: 0);
}
";
    let formatted = ebmc::format_source(source).unwrap();
    assert_eq!(formatted, source);
    let ast = source_to_ast(source).unwrap();
    assert_eq!(source_to_ast(&formatted).unwrap().outline(), ast.outline());
    let outline = ast.outline();
    assert!(outline.contains("real[1, 8, 8] in [0 1]"), "{outline}");
    assert!(outline.contains("(call reshape"), "{outline}");
}

/// The lowered energies of `body`, evaluated by the reference interpreter at `leaves`.
fn evaluate(body: &str, leaves: &[(&str, Vec<usize>, Vec<f64>)]) -> Vec<f64> {
    use ebmc::ir::RefValue;
    let lowered = ebmc::ir::program_to_ir(&ok(body));
    let leaves = leaves
        .iter()
        .map(|(n, shape, data)| (n.to_string(), RefValue { shape: shape.clone(), data: data.clone() }))
        .collect();
    lowered.energies.iter().map(|(_, id)| lowered.ir.eval_reference(*id, &leaves).data[0]).collect()
}

#[test]
fn shape_functions_lower_to_their_definitions() {
    // x[i, j, k] = 12 i + 4 j + k: its row-major index.
    let x: Vec<f64> = (0..24).map(f64::from).collect();
    let at = |i: usize, j: usize, k: usize| x[12 * i + 4 * j + k];
    let p: Vec<f64> = (1..=6).map(f64::from).collect();
    let got = evaluate(
        "visible x : real[2, 3, 4]; param p : real[6];
        energy e1 = sum(square(sum(x, axis: 1)));
        energy e2 = sum(mean(x, axis: 0) * reshape(flatten(x), [2, 3, 4]));
        energy e3 = sum(reshape(x, [4, 6]) @ p);
        energy e4 = sum(mean(x, axis: 2));",
        &[("x", vec![2, 3, 4], x.clone()), ("p", vec![6], p.clone())],
    );
    let mut e1 = 0.0;
    for i in 0..2 {
        for k in 0..4 {
            e1 += (0..3).map(|j| at(i, j, k)).sum::<f64>().powi(2);
        }
    }
    let mut e2 = 0.0;
    for i in 0..2 {
        for j in 0..3 {
            for k in 0..4 {
                e2 += (at(0, j, k) + at(1, j, k)) / 2.0 * at(i, j, k);
            }
        }
    }
    let e3: f64 = (0..4).map(|r| (0..6).map(|c| x[6 * r + c] * p[c]).sum::<f64>()).sum();
    // The mean along the last axis, summed: the total over 4.
    let e4 = x.iter().sum::<f64>() / 4.0;
    for (g, want) in got.iter().zip([e1, e2, e3, e4]) {
        // Sums of at most 24 whole numbers below 600² are exact in f64.
        assert_eq!(*g, want, "{got:?}");
    }
}

#[test]
fn discrete_variables_of_rank_three_are_summed_out_per_unit() {
    let plan = |body: &str| {
        let compiled = ebmc::compile(&format!("model m {{\n{body}\n}}\n")).unwrap();
        let (mut plans, _) = ebmc::plan(&compiled.program).unwrap();
        plans.remove(0)
    };
    let rbm = plan(
        "visible v : real[5]; hidden h : binary[2, 3, 4]; param W : real[5, 24];
        energy e = -sum(h * reshape(v @ W, [2, 3, 4])) + 0.5 * sum(square(v));",
    );
    let summed = rbm.summed_out.as_ref().expect("h is summed out");
    assert_eq!(summed.rule, "softplus");
    assert_eq!(summed.summed, ["h"]);
    let potts = plan(
        "visible v : real[5]; hidden y : categorical(3)[2, 2]; param W : real[5, 12];
        energy e = -sum(y * reshape(v @ W, [2, 2, 3])) + 0.5 * sum(square(v));",
    );
    let summed = potts.summed_out.as_ref().expect("y is summed out");
    assert_eq!(summed.rule, "logsumexp");
    // One logsumexp per one-hot row: over the last axis, then summed over the 2 × 2 sites.
    assert!(summed.free_energy.contains("logsumexp"), "{}", summed.free_energy);
    let y = potts.variables.iter().find(|v| v.name == "y").unwrap();
    assert_eq!(y.type_text, "categorical(3)[2, 2]");
}

#[test]
fn a_convnet_energy_plans_with_its_parameters() {
    let compiled = ebmc::compile(
        "model m {
            visible x : real[1, 8, 8] in [0, 1];
            net f = convnet(1 -> 8 -> 16 -> 1, blocks: 1, act: leaky_relu);
            energy e = f(x);
        }",
    )
    .unwrap();
    let (plans, _) = ebmc::plan(&compiled.program).unwrap();
    let names: Vec<String> = plans[0].lowered.params.iter().map(|p| p.name.clone()).collect();
    assert!(names.iter().all(|n| n.starts_with("f.")), "{names:?}");
    assert!(!names.is_empty());
}

#[test]
fn sizes_too_large_to_count_are_refused_by_the_limits_not_a_panic() {
    let huge = "4294967296";
    for energy in ["sum(flatten(x))", "sum(reshape(x, [2, 2]))", "sum(x, axis: 0) @ flatten(x)"] {
        let source = format!("model m {{ visible x : real[{huge}, {huge}, {huge}]; energy e = {energy}; }}");
        let codes: Vec<&str> = ebmc::compile(&source).unwrap_err().iter().map(|d| d.code).collect();
        assert!(!codes.is_empty(), "{energy}");
        assert!(codes.iter().all(|c| c.starts_with("E0")), "{energy}: {codes:?}");
    }
}

#[test]
fn powers_of_an_image_are_recognised_through_flatten_and_reshape() {
    let codes = |energy: &str| -> Vec<&'static str> {
        let source = format!("model m {{ visible x : real[1, 8, 8]; energy e = {energy}; }}");
        match ebmc::check_source(&source) {
            Ok(warnings) => warnings.iter().map(|d| d.code).collect(),
            Err(errors) => errors.iter().map(|d| d.code).collect(),
        }
    };
    for proved in ["0.5 * sum(square(x))", "0.5 * (flatten(x) @ flatten(x))", "0.5 * sum(square(reshape(x, [8, 8])))"] {
        assert_eq!(codes(proved), Vec::<&str>::new(), "{proved}");
    }
    assert_eq!(codes("-0.5 * (flatten(x) @ flatten(x))"), ["E0401"]);
    assert_eq!(codes("-0.5 * sum(square(reshape(x, [64])))"), ["E0401"]);
}
