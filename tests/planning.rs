//! Unit tests of the analysis behind `ebmc graph` and `ebmc plan`: degrees,
//! bipartiteness over every component, colouring, conditionals and free
//! energies in closed form.

use ebmc::analysis::graph::{Degree, colour, lattice_adjacency, program_to_graph, two_colour};
use ebmc::analysis::plan::{Kernel, Plan};
use ebmc::analysis::program::{GraphConst, Lattice};

fn model(body: &str) -> ebmc::analysis::program::Model {
    let src = format!("model m {{\n{body}\n}}");
    let c =
        ebmc::compile(&src).unwrap_or_else(|d| panic!("{}", ebmc::front::diagnostic::render_plain("m.ebm", &src, &d)));
    c.program.models["m"].clone()
}

fn plan(body: &str) -> Plan {
    let m = model(body);
    let g = program_to_graph(&m);
    ebmc::analysis::plan::graph_to_plan(&g, None).unwrap_or_else(|e| panic!("{e:?}")).0
}

/// Degree of energy `expr` in `var`, with a fixed set of declarations.
fn degree(expr: &str, var: &str) -> Degree {
    let m = model(&format!(
        "visible b : binary[4]; visible s : spin[4]; visible y : categorical(3); visible x : real[4];
         param W : real[4, 4]; param u : real[4]; param t : real; net f = mlp(4 -> 8 -> 1);
         const A = chain(4);
         energy e = {expr};
         energy keep = t * (sum(b) + sum(s) + sum(y) + sum(x) + f(x)) + sum(u) + sum(W) + sum(A);"
    ));
    let g = program_to_graph(&m);
    g.factors[0].1.iter().find(|(v, _)| v == var).map_or(Degree::Constant, |(_, d)| *d)
}

#[test]
fn degrees_follow_each_domains_algebra() {
    let cases = [
        ("u @ x", "x", Degree::Linear),
        ("x @ W @ x", "x", Degree::Quadratic),
        ("sum(square(x - u))", "x", Degree::Quadratic),
        ("sum(x * x)", "x", Degree::Quadratic),
        ("sum(exp(x))", "x", Degree::Other),
        ("f(x)", "x", Degree::Other),
        ("f(x)", "b", Degree::Constant),
        ("sum(x) / t", "x", Degree::Linear),
        ("t / sum(x)", "x", Degree::Other),
        ("sum(x ^ 2)", "x", Degree::Quadratic),
        ("sum(x ^ 3)", "x", Degree::Other),
        // binary units: b_i^2 = b_i
        ("sum(square(b))", "b", Degree::Linear),
        ("b @ b", "b", Degree::Linear),
        ("sum(b * b * u)", "b", Degree::Linear),
        ("b @ W @ b", "b", Degree::Quadratic),
        ("b @ A @ b", "b", Degree::Quadratic),
        ("sum(softplus(b @ W))", "b", Degree::Other),
        // spins: s_i^2 = 1
        ("sum(square(s))", "s", Degree::Linear),
        ("s @ W @ s", "s", Degree::Quadratic),
        ("b @ W @ s", "s", Degree::Linear),
        ("b @ W @ s", "b", Degree::Linear),
        // one-hot: y_k y_l = 0 for k != l
        ("y @ y", "y", Degree::Linear),
        ("sum(y * y)", "y", Degree::Linear),
    ];
    for (expr, var, expected) in cases {
        assert_eq!(degree(expr, var), expected, "degree of `{expr}` in {var}");
    }
}

#[test]
fn two_colouring_visits_every_component() {
    // Component 1: 0-1 (bipartite). Component 2: 2-3-4 triangle (odd cycle).
    let adjacency = vec![vec![1], vec![0], vec![3, 4], vec![2, 4], vec![2, 3]];
    assert!(two_colour(&adjacency).is_none(), "the odd cycle is in the second component");
    let two_components = vec![vec![1], vec![0], vec![3], vec![2]];
    let c = two_colour(&two_components).unwrap();
    assert_ne!(c[0], c[1]);
    assert_ne!(c[2], c[3]);
    let c = colour(&adjacency);
    for (u, ns) in adjacency.iter().enumerate() {
        for w in ns {
            assert_ne!(c[u], c[*w]);
        }
    }
    assert_eq!(c.iter().max(), Some(&2), "a triangle needs exactly 3 colours");
}

fn colours_of(lattice: Lattice, rows: usize, cols: usize, periodic: bool) -> usize {
    let adjacency = lattice_adjacency(&GraphConst { lattice, rows, cols, periodic });
    let c = colour(&adjacency);
    for (u, ns) in adjacency.iter().enumerate() {
        for w in ns {
            assert_ne!(c[u], c[*w], "proper colouring");
        }
    }
    c.iter().max().unwrap() + 1
}

#[test]
fn lattices_get_their_chromatic_numbers() {
    assert_eq!(colours_of(Lattice::Grid, 32, 32, false), 2);
    assert_eq!(colours_of(Lattice::Grid, 32, 32, true), 2);
    assert_eq!(colours_of(Lattice::Grid, 5, 5, true), 3, "an odd periodic ring is not bipartite");
    assert_eq!(colours_of(Lattice::Triangular, 6, 6, true), 3);
    assert_eq!(colours_of(Lattice::Triangular, 4, 5, false), 3);
    assert_eq!(colours_of(Lattice::Chain, 1, 7, false), 2);
    assert_eq!(colours_of(Lattice::Complete, 1, 5, false), 5);
    let grid = lattice_adjacency(&GraphConst { lattice: Lattice::Grid, rows: 4, cols: 4, periodic: true });
    assert!(grid.iter().all(|n| n.len() == 4), "periodic grid: 4 neighbours each");
    let tri = lattice_adjacency(&GraphConst { lattice: Lattice::Triangular, rows: 6, cols: 6, periodic: true });
    assert!(tri.iter().all(|n| n.len() == 6), "periodic triangular: 6 neighbours each");
}

#[test]
fn two_separate_rbms_are_bipartite_across_components() {
    let p = plan(
        "visible v1 : binary[3]; hidden h1 : binary[2]; visible v2 : binary[3]; hidden h2 : binary[2];
         param W1 : real[3, 2]; param W2 : real[3, 2];
         energy a = -(v1 @ W1 @ h1); energy b = -(v2 @ W2 @ h2);",
    );
    let blocks: Vec<&Kernel> = p.variables.iter().map(|v| &v.kernel).collect();
    assert!(blocks.iter().all(|k| matches!(k, Kernel::BlockGibbs { blocks: 2, .. })), "{blocks:?}");
    assert!(p.variables.iter().all(|v| v.reason.starts_with("bipartite")), "{:#?}", p.variables);
}

#[test]
fn odd_cycle_of_blocks_needs_three_colours() {
    let p = plan(
        "visible a : binary[2]; visible b : binary[2]; visible c : binary[2];
         param P : real[2, 2]; param Q : real[2, 2]; param R : real[2, 2];
         energy ab = -(a @ P @ b); energy bc = -(b @ Q @ c); energy ca = -(c @ R @ a);",
    );
    for v in &p.variables {
        assert!(matches!(v.kernel, Kernel::BlockGibbs { blocks: 3, .. }), "{:?}", v.kernel);
        assert!(v.reason.contains("not bipartite"));
    }
}

#[test]
fn rbm_conditional_and_free_energy_are_the_textbook_ones() {
    let body = "visible v : binary[6]; hidden h : binary[4];
                param W : real[6, 4]; param b : real[6]; param c : real[4];
                energy coupling = -(v @ W @ h); energy vbias = -(b @ v); energy hbias = -(c @ h);";
    let p = plan(body);
    let h = p.variables.iter().find(|v| v.name == "h").unwrap();
    assert_eq!(h.conditional.as_deref(), Some("p(h = 1 | rest) = sigmoid(c + v @ W)"));
    let v = p.variables.iter().find(|v| v.name == "v").unwrap();
    assert_eq!(v.conditional.as_deref(), Some("p(v = 1 | rest) = sigmoid(b + W @ h)"));
    let m = p.summed_out.unwrap();
    assert_eq!(m.free_energy, "F(v) = -(b @ v + sum(softplus(c + v @ W)))");

    // The conditional's IR holds exactly one matrix product.
    let model = model(body);
    let mut lowered = ebmc::ir::program_to_ir(&model);
    let g = lowered.ir.grad(lowered.total, "h").unwrap();
    let matmuls =
        lowered.ir.cone(g).iter().filter(|id| matches!(lowered.ir.node(**id).op, ebmc::ir::Op::MatMul(..))).count();
    assert_eq!(matmuls, 1);
}

#[test]
fn spin_and_categorical_latents_sum_out_with_their_own_rules() {
    let p = plan(
        "visible x : real[2]; hidden s : spin[3]; param W : real[2, 3]; energy e = 0.5 * sum(square(x)) - x @ W @ s;",
    );
    assert_eq!(p.summed_out.unwrap().free_energy, "F(x) = 0.5 * sum(square(x)) - sum(log2cosh(x @ W))");
    let p = plan(
        "visible x : real[2]; hidden z : categorical(3); param W : real[2, 3]; energy e = 0.5 * sum(square(x)) - x @ W @ z;",
    );
    assert_eq!(p.summed_out.unwrap().free_energy, "F(x) = 0.5 * sum(square(x)) - logsumexp(x @ W)");
}

#[test]
fn dense_self_coupling_falls_back_to_sequential_gibbs() {
    let p = plan("visible s : spin[5]; param W : real[5, 5]; energy e = -(s @ W @ s);");
    assert_eq!(p.variables[0].kernel, Kernel::SequentialGibbs);
    let p = plan("visible s : spin[9]; const A = grid(3, 3); param W : real[9, 9]; energy e = -(s @ (A * W) @ s);");
    assert_eq!(
        p.variables[0].kernel,
        Kernel::SequentialGibbs,
        "a learned matrix inside the coupling has no known sparsity"
    );
    let p = plan("visible s : spin[9]; const A = grid(3, 3); param J : real; energy e = -(J * (s @ A @ s));");
    assert!(matches!(p.variables[0].kernel, Kernel::ChromaticGibbs { colours: 2, .. }));
}

/// The planner's verdict on the normalisability of `x : real[2]` under `energy`:
/// `Ok(codes of warnings)` or `Err(codes of errors)`.
fn verdict(energy: &str) -> Result<Vec<&'static str>, Vec<&'static str>> {
    let src = format!(
        "model m {{ visible x : real[2]; visible y : categorical(3); param W : real[2, 2]; param mu : real[2]; net f = mlp(2 -> 8 -> 1, act: swish); net g = mlp(2 -> 8 -> 3, act: tanh);\n energy e = {energy};\n energy keep = 0 * (sum(W) + sum(mu) + sum(y) + f(x) + sum(g(x))); }}"
    );
    let c =
        ebmc::compile(&src).unwrap_or_else(|d| panic!("{}", ebmc::front::diagnostic::render_plain("m.ebm", &src, &d)));
    let codes = |d: Vec<ebmc::front::diagnostic::Diagnostic>| {
        d.into_iter().filter(|d| d.code.starts_with("E04") || d.code.starts_with("W04")).map(|d| d.code).collect()
    };
    ebmc::plan(&c.program).map(|(_, w)| codes(w)).map_err(codes)
}

#[test]
fn normalisability_follows_the_sign_and_order_of_the_leading_term() {
    // Proved: a positive even power outgrows everything else.
    for e in [
        "0.5 * sum(square(x))",
        "sum(x^4)",
        "sum(x^4) - sum(square(x))",
        "0.5 * sum(square(x - mu)) - mu @ x",
        "0.5 * sum(square(x - 1)) - 0.25 * sum(square(x))",
        "0.001 * sum(square(x)) - (g(x) @ y) - f(x)",
        "0.01 * sum(square(x)) + mu @ log(1 + 0.5 * square(W @ x))",
        "0.1 * sum(square(x)) + sum(exp(x))",
        "0.5 * (x @ x) - mu @ x",
        "sum(abs(x - mu))",
    ] {
        assert_eq!(verdict(e), Ok(vec![]), "{e}");
    }
    // Refused: the leading term falls, or nothing that varies with x grows.
    for e in [
        "-0.5 * sum(square(x))",
        "-0.5 * sum(square(x)) + mu @ x",
        "0.5 * sum(square(x)) - 1.0 * sum(square(x))",
        "sum(x^3) + 0.5 * sum(square(x))",
        "sum(g(x))",
        "sum(tanh(x)) + sum(sigmoid(W @ x))",
        "-(x @ x)",
        "-sum(abs(x)) + sum(tanh(x))",
    ] {
        assert_eq!(verdict(e), Err(vec!["E0401"]), "{e}");
    }
    // Unproved: no confining term, or one that may be outgrown.
    for e in ["f(x)", "sum(exp(x))", "0.1 * sum(square(x)) - sum(square(W @ x))", "0.1 * sum(square(x)) - x @ W @ x"] {
        assert_eq!(verdict(e), Ok(vec!["W0401"]), "{e}");
    }
}

#[test]
fn w0401_names_the_term_in_the_way_and_suggests_nothing_the_model_has() {
    let src =
        "model m { visible x : real[2]; param W : real[2, 2]; energy e = 0.1 * sum(square(x)) - sum(square(W @ x)); }";
    let c = ebmc::compile(src).unwrap();
    let (_, warnings) = ebmc::plan(&c.program).unwrap();
    let text = ebmc::front::diagnostic::render_plain("m.ebm", src, &warnings);
    assert!(
        text.contains("W0401")
            && text.contains("`-sum(square(W @ x))` may fall as fast as `0.1 * sum(square(x))` rises"),
        "{text}"
    );
    assert!(!text.contains("polynomial") && !text.contains("0.01 * sum(square(x))"), "{text}");
    // x^4 alone is proved: no warning calls it "not a polynomial".
    let c = ebmc::compile("model m { visible x : real[2]; energy e = sum(x^4); }").unwrap();
    assert!(ebmc::plan(&c.program).unwrap().1.is_empty());
}

#[test]
fn score_matching_on_a_bounded_real_warns() {
    for objective in ["sm", "dsm(sigma: 0.1)", "ssm"] {
        let src = format!(
            "model m {{ visible x : real[2] in [0, 1]; param a : real[2]; energy e = 0.5 * sum(square(x)) - a @ x; }}\ntrain m {{ data = toy(\"moons\", n: 10) -> x; objective = {objective}; }}"
        );
        let c = ebmc::compile(&src).unwrap();
        let (_, warnings) = ebmc::plan(&c.program).unwrap();
        assert_eq!(warnings.iter().map(|w| w.code).collect::<Vec<_>>(), vec!["W0403"], "{objective}");
    }
    let src = "model m { visible x : real[2]; param a : real[2]; energy e = 0.5 * sum(square(x)) - a @ x; }\ntrain m { data = toy(\"moons\", n: 10) -> x; objective = sm; }";
    assert!(ebmc::plan(&ebmc::compile(src).unwrap().program).unwrap().1.is_empty());
}

/// Every printed conditional and free energy parses and checks as an energy
/// over the same declarations (functions the planner prints but the
/// language lacks aside): no `-1 @ v`, no `x @ 1`.
#[test]
fn printed_expressions_are_valid_syntax_with_negation_as_negation() {
    let decls = "visible v : binary[3]; visible y : categorical(4); hidden h : binary[2]; param a : real[4]; param M : real[4, 3]; param W : real[3, 2];";
    for energy in [
        "-(a @ y) - sum(M @ v) - y @ M @ v - v @ W @ h",
        "-(a @ y) - y @ M @ (-v) + sum(-(W.T @ v))",
        "-sum(M @ v) - sum(y * (M @ v)) - sum(W @ h)",
    ] {
        let p = plan(&format!("{decls} energy e = {energy};"));
        let mut printed: Vec<String> = p
            .variables
            .iter()
            .filter_map(|v| v.conditional.clone())
            .map(|c| c.split_once(") = ").unwrap().1.to_string())
            .collect();
        printed.extend(p.summed_out.iter().map(|m| m.free_energy.split_once(") = ").unwrap().1.to_string()));
        for text in printed {
            assert!(!text.contains("@ -") && !text.contains("- -") && !text.contains("1 @"), "{energy}: {text}");
            // Strip the outer sigmoid/softmax and check it as an expression.
            let inner = text.trim_start_matches("sigmoid(").trim_start_matches("softmax(");
            let inner = if inner.len() < text.len() { &inner[..inner.len() - 1] } else { inner };
            let inner = inner.replace("softplus(", "sigmoid(").replace("sum_rows(", "sum(");
            let src = format!(
                "model m {{ {decls} energy e = sum({inner}) + 0 * (sum(a) + sum(M) + sum(W) + sum(v) + sum(y) + sum(h)); }}"
            );
            ebmc::front::parse::source_to_ast(&src)
                .unwrap_or_else(|e| panic!("{energy}: `{text}` does not parse: {e:?}"));
        }
    }
}

#[test]
fn objective_lists_only_the_options_that_apply() {
    let rbm = "model m { visible v : binary[4]; hidden h : binary[2]; param W : real[4, 2]; energy e = -(v @ W @ h); }\ntrain m { data = csv(\"d.csv\") -> v; objective = pcd(k: 2); }";
    let (plans, _) = ebmc::plan(&ebmc::compile(rbm).unwrap().program).unwrap();
    let text = plans[0].to_text();
    assert!(text.contains("objective pcd(alpha: 0, chains: 100, k: 2)"), "{text}");
    for langevin_only in ["buffer", "reinit", "step", "noise"] {
        assert!(!text.contains(langevin_only), "{text}");
    }
    // Not Gaussian (a Gaussian would be drawn exactly, with no Langevin options).
    let continuous = "model m { visible x : real[2]; energy e = 0.5 * sum(square(x)) + 0.1 * sum(x ^ 4); }\ntrain m { data = toy(\"moons\", n: 10) -> x; objective = pcd(k: 2); }";
    let (plans, _) = ebmc::plan(&ebmc::compile(continuous).unwrap().program).unwrap();
    assert!(plans[0].to_text().contains("buffer: 10000"), "{}", plans[0].to_text());
}

#[test]
fn learned_potts_and_cubic_lattices_plan_chromatic_gibbs() {
    let potts = plan(
        "const A = grid(4, 4, periodic: true); visible y : categorical(3)[16]; param K : real[3, 3];
         energy e = -0.5 * sum(A * (y @ K @ y.T));",
    );
    assert!(matches!(potts.variables[0].kernel, Kernel::ChromaticGibbs { colours: 2, .. }), "{}", potts.to_text());
    let cubic = plan(
        "const G = grid(4, 4, periodic: true); const Z = chain(4, periodic: true); visible s : spin[16, 4];
         param J : real; energy e = -J * sum(s * (G @ s)) - J * sum(s * (s @ Z));",
    );
    let Kernel::ChromaticGibbs { colours: 2, unit_colours, .. } = &cubic.variables[0].kernel else {
        panic!("{}", cubic.to_text())
    };
    // Unit (i, a) is s[i, a]: neighbours in the plane (same a) and along z (same i) differ.
    let c = |i: usize, a: usize| unit_colours[i * 4 + a];
    assert_ne!(c(0, 0), c(1, 0));
    assert_ne!(c(0, 0), c(0, 1));
    assert_ne!(c(0, 0), c(0, 3), "z is periodic");
    // Both lattices on one product couple diagonally; a K over the sites' axis is dense.
    let both =
        plan("const G = chain(4); const Z = chain(3); visible s : spin[4, 3]; energy e = -sum(s * (G @ s @ Z));");
    let Kernel::ChromaticGibbs { colours, .. } = both.variables[0].kernel else { panic!("{}", both.to_text()) };
    assert!(colours >= 4, "the strong product of two paths has 2x2 cliques: {colours} colours");
    let dense = plan(
        "const A = chain(3); visible y : categorical(3)[3]; param K : real[3, 3]; energy e = -sum(A * (y @ K @ y.T));",
    );
    assert!(matches!(dense.variables[0].kernel, Kernel::SequentialGibbs), "{}", dense.to_text());
}

/// Fresh samples default to the objective's `k` only when most of training's
/// Langevin chains restart from noise: the boundary is `reinit` 1/2, and a
/// Gibbs-sampled model's persistent chains never are short-run.
#[test]
fn short_run_chains_set_the_default_sweeps_of_fresh_samples() {
    let continuous = |reinit: f64| {
        format!(
            "model m {{ visible x : real[2] in [0, 1]; net f = mlp(2 -> 4 -> 1); energy e = f(x); }}\ntrain m {{ data = toy(\"moons\", n: 10) -> x; objective = pcd(k: 7, reinit: {reinit}); }}"
        )
    };
    let short_run = |src: &str| {
        let (plans, _) = ebmc::plan(&ebmc::compile(src).unwrap().program).unwrap();
        (plans[0].short_run.map(|s| s.sweeps), plans[0].to_text())
    };
    for (reinit, want) in [(0.99, Some(7)), (0.5, Some(7)), (0.49, None), (0.05, None)] {
        let (sweeps, text) = short_run(&continuous(reinit));
        assert_eq!(sweeps, want, "reinit {reinit}: {text}");
        assert_eq!(text.contains("fresh samples: 7 sweeps from noise"), want.is_some(), "{text}");
    }
    let rbm = "model m { visible v : binary[4]; hidden h : binary[2]; param W : real[4, 2]; energy e = -(v @ W @ h); }\ntrain m { data = csv(\"d.csv\") -> v; objective = pcd(k: 2, reinit: 0.9); }";
    assert_eq!(short_run(rbm).0, None);
}
