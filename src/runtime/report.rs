//! The evaluation report: every figure `ebmc eval` gives for trained
//! parameters on a set of rows (exact, grid or AIS log Z, log-likelihood,
//! pseudo-likelihood, classification and reconstruction figures; for
//! real-valued data, the energies of rows, model samples and noise,
//! out-of-distribution detection and the MMD of samples against rows), as
//! data a host program can serialise or render for people with
//! `EvalReport::to_text`.

use crate::analysis::graph::{self, FactorGraph};
use crate::analysis::limits::SampleRun;
use crate::analysis::plan::Plan;
use crate::analysis::program::{DataSource, DataSpec, Domain, Model, Program, Train, Variable};
use crate::backend::{self, AisEstimate, DeviceKind, RaiseEstimate};
use crate::front::ast::Role;
use crate::runtime::command::CommandError;
use crate::runtime::compare;
use crate::runtime::data::{self, DataError, Dataset};
use crate::runtime::evaluate;
use crate::runtime::sample::{self, Diverged};
use crate::tensor::{HostTensor, Tensors};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;

/// A model ready to evaluate: its plan and factor graph, its train block
/// (which binds data to its variables) and trained parameters.
#[derive(Debug, Clone)]
pub struct Trained {
    /// The model, checked.
    pub model: Model,
    /// Its inference plan.
    pub plan: Plan,
    /// Its factor graph.
    pub graph: FactorGraph,
    /// Its train block.
    pub spec: Train,
    /// The trained parameters, by name.
    pub params: Tensors,
}

impl Trained {
    /// Gathers `model` of `program` with its plan (from `plans`) and `params`.
    /// `None` when the model has no train block or no plan.
    pub fn new(program: &Program, plans: &[Plan], model: &str, params: Tensors) -> Option<Trained> {
        let model = program.models.get(model)?.clone();
        let spec = program.trains.get(&model.name)?.clone();
        let plan = plans.iter().find(|p| p.model == model.name)?.clone();
        let graph = graph::program_to_graph(&model);
        Some(Trained { model, plan, graph, spec, params })
    }
}

/// The rows a report is computed on, what they are, and the training rows
/// when they can be loaded (AIS takes its base rates from them).
#[derive(Debug, Clone)]
pub struct EvalRows {
    /// The rows evaluated on.
    pub rows: Dataset,
    /// `given rows`, `held-out test rows` or `training rows (...)`.
    pub which: &'static str,
    /// The training rows, when they can be loaded; AIS fits its base rates to them.
    pub training: Option<Dataset>,
    /// Rows of another distribution (`eval --ood FILE`), scored against the evaluated rows.
    pub ood: Option<OodRows>,
}

/// Rows of another data set, for out-of-distribution detection (`ood_rows`).
#[derive(Debug, Clone)]
pub struct OodRows {
    /// The file, as given.
    pub file: String,
    /// Its rows, bound to the variables the energy score reads.
    pub rows: Dataset,
}

/// Loads the rows to evaluate on: those of `file` when given (bound as the
/// train block binds its data), else the train block's test split, else its
/// data. Relative paths in the train block are read from `base`; with the
/// file comes how its numbers are read (`data::with_file`).
pub fn rows_to_evaluate(
    t: &Trained,
    base: &Path,
    file: Option<(&Path, data::FileValues)>,
) -> Result<EvalRows, DataError> {
    let spec = data::spec_of(&t.spec)?;
    if let Some((file, values)) = file {
        let rows = data::load(&data::with_file(spec, file, values), &t.model, base)?;
        // The train block's own data may be absent (e.g. MNIST elsewhere); then there are no training rows.
        let training = data::load(spec, &t.model, base)
            .ok()
            .and_then(|all| data::split(all, t.spec.test.as_ref(), &t.model, base).ok())
            .map(|(train, _)| train);
        return Ok(EvalRows { rows, which: "given rows", training, ood: None });
    }
    let all = data::load(spec, &t.model, base)?;
    match data::split(all, t.spec.test.as_ref(), &t.model, base)? {
        (train, Some(test)) => {
            Ok(EvalRows { rows: test, which: "held-out test rows", training: Some(train), ood: None })
        }
        (train, None) => Ok(EvalRows {
            rows: train.clone(),
            which: "training rows (the train block has no test split)",
            training: Some(train),
            ood: None,
        }),
    }
}

/// The train block's binding less a JEM label the plan sums out: the
/// variables an energy score reads (`ebmc energy`, `eval --ood`).
fn score_binding(t: &Trained) -> Result<DataSpec, DataError> {
    let mut binding = data::spec_of(&t.spec)?.clone();
    if let Some(m) = &t.plan.label_marginal {
        binding.binding.retain(|b| *b != m.var);
    }
    Ok(binding)
}

/// Loads the rows of `file` (`eval --ood`) as `row_energies` does: bound as
/// the train block binds its data, less a JEM label, with `values` saying
/// how its numbers are read; relative paths in the train block from `base`.
pub fn ood_rows(t: &Trained, base: &Path, file: &Path, values: data::FileValues) -> Result<OodRows, DataError> {
    let rows = data::load(&data::with_file(&score_binding(t)?, file, values), &t.model, base)?;
    Ok(OodRows { file: file.display().to_string(), rows })
}

/// The free energy of each row of `file` (bound as the train block binds
/// its data; relative paths are read from `base`): latents summed out as
/// planned, and a JEM label the rows leave out summed out too, so the rows
/// need only the inputs (an out-of-distribution score). A row whose energy
/// is not finite is an error, never a result.
pub fn row_energies(
    t: &Trained,
    base: &Path,
    file: &Path,
    values: data::FileValues,
    device: DeviceKind,
) -> Result<Vec<f64>, CommandError> {
    let binding = score_binding(t).map_err(CommandError::Data)?;
    let rows = data::load(&data::with_file(&binding, file, values), &t.model, base).map_err(CommandError::Data)?;
    let energies =
        evaluate::row_free_energy(&t.model, &t.plan, &t.params, &rows.vars, device).map_err(CommandError::Result)?;
    match energies.iter().position(|e| !e.is_finite()) {
        Some(i) => Err(CommandError::NonFiniteEnergy { row: i + 1, value: energies[i] }),
        None => Ok(energies),
    }
}

/// How to evaluate: the AIS schedule, the pseudo-likelihood's units, the
/// grid of a low-dimensional continuous model, the seed and the device.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// Run AIS even when log Z can be computed otherwise (to compare).
    pub ais: bool,
    /// AIS runs (default 100).
    pub runs: usize,
    /// AIS intermediate distributions (default 14,500).
    pub temperatures: usize,
    /// Stochastic pseudo-likelihood over this many random units per row.
    pub pl_units: Option<usize>,
    /// Low end of the grid on each axis (default -6).
    pub grid_low: f64,
    /// High end of the grid on each axis (default 6).
    pub grid_high: f64,
    /// Grid points per axis.
    pub grid_points: usize,
    /// Chains of the model's own sampler whose final states are compared with the rows (continuous models).
    pub sample_chains: usize,
    /// Sweeps those chains run; `None`: the plan's short-run default, else
    /// `DEFAULT_SAMPLE_SWEEPS` (`EvalOptions::sweeps`).
    pub sample_sweeps: Option<usize>,
    /// Seed of the random draws: AIS, stochastic pseudo-likelihood, reconstruction, the model's samples,
    /// noise rows and the MMD test.
    pub seed: u64,
    /// Device the figures are computed on.
    pub device: DeviceKind,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            ais: false,
            runs: 100,
            // Salakhutdinov & Murray's 14,500 intermediate distributions.
            temperatures: 14_500,
            pl_units: None,
            grid_low: -6.0,
            grid_high: 6.0,
            grid_points: 300,
            sample_chains: 256,
            sample_sweeps: None,
            seed: 0,
            device: DeviceKind::Cpu,
        }
    }
}

/// Sweeps of `eval`'s model samples when neither the options nor the plan
/// say otherwise: long enough for a model whose chains mix.
pub const DEFAULT_SAMPLE_SWEEPS: usize = 200;

impl EvalOptions {
    /// The sweeps the model samples run: as asked, else the objective's `k`
    /// for short-run training chains (`Plan::short_run`), else 200.
    pub fn sweeps(&self, plan: &Plan) -> usize {
        self.sample_sweeps.or(plan.short_run.map(|s| s.sweeps)).unwrap_or(DEFAULT_SAMPLE_SWEEPS)
    }
}

/// Why no report could be made. Each is a problem with the request (options,
/// rows) or with the parameters (a figure that is not finite).
#[derive(Debug, Clone, PartialEq)]
pub enum EvalError {
    /// An option out of range for this model.
    Options(String),
    /// No rows to evaluate on; names which rows.
    NoRows(&'static str),
    /// A figure that came out NaN or infinite.
    /// `what` names the figure; `value` is what it came out as.
    NotFinite { what: &'static str, value: f64 },
    /// A computation every report needs failed.
    Failed(String),
}

impl std::fmt::Display for EvalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EvalError::Options(why) | EvalError::Failed(why) => write!(f, "{why}"),
            EvalError::NoRows(which) => write!(f, "there are no {which} to evaluate on"),
            EvalError::NotFinite { what, value } => {
                write!(f, "{what} is {value}, not a finite number; the parameters are likely not finite or too large")
            }
        }
    }
}

impl std::error::Error for EvalError {}

/// Every figure of one evaluation. Figures a model does not allow are
/// `None` (and left out of the JSON); `notes` say why an expected figure is
/// missing, `warnings` why a given one may mislead.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EvalReport {
    /// The model evaluated.
    pub model: String,
    /// Rows evaluated on.
    pub rows: usize,
    /// Which rows they are (`EvalRows::which`).
    pub evaluated_on: String,
    /// log Z by enumeration or in closed form.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exact_log_z: Option<f64>,
    /// The average exact log-likelihood, with `exact_log_z`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_likelihood: Option<f64>,
    /// log Z integrated on a grid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grid_log_z: Option<f64>,
    /// Grid points per axis of `grid_log_z`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grid_points: Option<usize>,
    /// The average log-likelihood, with `grid_log_z`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_likelihood_grid: Option<f64>,
    /// With a toy set whose density is known: the true average log-likelihood and the gap to it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub true_log_likelihood: Option<f64>,
    /// `true_log_likelihood` minus the grid log-likelihood: an estimate of the KL divergence from the true density.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kl_gap: Option<f64>,
    /// log Z estimated by AIS (a stochastic lower bound).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ais_log_z: Option<f64>,
    /// The AIS estimate in full: runs, temperatures, standard error, effective sample size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ais: Option<AisEstimate>,
    /// What the AIS base model was fitted to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ais_base: Option<String>,
    /// The average log-likelihood, with `ais_log_z`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_likelihood_ais: Option<f64>,
    /// log Z estimated by reverse AIS (a stochastic upper bound).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raise_log_z: Option<f64>,
    /// The reverse-AIS estimate in full.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raise: Option<RaiseEstimate>,
    /// [AIS lower, reverse-AIS upper] bounds on log Z (stochastic).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_z_bracket: Option<[f64; 2]>,
    /// [lower, upper] bounds on the average log-likelihood, from `log_z_bracket`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_likelihood_bracket: Option<[f64; 2]>,
    /// The average pseudo-log-likelihood over every unit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pseudo_log_likelihood: Option<f64>,
    /// Over `pl_units` random units per row instead of all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pseudo_log_likelihood_stochastic: Option<f64>,
    /// Fraction of rows whose label is predicted correctly.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    /// Expected calibration error of the label predictions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_calibration_error: Option<f64>,
    /// Squared error per row after one up-down pass.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reconstruction_error: Option<f64>,
    /// The average evidence lower bound of the rows, for a model trained by
    /// `elbo`: nats less the energy's own normaliser.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub elbo: Option<f64>,
    /// The energy (free energy of the visible rows) of the evaluated rows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub energy_test: Option<EnergyStats>,
    /// How the model's own samples were drawn.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_samples: Option<ModelSamples>,
    /// The energy of the model's samples.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub energy_samples: Option<EnergyStats>,
    /// The energy of noise rows (`ood_noise.against` says which noise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub energy_noise: Option<EnergyStats>,
    /// The energy of the `--ood` file's rows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub energy_ood: Option<EnergyStats>,
    /// Out-of-distribution detection of noise rows by the energy score.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ood_noise: Option<Detection>,
    /// Out-of-distribution detection of the `--ood` file's rows by the energy score.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ood_file: Option<Detection>,
    /// For a model with a label the plan sums out: detection of the noise rows by the softmax
    /// confidence `max_y p(y | x)` (higher = in-distribution), the baseline beside `ood_noise`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ood_noise_confidence: Option<Detection>,
    /// The same of the `--ood` file's rows, beside `ood_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ood_file_confidence: Option<Detection>,
    /// The two-sample test of the model's samples against the evaluated rows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mmd: Option<MmdFigures>,
    /// The MMD² of as many rows of the rows' own independent fit (each unit
    /// Gaussian with its column's mean and sd, clipped to a box), at the
    /// samples' bandwidth: the baseline a model of the rows' dependencies
    /// should beat.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mmd_independent: Option<IndependentFit>,
    /// Why a figure a user could expect is missing.
    pub notes: Vec<String>,
    /// Why a given figure may mislead.
    pub warnings: Vec<String>,
}

/// The mean and standard deviation of the energies of a set of rows.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct EnergyStats {
    /// Rows scored.
    pub rows: usize,
    /// Their mean energy.
    pub mean: f64,
    /// The sample standard deviation (n − 1; 0 for one row).
    pub sd: f64,
}

/// The run of the model's own sampler whose final states are its samples.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ModelSamples {
    /// Independent chains: one sample each.
    pub chains: usize,
    /// Sweeps each chain ran from the sampler's random start.
    pub sweeps: usize,
}

/// How well the energy score tells the evaluated rows (positives: lower
/// energy means in-distribution) from other rows (`runtime::compare`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Detection {
    /// What the other rows are: the noise, or the file.
    pub against: String,
    /// How many other rows.
    pub rows: usize,
    /// P(a random evaluated row has lower energy than a random other row), ties 1/2.
    pub auroc: f64,
    /// Average precision with the evaluated rows as the class sought (AUPR-In).
    pub aupr: f64,
    /// The share of other rows at or below the energy that admits 95% of the evaluated rows.
    pub fpr_at_95_tpr: f64,
}

/// The MMD two-sample test of the model's samples against the evaluated rows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MmdFigures {
    /// The test (unbiased MMD², median-distance bandwidth, permutation p-value).
    #[serde(flatten)]
    pub test: compare::MmdTest,
    /// Samples used (at most `MMD_ROWS`).
    pub sample_rows: usize,
    /// Evaluated rows used: a random subset of at most `MMD_ROWS`.
    pub test_rows: usize,
}

/// The MMD² of the rows' independent fit against the rows.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct IndependentFit {
    /// The unbiased MMD², with the kernel of the samples' test.
    pub mmd2: f64,
    /// That kernel's bandwidth.
    pub bandwidth: f64,
}

/// The most rows of each side the MMD test uses: its kernel matrix grows
/// with the square of the rows (2,000 pooled rows: 2 million pairs).
pub const MMD_ROWS: usize = 1_000;
/// Random relabellings of the MMD permutation test.
pub const MMD_PERMUTATIONS: usize = 200;
/// The most noise rows scored (as many as the evaluated rows up to this).
pub const NOISE_ROWS: usize = 10_000;

/// The noise a variable's noise rows are drawn from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NoiseKind {
    /// Uniform in a bounded variable's box.
    Uniform { low: f64, high: f64 },
    /// Independent Gaussians with each column's mean and standard deviation in the evaluated rows.
    MatchedGaussian,
}

/// The noise of each variable the energy score reads (worded in `messages.rs`).
#[derive(Debug, Clone, PartialEq)]
pub struct Noise(pub Vec<(String, NoiseKind)>);

/// Why a comparison figure is missing (worded in `messages.rs`).
#[derive(Debug, Clone, PartialEq)]
pub enum ComparisonNote {
    /// The energy score reads a discrete visible variable too, so noise rows and MMD are not defined.
    DiscreteVisible { var: String },
    /// The free energy of the rows cannot be computed.
    NoEnergy(String),
    /// The model's sampler cannot be built.
    NoSampler(String),
    /// A sampled state that is not finite.
    Diverged(Diverged),
    /// Every pooled distance's median is 0: the MMD's bandwidth is undefined.
    NoBandwidth,
    /// Fewer than the 2 evaluated rows the unbiased MMD needs.
    TooFewRows { rows: usize },
    /// `sample_chains` below the 2 the unbiased MMD needs (an options error).
    TooFewChains { chains: usize },
}

/// A figure for the report, refused when it is not finite (NaN would print as `null`).
fn finite(what: &'static str, value: f64) -> Result<f64, EvalError> {
    if value.is_finite() { Ok(value) } else { Err(EvalError::NotFinite { what, value }) }
}

fn mean(x: &[f64]) -> f64 {
    x.iter().sum::<f64>() / x.len() as f64
}

/// Mean and sample standard deviation of `energies` (not empty), refused when one is not finite.
fn energy_stats(what: &'static str, energies: &[f64]) -> Result<EnergyStats, EvalError> {
    if let Some(e) = energies.iter().find(|e| !e.is_finite()) {
        return Err(EvalError::NotFinite { what, value: *e });
    }
    let m = mean(energies);
    let n = energies.len();
    let ss: f64 = energies.iter().map(|e| (e - m) * (e - m)).sum();
    let sd = if n > 1 { (ss / (n - 1) as f64).sqrt() } else { 0.0 };
    Ok(EnergyStats { rows: n, mean: m, sd })
}

/// Detection of `others` against the evaluated rows by the energy score (lower = in-distribution).
fn detection(test: &[f64], others: &[f64], against: String) -> Result<Detection, EvalError> {
    let (pos, neg): (Vec<f64>, Vec<f64>) = (test.iter().map(|e| -e).collect(), others.iter().map(|e| -e).collect());
    detection_by_score(&pos, &neg, against)
}

/// Detection of `neg` against the evaluated rows' `pos` by a score whose higher values mean in-distribution.
fn detection_by_score(pos: &[f64], neg: &[f64], against: String) -> Result<Detection, EvalError> {
    Ok(Detection {
        against,
        rows: neg.len(),
        auroc: finite("the AUROC", compare::auroc(pos, neg))?,
        aupr: finite("the AUPR", compare::aupr(pos, neg))?,
        fpr_at_95_tpr: finite("the FPR at 95% TPR", compare::fpr_at_tpr(pos, neg, 0.95))?,
    })
}

/// Evaluates `t` on `rows`: log Z exactly when the model can be enumerated
/// (or integrated in closed form), on a grid for a low-dimensional
/// continuous model, by AIS and reverse AIS when neither works for a
/// discrete model or when `opts.ais` asks; then the likelihood figures
/// each allows; last the comparisons of `runtime::compare` (energies of the
/// rows, of the model's samples and of noise rows, detection of the noise
/// and of `rows.ood` by the energy score, MMD). A figure a model cannot have
/// is left out with a note only where a user could expect it.
pub fn evaluate(t: &Trained, rows: &EvalRows, opts: &EvalOptions) -> Result<EvalReport, EvalError> {
    let (model, plan, params, device) = (&t.model, &t.plan, &t.params, opts.device);
    backend::check_ais_options(model, opts.runs, opts.temperatures).map_err(EvalError::Options)?;
    if let Ok((_, _, dims)) = evaluate::grid_variable(model, plan) {
        evaluate::check_grid_options(opts.grid_low, opts.grid_high, opts.grid_points, dims)
            .map_err(EvalError::Options)?;
    }
    if opts.pl_units == Some(0) {
        return Err(EvalError::Options("`--pl-units` must be at least 1".into()));
    }
    if opts.sample_chains < 2 && compares_samples(t) {
        return Err(EvalError::Options(ComparisonNote::TooFewChains { chains: opts.sample_chains }.to_string()));
    }
    if rows.rows.rows == 0 {
        return Err(EvalError::NoRows(rows.which));
    }
    let vars = &rows.rows.vars;
    let mut r = EvalReport {
        model: model.name.clone(),
        rows: rows.rows.rows,
        evaluated_on: rows.which.into(),
        ..EvalReport::default()
    };
    let continuous = model.variables.iter().any(|v| !v.domain.is_discrete());
    let mut exact_note = None;
    match evaluate::exact_log_z(&t.graph, plan, params, device) {
        Ok(z) => {
            r.exact_log_z = Some(finite("the exact log Z", z)?);
            let ll =
                evaluate::exact_log_likelihood(&t.graph, plan, params, vars, z, device).map_err(EvalError::Failed)?;
            r.log_likelihood = Some(finite("the average log-likelihood", mean(&ll))?);
        }
        Err(why) => exact_note = Some(format!("no exact log Z: {why}")),
    }
    if continuous {
        let grid_note = grid_figures(t, vars, opts, &mut r)?;
        if r.grid_log_z.is_some() {
            // The grid is this model's log Z: the enumeration note does not apply.
            exact_note = None;
        } else if r.exact_log_z.is_none() {
            // Most continuous models have neither: one note, not one per method.
            exact_note =
                grid_note.map(|why| format!("no log-likelihood: neither a closed form nor a grid gives log Z ({why})"));
        }
    }
    r.notes.extend(exact_note);
    if opts.ais || (r.exact_log_z.is_none() && !continuous) {
        ais_figures(t, rows, opts, continuous, &mut r)?;
    }
    let discrete_visible = model.variables.iter().filter(|v| v.role == Role::Visible).all(|v| v.domain.is_discrete());
    if discrete_visible {
        match evaluate::pseudo_likelihood(model, plan, params, vars, opts.pl_units, opts.seed, device) {
            Ok(pl) => {
                let pl = Some(finite("the pseudo-likelihood", pl)?);
                if opts.pl_units.is_some() {
                    r.pseudo_log_likelihood_stochastic = pl;
                } else {
                    r.pseudo_log_likelihood = pl;
                }
            }
            Err(why) => r.notes.push(format!("no pseudo-likelihood: {why}")),
        }
    }
    if plan.label_marginal.is_some() {
        match evaluate::classification(model, plan, params, vars, device) {
            Ok((acc, ece)) => {
                r.accuracy = Some(finite("the classification accuracy", acc)?);
                r.expected_calibration_error = Some(finite("the expected calibration error", ece)?);
            }
            Err(why) => r.notes.push(format!("no classification metrics: {why}")),
        }
    }
    if matches!(t.spec.options.objective, crate::analysis::program::Objective::Elbo { .. }) {
        match evaluate::elbo(model, plan, &t.spec, params, vars, opts.seed, device) {
            Ok(e) => r.elbo = Some(finite("the ELBO", e)?),
            Err(why) => r.notes.push(format!("no ELBO: {why}")),
        }
    }
    if !continuous && model.variables.iter().any(|v| v.role == Role::Hidden) {
        match evaluate::reconstruction_error(model, plan, params, vars, opts.seed, device) {
            Ok(e) => r.reconstruction_error = Some(finite("the reconstruction error", e)?),
            Err(why) => r.notes.push(format!("no reconstruction error: {why}")),
        }
    }
    comparison_figures(t, rows, opts, &mut r)?;
    Ok(r)
}

/// The variables the energy score reads: the train block's binding less a JEM label the plan sums out.
fn score_variables(t: &Trained) -> Vec<&Variable> {
    let label = t.plan.label_marginal.as_ref().map(|m| m.var.as_str());
    t.spec
        .data
        .iter()
        .flat_map(|d| &d.binding)
        .filter(|b| Some(b.as_str()) != label)
        .filter_map(|b| t.model.variable(b))
        .collect()
}

/// Whether `evaluate` compares the model's own samples with the rows, and
/// so runs its sampler (`sample_chains` chains for `sample_sweeps` sweeps):
/// when every variable the energy score reads is real-valued.
pub fn compares_samples(t: &Trained) -> bool {
    let vars = score_variables(t);
    !vars.is_empty() && vars.iter().all(|v| !v.domain.is_discrete())
}

/// What users of deep energy-based models compare (`runtime::compare`):
/// the energies of the evaluated rows, of the model's samples and of noise
/// rows; how well the energy score tells the noise, and the `--ood` rows,
/// from the evaluated rows; the MMD of samples against rows. For models
/// whose scored variables are real-valued; the `--ood` figures for every model.
fn comparison_figures(t: &Trained, rows: &EvalRows, opts: &EvalOptions, r: &mut EvalReport) -> Result<(), EvalError> {
    let (model, plan, params, device) = (&t.model, &t.plan, &t.params, opts.device);
    let vars = score_variables(t);
    let real = vars.iter().any(|v| !v.domain.is_discrete());
    if !real && rows.ood.is_none() {
        return Ok(());
    }
    let scored: Tensors = rows
        .rows
        .vars
        .iter()
        .filter(|(k, _)| vars.iter().any(|v| v.name == **k))
        .map(|(k, t)| (k.clone(), t.clone()))
        .collect();
    let energy = |rows: &Tensors| evaluate::row_free_energy(model, plan, params, rows, device);
    let test = match energy(&scored) {
        Ok(e) => e,
        Err(why) => {
            r.notes.push(ComparisonNote::NoEnergy(why).to_string());
            // The samples' MMD needs no energy: a model with a continuous
            // latent (a VAE, VAEBM) is still compared with the rows.
            if real && vars.iter().all(|v| !v.domain.is_discrete()) {
                return sample_figures(t, &vars, &scored, opts, r, false);
            }
            return Ok(());
        }
    };
    r.energy_test = Some(energy_stats("the energy of an evaluated row", &test)?);
    // The softmax-confidence baseline, for a model with a label the plan sums out (JEM, `classify`).
    let confidence = |rows: &Tensors| evaluate::softmax_confidence(model, plan, params, rows, device);
    let test_confidence = match plan.label_marginal {
        Some(_) => Some(confidence(&scored).map_err(EvalError::Failed)?),
        None => None,
    };
    let baseline = |others: &Tensors, against: &str| -> Result<Option<Detection>, EvalError> {
        match &test_confidence {
            Some(pos) => {
                let neg = confidence(others).map_err(EvalError::Failed)?;
                Ok(Some(detection_by_score(pos, &neg, against.to_string())?))
            }
            None => Ok(None),
        }
    };
    if let Some(ood) = &rows.ood {
        if ood.rows.rows == 0 {
            return Err(EvalError::NoRows("rows in the `--ood` file"));
        }
        let e = energy(&ood.rows.vars).map_err(EvalError::Failed)?;
        r.energy_ood = Some(energy_stats("the energy of an `--ood` row", &e)?);
        r.ood_file = Some(detection(&test, &e, ood.file.clone())?);
        r.ood_file_confidence = baseline(&ood.rows.vars, &ood.file)?;
    }
    if !real {
        return Ok(());
    }
    if let Some(v) = vars.iter().find(|v| v.domain.is_discrete()) {
        r.notes.push(ComparisonNote::DiscreteVisible { var: v.name.clone() }.to_string());
        return Ok(());
    }
    let (noise, kinds) = noise_rows(&vars, &scored, rows.rows.rows.min(NOISE_ROWS), opts.seed);
    let e = energy(&noise).map_err(EvalError::Failed)?;
    r.energy_noise = Some(energy_stats("the energy of a noise row", &e)?);
    r.ood_noise = Some(detection(&test, &e, kinds.to_string())?);
    r.ood_noise_confidence = baseline(&noise, &kinds.to_string())?;
    sample_figures(t, &vars, &scored, opts, r, true)
}

/// `n` noise rows of each of `vars`: uniform in a bounded variable's box;
/// for an unbounded one, Gaussian with each column's mean and standard
/// deviation in `rows` (so the noise has the data's scale, not its shape).
fn noise_rows(vars: &[&Variable], rows: &Tensors, n: usize, seed: u64) -> (Tensors, Noise) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = Tensors::new();
    let mut kinds = Vec::new();
    for v in vars {
        let per: usize = v.shape.iter().product();
        let (data, kind): (Vec<f32>, NoiseKind) = match v.domain {
            Domain::Real { bounds: Some((low, high)) } => (
                (0..n * per).map(|_| (low + (high - low) * rng.r#gen::<f64>()) as f32).collect(),
                NoiseKind::Uniform { low, high },
            ),
            _ => (matched_gaussian(&rows[&v.name], per, n, None, &mut rng), NoiseKind::MatchedGaussian),
        };
        let mut shape = vec![n];
        shape.extend(&v.shape);
        out.insert(v.name.clone(), HostTensor::new(shape, data));
        kinds.push((v.name.clone(), kind));
    }
    (out, Noise(kinds))
}

/// `n` rows of `per` units, each unit Gaussian with the mean and standard
/// deviation of its column in the rows `t`, clipped to `bounds` when given.
fn matched_gaussian(
    t: &HostTensor,
    per: usize,
    n: usize,
    bounds: Option<(f64, f64)>,
    rng: &mut impl rand::Rng,
) -> Vec<f32> {
    let m = t.shape[0];
    let mut mu = vec![0.0f64; per];
    for row in t.data.chunks(per) {
        for (a, x) in mu.iter_mut().zip(row) {
            *a += f64::from(*x) / m as f64;
        }
    }
    let mut var = vec![0.0f64; per];
    for row in t.data.chunks(per) {
        for ((s, x), a) in var.iter_mut().zip(row).zip(&mu) {
            *s += (f64::from(*x) - a).powi(2) / (m.max(2) - 1) as f64;
        }
    }
    (0..n * per)
        .map(|i| {
            let z: f64 = rng.sample(rand_distr::StandardNormal);
            let x = mu[i % per] + var[i % per].sqrt() * z;
            bounds.map_or(x, |(low, high)| x.clamp(low, high)) as f32
        })
        .collect()
}

/// `n` rows of the rows' independent fit: every unit of every variable of
/// `vars` drawn alone from `matched_gaussian`, clipped to its box.
fn independent_rows(vars: &[&Variable], rows: &Tensors, n: usize, seed: u64) -> Tensors {
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed ^ 0x1d1d);
    vars.iter()
        .map(|v| {
            let per: usize = v.shape.iter().product();
            let bounds = match v.domain {
                Domain::Real { bounds } => bounds,
                _ => None,
            };
            let mut shape = vec![n];
            shape.extend(&v.shape);
            (v.name.clone(), HostTensor::new(shape, matched_gaussian(&rows[&v.name], per, n, bounds, &mut rng)))
        })
        .collect()
}

/// Rows `pick` of `vars` in `rows`, each row's variables side by side, as f64.
fn flat_rows(rows: &Tensors, vars: &[&Variable], pick: &[usize]) -> Vec<f64> {
    let mut out = Vec::new();
    for &i in pick {
        for v in vars {
            let per: usize = v.shape.iter().product();
            out.extend(rows[&v.name].data[i * per..(i + 1) * per].iter().map(|x| f64::from(*x)));
        }
    }
    out
}

/// The model's own samples (the final states of `sample_chains` chains
/// after `sample_sweeps` sweeps): their energies (when `energies`: the
/// rows' free energy is defined), and the MMD test of them against the
/// evaluated rows.
fn sample_figures(
    t: &Trained,
    vars: &[&Variable],
    scored: &Tensors,
    opts: &EvalOptions,
    r: &mut EvalReport,
    energies: bool,
) -> Result<(), EvalError> {
    let (model, plan, params, device) = (&t.model, &t.plan, &t.params, opts.device);
    let mut sampler = match backend::Sampler::new(model, plan, params, opts.sample_chains, opts.seed, device) {
        Ok(s) => s,
        Err(why) => {
            r.notes.push(ComparisonNote::NoSampler(why).to_string());
            return Ok(());
        }
    };
    let sweeps = opts.sweeps(plan);
    let run = SampleRun { chains: opts.sample_chains, burn_in: 0, steps: sweeps, every: None };
    let last = match sample::run(&mut sampler, &run, None, &mut || {}) {
        Ok(s) => s.last,
        Err(d) => {
            r.notes.push(ComparisonNote::Diverged(d).to_string());
            return Ok(());
        }
    };
    r.model_samples = Some(ModelSamples { chains: opts.sample_chains, sweeps });
    // The scored variables only: the energy sums the rest out as it does for the rows.
    let drawn: Tensors = last.into_iter().filter(|(k, _)| vars.iter().any(|v| v.name == *k)).collect();
    if energies {
        let e = evaluate::row_free_energy(model, plan, params, &drawn, device).map_err(EvalError::Failed)?;
        r.energy_samples = Some(energy_stats("the energy of a model sample", &e)?);
    }
    let rows = scored.values().next().map_or(0, |t| t.shape[0]);
    if rows < 2 {
        r.notes.push(ComparisonNote::TooFewRows { rows }.to_string());
        return Ok(());
    }
    // A random subset of the rows: they may be sorted (by class, by time).
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(opts.seed);
    let take = rows.min(MMD_ROWS);
    let pick = rand::seq::index::sample(&mut rng, rows, take).into_vec();
    let chains: Vec<usize> = (0..opts.sample_chains.min(MMD_ROWS)).collect();
    let dim: usize = vars.iter().map(|v| v.shape.iter().product::<usize>()).sum();
    let (x, y) = (flat_rows(&drawn, vars, &chains), flat_rows(scored, vars, &pick));
    match compare::mmd_permutation_test(&x, &y, dim, MMD_PERMUTATIONS, opts.seed) {
        Some(test) => {
            finite("the MMD²", test.mmd2)?;
            r.mmd = Some(MmdFigures { test, sample_rows: chains.len(), test_rows: take });
        }
        None => r.notes.push(ComparisonNote::NoBandwidth.to_string()),
    }
    if let Some(m) = &r.mmd {
        let fit = independent_rows(vars, scored, chains.len(), opts.seed);
        let bandwidth = m.test.bandwidth;
        let mmd2 = compare::mmd2_unbiased(&flat_rows(&fit, vars, &chains), &y, dim, bandwidth);
        r.mmd_independent = Some(IndependentFit { mmd2: finite("the MMD² of the independent fit", mmd2)?, bandwidth });
    }
    Ok(())
}

/// The grid integral of a continuous model, or why there is none.
fn grid_figures(
    t: &Trained,
    vars: &Tensors,
    opts: &EvalOptions,
    r: &mut EvalReport,
) -> Result<Option<String>, EvalError> {
    let (model, plan, params) = (&t.model, &t.plan, &t.params);
    match evaluate::grid_log_z(model, plan, params, opts.grid_low, opts.grid_high, opts.grid_points, opts.device) {
        Ok(z) => {
            r.grid_log_z = Some(finite("the grid log Z", z)?);
            r.grid_points = Some(opts.grid_points);
            let f = evaluate::row_free_energy(model, plan, params, vars, opts.device).map_err(EvalError::Failed)?;
            let ll = finite("the average log-likelihood (grid)", -mean(&f) - z)?;
            r.log_likelihood_grid = Some(ll);
            // With a toy set whose density is known: the gap to the true log-likelihood.
            if let Some(DataSpec { source: DataSource::Toy { name, .. }, .. }) = &t.spec.data {
                let truth: Option<Vec<f64>> = vars.values().next().and_then(|x| {
                    x.data.chunks(2).map(|p| data::toy_log_density(name, f64::from(p[0]), f64::from(p[1]))).collect()
                });
                if let Some(truth) = truth {
                    let true_ll = finite("the true log-likelihood", mean(&truth))?;
                    r.true_log_likelihood = Some(true_ll);
                    r.kl_gap = Some(finite("the KL gap", true_ll - ll)?);
                }
            }
        }
        Err(why) => return Ok(Some(why)),
    }
    Ok(None)
}

/// AIS and reverse AIS: a stochastic bracket on log Z and the log-likelihood.
fn ais_figures(
    t: &Trained,
    rows: &EvalRows,
    opts: &EvalOptions,
    continuous: bool,
    r: &mut EvalReport,
) -> Result<(), EvalError> {
    let (model, plan, params, device) = (&t.model, &t.plan, &t.params, opts.device);
    let vars = &rows.rows.vars;
    // Base rates from the training rows (S&M 2008); uniform only without rows.
    let (base, base_from) = match &rows.training {
        Some(train) => (evaluate::base_rates(model, plan, &train.vars), "the training rows' base rates"),
        None => (
            evaluate::base_rates(model, plan, vars),
            "the evaluated rows' base rates (the training data could not be loaded)",
        ),
    };
    let base_from =
        if base.is_empty() { "the uniform distribution (no rows bind the variables AIS samples)" } else { base_from };
    let ais_opts = backend::AisOptions { runs: opts.runs, temperatures: opts.temperatures, seed: opts.seed, base };
    let est = match backend::ais(model, plan, params, &ais_opts, device) {
        Ok(est) => est,
        Err(why) => {
            r.notes.push(format!("no AIS: {why}"));
            return Ok(());
        }
    };
    r.ais_log_z = Some(finite("the AIS log Z", est.log_z)?);
    r.ais_base = Some(base_from.into());
    if est.ess < 10.0f64.max(0.1 * opts.runs as f64) {
        r.warnings.push(format!("the AIS importance weights have an effective sample size of {:.1} of {} runs: a few runs carry the estimate, and its error bar is unreliable; use more `--temperatures`", est.ess, opts.runs));
    }
    let fit = match evaluate::row_free_energy(model, plan, params, vars, device) {
        Ok(f) => Some(-mean(&f)),
        Err(why) => {
            r.notes.push(format!("no log-likelihood from AIS: {why}"));
            None
        }
    };
    let raise = backend::raise(model, plan, params, vars, &ais_opts, device);
    if let Some(fit) = fit {
        r.log_likelihood_ais = Some(finite("the average log-likelihood (AIS)", fit - est.log_z)?);
        match raise {
            Ok(up) => {
                r.raise_log_z = Some(finite("the reverse-AIS log Z", up.log_z)?);
                r.log_z_bracket = Some([est.log_z, up.log_z]);
                r.log_likelihood_bracket = Some([fit - up.log_z, fit - est.log_z]);
                let noise = 3.0 * (up.std_error + est.std_error);
                if up.log_z + noise < est.log_z {
                    r.warnings.push("the reverse-AIS upper bound lies below the AIS lower bound beyond their error bars: the chains do not mix at this schedule; use more `--temperatures`".into());
                } else if up.log_z - est.log_z > 1.0 + noise {
                    // ESS cannot see chains that all miss the same mass; the bracket can.
                    r.warnings.push(format!("the log Z bracket is {:.1} nats wide: AIS and reverse AIS disagree, so neither log Z nor the log-likelihood is known better than that; use more `--temperatures` or `--runs`", up.log_z - est.log_z));
                }
                r.raise = Some(up);
            }
            Err(why) => r.notes.push(format!("no upper bound on log Z (reverse AIS): {why}")),
        }
    }
    if let Some(ll) = r.log_likelihood_ais.filter(|ll| *ll > 0.0 && !continuous && r.exact_log_z.is_none()) {
        r.warnings.push(format!("the AIS log-likelihood {ll:.4} is positive, impossible for discrete data: log Z is underestimated; use more `--temperatures`"));
    }
    r.ais = Some(est);
    Ok(())
}

impl EvalReport {
    /// The report for people: one figure a line, then the notes. Warnings
    /// are left to the caller (the CLI prints them on stderr).
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let mut line = |t: String| {
            let _ = writeln!(s, "{t}");
        };
        line(format!("model {} on {} {}", self.model, self.rows, self.evaluated_on));
        if let Some(z) = self.exact_log_z {
            line(format!("  log Z (exact)                  {z:.4}"));
        }
        if let Some(a) = &self.ais {
            line(format!(
                "  log Z (AIS, {} runs x {} temps) {:.4} ± {:.4}, effective sample size {:.1}; from {}",
                a.runs,
                a.temperatures,
                a.log_z,
                a.std_error,
                a.ess,
                self.ais_base.as_deref().unwrap_or("")
            ));
        }
        if let Some(up) = &self.raise {
            line(format!("  log Z (reverse AIS from {} rows) {:.4} ± {:.4}", up.runs, up.log_z, up.std_error));
        }
        if let Some([lo, hi]) = self.log_z_bracket {
            line(format!("  log Z in [{lo:.4}, {hi:.4}]         (AIS lower, reverse AIS upper; stochastic bounds)"));
        }
        if let Some(ll) = self.log_likelihood {
            line(format!("  average log-likelihood         {ll:.4} nats"));
        }
        if let Some(z) = self.grid_log_z {
            line(format!("  log Z (grid, {} points per axis) {z:.4}", self.grid_points.unwrap_or_default()));
        }
        if let Some(ll) = self.log_likelihood_grid {
            line(format!("  average log-likelihood (grid)  {ll:.4} nats"));
        }
        if let (Some(t), Some(gap)) = (self.true_log_likelihood, self.kl_gap) {
            line(format!("  true log-likelihood            {t:.4} nats (KL gap {gap:.4} nats)"));
        }
        match (self.log_likelihood_bracket, self.log_likelihood_ais) {
            (Some([lo, hi]), _) => {
                line(format!("  average log-likelihood in [{lo:.4}, {hi:.4}] nats (from the log Z bracket)"))
            }
            (None, Some(ll)) => line(format!(
                "  average log-likelihood (AIS)   {ll:.4} nats (an upper estimate: AIS underestimates log Z)"
            )),
            (None, None) => {}
        }
        if let Some(pl) = self.pseudo_log_likelihood.or(self.pseudo_log_likelihood_stochastic) {
            line(format!("  average log pseudo-likelihood  {pl:.4} nats"));
        }
        if let Some(acc) = self.accuracy {
            line(format!("  classification accuracy        {acc:.4}"));
        }
        if let Some(ece) = self.expected_calibration_error {
            line(format!("  expected calibration error     {ece:.4}"));
        }
        if let Some(e) = self.elbo {
            line(format!(
                "  average ELBO                   {e:.4} nats (less the energy's normaliser; {} draws a row)",
                evaluate::ELBO_DRAWS
            ));
        }
        if let Some(e) = self.reconstruction_error {
            line(format!("  reconstruction error           {e:.4} (squared, per row)"));
        }
        for l in crate::messages::comparison_lines(self) {
            line(l);
        }
        for n in &self.notes {
            line(format!("  note: {n}"));
        }
        s
    }
}

/// A factor graph as data, as `ebmc graph` prints it: the variables with
/// their type, role and Gibbs colour (when planned), the energy terms with
/// the degree of each in each variable, and which variables interact.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GraphReport {
    /// The model drawn.
    pub model: String,
    /// Its variables.
    pub variables: Vec<GraphVariable>,
    /// Its energy terms.
    pub factors: Vec<GraphFactor>,
    /// Pairs of variables that share an energy term.
    pub interactions: Vec<GraphInteraction>,
}

/// A variable of a `GraphReport`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GraphVariable {
    /// The variable's name.
    pub name: String,
    /// Its type as written in messages, e.g. `binary[64]`.
    #[serde(rename = "type")]
    pub type_text: String,
    /// Visible or hidden.
    pub role: Role,
    /// The colour class the whole variable is updated in.
    pub colour: Option<usize>,
    /// The number of colours its units are updated in, when they are coloured one by one.
    pub unit_colours: Option<usize>,
}

/// An energy term of a `GraphReport`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GraphFactor {
    /// The term's name.
    pub name: String,
    /// (variable, degree word: `constant`, `linear`, `quadratic`, `other`).
    pub variables: Vec<(String, &'static str)>,
}

/// Two variables coupled by energy terms.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GraphInteraction {
    /// One variable.
    pub a: String,
    /// The other (the same as `a` for a coupling within one variable).
    pub b: String,
    /// The energy terms that couple them (for `a == b`, its units).
    pub via: Vec<String>,
}

/// `g` as data, with the colour classes of its plan (empty when unplanned).
pub fn graph_report(g: &FactorGraph, colours: &std::collections::BTreeMap<String, graph::ColourClass>) -> GraphReport {
    let variables = g
        .model
        .variables
        .iter()
        .map(|v| GraphVariable {
            name: v.name.clone(),
            type_text: graph::type_text(v),
            role: v.role,
            colour: match colours.get(&v.name) {
                Some(graph::ColourClass::Block(c)) => Some(*c),
                _ => None,
            },
            unit_colours: match colours.get(&v.name) {
                Some(graph::ColourClass::Units(n)) => Some(*n),
                _ => None,
            },
        })
        .collect();
    let factors = g
        .factors
        .iter()
        .map(|(f, edges)| GraphFactor {
            name: f.clone(),
            variables: edges.iter().map(|(v, d)| (v.clone(), d.word())).collect(),
        })
        .collect();
    let mut interactions = Vec::new();
    for (i, a) in g.model.variables.iter().enumerate() {
        for b in &g.model.variables[i + 1..] {
            if g.neighbours(&a.name).contains(&b.name) {
                let via = g.coupling_terms(&a.name, &b.name).into_iter().map(String::from).collect();
                interactions.push(GraphInteraction { a: a.name.clone(), b: b.name.clone(), via });
            }
        }
        let selfs = g.self_couplings(&a.name);
        if !selfs.is_empty() {
            let via = selfs.into_iter().map(String::from).collect();
            interactions.push(GraphInteraction { a: a.name.clone(), b: a.name.clone(), via });
        }
    }
    GraphReport { model: g.model.name.clone(), variables, factors, interactions }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_distr::{Distribution, Normal};

    const BOX: &str = "model box {
    visible x : real[2] in [0, 1];
    param b : real[2] = zeros;
    energy well = 8 * sum(square(x - 0.5));
    energy tilt = b @ x;
}
train box {
    data = csv(\"rows.csv\") -> x;
    objective = pcd(k: 1);
}
";

    fn boxed() -> Trained {
        let c = crate::compile(BOX).unwrap();
        let (plans, _) = crate::plan(&c.program).unwrap();
        let params = crate::tensor::initialise(&plans[0].lowered.params, 0);
        Trained::new(&c.program, &plans, "box", params).unwrap()
    }

    fn rows(data: Vec<f32>, width: usize) -> Tensors {
        let n = data.len() / width;
        [("x".to_string(), HostTensor::new(vec![n, width], data))].into_iter().collect()
    }

    fn column_stats(t: &HostTensor, col: usize) -> (f64, f64) {
        let width = t.shape[1];
        let xs: Vec<f64> = t.data.iter().skip(col).step_by(width).map(|x| f64::from(*x)).collect();
        let m = mean(&xs);
        (m, (xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (xs.len() - 1) as f64).sqrt())
    }

    #[test]
    fn noise_rows_are_uniform_in_the_box_or_match_the_rows_columns() {
        let t = boxed();
        let vars = score_variables(&t);
        let (noise, kinds) = noise_rows(&vars, &Tensors::new(), 10_000, 3);
        assert_eq!(kinds, Noise(vec![("x".into(), NoiseKind::Uniform { low: 0.0, high: 1.0 })]));
        let x = &noise["x"];
        assert_eq!(x.shape, vec![10_000, 2]);
        assert!(x.data.iter().all(|v| (0.0..=1.0).contains(v)));
        // Uniform on [0, 1]: mean 1/2, sd 1/√12 = 0.289; the mean's standard error is 0.0029.
        for col in 0..2 {
            let (m, sd) = column_stats(x, col);
            assert!((m - 0.5).abs() < 0.015 && (sd - 12f64.powf(-0.5)).abs() < 0.01, "column {col}: {m} {sd}");
        }
        // An unbounded variable: Gaussian with the rows' column means and standard deviations.
        let mut model = t.model.clone();
        model.variables[0].domain = Domain::Real { bounds: None };
        let mut rng = rand::rngs::StdRng::seed_from_u64(4);
        let (a, b) = (Normal::new(3.0, 0.5).unwrap(), Normal::new(-2.0, 4.0).unwrap());
        let given = rows((0..1000).flat_map(|_| [a.sample(&mut rng), b.sample(&mut rng)]).collect(), 2);
        let (noise, kinds) = noise_rows(&[&model.variables[0]], &given, 10_000, 5);
        assert_eq!(kinds.0[0].1, NoiseKind::MatchedGaussian);
        for col in 0..2 {
            let (want_m, want_sd) = column_stats(&given["x"], col);
            let (m, sd) = column_stats(&noise["x"], col);
            // Standard errors over 10,000 rows: sd/100 for the mean, sd/141 for the sd; 5 of each.
            assert!((m - want_m).abs() < 0.05 * want_sd && (sd - want_sd).abs() < 0.036 * want_sd, "{col}: {m} {sd}");
        }
    }

    #[test]
    fn a_bounded_continuous_model_gets_every_comparison_figure() {
        let t = boxed();
        // Rows of the model's density, a Gaussian of sd 1/4 about the box's centre, kept inside it.
        let mut rng = rand::rngs::StdRng::seed_from_u64(6);
        let g = Normal::new(0.5f32, 0.25).unwrap();
        let mut data = Vec::new();
        while data.len() < 2 * 2000 {
            let p = [g.sample(&mut rng), g.sample(&mut rng)];
            if p.iter().all(|v| (0.0..=1.0).contains(v)) {
                data.extend(p);
            }
        }
        let given = EvalRows {
            rows: Dataset { rows: 2000, vars: rows(data, 2) },
            which: "given rows",
            training: None,
            ood: None,
        };
        let opts = EvalOptions { sample_chains: 64, sample_sweeps: Some(50), ..EvalOptions::default() };
        let r = evaluate(&t, &given, &opts).unwrap();
        assert!(r.notes.is_empty(), "{:?}", r.notes);
        // E = 8‖x − ½‖² on uniform noise: mean 16/12 = 4/3 and sd √(128/180) = 0.843; standard error 0.019.
        let noise = r.energy_noise.unwrap();
        assert_eq!(noise.rows, 2000);
        assert!(
            (noise.mean - 4.0 / 3.0).abs() < 0.1 && (noise.sd - (128.0f64 / 180.0).sqrt()).abs() < 0.1,
            "{noise:?}"
        );
        let d = r.ood_noise.as_ref().unwrap();
        assert_eq!(d.against, "uniform noise in [0, 1]");
        assert!(d.auroc > 0.6, "{d:?}");
        assert_eq!(r.model_samples, Some(ModelSamples { chains: 64, sweeps: 50 }));
        assert_eq!(r.energy_samples.unwrap().rows, 64);
        let mmd = r.mmd.as_ref().unwrap();
        assert_eq!((mmd.sample_rows, mmd.test_rows, mmd.test.permutations), (64, MMD_ROWS, MMD_PERMUTATIONS));
        // The rows' coordinates are independent, so their independent fit is
        // (up to clipping 4.6% of the mass to the edges) their distribution:
        // its MMD² is 0 within the estimate's spread at 64 rows (~0.01).
        let fit = r.mmd_independent.unwrap();
        assert_eq!(fit.bandwidth, mmd.test.bandwidth);
        assert!(fit.mmd2.abs() < 0.03, "{fit:?}");
        assert!(r.ood_file.is_none() && r.energy_ood.is_none());
        // One chain cannot give an unbiased MMD.
        let opts = EvalOptions { sample_chains: 1, ..opts };
        assert!(matches!(evaluate(&t, &given, &opts), Err(EvalError::Options(why)) if why.contains("--sample-chains")));
    }
}
