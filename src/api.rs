//! The library façade: compile a model, initialise, fit, sample and score it
//! from a host program, with rows as plain `f32` slices and one error type.
//!
//! ```
//! use ebmc::{FitOptions, Model, Rows};
//!
//! let model = Model::from_source(
//!     "model coin { visible v : binary[2]; param b : real[2] = zeros; energy e = -(b @ v); }",
//! )?;
//! let rows = Rows::new().with("v", vec![1.0, 0.0, 1.0, 1.0, 1.0, 0.0], &[3, 2])?;
//! let options = FitOptions::new().settings("objective = pl; optimizer = sgd(lr: 0.5);").epochs(20);
//! let fitted = model.fit(&model.init_params(0), &rows, &options)?;
//! let energies = model.energy(&fitted.params, &rows)?;
//! assert_eq!(energies.len(), 3);
//! # Ok::<(), ebmc::Error>(())
//! ```
//!
//! Every entry point checks what it is given against the model (variables
//! present, shapes, finite values in the variable's domain, parameters of
//! the declared shapes) and returns an [`Error`] rather than panicking.
//! Nothing is written to disk unless [`Model::save`] is called.

#![warn(missing_docs)]

use crate::analysis::limits::{self, LimitError, SampleRun};
use crate::analysis::plan::Plan;
use crate::analysis::program::{Domain, Program, Train, Variable};
use crate::analysis::{graph, graph::FactorGraph};
use crate::backend::{self, DeviceKind, TrainError, Trainer};
use crate::front::ast::{Item, Role};
use crate::front::diagnostic::Diagnostic;
use crate::ir::{self, Lowered};
use crate::runtime::data::{DataError, Dataset};
use crate::runtime::given::{Part, PartError};
use crate::runtime::{evaluate, train as run};
use crate::tensor::{self, HostTensor, ShapeError, Tensors};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub use crate::runtime::train::EpochMetrics;

/// Everything that can go wrong in the façade. Each kind has a stable code
/// ([`Error::code`], documented in `docs/diagnostics.md`); [`Error::diagnostics`]
/// gives the diagnostics to render, and `Display` renders them as `ebmc check`
/// does (without colour).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// The source does not parse, check or plan: every diagnostic found,
    /// with the text and file name they point into.
    Compile {
        /// The file name the diagnostics render with (`<source>` for a string).
        file: String,
        /// The text the diagnostics' spans point into.
        source: String,
        /// Errors first, then warnings.
        diagnostics: Vec<Diagnostic>,
    },
    /// The source has no model of the name asked for, or several models and
    /// no name (`wanted` is `None`).
    Model {
        /// The name asked for.
        wanted: Option<String>,
        /// The source's models.
        models: Vec<String>,
    },
    /// Rows that do not fit the model: a missing variable, a wrong shape,
    /// different row counts, a NaN.
    Rows(ShapeError),
    /// A name in the rows that is not a variable of the model.
    UnknownVariable {
        /// The name in the rows.
        name: String,
        /// The model's variables.
        known: Vec<String>,
    },
    /// A part of a variable to clamp that does not parse or fit the model
    /// (`Sampler::clamp_part`), or values that are not whole rows of it.
    Part(PartError),
    /// A row value outside its variable's domain (a 0.5 for a binary unit).
    Domain {
        /// The variable.
        var: String,
        /// The row (0-based).
        row: usize,
        /// The flat index within the row (0-based).
        index: usize,
        /// The value found.
        value: f32,
        /// The values the variable takes, in words.
        domain: String,
    },
    /// Parameters that do not fit the model: missing, of the wrong shape,
    /// not finite, or of another model.
    Params(ShapeError),
    /// The train block's data source could not be loaded.
    Data(DataError),
    /// `fit` has no objective: the file has no train block for the model and
    /// the options give no settings.
    NoTraining {
        /// The model's name.
        model: String,
    },
    /// An option out of its range (`epochs: 0`, a negative learning rate).
    Option {
        /// The option's name.
        option: &'static str,
        /// The value given.
        value: String,
        /// The values it takes, in words.
        expected: &'static str,
    },
    /// A size past a limit (`docs/limits.md`).
    Limit(LimitError),
    /// Training failed: a loss, gradient or parameter became non-finite, or
    /// the objective could not be set up.
    Train(TrainError),
    /// The backend refused to run: its reason.
    Backend(String),
    /// What was asked cannot be computed for this model, with the reason.
    Unavailable {
        /// What was asked, in words.
        what: &'static str,
        /// Why it cannot be computed.
        reason: String,
    },
    /// No way to find log Z: why enumeration failed, and why the grid
    /// integral (continuous models) or AIS (discrete ones) did.
    NoLogZ {
        /// Why there is no exact log Z.
        exact: String,
        /// Why there is no grid integral, when one was tried.
        grid: Option<String>,
        /// Why there is no AIS estimate, when one was tried.
        ais: Option<String>,
    },
    /// A result that came out NaN or infinite (the energies overflow).
    NotFinite {
        /// The result, in words.
        what: &'static str,
        /// The value it came out as.
        value: f64,
    },
    /// A file or checkpoint could not be read or written.
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's (or the checkpoint reader's) reason.
        reason: String,
    },
}

impl Error {
    /// The stable code of this error (`E0602`, ...); for [`Error::Compile`],
    /// the code of its first error diagnostic.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Compile { diagnostics, .. } => {
                diagnostics.iter().find(|d| d.is_error()).or(diagnostics.first()).map_or("E0600", |d| d.code)
            }
            Error::Limit(e) => Diagnostic::from(e).code,
            other => Diagnostic::from(other).code,
        }
    }

    /// The diagnostics to render: a compile error's own, or one built from
    /// the error (no source location) with the wording of `ebmc`'s messages.
    pub fn diagnostics(&self) -> Vec<Diagnostic> {
        match self {
            Error::Compile { diagnostics, .. } => diagnostics.clone(),
            other => vec![Diagnostic::from(other)],
        }
    }
}

/// A compiled, checked and planned model of an `.ebm` source: its program,
/// factor graph, plan and lowered IR, and the train block when there is one.
#[derive(Debug, Clone)]
pub struct Model {
    file: String,
    source: String,
    program: Program,
    graph: FactorGraph,
    plan: Plan,
    lowered: Lowered,
    warnings: Vec<Diagnostic>,
    device: DeviceKind,
}

/// Parameter values by name, each a flat row-major `f32` buffer and its shape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Params {
    tensors: Tensors,
}

/// Rows of values by variable: each variable's rows as one flat row-major
/// `f32` buffer of shape `[rows, ...variable shape]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rows {
    tensors: Tensors,
}

fn tensor_of(name: &str, data: Vec<f32>, shape: &[usize]) -> Result<HostTensor, ShapeError> {
    match shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) {
        Some(n) if n == data.len() => Ok(HostTensor::new(shape.to_vec(), data)),
        _ => Err(ShapeError::Inconsistent { name: name.to_string(), shape: shape.to_vec(), len: data.len() }),
    }
}

impl Params {
    /// No parameters; fill with [`Params::insert`], or start from [`Model::init_params`].
    pub fn new() -> Params {
        Params::default()
    }

    /// Sets parameter `name` to `data` of `shape` (row-major). Errs when
    /// `data` does not hold as many values as `shape` says; whether the
    /// parameter fits the model is checked where it is used.
    pub fn insert(&mut self, name: &str, data: Vec<f32>, shape: &[usize]) -> Result<(), Error> {
        self.tensors.insert(name.to_string(), tensor_of(name, data, shape).map_err(Error::Params)?);
        Ok(())
    }

    /// The values and shape of parameter `name`.
    pub fn get(&self, name: &str) -> Option<(&[f32], &[usize])> {
        self.tensors.get(name).map(|t| (t.data.as_slice(), t.shape.as_slice()))
    }

    /// The parameters' names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// The host tensors the lower layers (`backend`, `runtime`) take.
    pub fn tensors(&self) -> &Tensors {
        &self.tensors
    }

    /// Wraps host tensors (as `runtime::train::load_params` returns them).
    pub fn from_tensors(tensors: Tensors) -> Params {
        Params { tensors }
    }
}

impl Rows {
    /// No rows; add variables with [`Rows::with`] or [`Rows::insert`].
    pub fn new() -> Rows {
        Rows::default()
    }

    /// These rows with variable `var` set to `data` of shape
    /// `[rows, ...variable shape]` (row-major).
    ///
    /// ```
    /// let rows = ebmc::Rows::new().with("v", vec![0.0, 1.0, 1.0, 0.0], &[2, 2])?;
    /// assert_eq!(rows.len(), 2);
    /// assert!(ebmc::Rows::new().with("v", vec![0.0; 3], &[2, 2]).is_err());
    /// # Ok::<(), ebmc::Error>(())
    /// ```
    pub fn with(mut self, var: &str, data: Vec<f32>, shape: &[usize]) -> Result<Rows, Error> {
        self.insert(var, data, shape)?;
        Ok(self)
    }

    /// Sets variable `var` as [`Rows::with`] does. Errs when `data` does not
    /// hold as many values as `shape` says or `shape` has no rows axis;
    /// whether the rows fit the model is checked where they are used.
    pub fn insert(&mut self, var: &str, data: Vec<f32>, shape: &[usize]) -> Result<(), Error> {
        if shape.is_empty() {
            return Err(Error::Rows(ShapeError::Inconsistent {
                name: var.to_string(),
                shape: vec![],
                len: data.len(),
            }));
        }
        self.tensors.insert(var.to_string(), tensor_of(var, data, shape).map_err(Error::Rows)?);
        Ok(())
    }

    /// The values and shape `[rows, ...]` of variable `var`.
    pub fn get(&self, var: &str) -> Option<(&[f32], &[usize])> {
        self.tensors.get(var).map(|t| (t.data.as_slice(), t.shape.as_slice()))
    }

    /// The values of row `row` of variable `var`.
    pub fn row(&self, var: &str, row: usize) -> Option<&[f32]> {
        let t = self.tensors.get(var)?;
        let per: usize = t.shape.get(1..)?.iter().product();
        t.data.get(row * per..(row + 1) * per).filter(|_| row < t.shape[0])
    }

    /// The number of rows (of the first variable; 0 when there is none).
    pub fn len(&self) -> usize {
        self.tensors.values().next().and_then(|t| t.shape.first().copied()).unwrap_or(0)
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The variables given, in order.
    pub fn vars(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// The host tensors the lower layers (`backend`, `runtime`) take.
    pub fn tensors(&self) -> &Tensors {
        &self.tensors
    }

    /// Wraps host tensors, each `[rows, ...]` (as `runtime::data` loads them).
    pub fn from_tensors(tensors: Tensors) -> Rows {
        Rows { tensors }
    }
}

/// What [`Model::fit`] does. Unset fields come from the model's train block,
/// and without one from the train block's defaults (`docs/language.md`).
#[derive(Debug, Clone, PartialEq)]
pub struct FitOptions {
    /// Train-block settings (`objective = cd(k: 1); optimizer = adam(lr: 0.01);`,
    /// every key but `data` and `test`), used instead of the file's train
    /// block; needed when the file has none for the model.
    pub settings: Option<String>,
    /// Passes over the rows.
    pub epochs: Option<usize>,
    /// Rows per optimiser step (at most the number of rows).
    pub batch: Option<usize>,
    /// The base learning rate (the optimiser's `lr` otherwise).
    pub lr: Option<f64>,
    /// Seed of the shuffles, chains and noise.
    pub seed: Option<u64>,
    /// Compute the exact average log-likelihood of the rows after each epoch
    /// (when the model is small enough to enumerate, as `ebmc train` does).
    pub track_log_likelihood: bool,
}

impl Default for FitOptions {
    fn default() -> FitOptions {
        FitOptions::new()
    }
}

impl FitOptions {
    /// Everything from the train block (or its defaults); the exact
    /// log-likelihood tracked when the model is small enough.
    pub fn new() -> FitOptions {
        FitOptions { settings: None, epochs: None, batch: None, lr: None, seed: None, track_log_likelihood: true }
    }

    /// Sets [`FitOptions::settings`].
    pub fn settings(mut self, settings: &str) -> FitOptions {
        self.settings = Some(settings.to_string());
        self
    }

    /// Sets [`FitOptions::epochs`].
    pub fn epochs(mut self, epochs: usize) -> FitOptions {
        self.epochs = Some(epochs);
        self
    }

    /// Sets [`FitOptions::batch`].
    pub fn batch(mut self, batch: usize) -> FitOptions {
        self.batch = Some(batch);
        self
    }

    /// Sets [`FitOptions::lr`].
    pub fn lr(mut self, lr: f64) -> FitOptions {
        self.lr = Some(lr);
        self
    }

    /// Sets [`FitOptions::seed`].
    pub fn seed(mut self, seed: u64) -> FitOptions {
        self.seed = Some(seed);
        self
    }

    /// Sets [`FitOptions::track_log_likelihood`].
    pub fn track_log_likelihood(mut self, track: bool) -> FitOptions {
        self.track_log_likelihood = track;
        self
    }
}

/// What [`Model::fit_with`] reports to its callback.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event<'a> {
    /// After each optimiser step (1-based epoch and step).
    Step {
        /// The epoch, from 1.
        epoch: usize,
        /// The optimiser step, from 1.
        step: usize,
        /// The objective's surrogate loss on the batch.
        loss: f64,
        /// The norm of the whole gradient, before clipping.
        grad_norm: f64,
    },
    /// After each epoch, with the parameters reached.
    Epoch {
        /// The epoch's means, as `ebmc train` records them.
        metrics: &'a EpochMetrics,
        /// The parameters after the epoch.
        params: &'a Params,
    },
}

/// What the callback of [`Model::fit_with`] asks for next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Go on with the next step.
    Continue,
    /// End the fit now, keeping the parameters of the last step.
    Stop,
}

/// The result of [`Model::fit`].
#[derive(Debug, Clone, PartialEq)]
pub struct Fitted {
    /// The parameters reached.
    pub params: Params,
    /// Metrics of each completed epoch.
    pub history: Vec<EpochMetrics>,
    /// Optimiser steps taken.
    pub steps: usize,
    /// Whether the callback stopped the fit before its last epoch.
    pub stopped: bool,
}

/// How [`Model::log_likelihood`] found log Z.
#[derive(Debug, Clone, PartialEq)]
pub enum Method {
    /// Enumeration of the discrete states (and the closed-form Gaussian integral).
    Exact,
    /// The midpoint rule on a grid of `resolution` points per axis over `[low, high]`.
    Grid {
        /// Lower bound of every axis.
        low: f64,
        /// Upper bound of every axis.
        high: f64,
        /// Points per axis.
        resolution: usize,
    },
    /// Annealed importance sampling: a stochastic lower bound on log Z, so the
    /// log-likelihood is an estimate that errs high by about `std_error` or more.
    Ais {
        /// Independent annealing runs.
        runs: usize,
        /// Intermediate distributions of each run.
        temperatures: usize,
        /// Standard error of log Z.
        std_error: f64,
        /// Effective sample size of the importance weights.
        ess: f64,
    },
}

/// Log-likelihoods of rows under a model, in nats.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLikelihood {
    /// Each row's log-likelihood.
    pub per_row: Vec<f64>,
    /// Their mean.
    pub mean: f64,
    /// The log normaliser used.
    pub log_z: f64,
    /// How `log_z` was found.
    pub method: Method,
}

/// Grid used by [`Model::log_likelihood`] for one or two continuous
/// dimensions (the defaults of `ebmc eval`).
const GRID: (f64, f64, usize) = (-6.0, 6.0, 300);
/// AIS runs and temperatures of [`Model::log_likelihood`] (`ebmc eval`'s defaults).
const AIS: (usize, usize) = (100, 14_500);

impl Model {
    /// Compiles the source's only model. Errs with every diagnostic when the
    /// source does not parse, check or plan, and with [`Error::Model`] when it
    /// declares several models (choose with [`Model::from_source_named`]).
    ///
    /// ```
    /// let err = ebmc::Model::from_source("model m { visible v : binary[2]; }").unwrap_err();
    /// assert_eq!(err.code(), "E0207");
    /// assert!(err.to_string().contains("error[E0207]"));
    /// ```
    pub fn from_source(source: &str) -> Result<Model, Error> {
        Model::build("<source>", source, None)
    }

    /// Compiles the model called `name` of the source.
    pub fn from_source_named(source: &str, name: &str) -> Result<Model, Error> {
        Model::build("<source>", source, Some(name))
    }

    /// Reads and compiles the file's only model; diagnostics name the file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Model, Error> {
        Model::read(path.as_ref(), None)
    }

    /// Reads and compiles the model called `name` of the file.
    pub fn from_file_named(path: impl AsRef<Path>, name: &str) -> Result<Model, Error> {
        Model::read(path.as_ref(), Some(name))
    }

    fn read(path: &Path, name: Option<&str>) -> Result<Model, Error> {
        let source =
            std::fs::read_to_string(path).map_err(|e| Error::Io { path: path.to_path_buf(), reason: e.to_string() })?;
        Model::build(&path.display().to_string(), &source, name)
    }

    fn build(file: &str, source: &str, name: Option<&str>) -> Result<Model, Error> {
        let compile_error =
            |diagnostics| Error::Compile { file: file.to_string(), source: source.to_string(), diagnostics };
        let compiled = crate::compile(source).map_err(compile_error)?;
        let (plans, plan_warnings) = match crate::plan(&compiled.program) {
            Ok(found) => found,
            Err(problems) => {
                let mut all: Vec<Diagnostic> = problems.into_iter().chain(compiled.warnings).collect();
                all.sort_by_key(|d| !d.is_error());
                return Err(compile_error(all));
            }
        };
        let models: Vec<String> = compiled.program.models.keys().cloned().collect();
        let chosen = match (name, models.as_slice()) {
            (Some(n), _) if models.iter().any(|m| m == n) => n.to_string(),
            (None, [only]) => only.clone(),
            _ => return Err(Error::Model { wanted: name.map(str::to_string), models }),
        };
        let decl = &compiled.program.models[&chosen];
        let graph = graph::program_to_graph(decl);
        let lowered = ir::program_to_ir(decl);
        // `program_to_plans` plans every model; the chosen one's plan is among them.
        let plan = plans
            .into_iter()
            .find(|p| p.model == chosen)
            .ok_or_else(|| Error::Model { wanted: Some(chosen.clone()), models: models.clone() })?;
        Ok(Model {
            file: file.to_string(),
            source: source.to_string(),
            program: compiled.program,
            graph,
            plan,
            lowered,
            warnings: compiled.warnings.into_iter().chain(plan_warnings).collect(),
            device: DeviceKind::Cpu,
        })
    }

    /// This model run on `device` (the CPU unless set; CUDA needs the `cuda` feature).
    pub fn on_device(mut self, device: DeviceKind) -> Model {
        self.device = device;
        self
    }

    /// The model's name.
    pub fn name(&self) -> &str {
        &self.graph.model.name
    }

    /// The source the model was compiled from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The checked program of the whole source (every model and train block).
    pub fn program(&self) -> &Program {
        &self.program
    }

    /// The checked model: variables, parameters, energies.
    pub fn declaration(&self) -> &crate::analysis::program::Model {
        &self.graph.model
    }

    /// The model's factor graph.
    pub fn graph(&self) -> &FactorGraph {
        &self.graph
    }

    /// The model's plan: samplers, summed-out latents, objective.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The model's energy lowered to IR, with its parameters.
    pub fn ir(&self) -> &Lowered {
        &self.lowered
    }

    /// The train block for this model, when the source has one.
    pub fn train(&self) -> Option<&Train> {
        self.program.trains.get(self.name())
    }

    /// Warnings of the checker and the planner (`Ok` compiles may have some).
    pub fn warnings(&self) -> &[Diagnostic] {
        &self.warnings
    }

    /// The model's variables, in declaration order.
    pub fn variables(&self) -> &[Variable] {
        &self.graph.model.variables
    }

    /// The visible variables' names: what [`Model::fit`] needs in its rows.
    pub fn visible(&self) -> Vec<String> {
        self.variables().iter().filter(|v| v.role == Role::Visible).map(|v| v.name.clone()).collect()
    }

    /// Fresh parameters drawn from their declared initialisers with `seed`.
    pub fn init_params(&self, seed: u64) -> Params {
        Params { tensors: tensor::initialise(&self.lowered.params, seed) }
    }

    fn check_params(&self, params: &Params) -> Result<(), Error> {
        run::check_model_params(&self.graph.model, &params.tensors).map_err(Error::Params)
    }

    /// Checks rows at the boundary: every name a variable, every variable in
    /// `needed` given, shapes `[rows, ...shape]` with one row count, values
    /// finite and in their domains. Returns the number of rows.
    fn check_rows(&self, rows: &Rows, needed: &[String]) -> Result<usize, Error> {
        let model = &self.graph.model;
        for name in rows.tensors.keys() {
            if model.variable(name).is_none() {
                return Err(Error::UnknownVariable {
                    name: name.clone(),
                    known: model.variables.iter().map(|v| v.name.clone()).collect(),
                });
            }
        }
        let given: Vec<String> = rows.tensors.keys().cloned().collect();
        let all: Vec<String> = needed.iter().chain(&given).cloned().collect();
        let n = tensor::check_rows(model, &rows.tensors, &all).map_err(Error::Rows)?;
        if n == 0 {
            return Err(Error::Rows(ShapeError::NoRows));
        }
        for (name, t) in &rows.tensors {
            tensor::check_finite(&format!("the rows of `{name}`"), t).map_err(Error::Rows)?;
            // Cannot fire: the loop above returned an error for every name that is not a variable.
            let v = model.variable(name).expect("every name was checked to be a variable above");
            check_domain(v, t)?;
        }
        Ok(n)
    }

    /// The total energy of each row; `rows` give every variable.
    ///
    /// ```
    /// let model = ebmc::Model::from_source(
    ///     "model m { visible v : binary[2]; param b : real[2] = ones; energy e = -(b @ v); }",
    /// )?;
    /// let rows = ebmc::Rows::new().with("v", vec![0.0, 0.0, 1.0, 1.0], &[2, 2])?;
    /// assert_eq!(model.energy(&model.init_params(0), &rows)?, vec![0.0, -2.0]);
    /// # Ok::<(), ebmc::Error>(())
    /// ```
    pub fn energy(&self, params: &Params, rows: &Rows) -> Result<Vec<f64>, Error> {
        self.check_params(params)?;
        let all: Vec<String> = self.variables().iter().map(|v| v.name.clone()).collect();
        self.check_rows(rows, &all)?;
        backend::free_energy(&self.graph.model, &self.lowered, &params.tensors, &[], &rows.tensors, self.device)
            .map_err(Error::Backend)
    }

    /// The free energy of each row: the variables the rows leave out summed
    /// out (in closed form where the plan allows, by enumeration per row
    /// otherwise; a JEM label left out gives the out-of-distribution score
    /// `ebmc energy` prints). A continuous variable left out is an error.
    pub fn free_energy(&self, params: &Params, rows: &Rows) -> Result<Vec<f64>, Error> {
        self.check_params(params)?;
        self.check_rows(rows, &[])?;
        evaluate::row_free_energy(&self.graph.model, &self.plan, &params.tensors, &rows.tensors, self.device)
            .map_err(|reason| Error::Unavailable { what: "the free energy of these rows", reason })
    }

    /// The log-likelihood of each row (rows give the visible variables), with
    /// log Z found the best way the model allows: exactly (enumeration, or
    /// the closed-form Gaussian integral), on a grid over [-6, 6] (300
    /// points per axis) for one or two continuous dimensions, or by AIS (100
    /// runs, 14,500 temperatures, seed 0) otherwise.
    ///
    /// ```
    /// let model = ebmc::Model::from_source(
    ///     "model m { visible v : binary[1]; param b : real[1] = zeros; energy e = -(b @ v); }",
    /// )?;
    /// let rows = ebmc::Rows::new().with("v", vec![1.0], &[1, 1])?;
    /// let ll = model.log_likelihood(&model.init_params(0), &rows)?;
    /// assert!((ll.mean - 0.5f64.ln()).abs() < 1e-6);
    /// assert_eq!(ll.method, ebmc::Method::Exact);
    /// # Ok::<(), ebmc::Error>(())
    /// ```
    pub fn log_likelihood(&self, params: &Params, rows: &Rows) -> Result<LogLikelihood, Error> {
        self.check_params(params)?;
        self.check_rows(rows, &self.visible())?;
        let (graph, plan, p, r, device) = (&self.graph, &self.plan, &params.tensors, &rows.tensors, self.device);
        let exact = evaluate::exact_log_z(graph, plan, p, device);
        let (log_z, method, per_row) = match exact {
            Ok(z) => {
                let ll = evaluate::exact_log_likelihood(graph, plan, p, r, z, device).map_err(Error::Backend)?;
                (z, Method::Exact, ll)
            }
            Err(exact_why) => {
                let free = evaluate::row_free_energy(&graph.model, plan, p, r, device)
                    .map_err(|reason| Error::Unavailable { what: "the log-likelihood", reason })?;
                let continuous = graph.model.variables.iter().any(|v| !v.domain.is_discrete());
                let (low, high, resolution) = GRID;
                let (z, method) =
                    match evaluate::grid_log_z(&graph.model, plan, p, low, high, resolution, device) {
                        Ok(z) => (z, Method::Grid { low, high, resolution }),
                        Err(grid_why) if continuous => {
                            return Err(Error::NoLogZ { exact: exact_why, grid: Some(grid_why), ais: None });
                        }
                        Err(_) => {
                            let base = evaluate::base_rates(&graph.model, plan, r);
                            let opts = backend::AisOptions { runs: AIS.0, temperatures: AIS.1, seed: 0, base };
                            let est = backend::ais(&graph.model, plan, p, &opts, device)
                                .map_err(|why| Error::NoLogZ { exact: exact_why, grid: None, ais: Some(why) })?;
                            let method = Method::Ais {
                                runs: est.runs,
                                temperatures: est.temperatures,
                                std_error: est.std_error,
                                ess: est.ess,
                            };
                            (est.log_z, method)
                        }
                    };
                (z, method, free.iter().map(|f| -f - z).collect())
            }
        };
        let mean = per_row.iter().sum::<f64>() / per_row.len() as f64;
        if !mean.is_finite() {
            return Err(Error::NotFinite { what: "the average log-likelihood", value: mean });
        }
        Ok(LogLikelihood { per_row, mean, log_z, method })
    }

    /// The train spec and plan `fit` runs: the file's train block, or the
    /// options' settings checked as a train block of this model.
    fn training(&self, opts: &FitOptions) -> Result<(Train, Plan), Error> {
        let Some(settings) = &opts.settings else {
            return match self.train() {
                Some(train) => Ok((train.clone(), self.plan.clone())),
                None => Err(Error::NoTraining { model: self.name().to_string() }),
            };
        };
        // The settings are parsed as the body of a train block; the checker
        // binds them (with the schema's defaults) for rows in memory.
        let text = format!("train {} {{\n{settings}\n}}\n", self.name());
        let file = format!("{} (with the fit settings)", self.file);
        let compile_error = |diagnostics| Error::Compile { file: file.clone(), source: text.clone(), diagnostics };
        let ast = crate::front::parse::source_to_ast(&text).map_err(|e| compile_error(vec![Diagnostic::from(&e)]))?;
        let block = match ast.items.as_slice() {
            [Item::Train(block)] => block,
            _ => {
                return Err(Error::Option {
                    option: "settings",
                    value: settings.clone(),
                    expected: "the settings of one train block",
                });
            }
        };
        let train = crate::analysis::check::train_settings(block, &self.graph.model)
            .map_err(|errors| compile_error(errors.iter().map(Diagnostic::from).collect()))?;
        let (plan, _) = crate::analysis::plan::graph_to_plan(&self.graph, Some(&train))
            .map_err(|problems| compile_error(problems.iter().map(Diagnostic::from).collect()))?;
        Ok((train, plan))
    }

    /// Fits `start` to the visible rows `data` in memory ([`Model::fit_with`]
    /// without a callback). Writes no file.
    pub fn fit(&self, start: &Params, data: &Rows, opts: &FitOptions) -> Result<Fitted, Error> {
        self.fit_with(start, data, opts, |_| Control::Continue)
    }

    /// Fits `start` to the visible rows `data`: epochs of shuffled batches as
    /// `ebmc train` runs them (same seeds, schedule and objective), calling
    /// `on` after every step and every epoch; [`Control::Stop`] ends the fit.
    /// Writes no file; call [`Model::save`] (from `on`, for checkpoints) to keep one.
    ///
    /// ```
    /// use ebmc::{Control, Event, FitOptions, Model, Rows};
    /// let model = Model::from_source(
    ///     "model m { visible v : binary[2]; param b : real[2] = zeros; energy e = -(b @ v); }",
    /// )?;
    /// let rows = Rows::new().with("v", vec![1.0, 1.0, 1.0, 0.0], &[2, 2])?;
    /// let opts = FitOptions::new().settings("objective = pl; optimizer = sgd(lr: 0.1);").epochs(100);
    /// let fitted = model.fit_with(&model.init_params(0), &rows, &opts, |event| match event {
    ///     Event::Epoch { metrics, .. } if metrics.epoch == 3 => Control::Stop,
    ///     _ => Control::Continue,
    /// })?;
    /// assert!(fitted.stopped);
    /// assert_eq!(fitted.history.len(), 3);
    /// # Ok::<(), ebmc::Error>(())
    /// ```
    pub fn fit_with(
        &self,
        start: &Params,
        data: &Rows,
        opts: &FitOptions,
        mut on: impl FnMut(Event) -> Control,
    ) -> Result<Fitted, Error> {
        let (train, plan) = self.training(opts)?;
        let epochs = opts.epochs.unwrap_or(train.epochs);
        let batch = opts.batch.unwrap_or(train.batch);
        let seed = opts.seed.unwrap_or(train.seed);
        let base_lr = opts.lr.unwrap_or(train.options.optimizer.lr());
        if epochs == 0 {
            return Err(Error::Option { option: "epochs", value: "0".into(), expected: "at least 1" });
        }
        if batch == 0 {
            return Err(Error::Option { option: "batch", value: "0".into(), expected: "at least 1" });
        }
        if !(base_lr.is_finite() && base_lr > 0.0) {
            return Err(Error::Option { option: "lr", value: base_lr.to_string(), expected: "a finite number > 0" });
        }
        self.check_params(start)?;
        let rows = self.check_rows(data, &self.visible())?;
        let model = &self.graph.model;
        let visible_only: Tensors = data
            .tensors
            .iter()
            .filter(|(k, _)| self.visible().contains(k))
            .map(|(k, t)| (k.clone(), t.clone()))
            .collect();
        let data = Dataset { rows, vars: visible_only };
        let mut spec = train.clone();
        spec.batch = batch;
        limits::check_train(model, &self.lowered, &spec, rows, epochs, None).map_err(first_limit)?;
        let setup = Error::Train;
        let mut trainer =
            Trainer::new(model, &plan, &spec, &start.tensors, &Tensors::new(), seed, self.device).map_err(setup)?;
        trainer.prepare(&data.vars).map_err(Error::Train)?;
        // A file's `outliers` (for `classify`), relative paths from the working directory as `runtime::train::run` reads them.
        if let Some(outliers) = &spec.outliers {
            let rows = crate::runtime::data::load(outliers, model, Path::new(".")).map_err(Error::Data)?;
            trainer.outliers(&rows.vars).map_err(Error::Train)?;
        }
        let batch = batch.min(rows);
        let steps_per_epoch = rows / batch;
        let exact = opts.track_log_likelihood && evaluate::enumeration(&self.graph, &plan).is_ok();
        let mut fitted = Fitted { params: start.clone(), history: Vec::new(), steps: 0, stopped: false };
        'epochs: for epoch in 1..=epochs {
            let started = Instant::now();
            let epoch_seed = run::epoch_seed(seed, epoch);
            trainer.begin_epoch(epoch_seed);
            let mut order: Vec<usize> = (0..rows).collect();
            order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(epoch_seed));
            let lr = run::learning_rate(base_lr, &spec.options.schedule, epoch - 1, epochs);
            let (mut loss_sum, mut norm_sum) = (0.0, 0.0);
            for b in 0..steps_per_epoch {
                let batch_rows = data.rows_at(&order[b * batch..(b + 1) * batch]);
                fitted.steps += 1;
                let report = trainer.step(&batch_rows, lr, fitted.steps).map_err(Error::Train)?;
                loss_sum += report.loss;
                norm_sum += report.grad_norm;
                let event = Event::Step { epoch, step: fitted.steps, loss: report.loss, grad_norm: report.grad_norm };
                if on(event) == Control::Stop {
                    fitted.params = Params { tensors: trainer.params() };
                    fitted.stopped = true;
                    break 'epochs;
                }
            }
            let params = Params { tensors: trainer.params() };
            if let Some((name, _, _)) = tensor::first_non_finite(&params.tensors) {
                return Err(Error::Train(TrainError::NonFinite {
                    what: format!("parameter `{name}`"),
                    step: fitted.steps,
                }));
            }
            let log_likelihood = exact
                .then(|| run::mean_exact_log_likelihood(&self.graph, &plan, &params.tensors, &data.vars, self.device))
                .flatten();
            let metrics = EpochMetrics {
                epoch,
                step: fitted.steps,
                loss: loss_sum / steps_per_epoch as f64,
                grad_norm: norm_sum / steps_per_epoch as f64,
                lr,
                seconds: started.elapsed().as_secs_f64(),
                log_likelihood,
            };
            if let Some(what) = metrics.first_non_finite() {
                return Err(Error::Train(TrainError::NonFinite { what: what.into(), step: fitted.steps }));
            }
            let control = on(Event::Epoch { metrics: &metrics, params: &params });
            fitted.history.push(metrics);
            fitted.params = params;
            if control == Control::Stop {
                fitted.stopped = epoch < epochs;
                break;
            }
        }
        Ok(fitted)
    }

    /// A sampler running the planned kernels over `chains` chains from
    /// random starting states, with parameters `params`.
    ///
    /// ```
    /// let model = ebmc::Model::from_source(
    ///     "model m { visible v : binary[3]; hidden h : binary[2]; param W : real[3, 2] = normal(0, 0.1);
    ///                energy e = -(v @ W @ h); }",
    /// )?;
    /// let mut sampler = model.sampler(&model.init_params(0), 8, 1)?;
    /// let clamp = ebmc::Rows::new().with("v", vec![1.0, 0.0, 1.0], &[1, 3])?;
    /// sampler.clamp(&clamp)?;
    /// let state = sampler.run(10);
    /// assert_eq!(state.get("h").unwrap().1, &[8, 2]);
    /// assert_eq!(state.row("v", 7), Some(&[1.0, 0.0, 1.0][..]));
    /// # Ok::<(), ebmc::Error>(())
    /// ```
    pub fn sampler(&self, params: &Params, chains: usize, seed: u64) -> Result<Sampler, Error> {
        self.check_params(params)?;
        if chains == 0 {
            return Err(Error::Option { option: "chains", value: "0".into(), expected: "at least 1" });
        }
        let run = SampleRun { chains, burn_in: 0, steps: 0, every: None };
        limits::check_sample(&self.graph.model, &self.lowered, &run, None).map_err(first_limit)?;
        let inner = backend::Sampler::new(&self.graph.model, &self.plan, &params.tensors, chains, seed, self.device)
            .map_err(Error::Backend)?;
        Ok(Sampler { inner, model: self.clone(), chains, clamped: Vec::new(), clamps: Vec::new() })
    }

    /// Writes `params` as a checkpoint into `dir` (created if need be), in
    /// the format `ebmc train` writes (`epoch-N/params.safetensors`, `meta.json`,
    /// `latest`), as the epoch after the directory's latest. `ebmc sample`,
    /// `eval` and `energy --params DIR` read it, and [`Model::load`].
    /// Returns the epoch folder written.
    pub fn save(&self, dir: impl AsRef<Path>, params: &Params) -> Result<PathBuf, Error> {
        let dir = dir.as_ref();
        self.check_params(params)?;
        let io = |reason: String| Error::Io { path: dir.to_path_buf(), reason };
        let _lock = run::RunLock::acquire(dir).map_err(io)?;
        let epoch = run::checkpoint_meta(dir).map_or(1, |m| m.epoch + 1);
        let seed = self.train().map_or(0, |t| t.seed);
        let meta = run::Meta::of_params(&self.source, self.name(), &params.tensors, seed, epoch, self.device);
        run::save_checkpoint(dir, epoch, &params.tensors, &backend::TrainState::default(), &meta).map_err(io)?;
        Ok(dir.join(format!("epoch-{epoch}")))
    }

    /// Reads parameters from a checkpoint directory (its latest epoch), an
    /// epoch folder or a `.safetensors` file, checked against this model.
    pub fn load(&self, path: impl AsRef<Path>) -> Result<Params, Error> {
        let path = path.as_ref();
        run::load_model_params(path, &self.graph.model)
            .map(Params::from_tensors)
            .map_err(|reason| Error::Io { path: path.to_path_buf(), reason })
    }

    /// Loads the train block's data source (paths relative to `base`, the
    /// folder of the model file) and its test split: `(training rows, test rows)`.
    pub fn train_data(&self, base: impl AsRef<Path>) -> Result<(Rows, Option<Rows>), Error> {
        let train = self.train().ok_or_else(|| Error::NoTraining { model: self.name().to_string() })?;
        let model = &self.graph.model;
        let spec = crate::runtime::data::spec_of(train).map_err(Error::Data)?;
        let data = crate::runtime::data::load(spec, model, base.as_ref()).map_err(Error::Data)?;
        let (data, test) =
            crate::runtime::data::split(data, train.test.as_ref(), model, base.as_ref()).map_err(Error::Data)?;
        Ok((Rows { tensors: data.vars }, test.map(|t| Rows { tensors: t.vars })))
    }
}

/// The first limit a run passes (`limits` reports one or more with every `Err`).
fn first_limit(passed: Vec<LimitError>) -> Error {
    passed.into_iter().next().map_or_else(|| Error::Backend("a size limit was passed".into()), Error::Limit)
}

/// Refuses values a variable cannot take: binary units other than 0 and 1,
/// spins other than ±1, categorical units that are not one-hot, reals
/// outside their bounds.
fn check_domain(v: &Variable, t: &HostTensor) -> Result<(), Error> {
    let per: usize = v.shape.iter().product::<usize>().max(1);
    let bad = |flat: usize, domain: &str| Error::Domain {
        var: v.name.clone(),
        row: flat / per,
        index: flat % per,
        value: t.data[flat],
        domain: domain.to_string(),
    };
    let find = |ok: &dyn Fn(f32) -> bool, domain: &str| match t.data.iter().position(|&x| !ok(x)) {
        Some(flat) => Err(bad(flat, domain)),
        None => Ok(()),
    };
    match &v.domain {
        Domain::Binary => find(&|x| x == 0.0 || x == 1.0, "0 or 1"),
        Domain::Spin => find(&|x| x == -1.0 || x == 1.0, "-1 or +1"),
        Domain::Categorical { categories } => {
            find(&|x| x == 0.0 || x == 1.0, "one-hot values (0 or 1, one 1 per unit)")?;
            match t.data.chunks(*categories).position(|unit| unit.iter().sum::<f32>() != 1.0) {
                Some(unit) => Err(bad(unit * categories, "one-hot values (0 or 1, one 1 per unit)")),
                None => Ok(()),
            }
        }
        Domain::Real { bounds: Some((lo, hi)) } => {
            let (lo, hi) = (*lo as f32, *hi as f32);
            find(&|x| (lo..=hi).contains(&x), &format!("values in [{lo}, {hi}]"))
        }
        Domain::Real { bounds: None } => Ok(()),
    }
}

/// Chains of a model's planned kernels, from [`Model::sampler`].
pub struct Sampler {
    inner: backend::Sampler,
    model: Model,
    chains: usize,
    /// The parts held, as written, and what the backend holds for each.
    clamped: Vec<String>,
    clamps: Vec<backend::Clamp>,
}

impl Sampler {
    /// One sweep: every kernel of the plan once, the clamped parts held.
    pub fn sweep(&mut self) {
        self.inner.sweep();
    }

    /// `sweeps` sweeps, then the chains' states.
    pub fn run(&mut self, sweeps: usize) -> Rows {
        for _ in 0..sweeps {
            self.sweep();
        }
        self.state()
    }

    /// The chains' states: every variable as `[chains, ...shape]`.
    pub fn state(&self) -> Rows {
        Rows { tensors: self.inner.state() }
    }

    /// The number of chains.
    pub fn chains(&self) -> usize {
        self.chains
    }

    /// Sets the chains' states: every variable as `[chains, ...shape]`
    /// (clamped parts keep their clamped values).
    pub fn set_state(&mut self, state: &Rows) -> Result<(), Error> {
        let all: Vec<String> = self.model.variables().iter().map(|v| v.name.clone()).collect();
        let n = self.model.check_rows(state, &all)?;
        if n != self.chains {
            return Err(Error::Option { option: "rows of the state", value: n.to_string(), expected: "one per chain" });
        }
        self.inner.set_state(&state.tensors).map_err(Error::Backend)
    }

    /// Holds the variables of `values` fixed, whole: each `[rows, ...shape]`,
    /// chain `i` at row `i mod rows` (one row for all chains, or one per
    /// chain). Every other variable is then drawn from its conditional given
    /// the clamped ones, exactly for every kernel the planner chooses (see
    /// [`Sampler::clamp_part`]).
    pub fn clamp(&mut self, values: &Rows) -> Result<(), Error> {
        self.model.check_rows(values, &[])?;
        let mut held = Vec::new();
        for (name, t) in &values.tensors {
            let part = Part::parse(name, &self.model.graph.model).map_err(Error::Part)?;
            held.push((part.text.clone(), part.clamp(&t.data, self.chains).map_err(Error::Part)?));
        }
        self.hold(held)
    }

    /// Holds part of a variable fixed: `part` is a variable or a box of its
    /// units (`"v[0..32]"`, `"x[0, 0..4]"`; `docs/library.md`), `values` its
    /// rows one after another, each the part's values in row-major order
    /// (categorical units one-hot), chain `i` at row `i mod rows`. The held
    /// values are set at once and kept; every kernel draws the rest from its
    /// conditional given them: Gibbs kernels restore the held units after
    /// each draw (chromatic ones colour by colour, sequential ones skip
    /// them), Langevin and MALA move only the free units, so each kernel
    /// leaves the conditional distribution invariant.
    ///
    /// ```
    /// let model = ebmc::Model::from_source(
    ///     "model m { visible v : binary[4]; hidden h : binary[2]; param W : real[4, 2] = normal(0, 0.1);
    ///                energy e = -(v @ W @ h); }",
    /// )?;
    /// let mut sampler = model.sampler(&model.init_params(0), 6, 1)?;
    /// sampler.clamp_part("v[0..2]", &[1.0, 0.0, 0.0, 1.0])?;   // two rows: chains 0, 2, 4 and 1, 3, 5
    /// let state = sampler.run(10);
    /// assert_eq!(&state.row("v", 3).unwrap()[..2], &[0.0, 1.0]);
    /// assert!(sampler.clamp_part("v[3..5]", &[1.0]).is_err());
    /// # Ok::<(), ebmc::Error>(())
    /// ```
    pub fn clamp_part(&mut self, part: &str, values: &[f32]) -> Result<(), Error> {
        let part = Part::parse(part, &self.model.graph.model).map_err(Error::Part)?;
        let clamp = part.clamp(values, self.chains).map_err(Error::Part)?;
        let v = part.variable(&self.model.graph.model);
        let per = clamp.elements.len();
        let mut shape = vec![values.len() / per];
        shape.extend(&v.shape);
        let rows = HostTensor::new(shape, values.to_vec());
        tensor::check_finite(&format!("the rows of `{}`", part.text), &rows).map_err(Error::Rows)?;
        check_domain(&v, &rows)?;
        self.hold(vec![(part.text, clamp)])
    }

    /// Adds `held` to the clamped parts (a part clamped again takes its new values).
    fn hold(&mut self, held: Vec<(String, backend::Clamp)>) -> Result<(), Error> {
        let (mut clamped, mut clamps) = (self.clamped.clone(), self.clamps.clone());
        for (text, clamp) in held {
            match clamped.iter().position(|t| *t == text) {
                Some(i) => clamps[i] = clamp,
                None => {
                    clamped.push(text);
                    clamps.push(clamp);
                }
            }
        }
        self.inner.set_clamps(&clamps).map_err(Error::Backend)?;
        (self.clamped, self.clamps) = (clamped, clamps);
        Ok(())
    }

    /// Releases every clamped part; their values stay as the start of the
    /// next sweep.
    pub fn release(&mut self) {
        self.clamped.clear();
        self.clamps.clear();
        // Cannot fail: holding nothing checks nothing.
        let _ = self.inner.set_clamps(&[]);
    }

    /// The parts held fixed by [`Sampler::clamp`] and [`Sampler::clamp_part`], as written.
    pub fn clamped(&self) -> &[String] {
        &self.clamped
    }

    /// Mean acceptance rate so far of the Metropolis-adjusted kernels (MALA,
    /// HMC), when one runs; with parallel tempering, the T = 1 replica's.
    pub fn acceptance(&self) -> Option<f64> {
        self.inner.acceptance()
    }

    /// With parallel tempering (`tempering(...)` in the `sample` block): the
    /// temperatures, the swap rate of each adjacent pair and each replica's
    /// acceptance rate. The chains' states are the T = 1 replica's.
    pub fn tempering(&self) -> Option<backend::Tempering> {
        self.inner.tempering()
    }
}
