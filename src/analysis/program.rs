//! The checked program: every name resolved, every shape known, every option
//! bound with its default. This is what the factor graph and planner read.
//! Shapes are per example; the batch dimension is added when lowering.

use crate::analysis::schema::Value;
use crate::front::ast::{BinOp, Role};
use crate::front::span::Span;
use serde::Serialize;
use std::collections::BTreeMap;

/// A per-example shape: axis lengths, outermost first; empty for a scalar.
pub type Shape = Vec<usize>;

/// Renders a shape for messages: `scalar`, or its lengths as `[a, b]`.
pub fn shape_str(shape: &[usize]) -> String {
    if shape.is_empty() {
        "scalar".to_string()
    } else {
        format!("[{}]", shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "))
    }
}

/// The number of elements of a shape, saturating: the checker sees sizes
/// before `limits` refuses the ones too large to hold.
pub fn elements(shape: &[usize]) -> usize {
    shape.iter().fold(1usize, |n, &d| n.saturating_mul(d))
}

/// A checked source file: its models and their train blocks.
#[derive(Debug, Clone, Serialize)]
pub struct Program {
    /// Models, keyed by name.
    pub models: BTreeMap<String, Model>,
    /// Train blocks, keyed by the model they train.
    pub trains: BTreeMap<String, Train>,
}

/// A checked model: its declarations, resolved and shaped.
#[derive(Debug, Clone, Serialize)]
pub struct Model {
    /// The model's declared name.
    pub name: String,
    /// Where the model is declared.
    pub span: Span,
    /// Declared variables, in source order.
    pub variables: Vec<Variable>,
    /// Trainable parameters, in source order.
    pub params: Vec<Param>,
    /// Constants, in source order.
    pub consts: Vec<Const>,
    /// Neural nets, in source order.
    pub nets: Vec<Net>,
    /// Energy terms, in source order; the model's energy is their sum.
    pub energies: Vec<Energy>,
    /// The `sample` block's per-variable kernel choices.
    pub overrides: Vec<Override>,
    /// The `sample` block's whole-model entry: tempered or annealed chains.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<Temperature>,
}

impl Model {
    /// The variable declared as `name`, if any.
    pub fn variable(&self, name: &str) -> Option<&Variable> {
        self.variables.iter().find(|v| v.name == name)
    }

    /// The constant declared as `name`, if any.
    pub fn constant(&self, name: &str) -> Option<&Const> {
        self.consts.iter().find(|c| c.name == name)
    }

    /// The net declared as `name`, if any.
    pub fn net(&self, name: &str) -> Option<&Net> {
        self.nets.iter().find(|n| n.name == name)
    }
}

/// A declared random variable.
#[derive(Debug, Clone, Serialize)]
pub struct Variable {
    /// The variable's declared name.
    pub name: String,
    /// Whether it is visible (fed by data) or hidden.
    pub role: Role,
    /// The values it takes.
    pub domain: Domain,
    /// Its per-example shape.
    pub shape: Shape,
    /// Where it is declared.
    pub span: Span,
}

/// The set of values a variable takes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Domain {
    /// 0 or 1 per element.
    Binary,
    /// -1 or +1 per element.
    Spin,
    /// One-hot over `categories` values; the last axis of the shape.
    Categorical {
        /// Number of categories (≥ 2).
        categories: usize,
    },
    /// Real numbers, optionally confined to an interval.
    Real {
        /// `(low, high)` when bounded; `None` for the whole real line.
        bounds: Option<(f64, f64)>,
    },
}

impl Domain {
    /// True for every domain but `Real`.
    pub fn is_discrete(&self) -> bool {
        !matches!(self, Domain::Real { .. })
    }
}

/// A trainable parameter.
#[derive(Debug, Clone, Serialize)]
pub struct Param {
    /// The parameter's declared name.
    pub name: String,
    /// Its shape.
    pub shape: Shape,
    /// How its values are set before training.
    pub init: Init,
    /// Where it is declared.
    pub span: Span,
}

/// How a parameter's values are first drawn.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Init {
    /// Every element set to this number.
    Constant(f64),
    /// Each element drawn from a normal distribution with this mean and standard deviation.
    Normal { mean: f64, std: f64 },
    /// Each element drawn uniformly between `low` and `high`.
    Uniform { low: f64, high: f64 },
}

/// A named constant.
#[derive(Debug, Clone, Serialize)]
pub struct Const {
    /// The constant's declared name.
    pub name: String,
    /// Its shape (the graph's `units × units` for a graph constant).
    pub shape: Shape,
    /// Its value.
    pub value: ConstValue,
    /// Where it is declared.
    pub span: Span,
}

/// A constant's value: a number or a built graph.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum ConstValue {
    /// A number; filling a typed constant's shape when it has one.
    Fill(f64),
    /// The 0/1 adjacency matrix of a graph over `rows * cols` units.
    Graph(GraphConst),
}

/// The lattice a graph constant builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Lattice {
    /// 4-neighbour square lattice.
    Grid,
    /// 6-neighbour triangular lattice.
    Triangular,
    /// A path, or a ring when periodic.
    Chain,
    /// Every pair of distinct units connected.
    Complete,
}

/// A graph-builder constant: the lattice and its size.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GraphConst {
    /// Which lattice.
    pub lattice: Lattice,
    /// Rows of units (1 for `chain` and `complete`).
    pub rows: usize,
    /// Units per row (`n` for `chain` and `complete`).
    pub cols: usize,
    /// Whether the lattice wraps around its edges.
    pub periodic: bool,
}

impl GraphConst {
    /// Saturates rather than wrapping: `limits::check_program` refuses a
    /// lattice this large before anything is built from it.
    pub fn units(&self) -> usize {
        self.rows.saturating_mul(self.cols)
    }
}

/// A declared neural net.
#[derive(Debug, Clone, Serialize)]
pub struct Net {
    /// The net's declared name.
    pub name: String,
    /// `linear`, `mlp` or `convnet`.
    pub kind: NetKind,
    /// Widths from input to output: a `convnet`'s channels, then its output width.
    pub layers: Vec<usize>,
    /// What it applies between layers.
    pub activation: Activation,
    /// Whether its layers add a bias.
    pub bias: bool,
    /// Whether each layer's weights are divided by their largest singular value.
    pub spectral_norm: bool,
    /// A `convnet`'s layout; `None` for `linear` and `mlp`.
    pub conv: Option<ConvLayout>,
    /// Where it is declared.
    pub span: Span,
}

/// How a `convnet(C0 -> C1 -> ... -> Cn -> OUT, ...)` is built, stage by
/// stage: stage `i` is a `kernel`×`kernel` convolution from `C(i-1)` to `Ci`
/// channels (zero-padded by `kernel / 2`) and the activation, then `blocks`
/// residual blocks `h ← act(h + conv(act(conv(h))))`. The first stage keeps
/// the resolution; each later one downsamples by `stride`: a strided
/// convolution, or with `pool` a stride-1 convolution and then
/// `stride`×`stride` average pooling. A global average over the image
/// follows, then a linear layer to `OUT`. Parameters: `f.k{i}` `[Ci, C(i-1),
/// k, k]` and `f.b{i}` `[Ci]` per stage, `f.k{i}.{j}a`/`b` and
/// `f.b{i}.{j}a`/`b` per block, `f.w` `[Cn, OUT]` and `f.b` `[OUT]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ConvLayout {
    /// The side of every square kernel; odd.
    pub kernel: usize,
    /// The downsampling factor of every stage after the first; ≥ 1.
    pub stride: usize,
    /// Residual blocks after each stage's convolution.
    pub blocks: usize,
    /// Whether stages downsample by average pooling instead of strides.
    pub pool: bool,
}

/// What a net applies between its layers: `linear` nets have one layer and
/// none, `mlp`'s `act` names one of `Activation::MLP`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// No activation (a `linear` net).
    Identity,
    /// `x · sigmoid(x)`.
    Swish,
    /// `max(x, 0)`.
    Relu,
    /// Hyperbolic tangent.
    Tanh,
    /// `log(1 + exp(x))`.
    Softplus,
    /// `1 / (1 + exp(-x))`.
    Sigmoid,
    /// `max(x, 0.2 x)`.
    #[serde(rename = "leaky_relu")]
    LeakyRelu,
}

impl Activation {
    /// The names `mlp(act: ...)` and `convnet(act: ...)` accept (the schema's choices).
    pub const MLP: &'static [&'static str] = &["swish", "relu", "tanh", "softplus", "sigmoid", "leaky_relu"];

    /// The activation an `mlp`'s `act` names, or `None` for an unknown name.
    pub fn from_name(name: &str) -> Option<Activation> {
        Some(match name {
            "swish" => Activation::Swish,
            "relu" => Activation::Relu,
            "tanh" => Activation::Tanh,
            "softplus" => Activation::Softplus,
            "sigmoid" => Activation::Sigmoid,
            "leaky_relu" => Activation::LeakyRelu,
            _ => return None,
        })
    }
}

/// The builder a net is declared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum NetKind {
    /// One affine layer: `linear(IN -> OUT)`.
    Linear,
    /// A multi-layer perceptron: `mlp(IN -> H1 -> ... -> OUT)`.
    Mlp,
    /// A convolutional net on `[C, H, W]` images: `convnet(C -> C1 -> ... -> OUT)`.
    Conv,
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

/// A named energy term.
#[derive(Debug, Clone, Serialize)]
pub struct Energy {
    /// The term's name.
    pub name: String,
    /// Its expression; scalar per example.
    pub expr: TExpr,
    /// Where it is declared.
    pub span: Span,
}

/// A typed, shaped expression.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TExpr {
    /// What the expression computes.
    pub kind: TExprKind,
    /// Its per-example shape.
    pub shape: Shape,
    /// Where it is written.
    pub span: Span,
}

/// A typed expression's node.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum TExprKind {
    /// A number literal.
    Number(f64),
    /// A variable, by name.
    Var(String),
    /// A parameter, by name.
    Param(String),
    /// A constant, by name.
    Const(String),
    /// Negation.
    Neg(Box<TExpr>),
    /// Transpose.
    Transpose(Box<TExpr>),
    /// A binary operation.
    Binary { op: BinOp, lhs: Box<TExpr>, rhs: Box<TExpr> },
    /// A built-in function applied to one argument.
    Func { func: Func, arg: Box<TExpr> },
    /// A declared net applied to one argument, by the net's name.
    Net { net: String, arg: Box<TExpr> },
    /// The argument's elements, row-major, in this node's shape
    /// (`reshape(x, [..])`, and `flatten(x)` to rank 1).
    Reshape(Box<TExpr>),
    /// `sum(x, axis: k)`: the argument summed along `axis`, which is removed.
    SumAxis { arg: Box<TExpr>, axis: usize },
    /// `mean(x, axis: k)`: the argument averaged along `axis`, which is removed.
    MeanAxis { arg: Box<TExpr>, axis: usize },
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
            TExprKind::Func { arg, .. }
            | TExprKind::Net { arg, .. }
            | TExprKind::Reshape(arg)
            | TExprKind::SumAxis { arg, .. }
            | TExprKind::MeanAxis { arg, .. } => arg.walk(f),
            TExprKind::Number(_) | TExprKind::Var(_) | TExprKind::Param(_) | TExprKind::Const(_) => {}
        }
    }
}

/// Built-in functions of energy expressions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Func {
    /// `exp(x)`.
    Exp,
    /// Natural logarithm.
    Log,
    /// `log(1 + exp(x))`.
    Softplus,
    /// `1 / (1 + exp(-x))`.
    Sigmoid,
    /// Hyperbolic tangent.
    Tanh,
    /// `max(x, 0)`.
    Relu,
    /// `x · sigmoid(x)`.
    Swish,
    /// Absolute value.
    Abs,
    /// Square root.
    Sqrt,
    /// `x²`.
    Square,
    /// Sum of every element (a reduction).
    Sum,
    /// Mean of every element (a reduction).
    Mean,
    /// `log Σ exp(x)` over every element (a reduction).
    Logsumexp,
    /// The elements as one vector (a reshape to rank 1).
    Flatten,
    /// The elements in another shape of the same size.
    Reshape,
}

impl Func {
    /// Every built-in function, in declaration order.
    pub const ALL: [Func; 15] = [
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
        Func::Flatten,
        Func::Reshape,
    ];

    /// The function's name in source.
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
            Func::Flatten => "flatten",
            Func::Reshape => "reshape",
        }
    }

    /// The function called `name`, if any.
    pub fn from_name(name: &str) -> Option<Func> {
        Func::ALL.into_iter().find(|f| f.name() == name)
    }

    /// Reductions map any shape to a scalar (`sum` and `mean` given an
    /// `axis` remove that axis only).
    pub fn is_reduction(self) -> bool {
        matches!(self, Func::Sum | Func::Mean | Func::Logsumexp)
    }

    /// Shape functions move elements without computing: `flatten`, `reshape`.
    pub fn is_shape(self) -> bool {
        matches!(self, Func::Flatten | Func::Reshape)
    }
}

/// A `sample` block entry: the kernel chosen for one variable.
#[derive(Debug, Clone, Serialize)]
pub struct Override {
    /// The variable the kernel samples.
    pub var: String,
    /// The kernel call as written, options bound.
    pub kernel: Call,
    /// `kernel`'s options, typed.
    #[serde(skip)]
    pub sampler: Sampler,
    /// Where the entry is written.
    pub span: Span,
}

/// A built-in call with its options bound (defaults filled in).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Call {
    /// The built-in's name.
    pub name: String,
    /// Every option by name, given or defaulted.
    pub options: BTreeMap<String, Value>,
    /// Where the call is written.
    pub span: Span,
}

/// A `data` clause: a source and the visible variables it feeds.
#[derive(Debug, Clone, Serialize)]
pub struct DataSpec {
    /// Where the rows come from.
    pub source: DataSource,
    /// Visible variables fed by the columns, in order.
    pub binding: Vec<String>,
    /// Where the clause is written.
    pub span: Span,
}

/// A data source with its options bound and typed by the checker
/// (`check::typed_data_source`), every default from the schema table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum DataSource {
    /// `header`: absent, the first row is a header when every cell is a name.
    Csv {
        /// The file's path as written.
        path: String,
        /// `Some(true)`: the first row is a header; `Some(false)`: it is data.
        header: Option<bool>,
        /// How the numbers become values.
        values: ValueOptions,
    },
    /// A NumPy `.npy` file.
    Npy {
        /// The file's path as written.
        path: String,
        /// A second `.npy` file of one label per row, for the second bound variable.
        labels: Option<String>,
        /// How the numbers become values (the labels are read as they are).
        values: ValueOptions,
    },
    /// An IDX file (the MNIST format).
    Idx {
        /// The file's path as written.
        path: String,
        /// A second IDX file of one label per row, for the second bound variable.
        labels: Option<String>,
        /// How the numbers become values (the labels are read as they are).
        values: ValueOptions,
    },
    /// CIFAR-10 binary batches: records of a label byte and 3,072 pixel bytes.
    Cifar10 {
        /// The files' paths as written, read in order.
        paths: Vec<String>,
        /// How the pixels become values (the labels are read as they are).
        values: ValueOptions,
    },
    /// The bundled 8x8 digits.
    Digits {
        /// How the numbers become values.
        values: ValueOptions,
    },
    /// Generated bars-and-stripes images.
    BarsAndStripes {
        /// Side length of the square images.
        size: usize,
    },
    /// `name` is one of `schema::TOY_SETS`.
    Toy {
        /// Which toy set.
        name: String,
        /// Rows generated.
        n: usize,
        /// Seed of the generator.
        seed: u64,
    },
    /// Generated rows, every unit of every bound (real) variable uniform in `[low, high]`.
    Uniform {
        /// Rows generated.
        n: usize,
        /// Low end of every unit's range.
        low: f64,
        /// High end.
        high: f64,
        /// Seed of the generator.
        seed: u64,
    },
}

/// How a source's numbers become values: times `scale`, then, with
/// `binarize`, 1 at or above the threshold and 0 below.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ValueOptions {
    /// Factor every number is multiplied by.
    pub scale: f64,
    /// Threshold for 0/1 values, applied after `scale`; `None` keeps the scaled numbers.
    pub binarize: Option<f64>,
}

impl DataSource {
    /// The value options of a source that reads numbers (not a generated set).
    pub fn values(&self) -> Option<&ValueOptions> {
        match self {
            DataSource::Csv { values, .. }
            | DataSource::Npy { values, .. }
            | DataSource::Idx { values, .. }
            | DataSource::Cifar10 { values, .. }
            | DataSource::Digits { values } => Some(values),
            DataSource::BarsAndStripes { .. } | DataSource::Toy { .. } | DataSource::Uniform { .. } => None,
        }
    }

    /// The value options of a source that reads numbers, mutably.
    pub fn values_mut(&mut self) -> Option<&mut ValueOptions> {
        match self {
            DataSource::Csv { values, .. }
            | DataSource::Npy { values, .. }
            | DataSource::Idx { values, .. }
            | DataSource::Cifar10 { values, .. }
            | DataSource::Digits { values } => Some(values),
            DataSource::BarsAndStripes { .. } | DataSource::Toy { .. } | DataSource::Uniform { .. } => None,
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
            DataSource::Npy { path, labels, values: v } => {
                write!(f, "npy({})", values(v, &format!("{}path: {path:?}, ", labels_str(labels))))
            }
            DataSource::Idx { path, labels, values: v } => {
                write!(f, "idx({})", values(v, &format!("{}path: {path:?}, ", labels_str(labels))))
            }
            DataSource::Cifar10 { paths, values: v } => match &paths[..] {
                [one] => write!(f, "cifar10({})", values(v, &format!("path: {one:?}, "))),
                _ => write!(f, "cifar10({})", values(v, &format!("path: {paths:?}, "))),
            },
            DataSource::Digits { values: v } => write!(f, "digits({})", values(v, "")),
            DataSource::BarsAndStripes { size } => write!(f, "bars_and_stripes(size: {size})"),
            DataSource::Toy { name, n, seed } => write!(f, "toy(n: {n}, name: {name:?}, seed: {seed})"),
            DataSource::Uniform { n, low, high, seed } => {
                write!(f, "uniform(high: {high}, low: {low}, n: {n}, seed: {seed})")
            }
        }
    }
}

/// `labels: "...", ` when a labels file is given.
fn labels_str(labels: &Option<String>) -> String {
    labels.as_ref().map(|l| format!("labels: {l:?}, ")).unwrap_or_default()
}

/// The file formats a data file can be read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// Comma-separated text.
    Csv,
    /// NumPy `.npy`.
    Npy,
    /// IDX (the MNIST format).
    Idx,
    /// CIFAR-10 binary batches.
    Cifar10,
}

/// Test rows held out of the data, typed by the checker.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum TestSplit {
    /// The last `rows` rows.
    /// Rows held out.
    Last { rows: usize },
    /// The last `of` of the rows, rounded.
    /// Fraction of the rows held out.
    Fraction { of: f64 },
    /// `of` of the rows, rounded, drawn at random by `seed` (the same rows
    /// for every command that reads the split); both sides keep the rows'
    /// order.
    Random { of: f64, seed: u64 },
}

impl std::fmt::Display for TestSplit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TestSplit::Last { rows } => write!(f, "last(rows: {rows})"),
            TestSplit::Fraction { of } => write!(f, "fraction(of: {of})"),
            TestSplit::Random { of, seed } => write!(f, "random(of: {of}, seed: {seed})"),
        }
    }
}

/// Where a `train` block's test rows come from.
#[derive(Debug, Clone, Serialize)]
pub enum TestSpec {
    /// Rows held out of the training data.
    Split(TestSplit),
    /// A separate data source.
    Data(DataSpec),
}

/// The typed options of a `train` block, made once by the checker from the
/// bound calls (`check::typed_options`): every default comes from the schema
/// table, so the backend and runtime read fields, never option names.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainOptions {
    /// The loss fitted.
    pub objective: Objective,
    /// How parameters are updated.
    pub optimizer: Optimizer,
    /// How the learning rate changes per epoch.
    pub schedule: Schedule,
    /// Penalties and gradient clipping.
    pub regularizers: Regularizers,
}

/// A training objective with its options.
#[derive(Debug, Clone, PartialEq)]
pub enum Objective {
    /// Contrastive divergence: samples after `k` sweeps from the batch.
    Cd { k: usize },
    /// Persistent contrastive divergence.
    Pcd(Persistent),
    /// Exact pseudo-likelihood.
    Pl,
    /// Exact score matching.
    Sm,
    /// Denoising score matching with noise level `sigma`.
    Dsm { sigma: f64 },
    /// Sliced score matching with `projections` random directions per row.
    Ssm { projections: usize, directions: Directions, variance_reduced: bool },
    /// Noise-contrastive estimation: `ratio` noise rows per data row, from a fitted `noise` distribution.
    Nce { noise: NoiseKind, ratio: usize },
    /// Conditional noise-contrastive estimation with perturbation scale `sigma`.
    Cnce { sigma: f64 },
    /// Joint energy model: cross-entropy of the label plus PCD on the input.
    Jem(Persistent),
    /// Learned Stein discrepancy: the net `critic` ascends the Stein
    /// discrepancy (less `penalty` times its mean square), `critic_steps`
    /// steps for each descent step of the energy.
    Lsd { critic: String, penalty: f64, critic_steps: usize, directions: Directions },
    /// The negative evidence lower bound of a latent-variable model (a VAE):
    /// the net `encoder` maps the visible variable to the mean and log
    /// standard deviation of a Gaussian posterior over the real latent,
    /// `samples` reparameterised draws per row.
    Elbo { encoder: String, samples: usize },
    /// Cross-entropy of the label alone, optionally with the energy-bounded outlier term.
    Classify(Classify),
}

/// Options of `classify` (Liu et al. 2020): the energy-bounded term
/// `weight (E[max(0, F(x_in) − m_in)²] + E[max(0, m_out − F(x_out))²])`
/// applies when the train block names `outliers`.
#[derive(Debug, Clone, PartialEq)]
pub struct Classify {
    /// The margin in-distribution energies are pushed below.
    pub m_in: f64,
    /// The margin outlier energies are pushed above.
    pub m_out: f64,
    /// The energy-bounded term's weight.
    pub weight: f64,
    /// Whether the train block names `outliers` (then the term applies).
    pub outliers: bool,
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
    /// Persistent chains kept.
    pub chains: usize,
    /// Langevin step size (> 0).
    pub step: f64,
    /// Absent: `sqrt(2 step)`, the Langevin diffusion's own.
    pub noise: Option<f64>,
    /// Replay-buffer capacity, in samples.
    pub buffer: usize,
    /// Fraction of chains restarted from fresh random states, in [0, 1).
    pub reinit: f64,
    /// Each gradient component clamped to `[-clip, clip]` in Langevin steps; `None`: no clamping.
    pub clip: Option<f64>,
    /// Energy-penalty weight (≥ 0; 0 is off).
    pub alpha: f64,
    /// Improved CD's KL term weight (≥ 0; 0 is off; `pcd` only).
    pub kl: f64,
    /// Improved CD's nearest-neighbour entropy weight (≥ 0; 0 is off; `pcd` only).
    pub entropy: f64,
}

/// Distribution of sliced score matching's projection directions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Directions {
    /// Standard normal directions.
    Gaussian,
    /// Random ±1 directions.
    Rademacher,
}

/// The noise distribution NCE fits to the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoiseKind {
    /// A Gaussian.
    Gaussian,
    /// A uniform distribution.
    Uniform,
}

/// An optimiser with its hyperparameters.
#[derive(Debug, Clone, PartialEq)]
pub enum Optimizer {
    /// Stochastic gradient descent, optionally with momentum and Nesterov's update.
    Sgd { lr: f64, momentum: f64, weight_decay: f64, nesterov: bool },
    /// Adam.
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

/// The per-epoch learning-rate schedule.
#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    /// The base rate throughout.
    Constant,
    /// `lr · gamma^e` in epoch `e`.
    Exponential { gamma: f64 },
    /// `lr · gamma^⌊e / every⌋` in epoch `e`.
    Step { every: usize, gamma: f64 },
    /// Cosine decay from `lr` to `min_lr` over the epochs.
    Cosine { min_lr: f64 },
}

/// The `regularize` list; each is absent unless given.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Regularizers {
    /// `l1(weight)`: adds `weight · sign(θ)` to each declared parameter's gradient.
    pub l1: Option<f64>,
    /// `l2(weight)`: adds `weight · θ` to each declared parameter's gradient.
    pub l2: Option<f64>,
    /// `energy_penalty(alpha)`: alpha · (mean E² on the data + on the samples).
    pub energy_penalty: Option<f64>,
    /// `clip_grad(norm)`: the global gradient norm clipped to this.
    pub clip_grad: Option<f64>,
}

/// A `sample` block's kernel for one variable, typed.
#[derive(Debug, Clone, PartialEq)]
pub enum Sampler {
    /// Gibbs sweeps, for discrete variables.
    Gibbs,
    /// Unadjusted Langevin steps, for real variables.
    Langevin(Langevin),
    /// Metropolis-adjusted Langevin: proposals of size `step`, `steps` per sweep, each accepted or rejected.
    Mala { step: f64, steps: usize },
    /// Hamiltonian Monte Carlo: `steps` trajectories per sweep of `leapfrog` steps of size `step`, each accepted or rejected.
    Hmc { step: f64, leapfrog: usize, steps: usize },
    /// Langevin steps in the reparameterised space of a Gaussian decoder:
    /// `x = mean(latent) + scale ⊙ ε`, moving `latent` and `ε` (VAEBM).
    Reparam { latent: String, langevin: Langevin },
}

/// A `sample` block's whole-model entry: how the chains are tempered.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Temperature {
    /// Parallel tempering: one replica of every chain at each temperature
    /// (the first is 1), adjacent replicas swapping states after each sweep.
    Ladder {
        /// Temperatures from 1 up, geometrically spaced.
        temperatures: Vec<f64>,
    },
    /// Annealing: β = 1/T ramped from `beta0` to 1 over the first `sweeps` sweeps.
    Anneal {
        /// The starting inverse temperature, in (0, 1).
        beta0: f64,
        /// Whether β rises linearly or geometrically.
        geometric: bool,
        /// Sweeps the ramp takes; later sweeps run at β = 1.
        sweeps: usize,
    },
}

impl Temperature {
    /// The ladder `1, r, r², …, t_max` of `replicas` temperatures.
    pub fn ladder(replicas: usize, t_max: f64) -> Temperature {
        let ratio = t_max.powf(1.0 / (replicas - 1) as f64);
        Temperature::Ladder { temperatures: (0..replicas).map(|i| ratio.powi(i as i32)).collect() }
    }

    /// The inverse temperature of sweep `k` (from 1) of an annealed run:
    /// `beta0` at the first sweep, rising to 1 at sweep `sweeps + 1` and after.
    pub fn anneal_beta(beta0: f64, geometric: bool, sweeps: usize, k: usize) -> f64 {
        let t = (k.saturating_sub(1) as f64 / sweeps as f64).min(1.0);
        if geometric { beta0.powf(1.0 - t) } else { beta0 + (1.0 - beta0) * t }
    }
}

/// Options of Langevin sampling.
#[derive(Debug, Clone, PartialEq)]
pub struct Langevin {
    /// Step size (> 0).
    pub step: f64,
    /// Noise scale; `None`: `sqrt(2 step)`.
    pub noise: Option<f64>,
    /// Steps per sweep.
    pub steps: usize,
    /// Each gradient component clamped to `[-clip, clip]`; `None`: no clamping.
    pub clip: Option<f64>,
}

/// A checked `train` block.
#[derive(Debug, Clone, Serialize)]
pub struct Train {
    /// The model trained.
    pub model: String,
    /// `None` for settings bound by `check::train_settings`: a fit on rows a
    /// host holds in memory.
    pub data: Option<DataSpec>,
    /// Where test rows come from; `None`: no test set.
    pub test: Option<TestSpec>,
    /// Outlier rows for `classify`'s energy-bounded term; `None`: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outliers: Option<DataSpec>,
    /// The objective call, options bound.
    pub objective: Call,
    /// The optimiser call, options bound.
    pub optimizer: Call,
    /// The schedule call, options bound.
    pub schedule: Call,
    /// The regulariser calls, options bound.
    pub regularizers: Vec<Call>,
    /// The calls above, typed.
    #[serde(skip)]
    pub options: TrainOptions,
    /// Rows per batch.
    pub batch: usize,
    /// Passes over the training rows.
    pub epochs: usize,
    /// Seed every random number of the run derives from.
    pub seed: u64,
    /// `init`: the checkpoint a fresh run starts from, as written (a run
    /// directory, `epoch-N` folder or `.safetensors` file, resolved like data
    /// paths); `None`: every parameter from its initialiser.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init: Option<String>,
    /// `freeze`: the parameters and nets named, as written.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub freeze: Vec<String>,
    /// The parameters `freeze` holds fixed (every weight of a named net), in
    /// declaration order: no gradient, no optimiser state.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub frozen: Vec<String>,
    /// Where the block is written.
    pub span: Span,
}
