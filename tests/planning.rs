//! Unit tests of the analysis behind `ebmc graph` and `ebmc plan`: degrees,
//! bipartiteness over every component, colouring, conditionals and free
//! energies in closed form.

use ebmc::graph::{colour, lattice_adjacency, program_to_graph, two_colour, Degree};
use ebmc::plan::{Kernel, Plan};
use ebmc::program::{GraphConst, Lattice};

fn model(body: &str) -> ebmc::program::Model {
    let src = format!("model m {{\n{body}\n}}");
    let c = ebmc::compile(&src).unwrap_or_else(|d| panic!("{}", ebmc::diagnostic::render_plain("m.ebm", &src, &d)));
    c.program.models["m"].clone()
}

fn plan(body: &str) -> Plan {
    let m = model(body);
    let g = program_to_graph(&m);
    ebmc::plan::graph_to_plan(&g, None).unwrap_or_else(|e| panic!("{e:?}")).0
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
    let matmuls = lowered.ir.cone(g).iter().filter(|id| matches!(lowered.ir.node(**id).op, ebmc::ir::Op::MatMul(..))).count();
    assert_eq!(matmuls, 1);
}

#[test]
fn spin_and_categorical_latents_sum_out_with_their_own_rules() {
    let p = plan("visible x : real[2]; hidden s : spin[3]; param W : real[2, 3]; energy e = 0.5 * sum(square(x)) - x @ W @ s;");
    assert_eq!(p.summed_out.unwrap().free_energy, "F(x) = 0.5 * sum(square(x)) - sum(log2cosh(x @ W))");
    let p = plan("visible x : real[2]; hidden z : categorical(3); param W : real[2, 3]; energy e = 0.5 * sum(square(x)) - x @ W @ z;");
    assert_eq!(p.summed_out.unwrap().free_energy, "F(x) = 0.5 * sum(square(x)) - logsumexp(x @ W)");
}

#[test]
fn dense_self_coupling_falls_back_to_sequential_gibbs() {
    let p = plan("visible s : spin[5]; param W : real[5, 5]; energy e = -(s @ W @ s);");
    assert_eq!(p.variables[0].kernel, Kernel::SequentialGibbs);
    let p = plan("visible s : spin[9]; const A = grid(3, 3); param W : real[9, 9]; energy e = -(s @ (A * W) @ s);");
    assert_eq!(p.variables[0].kernel, Kernel::SequentialGibbs, "a learned matrix inside the coupling has no known sparsity");
    let p = plan("visible s : spin[9]; const A = grid(3, 3); param J : real; energy e = -(J * (s @ A @ s));");
    assert!(matches!(p.variables[0].kernel, Kernel::ChromaticGibbs { colours: 2, .. }));
}
