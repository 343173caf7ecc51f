//! The evaluation report: every figure `ebmc eval` gives for trained
//! parameters on a set of rows (exact, grid or AIS log Z, log-likelihood,
//! pseudo-likelihood, classification and reconstruction figures), as data a
//! host program can serialise or render for people with `EvalReport::to_text`.

use crate::analysis::graph::{self, FactorGraph};
use crate::analysis::plan::Plan;
use crate::analysis::program::{DataSource, DataSpec, Model, Program, Train};
use crate::backend::{self, AisEstimate, DeviceKind, RaiseEstimate};
use crate::front::ast::Role;
use crate::runtime::command::CommandError;
use crate::runtime::data::{self, DataError, Dataset};
use crate::runtime::evaluate;
use crate::tensor::Tensors;
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
        return Ok(EvalRows { rows, which: "given rows", training });
    }
    let all = data::load(spec, &t.model, base)?;
    match data::split(all, t.spec.test.as_ref(), &t.model, base)? {
        (train, Some(test)) => Ok(EvalRows { rows: test, which: "held-out test rows", training: Some(train) }),
        (train, None) => Ok(EvalRows {
            rows: train.clone(),
            which: "training rows (the train block has no test split)",
            training: Some(train),
        }),
    }
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
    let mut binding = data::spec_of(&t.spec).map_err(CommandError::Data)?.clone();
    if let Some(m) = &t.plan.label_marginal {
        binding.binding.retain(|b| *b != m.var);
    }
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
    /// Seed of the random draws: AIS, stochastic pseudo-likelihood, reconstruction.
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
            seed: 0,
            device: DeviceKind::Cpu,
        }
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
    /// Why a figure a user could expect is missing.
    pub notes: Vec<String>,
    /// Why a given figure may mislead.
    pub warnings: Vec<String>,
}

/// A figure for the report, refused when it is not finite (NaN would print as `null`).
fn finite(what: &'static str, value: f64) -> Result<f64, EvalError> {
    if value.is_finite() { Ok(value) } else { Err(EvalError::NotFinite { what, value }) }
}

fn mean(x: &[f64]) -> f64 {
    x.iter().sum::<f64>() / x.len() as f64
}

/// Evaluates `t` on `rows`: log Z exactly when the model can be enumerated
/// (or integrated in closed form), on a grid for a low-dimensional
/// continuous model, by AIS and reverse AIS when neither works for a
/// discrete model or when `opts.ais` asks; then the likelihood figures
/// each allows. A figure a model cannot have is left out with a note only
/// where a user could expect it.
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
    if !continuous && model.variables.iter().any(|v| v.role == Role::Hidden) {
        match evaluate::reconstruction_error(model, plan, params, vars, opts.seed, device) {
            Ok(e) => r.reconstruction_error = Some(finite("the reconstruction error", e)?),
            Err(why) => r.notes.push(format!("no reconstruction error: {why}")),
        }
    }
    Ok(r)
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
        if let Some(e) = self.reconstruction_error {
            line(format!("  reconstruction error           {e:.4} (squared, per row)"));
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
