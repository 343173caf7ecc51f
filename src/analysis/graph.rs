//! Stage: checked program → factor graph (`program_to_graph`). One node per
//! variable, one per energy term, an edge where a term mentions a variable,
//! labelled with the term's degree in that variable. Degrees come from a
//! symbolic walk of the checked expression that knows each domain's algebra:
//! binary and one-hot units satisfy `x^2 = x`, spins `s^2 = 1`, so products of
//! a unit with itself never couple two different units.

use crate::analysis::program::{ConstValue, Domain, Func, GraphConst, Model, TExpr, TExprKind, Variable, shape_str};
use crate::front::ast::{BinOp, Role};
use petgraph::graph::{NodeIndex, UnGraph};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write;

/// How an energy term depends on a variable: its polynomial degree in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Degree {
    /// Does not vary with the variable.
    Constant,
    /// Linear in the variable.
    Linear,
    /// Quadratic in the variable.
    Quadratic,
    /// Not a polynomial of degree ≤ 2 (or not provably one).
    Other,
}

impl Degree {
    /// The degree's name in printed graphs.
    pub fn word(self) -> &'static str {
        match self {
            Degree::Constant => "constant",
            Degree::Linear => "linear",
            Degree::Quadratic => "quadratic",
            Degree::Other => "other",
        }
    }

    /// Whether units of the variable interact with each other through this term.
    pub fn couples_units(self) -> bool {
        self >= Degree::Quadratic
    }
}

/// How a variable is coloured for drawing: its Gibbs block, or the number of
/// colours its units were split into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColourClass {
    /// The variable's Gibbs block, from 0.
    Block(usize),
    /// The number of colours its units were split into.
    Units(usize),
}

/// A node of the factor graph.
#[derive(Debug, Clone, Serialize)]
pub enum GraphNode {
    /// A variable, by name.
    Variable(String),
    /// An energy term, by name.
    Factor(String),
}

/// The factor graph of one model, with the petgraph graph for algorithms and
/// plain, ordered data for printing.
#[derive(Debug, Clone)]
pub struct FactorGraph {
    /// The model the graph is of.
    pub model: Model,
    /// Variable and energy-term nodes; an edge joins a term to each variable it mentions, weighted by the term's degree in it.
    pub graph: UnGraph<GraphNode, Degree>,
    /// Each variable's node, by name.
    pub variable_nodes: BTreeMap<String, NodeIndex>,
    /// Per energy term (declaration order): (variable, degree) in variable declaration order.
    pub factors: Vec<(String, Vec<(String, Degree)>)>,
    /// Per energy term: the variable sets of its additive parts. Two variables
    /// interact only when one part holds both (`-(b @ v) - c @ h` couples nothing).
    pub couplings: Vec<Vec<BTreeSet<String>>>,
}

/// Builds the factor graph of `model`.
pub fn program_to_graph(model: &Model) -> FactorGraph {
    let mut graph = UnGraph::new_undirected();
    let mut variable_nodes = BTreeMap::new();
    for v in &model.variables {
        variable_nodes.insert(v.name.clone(), graph.add_node(GraphNode::Variable(v.name.clone())));
    }
    let mut factors = Vec::new();
    let mut couplings = Vec::new();
    for e in &model.energies {
        let mut parts = Vec::new();
        additive_parts(&e.expr, &mut parts);
        couplings.push(
            parts
                .iter()
                .map(|p| {
                    model
                        .variables
                        .iter()
                        .filter(|v| mentions(p, &v.name) && degree(p, v, model).deg > 0)
                        .map(|v| v.name.clone())
                        .collect()
                })
                .collect(),
        );
        let f = graph.add_node(GraphNode::Factor(e.name.clone()));
        let mut edges = Vec::new();
        for v in &model.variables {
            if mentions(&e.expr, &v.name) {
                let d = degree(&e.expr, v, model).degree();
                graph.add_edge(f, variable_nodes[&v.name], d);
                edges.push((v.name.clone(), d));
            }
        }
        factors.push((e.name.clone(), edges));
    }
    FactorGraph { model: model.clone(), graph, variable_nodes, factors, couplings }
}

/// Splits a term into parts that add up to it: through `+`, `-`, negation,
/// sums and scaling by scalars that mention no variable.
fn additive_parts<'a>(e: &'a TExpr, out: &mut Vec<&'a TExpr>) {
    let has_var = |x: &TExpr| {
        let mut found = false;
        x.walk(&mut |n| found |= matches!(n.kind, TExprKind::Var(_)));
        found
    };
    match &e.kind {
        TExprKind::Binary { op: BinOp::Add | BinOp::Sub, lhs, rhs } => {
            additive_parts(lhs, out);
            additive_parts(rhs, out);
        }
        TExprKind::Binary { op: BinOp::Mul, lhs, rhs } if lhs.shape.is_empty() && !has_var(lhs) => {
            additive_parts(rhs, out)
        }
        TExprKind::Binary { op: BinOp::Mul | BinOp::Div, lhs, rhs } if rhs.shape.is_empty() && !has_var(rhs) => {
            additive_parts(lhs, out)
        }
        TExprKind::Neg(x) | TExprKind::Func { func: Func::Sum | Func::Mean, arg: x } => additive_parts(x, out),
        _ => out.push(e),
    }
}

fn mentions(e: &TExpr, var: &str) -> bool {
    let mut found = false;
    e.walk(&mut |n| found |= matches!(&n.kind, TExprKind::Var(v) if v == var));
    found
}

/// Degree of an expression in one variable. `aligned`: entry i depends only on
/// entry i of the variable (elementwise); `cross`: a product of two different
/// units of the variable may occur.
#[derive(Debug, Clone, Copy)]
struct Poly {
    deg: u8,
    aligned: bool,
    cross: bool,
}

const CONST: Poly = Poly { deg: 0, aligned: false, cross: false };
const OTHER: Poly = Poly { deg: 3, aligned: false, cross: true };

impl Poly {
    fn degree(self) -> Degree {
        match self.deg {
            0 => Degree::Constant,
            1 => Degree::Linear,
            2 => Degree::Quadratic,
            _ => Degree::Other,
        }
    }

    /// Product of two factors that both vary with the variable.
    fn times(self, other: Poly) -> Poly {
        if self.deg == 0 {
            return other;
        }
        if other.deg == 0 {
            return self;
        }
        let diagonal = self.aligned && other.aligned && !self.cross && !other.cross;
        Poly { deg: (self.deg + other.deg).min(3), aligned: diagonal, cross: !diagonal }
    }
}

fn degree(e: &TExpr, var: &Variable, model: &Model) -> Poly {
    let p = raw_degree(e, var, model);
    // x^2 = x for binary and one-hot units, s^2 = 1 for spins: a product of a
    // unit with itself is linear again.
    if var.domain.is_discrete() && p.deg >= 2 && !p.cross { Poly { deg: 1, ..p } } else { p }
}

fn raw_degree(e: &TExpr, var: &Variable, model: &Model) -> Poly {
    let d = |x: &TExpr| degree(x, var, model);
    match &e.kind {
        TExprKind::Var(v) if *v == var.name => Poly { deg: 1, aligned: true, cross: false },
        TExprKind::Var(_) | TExprKind::Param(_) | TExprKind::Const(_) | TExprKind::Number(_) => CONST,
        TExprKind::Neg(x) => d(x),
        TExprKind::Transpose(x) => Poly { aligned: false, ..d(x) },
        TExprKind::Binary { op, lhs, rhs } => {
            let (l, r) = (d(lhs), d(rhs));
            match op {
                BinOp::Add | BinOp::Sub => Poly {
                    deg: l.deg.max(r.deg),
                    aligned: (l.aligned || l.deg == 0) && (r.aligned || r.deg == 0) && e.shape == var.shape,
                    cross: l.cross || r.cross,
                },
                BinOp::Mul => Poly { aligned: l.times(r).aligned && e.shape == var.shape, ..l.times(r) },
                BinOp::Div if r.deg == 0 => l,
                BinOp::Div => OTHER,
                BinOp::MatMul => {
                    if l.deg == 0 || r.deg == 0 {
                        let p = if l.deg == 0 { r } else { l };
                        Poly { aligned: false, ..p }
                    } else {
                        // v @ v over one vector pairs each unit with itself; anything else pairs different units.
                        let dot = lhs.shape.len() == 1 && rhs.shape.len() == 1;
                        let p = l.times(r);
                        Poly { aligned: false, cross: !(dot && p.aligned), ..p }
                    }
                }
                BinOp::Pow => match (&rhs.kind, r.deg) {
                    (_, d) if d > 0 => OTHER,
                    (TExprKind::Number(n), _) if *n == 0.0 || l.deg == 0 => CONST,
                    (TExprKind::Number(n), _) if *n == 1.0 => l,
                    (TExprKind::Number(n), _) if *n == 2.0 => l.times(l),
                    _ => OTHER,
                },
            }
        }
        TExprKind::Func { func, arg } => {
            let a = d(arg);
            if a.deg == 0 {
                return CONST;
            }
            match func {
                Func::Square => a.times(a),
                Func::Sum | Func::Mean => Poly { aligned: false, ..a },
                _ => OTHER,
            }
        }
        TExprKind::Net { arg, .. } => {
            if d(arg).deg == 0 {
                CONST
            } else {
                OTHER
            }
        }
        // Row-major order is kept, so entry i still holds entry i when the shape is the variable's own.
        TExprKind::Reshape(x) => {
            let p = d(x);
            Poly { aligned: p.aligned && e.shape == var.shape, ..p }
        }
        TExprKind::SumAxis { arg, .. } | TExprKind::MeanAxis { arg, .. } => Poly { aligned: false, ..d(arg) },
    }
}

impl FactorGraph {
    /// The model's variable `name`; it must be one of the graph's.
    pub fn variable(&self, name: &str) -> &Variable {
        // Cannot fire: the graph's variable names are the model's own.
        self.model.variable(name).expect("graph variables come from the model")
    }

    /// Degree of the whole energy in `var`: the highest over its terms.
    pub fn total_degree(&self, var: &str) -> Degree {
        self.factors
            .iter()
            .flat_map(|(_, e)| e.iter())
            .filter(|(v, _)| v == var)
            .map(|(_, d)| *d)
            .max()
            .unwrap_or(Degree::Constant)
    }

    /// Terms whose units of `var` interact with each other.
    pub fn self_couplings(&self, var: &str) -> Vec<&str> {
        self.factors
            .iter()
            .filter(|(_, e)| e.iter().any(|(v, d)| v == var && d.couples_units()))
            .map(|(f, _)| f.as_str())
            .collect()
    }

    /// Variables that interact with `var`: some additive part of a term varies with both.
    pub fn neighbours(&self, var: &str) -> BTreeSet<String> {
        self.couplings
            .iter()
            .flatten()
            .filter(|part| part.contains(var))
            .flat_map(|part| part.iter().filter(|n| *n != var).cloned())
            .collect()
    }

    /// The terms through which `a` and `b` interact.
    pub fn coupling_terms(&self, a: &str, b: &str) -> Vec<&str> {
        self.factors
            .iter()
            .zip(&self.couplings)
            .filter(|(_, parts)| parts.iter().any(|p| p.contains(a) && p.contains(b)))
            .map(|((f, _), _)| f.as_str())
            .collect()
    }

    /// The unit graph of `var` when every self-coupling goes through graph
    /// constants (beside scalars, and for a categorical variable square
    /// parameters over its categories, a learned K×K interaction): units
    /// interact only along the constants' edges. A constant over all the
    /// units adds its edges; one over an axis of a matrix-shaped variable
    /// (`G @ s`, `s @ Z` for `s : spin[16, 4]`) adds them along that axis, and
    /// a part with constants on both axes couples along both at once (the
    /// strong product). Returns the neighbour lists and the constants'
    /// names; `None` when some coupling is dense or not quadratic.
    pub fn unit_graph(&self, var: &str) -> Option<(Vec<Vec<usize>>, Vec<String>)> {
        let v = self.variable(var);
        let units = units(v);
        let categories = match v.domain {
            Domain::Categorical { categories } => Some(categories),
            _ => None,
        };
        // Axes whose lengths a lattice may act along: a matrix of binary or spin units.
        let axes: &[usize] = if categories.is_none() && v.shape.len() == 2 { &v.shape } else { &[] };
        let mut edges: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); units];
        let mut names = BTreeSet::new();
        for name in self.self_couplings(var) {
            // Cannot fire: factors are built one per energy term, under its name.
            let energy = self.model.energies.iter().find(|e| e.name == name).expect("factor is an energy");
            let mut parts = Vec::new();
            additive_parts(&energy.expr, &mut parts);
            // Only the parts that couple units matter; a field term beside them does not.
            for part in parts.into_iter().filter(|p| degree(p, v, &self.model).degree().couples_units()) {
                if degree(part, v, &self.model).degree() != Degree::Quadratic {
                    return None;
                }
                let mut ok = true;
                let mut whole: Vec<&GraphConst> = Vec::new();
                let mut along: [Vec<&GraphConst>; 2] = [Vec::new(), Vec::new()];
                part.walk(&mut |n| match &n.kind {
                    TExprKind::Const(c) => match self.model.constant(c).map(|c| &c.value) {
                        Some(ConstValue::Graph(g)) if g.units() == units => {
                            names.insert(c.clone());
                            whole.push(g);
                        }
                        Some(ConstValue::Graph(g)) if axes.contains(&g.units()) => {
                            names.insert(c.clone());
                            // A square variable leaves the axis open: both are assumed.
                            for (a, len) in axes.iter().enumerate() {
                                if *len == g.units() {
                                    along[a].push(g);
                                }
                            }
                        }
                        _ => ok &= n.shape.is_empty(),
                    },
                    TExprKind::Param(_) if categories.is_some_and(|k| n.shape == [k, k] && k != units) => {}
                    TExprKind::Param(_) | TExprKind::Var(_) if !n.shape.is_empty() => {
                        ok &= matches!(&n.kind, TExprKind::Var(x) if x == var)
                    }
                    TExprKind::Net { .. } => ok = false,
                    _ => {}
                });
                let on_axes = along.iter().any(|a| !a.is_empty());
                if !ok || (whole.is_empty() && !on_axes) || (!whole.is_empty() && on_axes) {
                    return None;
                }
                for g in whole {
                    for (u, ns) in lattice_adjacency(g).into_iter().enumerate() {
                        edges[u].extend(ns);
                    }
                }
                if on_axes {
                    axis_product(axes, &along, &mut edges);
                }
            }
        }
        Some((edges.into_iter().map(|s| s.into_iter().collect()).collect(), names.into_iter().collect()))
    }

    /// Whether the interaction graph among `vars` is bipartite, checked over
    /// every connected component (petgraph's own check visits only one).
    pub fn bipartite(&self, vars: &[String]) -> bool {
        let adjacency: Vec<Vec<usize>> = vars
            .iter()
            .map(|v| {
                let n = self.neighbours(v);
                vars.iter().enumerate().filter(|(_, w)| n.contains(*w)).map(|(j, _)| j).collect()
            })
            .collect();
        two_colour(&adjacency).is_some()
    }
}

/// Units of a variable: sites for a categorical (one-hot rows along its
/// last axis, one per entry of the axes before it), entries otherwise.
pub fn units(v: &Variable) -> usize {
    match v.domain {
        Domain::Categorical { .. } => v.shape[..v.shape.len() - 1].iter().product(),
        _ => v.shape.iter().product(),
    }
}

/// A 2-colouring of every connected component, or `None` if some component has an odd cycle.
pub fn two_colour(adjacency: &[Vec<usize>]) -> Option<Vec<usize>> {
    let mut colour = vec![usize::MAX; adjacency.len()];
    for start in 0..adjacency.len() {
        if colour[start] != usize::MAX {
            continue;
        }
        colour[start] = 0;
        let mut queue = VecDeque::from([start]);
        while let Some(u) = queue.pop_front() {
            for &w in &adjacency[u] {
                if colour[w] == usize::MAX {
                    colour[w] = 1 - colour[u];
                    queue.push_back(w);
                } else if colour[w] == colour[u] {
                    return None;
                }
            }
        }
    }
    Some(colour)
}

/// A proper colouring with few colours: exact 2-colouring when the graph is
/// bipartite, DSatur otherwise (3 colours on triangular lattices).
// Not petgraph's `dsatur_coloring` (0.8): the same algorithm, but it breaks
// ties in binary-heap order, which petgraph does not specify, while here a
// tie goes to the lowest unit index, so the colour classes (the chromatic
// Gibbs blocks that `ebmc plan` prints and a seeded run samples in) are a
// fixed function of the lattice, and it needs no petgraph graph built per call.
pub fn colour(adjacency: &[Vec<usize>]) -> Vec<usize> {
    if let Some(c) = two_colour(adjacency) {
        return c;
    }
    let n = adjacency.len();
    let mut colour = vec![usize::MAX; n];
    let mut saturation: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); n];
    for _ in 0..n {
        let u = (0..n)
            .filter(|&u| colour[u] == usize::MAX)
            .max_by_key(|&u| (saturation[u].len(), adjacency[u].len(), std::cmp::Reverse(u)))
            // Cannot fire: the loop runs n times and colours one of the n nodes each time.
            .expect("an uncoloured node remains");
        let c = (0..).find(|c| !saturation[u].contains(c)).expect("some colour is free");
        colour[u] = c;
        for &w in &adjacency[u] {
            saturation[w].insert(c);
        }
    }
    colour
}

/// Edges of units `(i, j)` of a `rows × cols` variable along lattices on its
/// axes: `(i, j) ~ (i', j)` for `i ~ i'` on axis 0, likewise on axis 1, and
/// both steps at once when both axes have lattices.
fn axis_product(shape: &[usize], along: &[Vec<&GraphConst>; 2], edges: &mut [BTreeSet<usize>]) {
    let step = |a: usize| -> Vec<Vec<usize>> {
        let mut adj: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); shape[a]];
        for g in &along[a] {
            for (u, ns) in lattice_adjacency(g).into_iter().enumerate() {
                adj[u].extend(ns);
            }
        }
        // Staying put is a move too, so a product of steps reaches the diagonals.
        adj.iter_mut().enumerate().for_each(|(u, s)| {
            s.insert(u);
        });
        adj.into_iter().map(|s| s.into_iter().collect()).collect()
    };
    let (rows, cols) = (step(0), step(1));
    let (fixed0, fixed1) = (along[0].is_empty(), along[1].is_empty());
    for i in 0..shape[0] {
        for j in 0..shape[1] {
            let is: &[usize] = if fixed0 { std::slice::from_ref(&i) } else { &rows[i] };
            let js: &[usize] = if fixed1 { std::slice::from_ref(&j) } else { &cols[j] };
            for &a in is {
                for &b in js {
                    if (a, b) != (i, j) {
                        edges[i * shape[1] + j].insert(a * shape[1] + b);
                    }
                }
            }
        }
    }
}

/// The unit-level graph of a lattice constant: neighbours of each unit.
pub fn lattice_adjacency(g: &GraphConst) -> Vec<Vec<usize>> {
    use crate::analysis::program::Lattice;
    let (rows, cols) = (g.rows, g.cols);
    let n = rows * cols;
    let mut adj: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); n];
    let mut link = |a: usize, b: usize| {
        if a != b {
            adj[a].insert(b);
            adj[b].insert(a);
        }
    };
    let at = |r: isize, c: isize| -> Option<usize> {
        let (r, c) = if g.periodic { (r.rem_euclid(rows as isize), c.rem_euclid(cols as isize)) } else { (r, c) };
        (r >= 0 && c >= 0 && (r as usize) < rows && (c as usize) < cols).then(|| r as usize * cols + c as usize)
    };
    match g.lattice {
        Lattice::Complete => {
            for a in 0..n {
                for b in a + 1..n {
                    link(a, b);
                }
            }
        }
        Lattice::Chain | Lattice::Grid | Lattice::Triangular => {
            let mut offsets: Vec<(isize, isize)> = vec![(0, 1), (1, 0)];
            if g.lattice == Lattice::Triangular {
                offsets.push((1, 1));
            }
            for r in 0..rows as isize {
                for c in 0..cols as isize {
                    for (dr, dc) in &offsets {
                        if let (Some(a), Some(b)) = (at(r, c), at(r + dr, c + dc)) {
                            link(a, b);
                        }
                    }
                }
            }
        }
    }
    adj.into_iter().map(|s| s.into_iter().collect()).collect()
}

/// A variable's type as messages write it, e.g. `binary[64]`.
pub fn type_text(v: &Variable) -> String {
    match &v.domain {
        Domain::Binary => format!("binary{}", dims(&v.shape)),
        Domain::Spin => format!("spin{}", dims(&v.shape)),
        Domain::Categorical { categories } => {
            format!("categorical({categories}){}", dims(&v.shape[..v.shape.len() - 1]))
        }
        Domain::Real { bounds: None } => format!("real{}", dims(&v.shape)),
        Domain::Real { bounds: Some((lo, hi)) } => format!("real{} in [{lo}, {hi}]", dims(&v.shape)),
    }
}

fn dims(shape: &[usize]) -> String {
    if shape.is_empty() { String::new() } else { shape_str(shape) }
}

impl FactorGraph {
    /// Plain-text listing: variables, factors with degrees, interactions.
    pub fn to_text(&self, colours: &BTreeMap<String, ColourClass>) -> String {
        let mut out = format!("factor graph of model {}\n", self.model.name);
        out.push_str("variables:\n");
        for v in &self.model.variables {
            let role = if v.role == Role::Visible { "visible" } else { "hidden" };
            let colour = match colours.get(&v.name) {
                Some(ColourClass::Block(c)) => format!(", colour {c}"),
                Some(ColourClass::Units(n)) => format!(", units in {n} colours"),
                None => String::new(),
            };
            let _ = writeln!(out, "  {} : {} ({role}{colour})", v.name, type_text(v));
        }
        out.push_str("factors:\n");
        for (f, edges) in &self.factors {
            let e: Vec<String> = edges.iter().map(|(v, d)| format!("{v} ({})", d.word())).collect();
            let _ = writeln!(out, "  {f}: {}", if e.is_empty() { "no variables".to_string() } else { e.join(", ") });
        }
        out.push_str("interactions:\n");
        let mut any = false;
        for (i, a) in self.model.variables.iter().enumerate() {
            for b in &self.model.variables[i + 1..] {
                if self.neighbours(&a.name).contains(&b.name) {
                    let via = self.coupling_terms(&a.name, &b.name);
                    let _ = writeln!(out, "  {} -- {} (via {})", a.name, b.name, via.join(", "));
                    any = true;
                }
            }
            let selfs = self.self_couplings(&a.name);
            if !selfs.is_empty() {
                let _ = writeln!(out, "  {} -- {} (units coupled via {})", a.name, a.name, selfs.join(", "));
                any = true;
            }
        }
        if !any {
            out.push_str("  none\n");
        }
        out
    }

    /// Graphviz DOT: variables as circles (filled by colour class), factors as
    /// boxes, edges labelled with degrees.
    pub fn to_dot(&self, colours: &BTreeMap<String, ColourClass>) -> String {
        const FILLS: [&str; 6] = ["#8ecae6", "#ffb703", "#90be6d", "#f28482", "#cdb4db", "#bde0fe"];
        let mut out = format!("graph \"{}\" {{\n  layout=neato; overlap=false; splines=true;\n", self.model.name);
        for v in &self.model.variables {
            let style = if v.role == Role::Visible { "filled,bold" } else { "filled,dashed" };
            let (fill, note) = match colours.get(&v.name) {
                Some(ColourClass::Block(c)) => (FILLS[c % FILLS.len()], String::new()),
                Some(ColourClass::Units(n)) => ("#ffffff", format!("\\n{n} unit colours")),
                None => ("#eeeeee", String::new()),
            };
            let _ = writeln!(
                out,
                "  \"v:{}\" [shape=circle, style=\"{style}\", fillcolor=\"{fill}\", label=\"{}\\n{}{note}\"];",
                v.name,
                v.name,
                type_text(v)
            );
        }
        for (f, edges) in &self.factors {
            let _ = writeln!(out, "  \"f:{f}\" [shape=box, label=\"{f}\"];");
            for (v, d) in edges {
                let _ = writeln!(out, "  \"f:{f}\" -- \"v:{v}\" [label=\"{}\"];", d.word());
            }
        }
        out.push_str("}\n");
        out
    }
}
