//! Stage 2: AST → checked program (`ast_to_program`). Resolves names, binds
//! built-in options against `schema`, and checks the type and per-example
//! shape of every expression. Reports every problem it finds, not just the
//! first, and warns about declarations no energy uses.

use crate::analysis::limits::{MAX_CONV_BLOCKS, MAX_RANK, MAX_REPLICAS};
use crate::analysis::program::*;
use crate::analysis::schema::{self, Family, OptType, Value};
use crate::front::ast::{self, BinOp, ExprKind, ModelStmt, Role};
use crate::front::span::Span;
use std::collections::{BTreeMap, BTreeSet};

/// What a checked declaration is, for messages ("`W` is a parameter").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeclKind {
    /// A `visible` or `hidden` variable.
    Variable,
    /// A `param`.
    Param,
    /// A `const`.
    Const,
    /// A `net`.
    Net,
    /// An `energy` term.
    Energy,
}

/// A problem the checker found. Wording lives in `messages.rs`.
#[derive(Debug, Clone, PartialEq)]
pub enum CheckError {
    /// E0100: a name that is not declared; `candidates` are the declared names of its kind.
    Undefined { what: &'static str, name: String, span: Span, candidates: Vec<String> },
    /// E0101: a name declared twice; `first` is the earlier declaration.
    Duplicate { what: &'static str, name: String, span: Span, first: Span },
    /// E0102: a call to a name that is neither a built-in function nor a net.
    UnknownFunction { name: String, span: Span, candidates: Vec<String> },
    /// E0103: a call to a declaration that is not a function or net.
    NotAFunction { name: String, span: Span, is: DeclKind },
    /// E0103: a net or energy term (or, in a `sample` block, a non-variable) used as a value.
    NotAValue { name: String, span: Span, is: DeclKind },
    /// E0104: a built-in function given the wrong number of arguments.
    Arity { name: String, span: Span, expected: usize, found: usize },
    /// E0105: a named option a built-in function does not take (`sum` and `mean` take `axis`, the rest none).
    FunctionOptions { name: String, option: String, span: Span },
    /// E0102: an unknown built-in of `family` (objective, optimiser, data source, ...).
    UnknownCallee { family: Family, name: String, span: Span },
    /// E0108: something other than a call where a `family` built-in is expected.
    NotACall { family: Family, span: Span },
    /// E0105: an option `callee` does not have.
    UnknownOption { family: Family, callee: String, name: String, span: Span },
    /// E0106: an option given twice.
    DuplicateOption { name: String, span: Span, first: Span },
    /// E0106: a required option left out.
    MissingOption { callee: String, option: String, span: Span },
    /// E0104: more positional arguments than `callee` takes.
    TooManyArgs { callee: String, span: Span, max: usize },
    /// E0107: an option value not of the `expected` type.
    BadOptionValue { callee: String, option: String, span: Span, expected: OptType },
    /// E0108: a string or list inside an energy expression.
    NotAllowedInEnergy { what: &'static str, span: Span },
    /// E0108: something other than a number literal where one is needed.
    NotANumber { span: Span },
    /// E0109: a number literal that overflows to infinity.
    NonFinite { span: Span },
    /// E0200: operands of an elementwise operator whose shapes do not broadcast.
    ElementwiseMismatch { op: BinOp, lhs: (Span, Shape), rhs: (Span, Shape) },
    /// E0201: operands of `@` whose inner dimensions differ.
    MatMulMismatch { lhs: (Span, Shape), rhs: (Span, Shape) },
    /// E0203: a scalar operand of `@`.
    MatMulScalar { operand: Span },
    /// E0203: an operand of `@` with more than two axes.
    MatMulRank { operand: Span, shape: Shape },
    /// E0203: a transpose of something that is not a matrix.
    TransposeRank { span: Span, shape: Shape },
    /// E0203: a non-scalar exponent of `^`.
    NonScalarExponent { span: Span, shape: Shape },
    /// E0204: a net applied to an input whose width is not its first layer's.
    NetInput { net: String, span: Span, expected: usize, found: Shape, decl: Span },
    /// E0204: a `convnet` applied to something other than a `[channels, H, W]` image.
    /// `var`: the variable passed, when the input is one.
    ConvInput { net: String, var: Option<String>, span: Span, channels: usize, found: Shape, decl: Span },
    /// E0204: a pooling `convnet` applied to an image that its `stages` poolings
    /// by `stride` shrink to nothing.
    ConvTooSmall { net: String, span: Span, found: Shape, stages: usize, stride: usize, decl: Span },
    /// E0202: an energy term that is not a scalar per example.
    NonScalarEnergy { name: String, span: Span, shape: Shape },
    /// E0207: a model without energy terms.
    NoEnergy { model: String, span: Span },
    /// E0205: `in [..]` bounds on a discrete type.
    BoundsOnDiscrete { span: Span },
    /// E0205: bounds whose low end is not below the high end.
    EmptyBounds { span: Span, low: f64, high: f64 },
    /// E0205: a categorical type with fewer than 2 categories.
    TooFewCategories { span: Span },
    /// E0205: a dimension of size 0.
    ZeroDim { span: Span },
    /// E0205: more dimensions than the type allows (`max`).
    TooManyDims { span: Span, max: usize },
    /// E0205: a parameter or typed constant whose type is not unbounded real.
    ParamNotReal { span: Span },
    /// E0206: a dimension naming something that is not an untyped whole-number constant.
    BadDim { name: String, span: Span },
    /// E0206: a constant whose declared shape differs from its value's.
    ConstShape { span: Span, declared: Shape, built: Shape },
    /// E0206: a net with the wrong number of layer widths for its kind.
    NetLayers { span: Span, kind: NetKind, found: usize },
    /// E0208: a `convnet` kernel that is even (it has no centre to pad around).
    ConvKernel { span: Span, kernel: usize },
    /// E0208: more residual blocks per `convnet` stage than `max` (`limits::MAX_CONV_BLOCKS`).
    ConvBlocks { span: Span, blocks: usize, max: usize },
    /// E0209: `reshape` to a shape with another number of elements.
    ReshapeSize { span: Span, from: (Span, Shape), to: Shape },
    /// E0209: `sum` or `mean` along an axis the argument does not have.
    BadAxis { func: &'static str, span: Span, axis: usize, arg: (Span, Shape) },
    /// E0108: a `reshape` shape that is not a list of sizes.
    NotAShape { span: Span },
    /// E0301: an unknown `train` setting.
    UnknownSetting { name: String, span: Span },
    /// E0301: `data` or `test` in the settings of a fit on in-memory rows.
    HostRows { key: String, span: Span },
    /// E0302: a required `train` setting left out.
    MissingSetting { key: &'static str, span: Span },
    /// E0301: `init` in the settings of a fit on in-memory parameters.
    HostInit { span: Span },
    /// E0304: a `freeze` list that holds every parameter of `model`, so nothing would train.
    FreezeAll { model: String, span: Span },
    /// E0303: a data source without a `->` binding.
    MissingBinding { span: Span },
    /// E0303: a `->` binding on a setting that takes none.
    UnexpectedBinding { key: String, span: Span },
    /// E0303: a binding naming something that is not a visible variable.
    BindNonVisible { name: String, span: Span },
    /// E0303: a visible variable missing from the data binding.
    UnboundVisible { name: String, span: Span, decl: Span },
    /// E0107: a setting value not of the `expected` kind.
    BadSettingValue { key: String, span: Span, expected: &'static str },
    /// E0110: a `sample` entry out of place: a whole-model option (`tempering`,
    /// `anneal`) given to one variable, or a kernel with no variable.
    SamplerPlace { name: String, span: Span, whole_model: bool },
    /// E0107: a tempering ladder whose hottest temperature is not above 1.
    TemperingRange { span: Span, t_max: f64 },
    /// E0107: a tempering ladder of more than `max` (`limits::MAX_REPLICAS`) replicas.
    TooManyReplicas { span: Span, replicas: usize, max: usize },
    /// E0107: a hand-written ladder (`temperatures: [...]`) that is not 1 then strictly increasing.
    TemperatureList { span: Span, problem: LadderProblem },
    /// E0107: `temperatures` given together with `replicas` or `t_max` (`other`, written at `other_span`).
    TemperingForms { span: Span, other: &'static str, other_span: Span },
    /// W0001: a declaration no energy uses.
    Unused { is: DeclKind, name: String, span: Span },
}

/// What is wrong with a hand-written tempering ladder.
#[derive(Debug, Clone, PartialEq)]
pub enum LadderProblem {
    /// Fewer than two temperatures: nothing to swap with.
    TooFew,
    /// The first temperature is not 1 (the reported replica samples the model itself).
    FirstNotOne(f64),
    /// Temperature `index` (from 0) is not above the one before it.
    NotIncreasing { index: usize, previous: f64, value: f64 },
}

impl CheckError {
    /// True for warnings (`Unused`), which do not stop compilation.
    pub fn is_warning(&self) -> bool {
        matches!(self, CheckError::Unused { .. })
    }
}

/// Checks a parsed file. `Ok` carries the program and any warnings; `Err`
/// carries every error and warning found.
pub fn ast_to_program(file: &ast::File) -> Result<(Program, Vec<CheckError>), Vec<CheckError>> {
    let mut errors = Vec::new();
    let mut models = BTreeMap::new();
    let mut model_spans: BTreeMap<String, Span> = BTreeMap::new();
    for item in &file.items {
        if let ast::Item::Model(m) = item {
            if let Some(first) = model_spans.get(&m.name.name) {
                errors.push(CheckError::Duplicate {
                    what: "model",
                    name: m.name.name.clone(),
                    span: m.name.span,
                    first: *first,
                });
                continue;
            }
            model_spans.insert(m.name.name.clone(), m.name.span);
            let mut checker = ModelChecker::new(&mut errors);
            checker.used.extend(critics_of(file, &m.name.name));
            if let Some(model) = checker.model(m) {
                models.insert(model.name.clone(), model);
            }
        }
    }
    let mut trains = BTreeMap::new();
    let mut train_spans: BTreeMap<String, Span> = BTreeMap::new();
    for item in &file.items {
        if let ast::Item::Train(t) = item {
            if !model_spans.contains_key(&t.model.name) {
                errors.push(CheckError::Undefined {
                    what: "model",
                    name: t.model.name.clone(),
                    span: t.model.span,
                    candidates: model_spans.keys().cloned().collect(),
                });
                continue;
            }
            if let Some(first) = train_spans.get(&t.model.name) {
                errors.push(CheckError::Duplicate {
                    what: "train block for model",
                    name: t.model.name.clone(),
                    span: t.model.span,
                    first: *first,
                });
                continue;
            }
            train_spans.insert(t.model.name.clone(), t.model.span);
            // A train block for a model with errors is still checked for its own mistakes.
            let model = models.get(&t.model.name);
            if let Some(train) = train_block(t, model, false, &mut errors) {
                trains.insert(train.model.clone(), train);
            }
        }
    }
    errors.sort_by_key(|e| (e.is_warning(), first_span(e).start));
    if errors.iter().any(|e| !e.is_warning()) { Err(errors) } else { Ok((Program { models, trains }, errors)) }
}

/// The span a diagnostic is ordered by.
fn first_span(e: &CheckError) -> Span {
    use CheckError::*;
    match e {
        Undefined { span, .. }
        | Duplicate { span, .. }
        | UnknownFunction { span, .. }
        | NotAFunction { span, .. }
        | NotAValue { span, .. }
        | Arity { span, .. }
        | FunctionOptions { span, .. }
        | ConvInput { span, .. }
        | ConvTooSmall { span, .. }
        | ConvKernel { span, .. }
        | ConvBlocks { span, .. }
        | ReshapeSize { span, .. }
        | BadAxis { span, .. }
        | NotAShape { span }
        | SamplerPlace { span, .. }
        | TemperingRange { span, .. }
        | TooManyReplicas { span, .. }
        | TemperatureList { span, .. }
        | TemperingForms { span, .. }
        | UnknownCallee { span, .. }
        | NotACall { span, .. }
        | UnknownOption { span, .. }
        | DuplicateOption { span, .. }
        | MissingOption { span, .. }
        | TooManyArgs { span, .. }
        | BadOptionValue { span, .. }
        | NotAllowedInEnergy { span, .. }
        | NotANumber { span }
        | NonFinite { span }
        | TransposeRank { span, .. }
        | NonScalarExponent { span, .. }
        | NetInput { span, .. }
        | NonScalarEnergy { span, .. }
        | NoEnergy { span, .. }
        | BoundsOnDiscrete { span }
        | EmptyBounds { span, .. }
        | TooFewCategories { span }
        | ZeroDim { span }
        | TooManyDims { span, .. }
        | ParamNotReal { span }
        | BadDim { span, .. }
        | ConstShape { span, .. }
        | NetLayers { span, .. }
        | UnknownSetting { span, .. }
        | HostRows { span, .. }
        | HostInit { span }
        | FreezeAll { span, .. }
        | MissingSetting { span, .. }
        | MissingBinding { span }
        | UnexpectedBinding { span, .. }
        | BindNonVisible { span, .. }
        | UnboundVisible { span, .. }
        | BadSettingValue { span, .. }
        | Unused { span, .. } => *span,
        ElementwiseMismatch { lhs, .. } | MatMulMismatch { lhs, .. } => lhs.0,
        MatMulScalar { operand } | MatMulRank { operand, .. } => *operand,
    }
}

struct ModelChecker<'e> {
    errors: &'e mut Vec<CheckError>,
    decls: BTreeMap<String, (DeclKind, Span)>,
    /// Integer constants usable as dimensions.
    int_consts: BTreeMap<String, usize>,
    shapes: BTreeMap<String, Shape>,
    nets: BTreeMap<String, Net>,
    used: BTreeSet<String>,
}

impl<'e> ModelChecker<'e> {
    fn new(errors: &'e mut Vec<CheckError>) -> Self {
        ModelChecker {
            errors,
            decls: BTreeMap::new(),
            int_consts: BTreeMap::new(),
            shapes: BTreeMap::new(),
            nets: BTreeMap::new(),
            used: BTreeSet::new(),
        }
    }

    fn err(&mut self, e: CheckError) {
        self.errors.push(e);
    }

    fn model(&mut self, m: &ast::ModelBlock) -> Option<Model> {
        let errors_before = self.errors.len();
        self.declare_all(m);
        let mut model = Model {
            name: m.name.name.clone(),
            span: m.name.span,
            variables: vec![],
            params: vec![],
            consts: vec![],
            nets: vec![],
            energies: vec![],
            overrides: vec![],
            temperature: None,
        };
        // Declarations first so energies can refer to names declared after them.
        for stmt in &m.stmts {
            match stmt {
                ModelStmt::Var(d) => model.variables.extend(self.variable(d)),
                ModelStmt::Param(d) => model.params.extend(self.param(d)),
                ModelStmt::Const(d) => model.consts.extend(self.constant(d)),
                ModelStmt::Net(d) => model.nets.extend(self.net(d)),
                ModelStmt::Energy(_) | ModelStmt::Sample(_) => {}
            }
        }
        for stmt in &m.stmts {
            if let ModelStmt::Energy(d) = stmt {
                model.energies.extend(self.energy(d));
            }
        }
        let mut overridden: BTreeMap<String, Span> = BTreeMap::new();
        let mut whole_model: Option<Span> = None;
        for stmt in &m.stmts {
            if let ModelStmt::Sample(b) = stmt {
                for o in &b.overrides {
                    let Some(var) = &o.var else {
                        if let Some(first) = whole_model {
                            self.err(CheckError::Duplicate {
                                what: "whole-model sampling entry",
                                name: match &o.kernel.kind {
                                    ExprKind::Call { func, .. } => func.name.clone(),
                                    _ => String::new(),
                                },
                                span: o.span,
                                first,
                            });
                            continue;
                        }
                        whole_model = Some(o.span);
                        model.temperature = self.whole_model_sampling(o);
                        continue;
                    };
                    if let Some(first) = overridden.get(&var.name) {
                        self.err(CheckError::Duplicate {
                            what: "sampler override for",
                            name: var.name.clone(),
                            span: var.span,
                            first: *first,
                        });
                        continue;
                    }
                    overridden.insert(var.name.clone(), var.span);
                    model.overrides.extend(self.sampler_override(var, o));
                }
            }
        }
        if !m.stmts.iter().any(|s| matches!(s, ModelStmt::Energy(_))) {
            self.err(CheckError::NoEnergy { model: m.name.name.clone(), span: m.name.span });
        }
        let failed = self.errors[errors_before..].iter().any(|e| !e.is_warning());
        // A failed expression leaves its names unmarked; warning about them would be noise.
        if !failed {
            self.warn_unused();
        }
        (!failed).then_some(model)
    }

    fn declare_all(&mut self, m: &ast::ModelBlock) {
        for stmt in &m.stmts {
            let (kind, name) = match stmt {
                ModelStmt::Var(d) => (DeclKind::Variable, &d.name),
                ModelStmt::Param(d) => (DeclKind::Param, &d.name),
                ModelStmt::Const(d) => (DeclKind::Const, &d.name),
                ModelStmt::Net(d) => (DeclKind::Net, &d.name),
                ModelStmt::Energy(d) => (DeclKind::Energy, &d.name),
                ModelStmt::Sample(_) => continue,
            };
            if let Some((_, first)) = self.decls.get(&name.name) {
                let first = *first;
                self.err(CheckError::Duplicate {
                    what: "declaration of",
                    name: name.name.clone(),
                    span: name.span,
                    first,
                });
                continue;
            }
            self.decls.insert(name.name.clone(), (kind, name.span));
            if let ModelStmt::Const(ast::ConstDecl { ty: None, value, .. }) = stmt
                && let Some(n) = literal_number(value).filter(|n| *n >= 1.0 && n.fract() == 0.0)
            {
                self.int_consts.insert(name.name.clone(), n as usize);
            }
        }
    }

    fn dim(&mut self, d: &ast::Dim) -> Option<usize> {
        match d {
            ast::Dim::Lit(0, span) => {
                self.err(CheckError::ZeroDim { span: *span });
                None
            }
            ast::Dim::Lit(n, _) => Some(*n as usize),
            ast::Dim::Name(id) => {
                if let Some(n) = self.int_consts.get(&id.name) {
                    self.used.insert(id.name.clone());
                    return Some(*n);
                }
                if self.decls.contains_key(&id.name) {
                    self.err(CheckError::BadDim { name: id.name.clone(), span: id.span });
                } else {
                    let candidates = self.int_consts.keys().cloned().collect();
                    self.err(CheckError::Undefined { what: "name", name: id.name.clone(), span: id.span, candidates });
                }
                None
            }
        }
    }

    fn dims(&mut self, dims: &[ast::Dim], max: usize, span: Span) -> Option<Shape> {
        if dims.len() > max {
            self.err(CheckError::TooManyDims { span, max });
            return None;
        }
        let shape: Vec<Option<usize>> = dims.iter().map(|d| self.dim(d)).collect();
        shape.into_iter().collect()
    }

    fn variable(&mut self, d: &ast::VarDecl) -> Option<Variable> {
        let ty = &d.ty;
        let (domain, shape) = match &ty.base {
            ast::BaseType::Categorical(k) => {
                let k = self.dim(k);
                // The categories are the last axis.
                let outer = self.dims(&ty.dims, MAX_RANK - 1, ty.span);
                if let Some(b) = &ty.bounds {
                    self.err(CheckError::BoundsOnDiscrete { span: b.0.span.to(b.1.span) });
                }
                let k = k?;
                if k < 2 {
                    self.err(CheckError::TooFewCategories { span: ty.span });
                    return None;
                }
                let mut shape = outer?;
                shape.push(k);
                (Domain::Categorical { categories: k }, shape)
            }
            base => {
                let shape = self.dims(&ty.dims, MAX_RANK, ty.span);
                let domain = match base {
                    ast::BaseType::Binary => Domain::Binary,
                    ast::BaseType::Spin => Domain::Spin,
                    _ => Domain::Real { bounds: None },
                };
                let domain = match (&ty.bounds, domain) {
                    (None, d) => d,
                    (Some(b), Domain::Real { .. }) => Domain::Real { bounds: Some(self.bounds(b)?) },
                    (Some(b), _) => {
                        self.err(CheckError::BoundsOnDiscrete { span: b.0.span.to(b.1.span) });
                        return None;
                    }
                };
                (domain, shape?)
            }
        };
        self.shapes.insert(d.name.name.clone(), shape.clone());
        Some(Variable { name: d.name.name.clone(), role: d.role, domain, shape, span: d.name.span })
    }

    fn bounds(&mut self, b: &(ast::Expr, ast::Expr)) -> Option<(f64, f64)> {
        let low = self.number(&b.0);
        let high = self.number(&b.1);
        let (low, high) = (low?, high?);
        if low >= high {
            self.err(CheckError::EmptyBounds { span: b.0.span.to(b.1.span), low, high });
            return None;
        }
        Some((low, high))
    }

    /// A literal number, possibly negated.
    fn number(&mut self, e: &ast::Expr) -> Option<f64> {
        match literal_number(e) {
            Some(x) if x.is_finite() => Some(x),
            Some(_) => {
                self.err(CheckError::NonFinite { span: e.span });
                None
            }
            None => {
                self.err(CheckError::NotANumber { span: e.span });
                None
            }
        }
    }

    fn real_shape(&mut self, ty: &ast::TypeExpr) -> Option<Shape> {
        if ty.base != ast::BaseType::Real || ty.bounds.is_some() {
            self.err(CheckError::ParamNotReal { span: ty.span });
            return None;
        }
        self.dims(&ty.dims, MAX_RANK, ty.span)
    }

    fn param(&mut self, d: &ast::ParamDecl) -> Option<Param> {
        let shape = self.real_shape(&d.ty);
        let init = match &d.init {
            None => Some(Init::Constant(0.0)),
            Some(e) => self.init(e),
        };
        let shape = shape?;
        self.shapes.insert(d.name.name.clone(), shape.clone());
        Some(Param { name: d.name.name.clone(), shape, init: init?, span: d.name.span })
    }

    fn init(&mut self, e: &ast::Expr) -> Option<Init> {
        if literal_number(e).is_some() {
            return self.number(e).map(Init::Constant);
        }
        let call = bind_call(Family::Initializer, e, self.errors)?;
        let num = |k: &str| num(&call, k);
        Some(match call.name.as_str() {
            "zeros" => Init::Constant(0.0),
            "ones" => Init::Constant(1.0),
            "normal" => Init::Normal { mean: num("mean"), std: num("std") },
            _ => {
                let (low, high) = (num("low"), num("high"));
                if low >= high {
                    self.err(CheckError::EmptyBounds { span: e.span, low, high });
                    return None;
                }
                Init::Uniform { low, high }
            }
        })
    }

    fn constant(&mut self, d: &ast::ConstDecl) -> Option<Const> {
        let declared = match &d.ty {
            Some(ty) => Some(self.real_shape(ty)?),
            None => None,
        };
        let (shape, value) = if literal_number(&d.value).is_some() {
            (declared.unwrap_or_default(), ConstValue::Fill(self.number(&d.value)?))
        } else if let Some(name) = d.value.as_name().filter(|n| *n == "zeros" || *n == "ones") {
            (declared.unwrap_or_default(), ConstValue::Fill(if name == "ones" { 1.0 } else { 0.0 }))
        } else {
            if let ExprKind::Call { args, .. } = &d.value.kind {
                let names = args.iter().filter_map(|a| a.value.as_name()).filter(|n| self.int_consts.contains_key(*n));
                self.used.extend(names.map(str::to_string).collect::<Vec<_>>());
            }
            let call = bind_call_with(Family::ConstBuilder, &d.value, &self.int_consts, self.errors)?;
            let int = |k: &str| count(&call, k);
            let periodic = maybe_flag(&call, "periodic").unwrap_or(false);
            let (lattice, rows, cols) = match call.name.as_str() {
                "grid" => (Lattice::Grid, int("rows"), int("cols")),
                "triangular" => (Lattice::Triangular, int("rows"), int("cols")),
                "chain" => (Lattice::Chain, 1, int("n")),
                _ => (Lattice::Complete, 1, int("n")),
            };
            let g = GraphConst { lattice, rows, cols, periodic };
            let built = vec![g.units(), g.units()];
            if let Some(declared) = declared.filter(|s| *s != built) {
                self.err(CheckError::ConstShape {
                    span: d.ty.as_ref().map_or(d.value.span, |t| t.span),
                    declared,
                    built,
                });
                return None;
            }
            (built, ConstValue::Graph(g))
        };
        self.shapes.insert(d.name.name.clone(), shape.clone());
        Some(Const { name: d.name.name.clone(), shape, value, span: d.name.span })
    }

    fn net(&mut self, d: &ast::NetDecl) -> Option<Net> {
        let call_expr = ast::Expr {
            kind: ExprKind::Call { func: d.kind.clone(), args: d.options.clone() },
            span: d.kind.span.to(d.options.last().map_or(d.kind.span, |a| a.value.span)),
        };
        let call = bind_call(Family::Net, &call_expr, self.errors);
        let layers: Option<Vec<usize>> = d.layers.iter().map(|l| self.dim(l)).collect::<Vec<_>>().into_iter().collect();
        let (call, layers) = (call?, layers?);
        let kind = match call.name.as_str() {
            "linear" => NetKind::Linear,
            "mlp" => NetKind::Mlp,
            _ => NetKind::Conv,
        };
        // `linear` is one layer; a `convnet` has an input, at least one stage and an output.
        let widths_fit = match kind {
            NetKind::Linear => layers.len() == 2,
            NetKind::Mlp => true,
            NetKind::Conv => layers.len() >= 3,
        };
        if !widths_fit {
            let span = d.layers[0].span().to(d.layers[d.layers.len() - 1].span());
            self.err(CheckError::NetLayers { span, kind, found: layers.len() });
            return None;
        }
        let conv = match kind {
            NetKind::Conv => Some(self.conv_layout(d, &call)?),
            _ => None,
        };
        let net = Net {
            name: d.name.name.clone(),
            kind,
            layers,
            activation: match call.options.get("act").and_then(|v| v.as_str()) {
                // `linear` takes no `act`: one layer, nothing between layers.
                None => Activation::Identity,
                // Cannot fire: the schema binds `act` only to one of `Activation::MLP`.
                Some(name) => Activation::from_name(name).expect("the schema's activation choices"),
            },
            bias: call.options.get("bias").and_then(Value::as_bool).unwrap_or(true),
            conv,
            spectral_norm: call.options.get("spectral_norm").and_then(Value::as_bool).unwrap_or(false),
            span: d.name.span,
        };
        self.nets.insert(net.name.clone(), net.clone());
        Some(net)
    }

    /// A `convnet`'s bound options as its layout: the kernel odd, the blocks within the limit.
    fn conv_layout(&mut self, d: &ast::NetDecl, call: &Call) -> Option<ConvLayout> {
        // The value as written, for the error's span; a defaulted option is always valid.
        let written = |name: &str| {
            d.options
                .iter()
                .find(|a| a.name.as_ref().is_some_and(|n| n.name == name))
                .map_or(d.kind.span, |a| a.value.span)
        };
        let layout = ConvLayout {
            kernel: count(call, "kernel"),
            stride: count(call, "stride"),
            blocks: count(call, "blocks"),
            pool: flag(call, "pool"),
        };
        let mut ok = true;
        if layout.kernel.is_multiple_of(2) {
            self.err(CheckError::ConvKernel { span: written("kernel"), kernel: layout.kernel });
            ok = false;
        }
        if layout.blocks > MAX_CONV_BLOCKS {
            self.err(CheckError::ConvBlocks { span: written("blocks"), blocks: layout.blocks, max: MAX_CONV_BLOCKS });
            ok = false;
        }
        ok.then_some(layout)
    }

    fn energy(&mut self, d: &ast::EnergyDecl) -> Option<Energy> {
        let expr = self.expr(&d.expr)?;
        if !expr.shape.is_empty() {
            self.err(CheckError::NonScalarEnergy { name: d.name.name.clone(), span: d.expr.span, shape: expr.shape });
            return None;
        }
        Some(Energy { name: d.name.name.clone(), expr, span: d.name.span })
    }

    /// A bare call in a `sample` block: tempering or annealing of every variable.
    fn whole_model_sampling(&mut self, o: &ast::SamplerOverride) -> Option<Temperature> {
        let kernel = bind_call(Family::Sampler, &o.kernel, self.errors)?;
        if !schema::WHOLE_MODEL_SAMPLERS.contains(&kernel.name.as_str()) {
            self.err(CheckError::SamplerPlace { name: kernel.name, span: o.span, whole_model: false });
            return None;
        }
        if kernel.name == "anneal" {
            return Some(Temperature::Anneal {
                beta0: num(&kernel, "beta0"),
                geometric: kernel.options.get("ramp").and_then(Value::as_str) == Some("geometric"),
                sweeps: count(&kernel, "sweeps"),
            });
        }
        // Where an option is written, by name or at its position; `None` when it is not.
        let written = |name: &str, position: usize| match &o.kernel.kind {
            ExprKind::Call { args, .. } => args
                .iter()
                .enumerate()
                .find(|(i, a)| a.name.as_ref().map_or(*i == position, |n| n.name == name))
                .map(|(_, a)| a.value.span),
            _ => None,
        };
        let at = |name: &str, position: usize| written(name, position).unwrap_or(o.span);
        if let Some(list) = kernel.options.get("temperatures").and_then(Value::as_nums) {
            let span = at("temperatures", 2);
            let other = [("replicas", 0), ("t_max", 1)].into_iter().find_map(|(n, i)| written(n, i).map(|s| (n, s)));
            if let Some((other, other_span)) = other {
                self.err(CheckError::TemperingForms { span, other, other_span });
                return None;
            }
            if list.len() > MAX_REPLICAS {
                self.err(CheckError::TooManyReplicas { span, replicas: list.len(), max: MAX_REPLICAS });
                return None;
            }
            let problem = if list.len() < 2 {
                Some(LadderProblem::TooFew)
            } else if list[0] != 1.0 {
                Some(LadderProblem::FirstNotOne(list[0]))
            } else {
                list.windows(2).position(|w| w[1] <= w[0]).map(|i| LadderProblem::NotIncreasing {
                    index: i + 1,
                    previous: list[i],
                    value: list[i + 1],
                })
            };
            if let Some(problem) = problem {
                self.err(CheckError::TemperatureList { span, problem });
                return None;
            }
            return Some(Temperature::Ladder { temperatures: list.to_vec() });
        }
        let (replicas, t_max) = (count(&kernel, "replicas"), num(&kernel, "t_max"));
        if replicas > MAX_REPLICAS {
            self.err(CheckError::TooManyReplicas { span: at("replicas", 0), replicas, max: MAX_REPLICAS });
            return None;
        }
        if t_max <= 1.0 {
            self.err(CheckError::TemperingRange { span: at("t_max", 1), t_max });
            return None;
        }
        Some(Temperature::ladder(replicas, t_max))
    }

    fn sampler_override(&mut self, var: &ast::Ident, o: &ast::SamplerOverride) -> Option<Override> {
        match self.decls.get(&var.name) {
            Some((DeclKind::Variable, _)) => {}
            Some((is, _)) => {
                let is = *is;
                self.err(CheckError::NotAValue { name: var.name.clone(), span: var.span, is });
                return None;
            }
            None => {
                let candidates = self.names_of(DeclKind::Variable);
                self.err(CheckError::Undefined {
                    what: "variable",
                    name: var.name.clone(),
                    span: var.span,
                    candidates,
                });
                return None;
            }
        }
        let kernel = bind_call(Family::Sampler, &o.kernel, self.errors)?;
        if schema::WHOLE_MODEL_SAMPLERS.contains(&kernel.name.as_str()) {
            self.err(CheckError::SamplerPlace { name: kernel.name, span: o.span, whole_model: true });
            return None;
        }
        let sampler = typed_sampler(&kernel);
        if let Sampler::Reparam { latent, .. } = &sampler
            && !matches!(self.decls.get(latent), Some((DeclKind::Variable, _)))
        {
            let span = latent_arg(&o.kernel).map_or(o.span, |e| e.span);
            let candidates = self.names_of(DeclKind::Variable).into_iter().filter(|n| *n != var.name).collect();
            self.err(CheckError::Undefined { what: "variable", name: latent.clone(), span, candidates });
            return None;
        }
        Some(Override { var: var.name.clone(), sampler, kernel, span: o.span })
    }

    fn names_of(&self, kind: DeclKind) -> Vec<String> {
        self.decls.iter().filter(|(_, (k, _))| *k == kind).map(|(n, _)| n.clone()).collect()
    }

    fn expr(&mut self, e: &ast::Expr) -> Option<TExpr> {
        let span = e.span;
        let (kind, shape) = match &e.kind {
            ExprKind::Number { value, .. } => {
                if !value.is_finite() {
                    self.err(CheckError::NonFinite { span });
                    return None;
                }
                (TExprKind::Number(*value), vec![])
            }
            ExprKind::Str(_) => return self.not_in_energy("a string", span),
            ExprKind::List(_) => return self.not_in_energy("a list", span),
            ExprKind::Name(name) => {
                let (kind, _) = match self.decls.get(name) {
                    Some(d) => *d,
                    None => {
                        let candidates = self
                            .decls
                            .iter()
                            .filter(|(_, (k, _))| *k != DeclKind::Energy)
                            .map(|(n, _)| n.clone())
                            .collect();
                        self.err(CheckError::Undefined { what: "name", name: name.clone(), span, candidates });
                        return None;
                    }
                };
                let kind = match kind {
                    DeclKind::Variable => TExprKind::Var(name.clone()),
                    DeclKind::Param => TExprKind::Param(name.clone()),
                    DeclKind::Const => TExprKind::Const(name.clone()),
                    is => {
                        self.err(CheckError::NotAValue { name: name.clone(), span, is });
                        return None;
                    }
                };
                self.used.insert(name.clone());
                // A declaration that failed its own check has no shape; its error is already reported.
                let shape = self.shapes.get(name)?.clone();
                (kind, shape)
            }
            ExprKind::Neg(inner) => {
                let inner = self.expr(inner)?;
                let shape = inner.shape.clone();
                (TExprKind::Neg(Box::new(inner)), shape)
            }
            ExprKind::Transpose(inner) => {
                let inner = self.expr(inner)?;
                if inner.shape.len() != 2 {
                    self.err(CheckError::TransposeRank { span, shape: inner.shape });
                    return None;
                }
                let shape = vec![inner.shape[1], inner.shape[0]];
                (TExprKind::Transpose(Box::new(inner)), shape)
            }
            ExprKind::Binary { op, lhs, rhs } => {
                let (l, r) = (self.expr(lhs), self.expr(rhs));
                let (l, r) = (l?, r?);
                let shape = self.binary_shape(*op, &l, &r)?;
                (TExprKind::Binary { op: *op, lhs: Box::new(l), rhs: Box::new(r) }, shape)
            }
            ExprKind::Call { func, args } => return self.call(func, args, span),
        };
        Some(TExpr { kind, shape, span })
    }

    fn not_in_energy(&mut self, what: &'static str, span: Span) -> Option<TExpr> {
        self.err(CheckError::NotAllowedInEnergy { what, span });
        None
    }

    fn call(&mut self, func: &ast::Ident, args: &[ast::Arg], span: Span) -> Option<TExpr> {
        let name = &func.name;
        let net = self.nets.get(name).cloned();
        let builtin = Func::from_name(name);
        if net.is_none() && builtin.is_none() {
            match self.decls.get(name) {
                Some((DeclKind::Net, _)) => return None, // the net's own declaration failed to check
                Some((is, _)) => {
                    let is = *is;
                    self.err(CheckError::NotAFunction { name: name.clone(), span: func.span, is });
                }
                None => {
                    let mut candidates: Vec<String> = Func::ALL.iter().map(|f| f.name().to_string()).collect();
                    candidates.extend(self.nets.keys().cloned());
                    self.err(CheckError::UnknownFunction { name: name.clone(), span: func.span, candidates });
                }
            }
            return None;
        }
        // A net shadows the built-in of its name.
        let builtin = builtin.filter(|_| net.is_none());
        // `sum` and `mean` take an `axis`; every other function and net takes no options.
        let takes_axis = matches!(builtin, Some(Func::Sum | Func::Mean));
        let mut axis: Option<(&ast::Arg, Span)> = None;
        for a in args {
            let Some(n) = &a.name else { continue };
            if !(takes_axis && n.name == "axis") {
                self.err(CheckError::FunctionOptions { name: name.clone(), option: n.name.clone(), span: n.span });
                return None;
            }
            if let Some((_, first)) = axis {
                self.err(CheckError::DuplicateOption { name: n.name.clone(), span: n.span, first });
                return None;
            }
            axis = Some((a, n.span));
        }
        let positional: Vec<&ast::Expr> = args.iter().filter(|a| a.name.is_none()).map(|a| &a.value).collect();
        let expected = if builtin == Some(Func::Reshape) { 2 } else { 1 };
        if positional.len() != expected {
            self.err(CheckError::Arity { name: name.clone(), span, expected, found: positional.len() });
            return None;
        }
        let shape_arg = positional.get(1).map(|list| self.shape_list(list));
        let arg = self.expr(positional[0])?;
        if let Some(net) = net {
            self.used.insert(name.clone());
            self.net_input(&net, &arg)?;
            return Some(TExpr {
                kind: TExprKind::Net { net: name.clone(), arg: Box::new(arg) },
                shape: net.output_shape(),
                span,
            });
        }
        // Cannot fire: without a net, the callee is a built-in (the other case returned an error above).
        let func = builtin.expect("checked above");
        if let Some((a, _)) = axis {
            let axis = self.axis(func, &a.value, &arg)?;
            let mut shape = arg.shape.clone();
            shape.remove(axis);
            let arg = Box::new(arg);
            let kind =
                if func == Func::Sum { TExprKind::SumAxis { arg, axis } } else { TExprKind::MeanAxis { arg, axis } };
            return Some(TExpr { kind, shape, span });
        }
        let (kind, shape) = match func {
            Func::Flatten => {
                let n = elements(&arg.shape);
                (TExprKind::Reshape(Box::new(arg)), vec![n])
            }
            Func::Reshape => {
                let to = shape_arg.flatten()?;
                if elements(&arg.shape) != elements(&to) {
                    self.err(CheckError::ReshapeSize { span: positional[1].span, from: (arg.span, arg.shape), to });
                    return None;
                }
                (TExprKind::Reshape(Box::new(arg)), to)
            }
            f if f.is_reduction() => (TExprKind::Func { func, arg: Box::new(arg) }, vec![]),
            _ => {
                let shape = arg.shape.clone();
                (TExprKind::Func { func, arg: Box::new(arg) }, shape)
            }
        };
        Some(TExpr { kind, shape, span })
    }

    /// Checks a net's input: a vector of its first width for `linear` and
    /// `mlp` (a scalar when that width is 1), a `[channels, H, W]` image for a
    /// `convnet`.
    fn net_input(&mut self, net: &Net, arg: &TExpr) -> Option<()> {
        let width = net.layers[0];
        let Some(layout) = net.conv else {
            let fits = arg.shape == [width] || (width == 1 && arg.shape.is_empty());
            if !fits {
                self.err(CheckError::NetInput {
                    net: net.name.clone(),
                    span: arg.span,
                    expected: width,
                    found: arg.shape.clone(),
                    decl: net.span,
                });
                return None;
            }
            return Some(());
        };
        if arg.shape.len() != 3 || arg.shape[0] != width {
            let var = match &arg.kind {
                TExprKind::Var(v) => Some(v.clone()),
                _ => None,
            };
            self.err(CheckError::ConvInput {
                net: net.name.clone(),
                var,
                span: arg.span,
                channels: width,
                found: arg.shape.clone(),
                decl: net.span,
            });
            return None;
        }
        // Stages after the first downsample; average pooling floors the sides.
        let stages = net.layers.len() - 3;
        let survives = |side: usize| (0..stages).try_fold(side, |s, _| Some(s / layout.stride).filter(|s| *s >= 1));
        if layout.pool && (survives(arg.shape[1]).is_none() || survives(arg.shape[2]).is_none()) {
            self.err(CheckError::ConvTooSmall {
                net: net.name.clone(),
                span: arg.span,
                found: arg.shape.clone(),
                stages,
                stride: layout.stride,
                decl: net.span,
            });
            return None;
        }
        Some(())
    }

    /// The `axis` option of `sum` or `mean`: a whole number (or size
    /// constant) below the argument's rank.
    fn axis(&mut self, func: Func, value: &ast::Expr, arg: &TExpr) -> Option<usize> {
        let ty = OptType::Whole { min: 0 };
        let Some(Value::Int(axis)) = option_value(value, ty, &self.int_consts) else {
            self.err(CheckError::BadOptionValue {
                callee: func.name().to_string(),
                option: "axis".to_string(),
                span: value.span,
                expected: ty,
            });
            return None;
        };
        if let Some(n) = value.as_name() {
            self.used.insert(n.to_string());
        }
        let axis = axis as usize;
        if axis >= arg.shape.len() {
            self.err(CheckError::BadAxis {
                func: func.name(),
                span: value.span,
                axis,
                arg: (arg.span, arg.shape.clone()),
            });
            return None;
        }
        Some(axis)
    }

    /// `reshape`'s target shape: a list of sizes, each a literal or a size constant.
    fn shape_list(&mut self, e: &ast::Expr) -> Option<Shape> {
        let ExprKind::List(items) = &e.kind else {
            self.err(CheckError::NotAShape { span: e.span });
            return None;
        };
        if items.is_empty() {
            self.err(CheckError::NotAShape { span: e.span });
            return None;
        }
        if items.len() > MAX_RANK {
            self.err(CheckError::TooManyDims { span: e.span, max: MAX_RANK });
            return None;
        }
        let mut shape = Vec::new();
        let mut ok = true;
        for item in items {
            let dim = match &item.kind {
                ExprKind::Number { value, .. } if value.fract() == 0.0 && *value >= 0.0 && *value < 9.0e15 => {
                    Some(ast::Dim::Lit(*value as u64, item.span))
                }
                ExprKind::Name(n) => Some(ast::Dim::Name(ast::Ident { name: n.clone(), span: item.span })),
                _ => None,
            };
            match dim.map(|d| self.dim(&d)) {
                Some(Some(n)) => shape.push(n),
                Some(None) => ok = false,
                None => {
                    self.err(CheckError::NotAShape { span: item.span });
                    ok = false;
                }
            }
        }
        ok.then_some(shape)
    }

    fn binary_shape(&mut self, op: BinOp, l: &TExpr, r: &TExpr) -> Option<Shape> {
        let (ls, rs) = (&l.shape, &r.shape);
        match op {
            BinOp::MatMul => {
                for side in [l, r] {
                    if side.shape.is_empty() {
                        self.err(CheckError::MatMulScalar { operand: side.span });
                        return None;
                    }
                    // Higher ranks have no single contraction to mean; `sum(x * y, axis: k)` says which.
                    if side.shape.len() > 2 {
                        self.err(CheckError::MatMulRank { operand: side.span, shape: side.shape.clone() });
                        return None;
                    }
                }
                let (inner_l, inner_r) = (ls[ls.len() - 1], rs[0]);
                if inner_l != inner_r {
                    self.err(CheckError::MatMulMismatch { lhs: (l.span, ls.clone()), rhs: (r.span, rs.clone()) });
                    return None;
                }
                Some(ls[..ls.len() - 1].iter().chain(&rs[1..]).copied().collect())
            }
            BinOp::Pow => {
                if !rs.is_empty() {
                    self.err(CheckError::NonScalarExponent { span: r.span, shape: rs.clone() });
                    return None;
                }
                Some(ls.clone())
            }
            _ => {
                // Trailing-axis broadcasting: the shorter shape must end the longer one.
                let (long, short) = if ls.len() >= rs.len() { (ls, rs) } else { (rs, ls) };
                if long.ends_with(short) {
                    Some(long.clone())
                } else {
                    self.err(CheckError::ElementwiseMismatch {
                        op,
                        lhs: (l.span, ls.clone()),
                        rhs: (r.span, rs.clone()),
                    });
                    None
                }
            }
        }
    }

    fn warn_unused(&mut self) {
        let unused: Vec<CheckError> = self
            .decls
            .iter()
            .filter(|(name, (kind, _))| *kind != DeclKind::Energy && !self.used.contains(*name))
            .map(|(name, (kind, span))| CheckError::Unused { is: *kind, name: name.clone(), span: *span })
            .collect();
        self.errors.extend(unused);
    }
}

/// A number literal, or a negated one.
fn literal_number(e: &ast::Expr) -> Option<f64> {
    match &e.kind {
        ExprKind::Number { value, .. } => Some(*value),
        ExprKind::Neg(inner) => literal_number(inner).map(|x| -x),
        _ => None,
    }
}

/// Binds a built-in call (or a bare name, a call without arguments) against
/// its signature in `family`, filling defaults.
fn bind_call(family: Family, e: &ast::Expr, errors: &mut Vec<CheckError>) -> Option<Call> {
    bind_call_with(family, e, &BTreeMap::new(), errors)
}

/// `bind_call`, where whole-number options may also name the integer constants in `ints`.
fn bind_call_with(
    family: Family,
    e: &ast::Expr,
    ints: &BTreeMap<String, usize>,
    errors: &mut Vec<CheckError>,
) -> Option<Call> {
    let (func, args): (&str, &[ast::Arg]) = match &e.kind {
        ExprKind::Name(n) => (n, &[]),
        ExprKind::Call { func, args } => (&func.name, args),
        _ => {
            errors.push(CheckError::NotACall { family, span: e.span });
            return None;
        }
    };
    let callee_span = match &e.kind {
        ExprKind::Call { func, .. } => func.span,
        _ => e.span,
    };
    let Some(sig) = family.lookup(func) else {
        errors.push(CheckError::UnknownCallee { family, name: func.to_string(), span: callee_span });
        return None;
    };
    let mut given: BTreeMap<&str, (Span, &ast::Expr)> = BTreeMap::new();
    let mut ok = true;
    for (i, arg) in args.iter().enumerate() {
        let (name, span) = match &arg.name {
            Some(n) => match sig.options.iter().find(|o| o.name == n.name) {
                Some(o) => (o.name, n.span),
                None => {
                    errors.push(CheckError::UnknownOption {
                        family,
                        callee: func.to_string(),
                        name: n.name.clone(),
                        span: n.span,
                    });
                    ok = false;
                    continue;
                }
            },
            None => match sig.options.get(i) {
                Some(o) => (o.name, arg.value.span),
                None => {
                    errors.push(CheckError::TooManyArgs {
                        callee: func.to_string(),
                        span: arg.value.span,
                        max: sig.options.len(),
                    });
                    ok = false;
                    continue;
                }
            },
        };
        if let Some((first, _)) = given.get(name) {
            errors.push(CheckError::DuplicateOption { name: name.to_string(), span, first: *first });
            ok = false;
            continue;
        }
        given.insert(name, (span, &arg.value));
    }
    let mut options = BTreeMap::new();
    for opt in sig.options {
        let value = match given.get(opt.name) {
            Some((_, value_expr)) => match option_value(value_expr, opt.ty, ints) {
                Some(v) => v,
                None => {
                    errors.push(CheckError::BadOptionValue {
                        callee: func.to_string(),
                        option: opt.name.to_string(),
                        span: value_expr.span,
                        expected: opt.ty,
                    });
                    ok = false;
                    continue;
                }
            },
            None => match opt.default {
                schema::Fallback::Required => {
                    errors.push(CheckError::MissingOption {
                        callee: func.to_string(),
                        option: opt.name.to_string(),
                        span: e.span,
                    });
                    ok = false;
                    continue;
                }
                schema::Fallback::Absent => continue,
                schema::Fallback::Num(x) => Value::Num(x),
                schema::Fallback::Int(i) => Value::Int(i),
                schema::Fallback::Bool(b) => Value::Bool(b),
                schema::Fallback::Word(w) => Value::Str(w.to_string()),
            },
        };
        options.insert(opt.name.to_string(), value);
    }
    ok.then(|| Call { name: func.to_string(), options, span: e.span })
}

/// Converts a literal to an option value of type `ty`, or `None` if it does not fit.
fn option_value(e: &ast::Expr, ty: OptType, ints: &BTreeMap<String, usize>) -> Option<Value> {
    let word = match &e.kind {
        ExprKind::Name(n) => Some(n.as_str()),
        ExprKind::Str(s) => Some(s.as_str()),
        _ => None,
    };
    match ty {
        OptType::Flag => match e.as_name()? {
            "true" => Some(Value::Bool(true)),
            "false" => Some(Value::Bool(false)),
            _ => None,
        },
        OptType::Str => match &e.kind {
            ExprKind::Str(s) => Some(Value::Str(s.clone())),
            _ => None,
        },
        OptType::Paths => match &e.kind {
            ExprKind::Str(s) => Some(Value::List(vec![s.clone()])),
            ExprKind::List(items) if !items.is_empty() => items
                .iter()
                .map(|i| match &i.kind {
                    ExprKind::Str(s) => Some(s.clone()),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()
                .map(Value::List),
            _ => None,
        },
        OptType::Numbers => match &e.kind {
            ExprKind::List(items) if !items.is_empty() => items
                .iter()
                .map(|i| literal_number(i).filter(|x| x.is_finite()))
                .collect::<Option<Vec<_>>>()
                .map(Value::Nums),
            _ => None,
        },
        OptType::Choice(choices) => choices.iter().find(|c| Some(**c) == word).map(|c| Value::Str(c.to_string())),
        OptType::NetName | OptType::VarName => e.as_name().map(|n| Value::Str(n.to_string())),
        OptType::Whole { min } => {
            let x = literal_number(e).or_else(|| e.as_name().and_then(|n| ints.get(n)).map(|n| *n as f64))?;
            (x.fract() == 0.0 && x >= min as f64 && x.abs() < 9.0e15).then_some(Value::Int(x as i64))
        }
        _ => {
            let x = literal_number(e).filter(|x| x.is_finite())?;
            let fits = match ty {
                OptType::Positive => x > 0.0,
                OptType::NonNegative => x >= 0.0,
                OptType::Unit => (0.0..1.0).contains(&x),
                OptType::OpenUnit => x > 0.0 && x < 1.0,
                _ => true,
            };
            fits.then_some(Value::Num(x))
        }
    }
}

use schema::TRAIN_KEYS;

/// Settings that name a data source and bind it (`SOURCE -> vars`).
const DATA_KEYS: &[&str] = &["data", "test", "outliers"];

/// Binds the settings of a train block for `model` whose rows a host holds
/// in memory (`api::Model::fit`): a block without `data` or `test`, every
/// other setting checked and defaulted as in a file's train block.
pub fn train_settings(t: &ast::TrainBlock, model: &Model) -> Result<Train, Vec<CheckError>> {
    let mut errors = Vec::new();
    let train = train_block(t, Some(model), true, &mut errors);
    errors.sort_by_key(|e| first_span(e).start);
    train.filter(|_| errors.is_empty()).ok_or(errors)
}

/// `host_rows`: the rows come from the host, so the block names no data.
fn train_block(
    t: &ast::TrainBlock,
    model: Option<&Model>,
    host_rows: bool,
    errors: &mut Vec<CheckError>,
) -> Option<Train> {
    let mut seen: BTreeMap<&str, Span> = BTreeMap::new();
    let mut data = None;
    let mut test = None;
    let mut outliers = None;
    let mut objective = None;
    let mut optimizer = None;
    let mut schedule = None;
    let mut regularizers = Some(vec![]);
    let (mut batch, mut epochs, mut seed) = (Some(100), Some(10), Some(0));
    let mut init = None;
    let mut freeze: Vec<&ast::Expr> = Vec::new();
    let mut ok = true;
    for s in &t.settings {
        let key = s.key.name.as_str();
        if !TRAIN_KEYS.contains(&key) {
            errors.push(CheckError::UnknownSetting { name: key.to_string(), span: s.key.span });
            ok = false;
            continue;
        }
        if let Some(first) = seen.get(key) {
            errors.push(CheckError::Duplicate {
                what: "setting",
                name: key.to_string(),
                span: s.key.span,
                first: *first,
            });
            ok = false;
            continue;
        }
        seen.insert(key, s.key.span);
        if host_rows && DATA_KEYS.contains(&key) {
            errors.push(CheckError::HostRows { key: key.to_string(), span: s.key.span });
            ok = false;
            continue;
        }
        if !s.binding.is_empty() && !DATA_KEYS.contains(&key) {
            errors.push(CheckError::UnexpectedBinding {
                key: key.to_string(),
                span: s.binding[0].span.to(s.binding[s.binding.len() - 1].span),
            });
            ok = false;
            continue;
        }
        match key {
            "data" => data = data_spec(s, model, errors),
            "outliers" => outliers = data_spec(s, model, errors),
            "test" => {
                test = if s.binding.is_empty() {
                    bind_call(Family::TestSplit, &s.value, errors).map(|c| TestSpec::Split(typed_test_split(&c)))
                } else {
                    data_spec(s, model, errors).map(TestSpec::Data)
                }
            }
            "objective" => objective = bind_call(Family::Objective, &s.value, errors),
            "optimizer" => optimizer = bind_call(Family::Optimizer, &s.value, errors),
            "schedule" => schedule = bind_call(Family::Schedule, &s.value, errors),
            "regularize" => {
                let items: Vec<&ast::Expr> = match &s.value.kind {
                    ExprKind::List(items) => items.iter().collect(),
                    _ => vec![&s.value],
                };
                regularizers = items
                    .into_iter()
                    .map(|e| bind_call(Family::Regularizer, e, errors))
                    .collect::<Vec<_>>()
                    .into_iter()
                    .collect();
            }
            "batch" => batch = count_setting(s, 1, errors),
            "epochs" => epochs = count_setting(s, 1, errors),
            "init" => match &s.value.kind {
                _ if host_rows => {
                    errors.push(CheckError::HostInit { span: s.key.span });
                    ok = false;
                }
                ExprKind::Str(path) => init = Some(path.clone()),
                _ => {
                    let expected = "a checkpoint's path in quotes, e.g. \"runs/vae\"";
                    errors.push(CheckError::BadSettingValue { key: key.to_string(), span: s.value.span, expected });
                    ok = false;
                }
            },
            "freeze" => {
                freeze = match &s.value.kind {
                    ExprKind::List(items) => items.iter().collect(),
                    _ => vec![&s.value],
                };
                if let Some(bad) = freeze.iter().find(|e| e.as_name().is_none()) {
                    let expected = "a list of parameter and net names, e.g. [dec, sigma]";
                    errors.push(CheckError::BadSettingValue { key: key.to_string(), span: bad.span, expected });
                    ok = false;
                    freeze.clear();
                }
            }
            _ => seed = count_setting(s, 0, errors),
        }
    }
    let required: &[&'static str] = if host_rows { &["objective"] } else { &["data", "objective"] };
    for &key in required {
        if !seen.contains_key(key) {
            errors.push(CheckError::MissingSetting { key, span: t.model.span });
            ok = false;
        }
    }
    let data = if host_rows { None } else { Some(data?) };
    if let (Some(model), Some(data)) = (model, &data) {
        for v in model.variables.iter().filter(|v| v.role == Role::Visible) {
            if !data.binding.contains(&v.name) {
                errors.push(CheckError::UnboundVisible { name: v.name.clone(), span: data.span, decl: v.span });
                ok = false;
            }
        }
    }
    let default_call = |name: &str, family: Family| default_call(name, family, t.model.span);
    let objective = objective?;
    let optimizer = match seen.contains_key("optimizer") {
        true => optimizer?,
        false => default_call("sgd", Family::Optimizer),
    };
    let schedule = match seen.contains_key("schedule") {
        true => schedule?,
        false => default_call("constant", Family::Schedule),
    };
    let regularizers = regularizers?;
    let named_net = NET_ARGS.iter().find_map(|k| objective.options.get(*k).and_then(Value::as_str));
    if let (Some(model), Some(critic)) = (model, named_net)
        && !model.nets.iter().any(|n| n.name == critic)
    {
        let span = t
            .settings
            .iter()
            .find(|s| s.key.name == "objective")
            .and_then(|s| net_arg(&s.value))
            .map_or(objective.span, |e| e.span);
        errors.push(CheckError::Undefined {
            what: "net",
            name: critic.to_string(),
            span,
            candidates: model.nets.iter().map(|n| n.name.clone()).collect(),
        });
        ok = false;
    }
    let mut options = typed_options(&objective, &optimizer, &schedule, &regularizers);
    if let Objective::Classify(c) = &mut options.objective {
        c.outliers = outliers.is_some();
    }
    // `pcd(alpha)`/`jem(alpha)` and `energy_penalty(alpha)` are one penalty: given twice, which weight holds is unclear.
    let objective_alpha = match &options.objective {
        Objective::Pcd(p) | Objective::Jem(p) => p.alpha > 0.0,
        _ => false,
    };
    if let Some(penalty) = regularizers.iter().find(|r| r.name == "energy_penalty")
        && objective_alpha
    {
        errors.push(CheckError::DuplicateOption { name: "alpha".into(), span: penalty.span, first: objective.span });
        ok = false;
    }
    let (freeze, frozen) = match model {
        Some(model) => frozen_params(model, &freeze, t.model.span, errors)?,
        None => (Vec::new(), Vec::new()),
    };
    let train = Train {
        model: t.model.name.clone(),
        data,
        test,
        outliers,
        objective,
        optimizer,
        schedule,
        regularizers,
        options,
        batch: batch? as usize,
        epochs: epochs? as usize,
        seed: seed? as u64,
        init,
        freeze,
        frozen,
        span: t.span,
    };
    ok.then_some(train)
}

/// The names of a `freeze` list, as written, and the parameters they hold
/// fixed (a net's every weight) in declaration order; `None` after an
/// error (an unknown or repeated name, or every parameter frozen).
fn frozen_params(
    model: &Model,
    names: &[&ast::Expr],
    block: Span,
    errors: &mut Vec<CheckError>,
) -> Option<(Vec<String>, Vec<String>)> {
    let mut seen: BTreeMap<&str, Span> = BTreeMap::new();
    let mut ok = true;
    for e in names {
        // Cannot fail: the caller kept only bare names.
        let Some(name) = e.as_name() else { continue };
        if let Some(first) = seen.get(name) {
            errors.push(CheckError::Duplicate {
                what: "frozen name",
                name: name.to_string(),
                span: e.span,
                first: *first,
            });
            ok = false;
        } else if !model.params.iter().any(|p| p.name == name) && !model.nets.iter().any(|n| n.name == name) {
            let candidates =
                model.params.iter().map(|p| p.name.clone()).chain(model.nets.iter().map(|n| n.name.clone()));
            errors.push(CheckError::Undefined {
                what: "parameter or net",
                name: name.to_string(),
                span: e.span,
                candidates: candidates.collect(),
            });
            ok = false;
        }
        seen.insert(name, e.span);
    }
    if !ok {
        return None;
    }
    let held =
        |param: &str| seen.keys().any(|n| param == *n || param.strip_prefix(n).is_some_and(|r| r.starts_with('.')));
    let all = crate::ir::param_specs(model);
    let frozen: Vec<String> = all.iter().filter(|p| held(&p.name)).map(|p| p.name.clone()).collect();
    if !frozen.is_empty() && frozen.len() == all.len() {
        let span = names.first().zip(names.last()).map_or(block, |(a, b)| a.span.to(b.span));
        errors.push(CheckError::FreezeAll { model: model.name.clone(), span });
        return None;
    }
    Some((names.iter().filter_map(|e| e.as_name()).map(str::to_string).collect(), frozen))
}

/// The latent of a `reparam(z, ...)` call, by position or by name.
fn latent_arg(call: &ast::Expr) -> Option<&ast::Expr> {
    match &call.kind {
        ExprKind::Call { args, .. } => args
            .iter()
            .enumerate()
            .find(|(i, a)| a.name.as_ref().map_or(*i == 0, |n| n.name == "latent"))
            .map(|(_, a)| &a.value),
        _ => None,
    }
}

/// The objective options that name a net of the model: `lsd`'s critic, `elbo`'s encoder.
const NET_ARGS: [&str; 2] = ["critic", "encoder"];

/// The value of the argument of an objective call that names a net (`NET_ARGS`), if given.
fn net_arg(call: &ast::Expr) -> Option<&ast::Expr> {
    match &call.kind {
        ExprKind::Call { args, .. } => {
            args.iter().find(|a| a.name.as_ref().is_some_and(|n| NET_ARGS.contains(&n.name.as_str()))).map(|a| &a.value)
        }
        _ => None,
    }
}

/// The nets that train blocks for `model` name as an objective's critic or
/// encoder: used, though no energy calls them.
fn critics_of(file: &ast::File, model: &str) -> Vec<String> {
    file.items
        .iter()
        .filter_map(|item| match item {
            ast::Item::Train(t) if t.model.name == model => Some(t),
            _ => None,
        })
        .flat_map(|t| t.settings.iter().filter(|s| s.key.name == "objective"))
        .filter_map(|s| net_arg(&s.value)?.as_name().map(str::to_string))
        .collect()
}

/// A call of `name` with every option at its default, as if written `name()`.
fn default_call(name: &str, family: Family, span: Span) -> Call {
    let options = family
        .lookup(name)
        .map(|sig| sig.options)
        .unwrap_or_default()
        .iter()
        .filter_map(|o| match o.default {
            schema::Fallback::Num(x) => Some((o.name.to_string(), Value::Num(x))),
            schema::Fallback::Int(i) => Some((o.name.to_string(), Value::Int(i))),
            schema::Fallback::Bool(b) => Some((o.name.to_string(), Value::Bool(b))),
            schema::Fallback::Word(w) => Some((o.name.to_string(), Value::Str(w.to_string()))),
            _ => None,
        })
        .collect();
    Call { name: name.to_string(), options, span }
}

// Reading a bound call's options. `bind_call` (and `default_call`) put every
// option of the signature that has a default into the call, checked against
// its type, so only options whose default is `Absent` can be missing: the
// conversions below are the one place that names options, and the schema
// table the one place that gives their defaults.

fn bound<'c>(c: &'c Call, option: &str) -> &'c Value {
    // Cannot fire: see above; a signature/conversion mismatch fails every test that trains with it.
    c.options.get(option).unwrap_or_else(|| panic!("`{}` is bound with its `{option}` option", c.name))
}

fn num(c: &Call, option: &str) -> f64 {
    bound(c, option).as_f64().unwrap_or(f64::NAN)
}

fn count(c: &Call, option: &str) -> usize {
    bound(c, option).as_int().map_or(0, |i| i.max(0) as usize)
}

fn flag(c: &Call, option: &str) -> bool {
    bound(c, option).as_bool().unwrap_or(false)
}

fn word<'c>(c: &'c Call, option: &str) -> &'c str {
    bound(c, option).as_str().unwrap_or("")
}

fn maybe_num(c: &Call, option: &str) -> Option<f64> {
    c.options.get(option).and_then(Value::as_f64)
}

fn maybe_flag(c: &Call, option: &str) -> Option<bool> {
    c.options.get(option).and_then(Value::as_bool)
}

/// A bound `data` (or `test`) source call as a typed source.
fn typed_data_source(c: &Call) -> DataSource {
    let values = || ValueOptions { scale: num(c, "scale"), binarize: maybe_num(c, "binarize") };
    let path = || word(c, "path").to_string();
    let labels = || c.options.get("labels").and_then(Value::as_str).map(str::to_string);
    match c.name.as_str() {
        "csv" => DataSource::Csv { path: path(), header: maybe_flag(c, "header"), values: values() },
        "npy" => DataSource::Npy { path: path(), labels: labels(), values: values() },
        "idx" => DataSource::Idx { path: path(), labels: labels(), values: values() },
        "cifar10" => DataSource::Cifar10 { paths: bound(c, "path").as_strs().unwrap_or_default(), values: values() },
        "digits" => DataSource::Digits { values: values() },
        "bars_and_stripes" => DataSource::BarsAndStripes { size: count(c, "size") },
        "uniform" => DataSource::Uniform {
            n: count(c, "n"),
            low: num(c, "low"),
            high: num(c, "high"),
            seed: count(c, "seed") as u64,
        },
        _ => DataSource::Toy { name: word(c, "name").to_string(), n: count(c, "n"), seed: count(c, "seed") as u64 },
    }
}

/// The source reading `path` as `format` with every other option at the
/// schema's default, as if written `csv(path: "...")`.
pub fn file_source(format: FileFormat, path: &str) -> DataSource {
    let name = match format {
        FileFormat::Csv => "csv",
        FileFormat::Npy => "npy",
        FileFormat::Idx => "idx",
        FileFormat::Cifar10 => "cifar10",
    };
    let mut call = default_call(name, Family::DataSource, Span::default());
    // `cifar10`'s `path` reads as a list of one.
    call.options.insert("path".to_string(), Value::Str(path.to_string()));
    typed_data_source(&call)
}

/// A bound test split as a typed split.
fn typed_test_split(c: &Call) -> TestSplit {
    match c.name.as_str() {
        "last" => TestSplit::Last { rows: count(c, "rows") },
        "random" => TestSplit::Random { of: num(c, "of"), seed: count(c, "seed") as u64 },
        _ => TestSplit::Fraction { of: num(c, "of") },
    }
}

/// The `train` block's calls as typed options.
fn typed_options(objective: &Call, optimizer: &Call, schedule: &Call, regularizers: &[Call]) -> TrainOptions {
    let o = objective;
    let persistent = || Persistent {
        k: count(o, "k"),
        chains: count(o, "chains"),
        step: num(o, "step"),
        noise: maybe_num(o, "noise"),
        buffer: count(o, "buffer"),
        reinit: num(o, "reinit"),
        clip: maybe_num(o, "clip"),
        alpha: num(o, "alpha"),
        // `jem` has no improved-CD options: they are off there.
        kl: maybe_num(o, "kl").unwrap_or(0.0),
        entropy: maybe_num(o, "entropy").unwrap_or(0.0),
    };
    let objective = match o.name.as_str() {
        "cd" => Objective::Cd { k: count(o, "k") },
        "pcd" => Objective::Pcd(persistent()),
        "jem" => Objective::Jem(persistent()),
        "classify" => {
            let (m_in, m_out, weight) = crate::analysis::schema::CLASSIFY_DEFAULTS;
            Objective::Classify(Classify {
                m_in: maybe_num(o, "m_in").unwrap_or(m_in),
                m_out: maybe_num(o, "m_out").unwrap_or(m_out),
                weight: maybe_num(o, "weight").unwrap_or(weight),
                outliers: false,
            })
        }
        "pl" => Objective::Pl,
        "sm" => Objective::Sm,
        "dsm" => Objective::Dsm { sigma: num(o, "sigma") },
        "ssm" => Objective::Ssm {
            projections: count(o, "projections"),
            directions: match word(o, "directions") {
                "rademacher" => Directions::Rademacher,
                _ => Directions::Gaussian,
            },
            variance_reduced: flag(o, "variance_reduced"),
        },
        "nce" => Objective::Nce {
            noise: match word(o, "noise") {
                "uniform" => NoiseKind::Uniform,
                _ => NoiseKind::Gaussian,
            },
            ratio: count(o, "ratio"),
        },
        "lsd" => Objective::Lsd {
            critic: word(o, "critic").to_string(),
            penalty: num(o, "penalty"),
            critic_steps: count(o, "critic_steps"),
            directions: match word(o, "directions") {
                "gaussian" => Directions::Gaussian,
                _ => Directions::Rademacher,
            },
        },
        "elbo" => Objective::Elbo { encoder: word(o, "encoder").to_string(), samples: count(o, "samples") },
        _ => Objective::Cnce { sigma: num(o, "sigma") },
    };
    let p = optimizer;
    let optimizer = match p.name.as_str() {
        "adam" => Optimizer::Adam {
            lr: num(p, "lr"),
            beta1: num(p, "beta1"),
            beta2: num(p, "beta2"),
            eps: num(p, "eps"),
            weight_decay: num(p, "weight_decay"),
        },
        _ => Optimizer::Sgd {
            lr: num(p, "lr"),
            momentum: num(p, "momentum"),
            weight_decay: num(p, "weight_decay"),
            nesterov: flag(p, "nesterov"),
        },
    };
    let s = schedule;
    let schedule = match s.name.as_str() {
        "exponential" => Schedule::Exponential { gamma: num(s, "gamma") },
        "step" => Schedule::Step { every: count(s, "every"), gamma: num(s, "gamma") },
        "cosine" => Schedule::Cosine { min_lr: num(s, "min_lr") },
        _ => Schedule::Constant,
    };
    let mut regs = Regularizers::default();
    for r in regularizers {
        match r.name.as_str() {
            "l1" => regs.l1 = Some(num(r, "weight")),
            "l2" => regs.l2 = Some(num(r, "weight")),
            "energy_penalty" => regs.energy_penalty = Some(num(r, "alpha")),
            _ => regs.clip_grad = Some(num(r, "norm")),
        }
    }
    TrainOptions { objective, optimizer, schedule, regularizers: regs }
}

/// A `sample` block's kernel call as typed options.
fn typed_sampler(c: &Call) -> Sampler {
    match c.name.as_str() {
        "langevin" => Sampler::Langevin(langevin_options(c)),
        "mala" => Sampler::Mala { step: num(c, "step"), steps: count(c, "steps") },
        "hmc" => Sampler::Hmc { step: num(c, "step"), leapfrog: count(c, "leapfrog"), steps: count(c, "steps") },
        "reparam" => Sampler::Reparam {
            // Cannot be absent: `latent` is required.
            latent: c.options.get("latent").and_then(Value::as_str).unwrap_or_default().to_string(),
            langevin: langevin_options(c),
        },
        _ => Sampler::Gibbs,
    }
}

fn langevin_options(c: &Call) -> Langevin {
    Langevin {
        step: num(c, "step"),
        noise: maybe_num(c, "noise"),
        steps: count(c, "steps"),
        clip: maybe_num(c, "clip"),
    }
}

/// Langevin's options when no `sample` block names a kernel: the table's defaults.
pub fn default_langevin() -> Langevin {
    langevin_options(&default_call("langevin", Family::Sampler, Span::default()))
}

fn count_setting(s: &ast::Setting, min: i64, errors: &mut Vec<CheckError>) -> Option<i64> {
    match option_value(&s.value, OptType::Whole { min }, &BTreeMap::new()) {
        Some(Value::Int(n)) => Some(n),
        _ => {
            let expected = if min == 0 { "a whole number >= 0" } else { "a whole number >= 1" };
            errors.push(CheckError::BadSettingValue { key: s.key.name.clone(), span: s.value.span, expected });
            None
        }
    }
}

fn data_spec(s: &ast::Setting, model: Option<&Model>, errors: &mut Vec<CheckError>) -> Option<DataSpec> {
    let source = bind_call(Family::DataSource, &s.value, errors);
    if s.binding.is_empty() {
        errors.push(CheckError::MissingBinding { span: s.value.span });
        return None;
    }
    let mut ok = true;
    let mut bound: BTreeMap<&str, Span> = BTreeMap::new();
    for b in &s.binding {
        if let Some(first) = bound.get(b.name.as_str()) {
            errors.push(CheckError::Duplicate {
                what: "binding of",
                name: b.name.clone(),
                span: b.span,
                first: *first,
            });
            ok = false;
            continue;
        }
        bound.insert(&b.name, b.span);
        if let Some(model) = model {
            match model.variable(&b.name) {
                Some(v) if v.role == Role::Visible => {}
                Some(_) => {
                    errors.push(CheckError::BindNonVisible { name: b.name.clone(), span: b.span });
                    ok = false;
                }
                None => {
                    let candidates =
                        model.variables.iter().filter(|v| v.role == Role::Visible).map(|v| v.name.clone()).collect();
                    errors.push(CheckError::Undefined {
                        what: "visible variable",
                        name: b.name.clone(),
                        span: b.span,
                        candidates,
                    });
                    ok = false;
                }
            }
        }
    }
    let span = s.value.span.to(s.binding[s.binding.len() - 1].span);
    let source = typed_data_source(&source?);
    ok.then(|| DataSpec { source, binding: s.binding.iter().map(|b| b.name.clone()).collect(), span })
}
