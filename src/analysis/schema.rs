//! The table of every built-in callable that takes options: objectives,
//! optimisers, schedules, regularisers, data sources, test splits, parameter
//! initialisers, constant builders, nets and sampler kernels. The checker binds
//! arguments against it; docs/language.md describes the same table.

use serde::{Deserialize, Serialize};

/// The keys of a `train` block (docs/language.md section 9).
pub const TRAIN_KEYS: &[&str] = &[
    "data",
    "test",
    "outliers",
    "objective",
    "optimizer",
    "schedule",
    "regularize",
    "batch",
    "epochs",
    "seed",
    "init",
    "freeze",
];

/// A kind of built-in callable; each has its own table of signatures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Family {
    /// `train`'s `objective`.
    Objective,
    /// `train`'s `optimizer`.
    Optimizer,
    /// `train`'s learning-rate `schedule`.
    Schedule,
    /// An entry of `train`'s `regularize`.
    Regularizer,
    /// `train`'s `data` (and a `test` given as data).
    DataSource,
    /// `train`'s `test` split of the data.
    TestSplit,
    /// A parameter's initialiser.
    Initializer,
    /// A builder of a graph constant.
    ConstBuilder,
    /// A net's builder.
    Net,
    /// A kernel in a `sample` block.
    Sampler,
}

impl Family {
    /// The family's name in messages.
    pub fn noun(self) -> &'static str {
        match self {
            Family::Objective => "objective",
            Family::Optimizer => "optimizer",
            Family::Schedule => "learning-rate schedule",
            Family::Regularizer => "regularizer",
            Family::DataSource => "data source",
            Family::TestSplit => "test split",
            Family::Initializer => "initializer",
            Family::ConstBuilder => "constant builder",
            Family::Net => "net",
            Family::Sampler => "sampler",
        }
    }

    /// The family's signatures.
    pub fn signatures(self) -> &'static [Signature] {
        match self {
            Family::Objective => OBJECTIVES,
            Family::Optimizer => OPTIMIZERS,
            Family::Schedule => SCHEDULES,
            Family::Regularizer => REGULARIZERS,
            Family::DataSource => DATA_SOURCES,
            Family::TestSplit => TEST_SPLITS,
            Family::Initializer => INITIALIZERS,
            Family::ConstBuilder => CONST_BUILDERS,
            Family::Net => NETS,
            Family::Sampler => SAMPLERS,
        }
    }

    /// The signature called `name` in this family, if any.
    pub fn lookup(self, name: &str) -> Option<&'static Signature> {
        self.signatures().iter().find(|s| s.name == name)
    }

    /// The names of the family's callables, in table order.
    pub fn names(self) -> Vec<&'static str> {
        self.signatures().iter().map(|s| s.name).collect()
    }
}

/// A built-in callable and the options it takes.
#[derive(Debug)]
pub struct Signature {
    /// The callable's name in source.
    pub name: &'static str,
    /// Its options, in table order (the order positional arguments bind in).
    pub options: &'static [OptSig],
}

/// One option of a built-in.
#[derive(Debug)]
pub struct OptSig {
    /// The option's name.
    pub name: &'static str,
    /// The values it accepts.
    pub ty: OptType,
    /// What it is when not given.
    pub default: Fallback,
}

/// The values an option accepts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OptType {
    /// Any finite number.
    Real,
    /// A number > 0.
    Positive,
    /// A number >= 0.
    NonNegative,
    /// A number in [0, 1).
    Unit,
    /// A number in (0, 1).
    OpenUnit,
    /// An integer >= min.
    Whole {
        /// The smallest accepted value.
        min: i64,
    },
    /// `true` or `false`.
    Flag,
    /// A quoted string.
    Str,
    /// A quoted string or a list of them (`["a.bin", "b.bin"]`).
    Paths,
    /// A non-empty list of finite numbers (`[1, 1.5, 2.5]`).
    Numbers,
    /// One of these words, bare or quoted.
    Choice(&'static [&'static str]),
    /// The bare name of a net the model declares (`lsd`'s critic, `elbo`'s encoder).
    NetName,
    /// The bare name of a variable the model declares (`reparam`'s latent).
    VarName,
}

/// What an option is when not given.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fallback {
    /// It must be given.
    Required,
    /// Absent unless given (e.g. an optional clipping threshold).
    Absent,
    /// This number.
    Num(f64),
    /// This whole number.
    Int(i64),
    /// This flag.
    Bool(bool),
    /// This word.
    Word(&'static str),
}

/// A checked option value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    /// A whole number.
    Int(i64),
    /// A number.
    Num(f64),
    /// A flag.
    Bool(bool),
    /// A string or word.
    Str(String),
    /// A list of strings.
    List(Vec<String>),
    /// A list of numbers.
    Nums(Vec<f64>),
}

impl Value {
    /// The value as a number, for `Int` and `Num`.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Num(x) => Some(*x),
            _ => None,
        }
    }

    /// The value of an `Int`.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The text of a `Str`.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The strings of a `List`, or a `Str` as a list of one.
    pub fn as_strs(&self) -> Option<Vec<String>> {
        match self {
            Value::List(items) => Some(items.clone()),
            Value::Str(s) => Some(vec![s.clone()]),
            _ => None,
        }
    }

    /// The numbers of a `Nums`.
    pub fn as_nums(&self) -> Option<&[f64]> {
        match self {
            Value::Nums(xs) => Some(xs),
            _ => None,
        }
    }

    /// The value of a `Bool`.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Int(i) => write!(f, "{i}"),
            Value::Num(x) => write!(f, "{x}"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Str(s) => write!(f, "{s}"),
            Value::List(items) => write!(f, "{items:?}"),
            Value::Nums(xs) => {
                let xs: Vec<String> = xs.iter().map(f64::to_string).collect();
                write!(f, "[{}]", xs.join(", "))
            }
        }
    }
}

macro_rules! opt {
    ($name:literal, $ty:expr, $default:expr) => {
        OptSig { name: $name, ty: $ty, default: $default }
    };
}

use Fallback::*;
use OptType::*;

const POS_INT: OptType = Whole { min: 1 };
const NOISE_KINDS: &[&str] = &["gaussian", "uniform"];
const DIRECTIONS: &[&str] = &["gaussian", "rademacher"];
const ACTIVATIONS: &[&str] = crate::analysis::program::Activation::MLP;
/// The names `toy(name: ...)` accepts.
pub const TOY_SETS: &[&str] = &["8gaussians", "2spirals", "moons", "checkerboard", "rings", "swissroll", "pinwheel"];

/// Options of `pcd` and `jem` that only Langevin chains (continuous
/// variables) use: a discrete model's plan leaves them out.
pub const LANGEVIN_OPTIONS: &[&str] = &["step", "noise", "clip", "buffer", "reinit"];

/// Options of `pcd` for improved CD (Du et al. 2020): off at 0, and the
/// plan's text names them only when on.
pub const IMPROVED_CD_OPTIONS: &[&str] = &["kl", "entropy"];

/// The objectives `train`'s `objective` accepts.
pub static OBJECTIVES: &[Signature] = &[
    Signature { name: "cd", options: &[opt!("k", POS_INT, Int(1))] },
    Signature {
        name: "pcd",
        options: &[
            opt!("k", POS_INT, Int(1)),
            opt!("chains", POS_INT, Int(100)),
            opt!("step", Positive, Num(0.01)),
            opt!("noise", NonNegative, Absent),
            opt!("buffer", POS_INT, Int(10000)),
            opt!("reinit", Unit, Num(0.05)),
            opt!("clip", Positive, Absent),
            opt!("alpha", NonNegative, Num(0.0)),
            opt!("kl", NonNegative, Num(0.0)),
            opt!("entropy", NonNegative, Num(0.0)),
        ],
    },
    Signature { name: "pl", options: &[] },
    Signature { name: "sm", options: &[] },
    Signature { name: "dsm", options: &[opt!("sigma", Positive, Num(0.1))] },
    Signature {
        name: "ssm",
        options: &[
            opt!("projections", POS_INT, Int(1)),
            opt!("directions", Choice(DIRECTIONS), Word("gaussian")),
            opt!("variance_reduced", Flag, Bool(false)),
        ],
    },
    Signature {
        name: "nce",
        options: &[opt!("noise", Choice(NOISE_KINDS), Word("gaussian")), opt!("ratio", POS_INT, Int(1))],
    },
    Signature { name: "cnce", options: &[opt!("sigma", Positive, Num(0.1))] },
    Signature {
        name: "lsd",
        options: &[
            opt!("critic", NetName, Required),
            opt!("penalty", Positive, Num(0.5)),
            opt!("critic_steps", POS_INT, Int(5)),
            opt!("directions", Choice(DIRECTIONS), Word("rademacher")),
        ],
    },
    Signature { name: "elbo", options: &[opt!("encoder", NetName, Required), opt!("samples", POS_INT, Int(1))] },
    Signature {
        name: "jem",
        options: &[
            opt!("k", POS_INT, Int(20)),
            opt!("chains", POS_INT, Int(100)),
            opt!("step", Positive, Num(1.0)),
            opt!("noise", NonNegative, Num(0.01)),
            opt!("buffer", POS_INT, Int(10000)),
            opt!("reinit", Unit, Num(0.05)),
            opt!("alpha", NonNegative, Num(0.0)),
        ],
    },
    // The margins and weight of the energy-bounded term, absent so that the
    // planner can refuse them without `outliers` (defaults in `CLASSIFY_DEFAULTS`).
    Signature {
        name: "classify",
        options: &[opt!("m_in", Real, Absent), opt!("m_out", Real, Absent), opt!("weight", NonNegative, Absent)],
    },
];

/// `classify`'s `m_in`, `m_out` and `weight` when not given: Liu et al.'s
/// CIFAR-10 settings (−23, −5, 0.1) moved to the digits' energy scale.
pub const CLASSIFY_DEFAULTS: (f64, f64, f64) = (-25.0, -7.0, 0.1);

/// The optimisers.
pub static OPTIMIZERS: &[Signature] = &[
    Signature {
        name: "sgd",
        options: &[
            opt!("lr", Positive, Num(0.01)),
            opt!("momentum", Unit, Num(0.0)),
            opt!("weight_decay", NonNegative, Num(0.0)),
            opt!("nesterov", Flag, Bool(false)),
        ],
    },
    Signature {
        name: "adam",
        options: &[
            opt!("lr", Positive, Num(1e-3)),
            opt!("beta1", Unit, Num(0.9)),
            opt!("beta2", Unit, Num(0.999)),
            opt!("eps", Positive, Num(1e-8)),
            opt!("weight_decay", NonNegative, Num(0.0)),
        ],
    },
];

/// The learning-rate schedules.
pub static SCHEDULES: &[Signature] = &[
    Signature { name: "constant", options: &[] },
    Signature { name: "exponential", options: &[opt!("gamma", OpenUnit, Required)] },
    Signature { name: "step", options: &[opt!("every", POS_INT, Required), opt!("gamma", OpenUnit, Num(0.1))] },
    Signature { name: "cosine", options: &[opt!("min_lr", NonNegative, Num(0.0))] },
];

/// The regularisers.
pub static REGULARIZERS: &[Signature] = &[
    Signature { name: "l1", options: &[opt!("weight", Positive, Required)] },
    Signature { name: "l2", options: &[opt!("weight", Positive, Required)] },
    Signature { name: "energy_penalty", options: &[opt!("alpha", Positive, Required)] },
    Signature { name: "clip_grad", options: &[opt!("norm", Positive, Required)] },
];

/// The data sources.
pub static DATA_SOURCES: &[Signature] = &[
    Signature {
        name: "csv",
        options: &[
            opt!("path", Str, Required),
            opt!("header", Flag, Absent),
            opt!("binarize", Real, Absent),
            opt!("scale", Positive, Num(1.0)),
        ],
    },
    Signature {
        name: "npy",
        options: &[
            opt!("path", Str, Required),
            opt!("binarize", Real, Absent),
            opt!("scale", Positive, Num(1.0)),
            opt!("labels", Str, Absent),
        ],
    },
    Signature {
        name: "idx",
        options: &[
            opt!("path", Str, Required),
            opt!("binarize", Real, Absent),
            opt!("scale", Positive, Num(1.0)),
            opt!("labels", Str, Absent),
        ],
    },
    // Pixels are bytes: the default scale puts them in [0, 1].
    Signature {
        name: "cifar10",
        options: &[
            opt!("path", Paths, Required),
            opt!("binarize", Real, Absent),
            opt!("scale", Positive, Num(1.0 / 255.0)),
        ],
    },
    Signature { name: "digits", options: &[opt!("binarize", NonNegative, Absent), opt!("scale", Positive, Num(1.0))] },
    Signature { name: "bars_and_stripes", options: &[opt!("size", Whole { min: 2 }, Int(4))] },
    Signature {
        name: "toy",
        options: &[
            opt!("name", Choice(TOY_SETS), Required),
            opt!("n", POS_INT, Int(10000)),
            opt!("seed", Whole { min: 0 }, Int(0)),
        ],
    },
    // Generated outliers (`classify`'s `outliers`): every bound unit uniform in [low, high].
    Signature {
        name: "uniform",
        options: &[
            opt!("n", POS_INT, Int(10000)),
            opt!("low", Real, Num(0.0)),
            opt!("high", Real, Num(1.0)),
            opt!("seed", Whole { min: 0 }, Int(0)),
        ],
    },
];

/// The test splits.
pub static TEST_SPLITS: &[Signature] = &[
    Signature { name: "last", options: &[opt!("rows", POS_INT, Required)] },
    Signature { name: "fraction", options: &[opt!("of", OpenUnit, Required)] },
    Signature { name: "random", options: &[opt!("of", OpenUnit, Required), opt!("seed", Whole { min: 0 }, Int(0))] },
];

/// The parameter initialisers.
pub static INITIALIZERS: &[Signature] = &[
    Signature { name: "zeros", options: &[] },
    Signature { name: "ones", options: &[] },
    Signature { name: "normal", options: &[opt!("mean", Real, Num(0.0)), opt!("std", Positive, Num(1.0))] },
    Signature { name: "uniform", options: &[opt!("low", Real, Num(-1.0)), opt!("high", Real, Num(1.0))] },
];

/// The graph-constant builders.
pub static CONST_BUILDERS: &[Signature] = &[
    Signature {
        name: "grid",
        options: &[
            opt!("rows", POS_INT, Required),
            opt!("cols", POS_INT, Required),
            opt!("periodic", Flag, Bool(false)),
        ],
    },
    Signature {
        name: "triangular",
        options: &[
            opt!("rows", POS_INT, Required),
            opt!("cols", POS_INT, Required),
            opt!("periodic", Flag, Bool(false)),
        ],
    },
    Signature { name: "chain", options: &[opt!("n", POS_INT, Required), opt!("periodic", Flag, Bool(false))] },
    Signature { name: "complete", options: &[opt!("n", POS_INT, Required)] },
];

/// The net builders.
pub static NETS: &[Signature] = &[
    Signature { name: "linear", options: &[opt!("bias", Flag, Bool(true)), opt!("spectral_norm", Flag, Bool(false))] },
    Signature {
        name: "mlp",
        options: &[opt!("act", Choice(ACTIVATIONS), Word("swish")), opt!("spectral_norm", Flag, Bool(false))],
    },
    // `kernel` odd and `blocks` within `limits::MAX_CONV_BLOCKS` are checked by the checker.
    Signature {
        name: "convnet",
        options: &[
            opt!("kernel", POS_INT, Int(3)),
            opt!("stride", POS_INT, Int(2)),
            opt!("blocks", Whole { min: 0 }, Int(0)),
            opt!("pool", Flag, Bool(false)),
            opt!("act", Choice(ACTIVATIONS), Word("swish")),
            opt!("bias", Flag, Bool(true)),
            opt!("spectral_norm", Flag, Bool(false)),
        ],
    },
];

/// The `sample`-block kernels.
pub static SAMPLERS: &[Signature] = &[
    Signature { name: "gibbs", options: &[] },
    Signature {
        name: "langevin",
        options: &[
            opt!("step", Positive, Num(0.01)),
            opt!("noise", NonNegative, Absent),
            opt!("steps", POS_INT, Int(1)),
            opt!("clip", Positive, Absent),
        ],
    },
    Signature { name: "mala", options: &[opt!("step", Positive, Num(0.01)), opt!("steps", POS_INT, Int(1))] },
    // Langevin in a VAE's (z, ε) space (VAEBM): `x: reparam(z)`.
    Signature {
        name: "reparam",
        options: &[
            opt!("latent", VarName, Required),
            opt!("step", Positive, Num(0.01)),
            opt!("noise", NonNegative, Absent),
            opt!("steps", POS_INT, Int(1)),
            opt!("clip", Positive, Absent),
        ],
    },
    Signature {
        name: "hmc",
        options: &[
            opt!("step", Positive, Num(0.1)),
            opt!("leapfrog", POS_INT, Int(10)),
            opt!("steps", POS_INT, Int(1)),
        ],
    },
    // Whole-model entries, written as bare calls (`tempering(replicas: 8);`).
    // `temperatures` gives the ladder by hand instead of `replicas` and `t_max`.
    Signature {
        name: "tempering",
        options: &[
            opt!("replicas", Whole { min: 2 }, Int(8)),
            opt!("t_max", Positive, Num(10.0)),
            opt!("temperatures", Numbers, Absent),
        ],
    },
    Signature {
        name: "anneal",
        options: &[
            opt!("beta0", OpenUnit, Num(0.1)),
            opt!("ramp", Choice(&["linear", "geometric"]), Word("geometric")),
            opt!("sweeps", POS_INT, Int(100)),
        ],
    },
];

/// The `sample`-block entries that apply to the whole model, not to one variable.
pub const WHOLE_MODEL_SAMPLERS: &[&str] = &["tempering", "anneal"];
