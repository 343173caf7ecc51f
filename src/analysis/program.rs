//! The checked program: every name resolved, every shape known, every option
//! bound with its default. This is what the factor graph and planner read.
//! Shapes are per example; the batch dimension is added when lowering.

use crate::analysis::schema::Value;
use crate::front::ast::{BinOp, Role};
use crate::front::span::Span;
use serde::Serialize;
use std::collections::BTreeMap;

pub type Shape = Vec<usize>;

pub fn shape_str(shape: &[usize]) -> String {
    if shape.is_empty() {
        "scalar".to_string()
    } else {
        format!("[{}]", shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "))
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Program {
    pub models: BTreeMap<String, Model>,
    /// Train blocks, keyed by the model they train.
    pub trains: BTreeMap<String, Train>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Model {
    pub name: String,
    pub span: Span,
    pub variables: Vec<Variable>,
    pub params: Vec<Param>,
    pub consts: Vec<Const>,
    pub nets: Vec<Net>,
    pub energies: Vec<Energy>,
    pub overrides: Vec<Override>,
}

impl Model {
    pub fn variable(&self, name: &str) -> Option<&Variable> {
        self.variables.iter().find(|v| v.name == name)
    }

    pub fn constant(&self, name: &str) -> Option<&Const> {
        self.consts.iter().find(|c| c.name == name)
    }

    pub fn net(&self, name: &str) -> Option<&Net> {
        self.nets.iter().find(|n| n.name == name)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Variable {
    pub name: String,
    pub role: Role,
    pub domain: Domain,
    pub shape: Shape,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Domain {
    Binary,
    Spin,
    /// One-hot over `categories` values; the last axis of the shape.
    Categorical {
        categories: usize,
    },
    Real {
        bounds: Option<(f64, f64)>,
    },
}

impl Domain {
    pub fn is_discrete(&self) -> bool {
        !matches!(self, Domain::Real { .. })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Param {
    pub name: String,
    pub shape: Shape,
    pub init: Init,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Init {
    Constant(f64),
    Normal { mean: f64, std: f64 },
    Uniform { low: f64, high: f64 },
}

#[derive(Debug, Clone, Serialize)]
pub struct Const {
    pub name: String,
    pub shape: Shape,
    pub value: ConstValue,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum ConstValue {
    /// A number; filling a typed constant's shape when it has one.
    Fill(f64),
    /// The 0/1 adjacency matrix of a graph over `rows * cols` units.
    Graph(GraphConst),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Lattice {
    /// 4-neighbour square lattice.
    Grid,
    /// 6-neighbour triangular lattice.
    Triangular,
    Chain,
    Complete,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GraphConst {
    pub lattice: Lattice,
    pub rows: usize,
    pub cols: usize,
    pub periodic: bool,
}

impl GraphConst {
    /// Saturates rather than wrapping: `limits::check_program` refuses a
    /// lattice this large before anything is built from it.
    pub fn units(&self) -> usize {
        self.rows.saturating_mul(self.cols)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Net {
    pub name: String,
    pub kind: NetKind,
    /// Widths from input to output.
    pub layers: Vec<usize>,
    pub activation: Activation,
    pub bias: bool,
    pub spectral_norm: bool,
    pub span: Span,
}

/// What a net applies between its layers: `linear` nets have one layer and
/// none, `mlp`'s `act` names one of `Activation::MLP`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    Identity,
    Swish,
    Relu,
    Tanh,
    Softplus,
    Sigmoid,
}

impl Activation {
    /// The names `mlp(act: ...)` accepts (the schema's choices).
    pub const MLP: &'static [&'static str] = &["swish", "relu", "tanh", "softplus", "sigmoid"];

    pub fn from_name(name: &str) -> Option<Activation> {
        Some(match name {
            "swish" => Activation::Swish,
            "relu" => Activation::Relu,
            "tanh" => Activation::Tanh,
            "softplus" => Activation::Softplus,
            "sigmoid" => Activation::Sigmoid,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum NetKind {
    Linear,
    Mlp,
}

impl Net {
    /// A net whose last width is 1 returns a scalar.
    pub fn output_shape(&self) -> Shape {
        // Cannot fire: the checker builds nets from `a -> b ...`, at least two widths.
        match *self.layers.last().expect("nets have layers") {
            1 => vec![],
            n => vec![n],
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Energy {
    pub name: String,
    pub expr: TExpr,
    pub span: Span,
}

/// A typed, shaped expression.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TExpr {
    pub kind: TExprKind,
    pub shape: Shape,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum TExprKind {
    Number(f64),
    Var(String),
    Param(String),
    Const(String),
    Neg(Box<TExpr>),
    Transpose(Box<TExpr>),
    Binary { op: BinOp, lhs: Box<TExpr>, rhs: Box<TExpr> },
    Func { func: Func, arg: Box<TExpr> },
    Net { net: String, arg: Box<TExpr> },
}

impl TExpr {
    /// Calls `f` on this node and every node below it, parents first.
    pub fn walk<'a>(&'a self, f: &mut dyn FnMut(&'a TExpr)) {
        f(self);
        match &self.kind {
            TExprKind::Neg(e) | TExprKind::Transpose(e) => e.walk(f),
            TExprKind::Binary { lhs, rhs, .. } => {
                lhs.walk(f);
                rhs.walk(f);
            }
            TExprKind::Func { arg, .. } | TExprKind::Net { arg, .. } => arg.walk(f),
            TExprKind::Number(_) | TExprKind::Var(_) | TExprKind::Param(_) | TExprKind::Const(_) => {}
        }
    }
}

/// Built-in functions of energy expressions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Func {
    Exp,
    Log,
    Softplus,
    Sigmoid,
    Tanh,
    Relu,
    Swish,
    Abs,
    Sqrt,
    Square,
    Sum,
    Mean,
    Logsumexp,
}

impl Func {
    pub const ALL: [Func; 13] = [
        Func::Exp,
        Func::Log,
        Func::Softplus,
        Func::Sigmoid,
        Func::Tanh,
        Func::Relu,
        Func::Swish,
        Func::Abs,
        Func::Sqrt,
        Func::Square,
        Func::Sum,
        Func::Mean,
        Func::Logsumexp,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Func::Exp => "exp",
            Func::Log => "log",
            Func::Softplus => "softplus",
            Func::Sigmoid => "sigmoid",
            Func::Tanh => "tanh",
            Func::Relu => "relu",
            Func::Swish => "swish",
            Func::Abs => "abs",
            Func::Sqrt => "sqrt",
            Func::Square => "square",
            Func::Sum => "sum",
            Func::Mean => "mean",
            Func::Logsumexp => "logsumexp",
        }
    }

    pub fn from_name(name: &str) -> Option<Func> {
        Func::ALL.into_iter().find(|f| f.name() == name)
    }

    /// Reductions map any shape to a scalar; the rest act elementwise.
    pub fn is_reduction(self) -> bool {
        matches!(self, Func::Sum | Func::Mean | Func::Logsumexp)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Override {
    pub var: String,
    pub kernel: Call,
    /// `kernel`'s options, typed.
    #[serde(skip)]
    pub sampler: Sampler,
    pub span: Span,
}

/// A built-in call with its options bound (defaults filled in).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Call {
    pub name: String,
    pub options: BTreeMap<String, Value>,
    pub span: Span,
}

#[derive(Debug, Clone, Serialize)]
pub struct DataSpec {
    pub source: DataSource,
    /// Visible variables fed by the columns, in order.
    pub binding: Vec<String>,
    pub span: Span,
}

/// A data source with its options bound and typed by the checker
/// (`check::typed_data_source`), every default from the schema table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum DataSource {
    /// `header`: absent, the first row is a header when every cell is a name.
    Csv {
        path: String,
        header: Option<bool>,
        values: ValueOptions,
    },
    Npy {
        path: String,
        values: ValueOptions,
    },
    Idx {
        path: String,
        values: ValueOptions,
    },
    /// The bundled 8x8 digits.
    Digits {
        values: ValueOptions,
    },
    BarsAndStripes {
        size: usize,
    },
    /// `name` is one of `schema::TOY_SETS`.
    Toy {
        name: String,
        n: usize,
        seed: u64,
    },
}

/// How a source's numbers become values: times `scale`, then, with
/// `binarize`, 1 at or above the threshold and 0 below.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ValueOptions {
    pub scale: f64,
    pub binarize: Option<f64>,
}

impl DataSource {
    /// The value options of a source that reads numbers (not a generated set).
    pub fn values(&self) -> Option<&ValueOptions> {
        match self {
            DataSource::Csv { values, .. }
            | DataSource::Npy { values, .. }
            | DataSource::Idx { values, .. }
            | DataSource::Digits { values } => Some(values),
            DataSource::BarsAndStripes { .. } | DataSource::Toy { .. } => None,
        }
    }

    pub fn values_mut(&mut self) -> Option<&mut ValueOptions> {
        match self {
            DataSource::Csv { values, .. }
            | DataSource::Npy { values, .. }
            | DataSource::Idx { values, .. }
            | DataSource::Digits { values } => Some(values),
            DataSource::BarsAndStripes { .. } | DataSource::Toy { .. } => None,
        }
    }
}

/// The source as a call with every bound option, in name order
/// (`digits(binarize: 8, scale: 1)`), as checkpoints record it.
impl std::fmt::Display for DataSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let values = |v: &ValueOptions, before_scale: &str| {
            let binarize = v.binarize.map(|b| format!("binarize: {b}, ")).unwrap_or_default();
            format!("{binarize}{before_scale}scale: {}", v.scale)
        };
        match self {
            DataSource::Csv { path, header, values: v } => {
                let header = header.map(|h| format!("header: {h}, ")).unwrap_or_default();
                write!(f, "csv({})", values(v, &format!("{header}path: {path:?}, ")))
            }
            DataSource::Npy { path, values: v } => write!(f, "npy({})", values(v, &format!("path: {path:?}, "))),
            DataSource::Idx { path, values: v } => write!(f, "idx({})", values(v, &format!("path: {path:?}, "))),
            DataSource::Digits { values: v } => write!(f, "digits({})", values(v, "")),
            DataSource::BarsAndStripes { size } => write!(f, "bars_and_stripes(size: {size})"),
            DataSource::Toy { name, n, seed } => write!(f, "toy(n: {n}, name: {name:?}, seed: {seed})"),
        }
    }
}

/// The file formats a data file can be read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Csv,
    Npy,
    Idx,
}

/// Test rows held out of the data, typed by the checker.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum TestSplit {
    /// The last `rows` rows.
    Last { rows: usize },
    /// The last `of` of the rows, rounded.
    Fraction { of: f64 },
}

impl std::fmt::Display for TestSplit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TestSplit::Last { rows } => write!(f, "last(rows: {rows})"),
            TestSplit::Fraction { of } => write!(f, "fraction(of: {of})"),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub enum TestSpec {
    Split(TestSplit),
    Data(DataSpec),
}

/// The typed options of a `train` block, made once by the checker from the
/// bound calls (`check::typed_options`): every default comes from the schema
/// table, so the backend and runtime read fields, never option names.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainOptions {
    pub objective: Objective,
    pub optimizer: Optimizer,
    pub schedule: Schedule,
    pub regularizers: Regularizers,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Objective {
    Cd { k: usize },
    Pcd(Persistent),
    Pl,
    Sm,
    Dsm { sigma: f64 },
    Ssm { projections: usize, directions: Directions, variance_reduced: bool },
    Nce { noise: NoiseKind, ratio: usize },
    Cnce { sigma: f64 },
    Jem(Persistent),
}

impl Objective {
    /// The persistent-chain options of `pcd` and `jem`.
    pub fn persistent(&self) -> Option<&Persistent> {
        match self {
            Objective::Pcd(p) | Objective::Jem(p) => Some(p),
            _ => None,
        }
    }
}

/// Options of objectives that keep persistent chains (`pcd`, `jem`). `step`,
/// `noise` and `clip` drive Langevin chains; `buffer` and `reinit` their
/// replay buffer.
#[derive(Debug, Clone, PartialEq)]
pub struct Persistent {
    /// Sweeps (or Langevin steps) per update.
    pub k: usize,
    pub chains: usize,
    pub step: f64,
    /// Absent: `sqrt(2 step)`, the Langevin diffusion's own.
    pub noise: Option<f64>,
    pub buffer: usize,
    pub reinit: f64,
    pub clip: Option<f64>,
    pub alpha: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Directions {
    Gaussian,
    Rademacher,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoiseKind {
    Gaussian,
    Uniform,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Optimizer {
    Sgd { lr: f64, momentum: f64, weight_decay: f64, nesterov: bool },
    Adam { lr: f64, beta1: f64, beta2: f64, eps: f64, weight_decay: f64 },
}

impl Optimizer {
    /// The base learning rate, before the schedule.
    pub fn lr(&self) -> f64 {
        match self {
            Optimizer::Sgd { lr, .. } | Optimizer::Adam { lr, .. } => *lr,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    Constant,
    Exponential { gamma: f64 },
    Step { every: usize, gamma: f64 },
    Cosine { min_lr: f64 },
}

/// The `regularize` list; each is absent unless given.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Regularizers {
    pub l1: Option<f64>,
    pub l2: Option<f64>,
    /// `energy_penalty(alpha)`: alpha · (mean E² on the data + on the samples).
    pub energy_penalty: Option<f64>,
    pub clip_grad: Option<f64>,
}

/// A `sample` block's kernel for one variable, typed.
#[derive(Debug, Clone, PartialEq)]
pub enum Sampler {
    Gibbs,
    Langevin(Langevin),
    Mala { step: f64, steps: usize },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Langevin {
    pub step: f64,
    pub noise: Option<f64>,
    pub steps: usize,
    pub clip: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Train {
    pub model: String,
    /// `None` for settings bound by `check::train_settings`: a fit on rows a
    /// host holds in memory.
    pub data: Option<DataSpec>,
    pub test: Option<TestSpec>,
    pub objective: Call,
    pub optimizer: Call,
    pub schedule: Call,
    pub regularizers: Vec<Call>,
    /// The calls above, typed.
    #[serde(skip)]
    pub options: TrainOptions,
    pub batch: usize,
    pub epochs: usize,
    pub seed: u64,
    pub span: Span,
}
