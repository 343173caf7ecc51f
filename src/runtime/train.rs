//! The training run: epochs of shuffled batches through `backend::Trainer`,
//! a learning-rate schedule, per-epoch metrics, and checkpoints that are
//! written atomically and resume exactly.
//!
//! A checkpoint directory holds `epoch-N/` folders (`params.safetensors`,
//! `state.safetensors` with optimiser moments and persistent chains,
//! `meta.json`) and a `latest` file naming the newest; a folder is complete
//! before `latest` points to it, so a kill never leaves a half-written one.
//! Old folders are renamed to a `.trash-` name before they are deleted, so a
//! kill during clean-up never leaves an `epoch-N/` with files missing; the
//! next run removes what a kill left behind (`.trash-*`, `.*.partial`,
//! `*.tmp`). A run holds an exclusive lock on `DIR/lock` (with its pid) for
//! as long as it writes, so two runs never interleave in one directory.

use crate::analysis::graph::FactorGraph;
use crate::analysis::plan::Plan;
use crate::analysis::program::{Call, Model, Schedule, TestSpec, Train};
use crate::analysis::schema::Value;
use crate::backend::{DeviceKind, TrainError, TrainState, Trainer};
use crate::runtime::data::Dataset;
use crate::tensor::{self, Tensors};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The version of `meta.json`'s layout, raised when a field is removed or changes meaning.
pub const META_SCHEMA_VERSION: u32 = 1;
/// The `format_version` in a checkpoint's safetensors metadata.
pub const CHECKPOINT_FORMAT_VERSION: &str = "1";

/// `epoch-N/meta.json`: everything needed to read the checkpoint without
/// ebmc (the model source, every parameter's shape) and to tell where it came
/// from (data, seed, options). Plain JSON: names and numbers, no spans.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    /// Version of this layout (`META_SCHEMA_VERSION`).
    pub schema_version: u32,
    /// The ebmc version that wrote the checkpoint.
    pub ebmc_version: String,
    /// The model trained.
    pub model: String,
    /// `source_hash` of `source`.
    pub source_sha256: String,
    /// The whole `.ebm` file the model was compiled from.
    pub source: String,
    /// Every tensor of `params.safetensors` (all float32, row-major) and its shape.
    pub params: BTreeMap<String, Vec<usize>>,
    /// Absent for parameters a host saved with `api::Model::save`, which
    /// were not trained by a run of this checkpoint.
    pub data: Option<DataProvenance>,
    /// The run's seed.
    pub seed: u64,
    /// Epochs completed, from 1.
    pub epoch: usize,
    /// Optimiser steps taken so far.
    pub step: usize,
    /// The device trained on.
    pub device: DeviceKind,
    /// The train block's options; absent as `data` is.
    pub options: Option<TrainOptions>,
}

/// Where the training rows came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataProvenance {
    /// The data source of the train block (or `--data`), defaults filled in: `digits(binarize: 8, scale: 1)`.
    pub source: String,
    /// The visible variables its columns feed, in order.
    pub binding: Vec<String>,
    /// Training rows (after the test split).
    pub rows: usize,
    /// SHA-256 of the training rows as trained on: for each bound variable in
    /// `binding` order, its `[rows, ...shape]` values as little-endian float32.
    pub sha256: String,
    /// The held-out rows, e.g. `last(rows: 297)`, if any.
    pub test: Option<String>,
}

/// The train block's options, each a built-in's name and its options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainOptions {
    /// The objective.
    pub objective: Builtin,
    /// The optimiser.
    pub optimizer: Builtin,
    /// The learning-rate schedule.
    pub schedule: Builtin,
    /// The regularisers, in order.
    pub regularizers: Vec<Builtin>,
    /// Rows per batch.
    pub batch: usize,
    /// Epochs the block asks for.
    pub epochs: usize,
    /// The checkpoint the run started from (`init`, its path resolved), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<String>,
    /// The parameters `freeze` held fixed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub freeze: Vec<String>,
}

/// A built-in call: its name and every option, defaults filled in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Builtin {
    /// The built-in's name.
    pub name: String,
    /// Its options by name.
    pub options: BTreeMap<String, Value>,
}

impl From<&Call> for Builtin {
    fn from(c: &Call) -> Self {
        Builtin { name: c.name.clone(), options: c.options.clone() }
    }
}

fn rows_sha256(data: &Dataset, binding: &[String]) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for name in binding {
        if let Some(t) = data.vars.get(name) {
            for x in &t.data {
                h.update(x.to_le_bytes());
            }
        }
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

impl Meta {
    /// The metadata of a run before its first epoch.
    #[allow(clippy::too_many_arguments)]
    fn new(
        source: &str,
        model: &Model,
        train: &Train,
        data: &Dataset,
        params: &Tensors,
        seed: u64,
        device: DeviceKind,
    ) -> Meta {
        Meta {
            schema_version: META_SCHEMA_VERSION,
            ebmc_version: env!("CARGO_PKG_VERSION").to_string(),
            model: model.name.clone(),
            source_sha256: source_hash(source),
            source: source.to_string(),
            params: params.iter().map(|(k, t)| (k.clone(), t.shape.clone())).collect(),
            data: train.data.as_ref().map(|spec| DataProvenance {
                source: spec.source.to_string(),
                binding: spec.binding.clone(),
                rows: data.rows,
                sha256: rows_sha256(data, &spec.binding),
                test: train.test.as_ref().map(|t| match t {
                    TestSpec::Split(split) => split.to_string(),
                    TestSpec::Data(d) => d.source.to_string(),
                }),
            }),
            seed,
            epoch: 0,
            step: 0,
            device,
            options: Some(TrainOptions {
                objective: (&train.objective).into(),
                optimizer: (&train.optimizer).into(),
                schedule: (&train.schedule).into(),
                regularizers: train.regularizers.iter().map(Builtin::from).collect(),
                batch: train.batch,
                epochs: train.epochs,
                init: train.init.clone(),
                freeze: train.frozen.clone(),
            }),
        }
    }

    /// The metadata of parameters saved outside a training run: the model
    /// and its parameters, no data or options.
    pub fn of_params(source: &str, model: &str, params: &Tensors, seed: u64, epoch: usize, device: DeviceKind) -> Meta {
        Meta {
            schema_version: META_SCHEMA_VERSION,
            ebmc_version: env!("CARGO_PKG_VERSION").to_string(),
            model: model.to_string(),
            source_sha256: source_hash(source),
            source: source.to_string(),
            params: params.iter().map(|(k, t)| (k.clone(), t.shape.clone())).collect(),
            data: None,
            seed,
            epoch,
            step: 0,
            device,
            options: None,
        }
    }

    /// The `__metadata__` of the checkpoint's safetensors files: enough to
    /// tell what a lone `params.safetensors` is.
    fn safetensors_metadata(&self) -> BTreeMap<String, String> {
        [
            ("format", "ebmc-checkpoint".to_string()),
            ("format_version", CHECKPOINT_FORMAT_VERSION.to_string()),
            ("ebmc_version", self.ebmc_version.clone()),
            ("model", self.model.clone()),
            ("source_sha256", self.source_sha256.clone()),
            ("epoch", self.epoch.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

/// One line of `metrics.jsonl`: the figures of one epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// The epoch, from 1.
    pub epoch: usize,
    /// Optimiser steps taken by its end.
    pub step: usize,
    /// Mean loss over the epoch's steps.
    pub loss: f64,
    /// Mean gradient norm over the epoch's steps.
    pub grad_norm: f64,
    /// The epoch's learning rate.
    pub lr: f64,
    /// Wall-clock seconds the epoch took.
    pub seconds: f64,
    /// Exact average log-likelihood of the test rows (or of the training rows
    /// when there is no test split), when the model is small enough to enumerate.
    pub log_likelihood: Option<f64>,
}

impl EpochMetrics {
    /// The first of the epoch's figures that is not finite, named for the
    /// error that ends the run.
    pub fn first_non_finite(&self) -> Option<&'static str> {
        [
            ("the epoch's mean loss", self.loss),
            ("the epoch's mean gradient norm", self.grad_norm),
            ("the log-likelihood", self.log_likelihood.unwrap_or(0.0)),
        ]
        .into_iter()
        .find(|(_, value)| !value.is_finite())
        .map(|(what, _)| what)
    }
}

/// The exact average log-likelihood of `rows` under `params`, or `None`
/// when log Z cannot be enumerated for the model.
pub fn mean_exact_log_likelihood(
    graph: &FactorGraph,
    plan: &Plan,
    params: &Tensors,
    rows: &Tensors,
    device: DeviceKind,
) -> Option<f64> {
    let evaluate = crate::runtime::evaluate::exact_log_likelihood;
    crate::runtime::evaluate::exact_log_z(graph, plan, params, device)
        .and_then(|z| evaluate(graph, plan, params, rows, z, device))
        .ok()
        .map(|ll| ll.iter().sum::<f64>() / ll.len() as f64)
}

/// How `run` trains: how long, where to, on what.
pub struct RunOptions {
    /// The epoch to train through (a resumed run continues to it).
    pub epochs: usize,
    /// The seed of a fresh run; a resumed run keeps its own.
    pub seed: u64,
    /// The run directory, where checkpoints and metrics go.
    pub out: PathBuf,
    /// Whether to continue from the directory's latest checkpoint.
    pub resume: bool,
    /// The device to train on.
    pub device: DeviceKind,
}

/// What a run reports as it goes.
pub enum Progress<'a> {
    /// Training begins: `epochs` in all, `steps_per_epoch` each, starting at `from_epoch`.
    Start { epochs: usize, steps_per_epoch: usize, from_epoch: usize },
    /// A step of `epoch` finished with this loss.
    Step { epoch: usize, loss: f64 },
    /// An epoch finished.
    Epoch(&'a EpochMetrics),
    /// A fresh run with `init` loaded these parameters, before anything was written.
    Init(&'a InitReport),
}

/// What `init` loaded: the file read, the parameters it gave, those that
/// keep their initialisers, and its tensors the model does not declare.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InitReport {
    /// The `params.safetensors` read.
    pub file: PathBuf,
    /// Parameters loaded from it, in declaration order.
    pub loaded: Vec<String>,
    /// Parameters it does not hold, drawn from their initialisers.
    pub initialised: Vec<String>,
    /// Its tensors that no parameter of the model is named for, ignored.
    pub ignored: Vec<String>,
}

/// Why `init`'s checkpoint cannot start a run (worded in `messages.rs`).
#[derive(Debug, Clone, PartialEq)]
pub enum InitError {
    /// The file cannot be read or is not a safetensors file; the reason names it.
    Read(String),
    /// A tensor that does not fit the parameter of its name (shape, or a non-finite value).
    Params {
        /// The file read.
        file: PathBuf,
        /// What does not fit.
        error: tensor::ShapeError,
    },
    /// The checkpoint holds none of the model's parameters.
    Disjoint {
        /// The file read.
        file: PathBuf,
        /// The model.
        model: String,
        /// The tensors the file holds.
        held: Vec<String>,
    },
}

/// Why a training run stopped.
#[derive(Debug)]
pub enum RunError {
    /// A run-directory file could not be read or written.
    Io(String),
    /// `init`'s checkpoint cannot start the run; nothing was written.
    Init(InitError),
    /// Training failed in `epoch`; `last_good` is the latest checkpoint written, if any.
    Train { error: TrainError, epoch: usize, last_good: Option<PathBuf> },
}

/// SHA-256 of the model file's text, in lower-case hex (what `sha256sum` prints).
pub fn source_hash(source: &str) -> String {
    sha256_hex(source.as_bytes())
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The learning rate of `epoch` (0-based) under the schedule.
pub fn learning_rate(base: f64, schedule: &Schedule, epoch: usize, epochs: usize) -> f64 {
    let e = epoch as f64;
    match *schedule {
        Schedule::Exponential { gamma } => base * gamma.powf(e),
        Schedule::Step { every, gamma } => base * gamma.powf((epoch / every.max(1)) as f64),
        Schedule::Cosine { min_lr } => {
            min_lr + (base - min_lr) * (1.0 + (std::f64::consts::PI * e / epochs.max(1) as f64).cos()) / 2.0
        }
        Schedule::Constant => base,
    }
}

/// Seed of one epoch's randomness, from the run's seed.
pub fn epoch_seed(seed: u64, epoch: usize) -> u64 {
    seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (epoch as u64).wrapping_mul(0xbf58_476d_1ce4_e5b9)
}

/// The checkpoint folder `latest` names in `dir`, if any.
pub fn latest_checkpoint(dir: &Path) -> Option<PathBuf> {
    let name = std::fs::read_to_string(dir.join("latest")).ok()?;
    let path = dir.join(name.trim());
    path.is_dir().then_some(path)
}

/// The parameter file of a checkpoint directory (its latest epoch), an
/// epoch folder, or a `.safetensors` file.
fn params_file(path: &Path) -> PathBuf {
    if path.is_dir() {
        latest_checkpoint(path).unwrap_or_else(|| path.to_path_buf()).join("params.safetensors")
    } else {
        path.to_path_buf()
    }
}

/// Reads `params.safetensors` from a checkpoint directory (its latest epoch),
/// an epoch folder, or a `.safetensors` file, unchecked; `load_model_params`
/// checks them against a model.
pub fn load_params(path: &Path) -> Result<Tensors, String> {
    tensor::load_safetensors(&params_file(path))
}

/// Overwrites `params` (every declared parameter, from its initialiser) with
/// those the checkpoint at `path` holds (a run directory, an epoch folder or
/// a `.safetensors` file, read as `load_params` does), each checked against
/// its declared shape; the checkpoint's other tensors are ignored.
pub fn load_init_params(path: &Path, model: &Model, params: &mut Tensors) -> Result<InitReport, InitError> {
    let file = params_file(path);
    let held = tensor::load_safetensors(&file).map_err(InitError::Read)?;
    let (present, absent): (Vec<_>, Vec<_>) =
        crate::ir::param_specs(model).into_iter().partition(|p| held.contains_key(&p.name));
    if present.is_empty() {
        return Err(InitError::Disjoint { file, model: model.name.clone(), held: held.keys().cloned().collect() });
    }
    tensor::check_params(&present, &held).map_err(|error| InitError::Params { file: file.clone(), error })?;
    for p in &present {
        tensor::check_finite(&format!("parameter `{}`", p.name), &held[&p.name])
            .map_err(|error| InitError::Params { file: file.clone(), error })?;
    }
    let ignored = held.keys().filter(|k| !present.iter().any(|p| p.name == **k)).cloned().collect();
    for p in &present {
        params.insert(p.name.clone(), held[&p.name].clone());
    }
    Ok(InitReport {
        file,
        loaded: present.into_iter().map(|p| p.name).collect(),
        initialised: absent.into_iter().map(|p| p.name).collect(),
        ignored,
    })
}

/// Parameters that objectives learn beside the model's own (NCE's log Z).
const OBJECTIVE_PARAMS: &[&str] = &["nce.log_z"];

/// Reads parameters as `load_params` does and checks them against `model`:
/// every declared parameter present with its declared shape, every value
/// finite, no tensor the model does not declare. The one loader that
/// `sample`, `train --resume`, `eval` and `energy` use.
pub fn load_model_params(path: &Path, model: &Model) -> Result<Tensors, String> {
    let file = params_file(path);
    let params = tensor::load_safetensors(&file)?;
    check_model_params(model, &params).map_err(|e| format!("`{}`: {e}", file.display()))?;
    Ok(params)
}

/// `tensor::check_params` for a model's parameters, refusing unknown names too.
pub fn check_model_params(model: &Model, params: &Tensors) -> Result<(), tensor::ShapeError> {
    let specs = crate::ir::param_specs(model);
    tensor::check_params(&specs, params)?;
    for (name, t) in params {
        if OBJECTIVE_PARAMS.contains(&name.as_str()) {
            tensor::check_finite(&format!("parameter `{name}`"), t)?;
        } else if !specs.iter().any(|p| p.name == *name) {
            return Err(tensor::ShapeError::UnknownParameter {
                name: name.clone(),
                known: specs.iter().map(|p| p.name.clone()).collect(),
            });
        }
    }
    Ok(())
}

/// The metadata of the latest checkpoint in `dir`. A checkpoint without a
/// `schema_version` (written by ebmc before checkpoints described themselves)
/// or with a newer one is refused by name; its `params.safetensors` still
/// loads for `sample`, `eval` and `energy`.
pub fn checkpoint_meta(dir: &Path) -> Result<Meta, String> {
    let latest = latest_checkpoint(dir)
        .ok_or_else(|| format!("no checkpoint to resume in `{}` (no `latest` file)", dir.display()))?;
    let path = latest.join("meta.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    let not_meta = |e: serde_json::Error| format!("`{}` is not a checkpoint's metadata: {e}", path.display());
    let value: serde_json::Value = serde_json::from_str(&text).map_err(not_meta)?;
    match value.get("schema_version").and_then(serde_json::Value::as_u64) {
        None => Err(format!(
            "`{}` has no `schema_version`: it was written by an older ebmc whose checkpoints cannot be resumed; train afresh with another --out (its parameters still load for sample, eval and energy)",
            path.display()
        )),
        Some(v) if v > u64::from(META_SCHEMA_VERSION) => Err(format!(
            "`{}` has schema version {v}, newer than the {META_SCHEMA_VERSION} this ebmc {} reads; resume it with a newer ebmc",
            path.display(),
            env!("CARGO_PKG_VERSION")
        )),
        Some(_) => serde_json::from_value(value).map_err(not_meta),
    }
}

/// An exclusive lock on a run directory, held until dropped (or until the
/// process ends, however it ends: the operating system releases it). The
/// `lock` file stays behind with the last holder's pid; only the lock on it
/// matters. Taking it again in the same process succeeds.
pub struct RunLock {
    /// `None` when this process already held the lock.
    file: Option<(std::fs::File, PathBuf)>,
}

static HELD_LOCKS: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

impl RunLock {
    /// Takes the lock on `dir` (creating it), or says which process holds it.
    pub fn acquire(dir: &Path) -> Result<RunLock, String> {
        use std::io::{Read, Seek, Write};
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create `{}`: {e}", dir.display()))?;
        let key = dir.canonicalize().map_err(|e| format!("cannot open `{}`: {e}", dir.display()))?;
        let mut held = HELD_LOCKS.lock().unwrap_or_else(|e| e.into_inner());
        if held.contains(&key) {
            return Ok(RunLock { file: None });
        }
        let path = dir.join("lock");
        let cannot = |e: std::io::Error| format!("cannot lock `{}`: {e}", path.display());
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(cannot)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder
                    .trim()
                    .parse::<u32>()
                    .map_or_else(|_| "another process".to_string(), |pid| format!("process {pid}"));
                return Err(format!(
                    "`{}` is in use: {holder} holds its lock `{}`; wait for that run to finish, or choose another --out",
                    dir.display(),
                    path.display()
                ));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(cannot(e)),
        }
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .and_then(|()| file.sync_all())
            .map_err(cannot)?;
        held.push(key.clone());
        Ok(RunLock { file: Some((file, key)) })
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        if let Some((file, key)) = self.file.take() {
            HELD_LOCKS.lock().unwrap_or_else(|e| e.into_inner()).retain(|k| *k != key);
            let _ = file.unlock();
        }
    }
}

/// Removes what an interrupted run left in `dir`: staging folders, old
/// checkpoints on their way out, temporary files.
fn remove_leftovers(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(".trash-") || (name.starts_with('.') && name.ends_with(".partial")) {
            let _ = std::fs::remove_dir_all(entry.path());
        } else if name.ends_with(".tmp") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Trains `train` on `data` into `opts.out`, a checkpoint per epoch, reporting to `progress`; returns every epoch's metrics (the log-likelihood on `test` when given).
/// A train block's `outliers` are loaded with relative paths read from the working directory (`run_with_outliers` takes them loaded).
#[allow(clippy::too_many_arguments)]
pub fn run(
    source: &str,
    graph: &FactorGraph,
    plan: &Plan,
    train: &Train,
    data: &Dataset,
    test: Option<&Dataset>,
    opts: &RunOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<Vec<EpochMetrics>, RunError> {
    let outliers = match &train.outliers {
        Some(spec) => Some(
            crate::runtime::data::load(spec, &graph.model, std::path::Path::new("."))
                .map_err(|e| RunError::Io(format!("outlier rows: {e}")))?,
        ),
        None => None,
    };
    run_with_outliers(source, graph, plan, train, data, test, outliers.as_ref(), opts, progress)
}

/// `run`, with the train block's `outliers` already loaded (`None` when it names none).
#[allow(clippy::too_many_arguments)]
pub fn run_with_outliers(
    source: &str,
    graph: &FactorGraph,
    plan: &Plan,
    train: &Train,
    data: &Dataset,
    test: Option<&Dataset>,
    outliers: Option<&Dataset>,
    opts: &RunOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<Vec<EpochMetrics>, RunError> {
    let model = &graph.model;
    let io = |e: String| RunError::Io(e);
    if opts.epochs == 0 {
        return Err(io("0 epochs: nothing to train, so nothing is written; give at least 1 epoch".into()));
    }
    // A fresh run's parameters, read before the run directory is touched, so
    // that a checkpoint which does not fit leaves nothing behind. A resumed
    // run starts from its own checkpoint instead, never from `init`'s.
    let fresh = match (opts.resume, &train.init) {
        (true, _) => None,
        (false, init) => {
            let mut params = tensor::initialise(&plan.lowered.params, opts.seed);
            if let Some(path) = init {
                let report = load_init_params(Path::new(path), model, &mut params).map_err(RunError::Init)?;
                progress(Progress::Init(&report));
            }
            Some(params)
        }
    };
    let _lock = RunLock::acquire(&opts.out).map_err(io)?;
    remove_leftovers(&opts.out);
    let hash = source_hash(source);
    // A resumed run keeps the seed it started with, whatever `opts.seed` says.
    let (params, state, first_epoch, mut step, mut history, run_seed) = if let Some(params) = fresh {
        (params, TrainState::default(), 1, 0, Vec::new(), opts.seed)
    } else {
        let meta = checkpoint_meta(&opts.out).map_err(io)?;
        // `checkpoint_meta` found it, but another process may have removed it since.
        let dir = latest_checkpoint(&opts.out)
            .ok_or_else(|| io(format!("no complete checkpoint in `{}` to resume from", opts.out.display())))?;
        if meta.model != model.name || meta.source_sha256 != hash {
            return Err(io(format!(
                "the checkpoint in `{}` was made from a different model source; train afresh with another --out",
                opts.out.display()
            )));
        }
        let params = load_model_params(&dir, model).map_err(io)?;
        let (tensors, metadata) = tensor::load_safetensors_with(&dir.join("state.safetensors")).map_err(io)?;
        let state = TrainState { tensors, metadata };
        let history: Vec<EpochMetrics> =
            read_metrics(&opts.out).into_iter().filter(|m| m.epoch <= meta.epoch).collect();
        (params, state, meta.epoch + 1, meta.step, history, meta.seed)
    };
    let mut meta = Meta::new(source, model, train, data, &params, run_seed, opts.device);
    let mut trainer = Trainer::resume(model, plan, train, &params, &state, run_seed, opts.device)
        .map_err(|error| RunError::Train { error, epoch: first_epoch, last_good: None })?;
    trainer.prepare(&data.vars).map_err(|error| RunError::Train { error, epoch: first_epoch, last_good: None })?;
    if let Some(rows) = outliers {
        trainer.outliers(&rows.vars).map_err(|error| RunError::Train { error, epoch: first_epoch, last_good: None })?;
    }
    let batch = train.batch.min(data.rows).max(1);
    let steps_per_epoch = data.rows / batch;
    progress(Progress::Start { epochs: opts.epochs, steps_per_epoch, from_epoch: first_epoch });
    let base_lr = train.options.optimizer.lr();
    let exact = crate::runtime::evaluate::enumeration(graph, plan).is_ok();
    if opts.resume {
        // Drop the metrics of epochs after the checkpoint (a kill between the two writes).
        write_metrics(&opts.out, &history).map_err(io)?;
    }
    for epoch in first_epoch..=opts.epochs {
        let started = Instant::now();
        let seed = epoch_seed(run_seed, epoch);
        trainer.begin_epoch(seed);
        let mut order: Vec<usize> = (0..data.rows).collect();
        order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
        let lr = learning_rate(base_lr, &train.options.schedule, epoch - 1, opts.epochs);
        let (mut loss_sum, mut norm_sum) = (0.0, 0.0);
        for b in 0..steps_per_epoch {
            let rows = data.rows_at(&order[b * batch..(b + 1) * batch]);
            step += 1;
            let report = trainer.step(&rows, lr, step).map_err(|error| RunError::Train {
                error,
                epoch,
                last_good: latest_checkpoint(&opts.out),
            })?;
            loss_sum += report.loss;
            norm_sum += report.grad_norm;
            progress(Progress::Step { epoch, loss: report.loss });
        }
        let params = trainer.params();
        if let Some((name, _)) = params.iter().find(|(_, t)| t.data.iter().any(|x| !x.is_finite())) {
            return Err(RunError::Train {
                error: TrainError::NonFinite { what: format!("parameter `{name}`"), step },
                epoch,
                last_good: latest_checkpoint(&opts.out),
            });
        }
        let log_likelihood = exact
            .then(|| mean_exact_log_likelihood(graph, plan, &params, &test.unwrap_or(data).vars, opts.device))
            .flatten();
        let metrics = EpochMetrics {
            epoch,
            step,
            loss: loss_sum / steps_per_epoch as f64,
            grad_norm: norm_sum / steps_per_epoch as f64,
            lr,
            seconds: started.elapsed().as_secs_f64(),
            log_likelihood,
        };
        if let Some(what) = metrics.first_non_finite() {
            return Err(RunError::Train {
                error: TrainError::NonFinite { what: what.into(), step },
                epoch,
                last_good: latest_checkpoint(&opts.out),
            });
        }
        (meta.epoch, meta.step) = (epoch, step);
        save_checkpoint(&opts.out, epoch, &params, &trainer.checkpoint(), &meta).map_err(io)?;
        history.push(metrics.clone());
        write_metrics(&opts.out, &history).map_err(io)?;
        progress(Progress::Epoch(&metrics));
    }
    Ok(history)
}

/// Writes `epoch-N/` (parameters, optimiser state, metadata) into `dir`
/// atomically, points `latest` at it and keeps the newest two; the caller
/// holds `dir`'s `RunLock`.
pub fn save_checkpoint(
    dir: &Path,
    epoch: usize,
    params: &Tensors,
    state: &TrainState,
    meta: &Meta,
) -> Result<(), String> {
    let name = format!("epoch-{epoch}");
    let staging = dir.join(format!(".{name}.partial"));
    let _ = std::fs::remove_dir_all(&staging);
    let written = (|| {
        std::fs::create_dir_all(&staging).map_err(|e| format!("cannot create `{}`: {e}", staging.display()))?;
        let header = meta.safetensors_metadata();
        tensor::save_safetensors_with_metadata(&staging.join("params.safetensors"), params, &header)?;
        // The optimiser's own metadata (Adam's step count) beside the checkpoint's.
        let state_header = header.into_iter().chain(state.metadata.clone()).collect();
        tensor::save_safetensors_with_metadata(&staging.join("state.safetensors"), &state.tensors, &state_header)?;
        tensor::write_atomically(
            &staging.join("meta.json"),
            // Cannot fire: the metadata holds strings, numbers and maps only.
            serde_json::to_string_pretty(meta).expect("meta serialises").as_bytes(),
        )?;
        tensor::sync_dir(&staging)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    let target = dir.join(&name);
    if target.exists() {
        // A folder of this epoch from a run killed before `latest` named it.
        discard(dir, &target);
    }
    if let Err(e) = std::fs::rename(&staging, &target) {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(format!("cannot write `{}`: {e}", target.display()));
    }
    tensor::sync_dir(dir)?;
    tensor::write_atomically(&dir.join("latest"), name.as_bytes())?;
    // Keep the newest two complete checkpoints.
    for entry in std::fs::read_dir(dir).map_err(|e| format!("cannot list `{}`: {e}", dir.display()))?.flatten() {
        let old =
            entry.file_name().to_str().and_then(|n| n.strip_prefix("epoch-")).and_then(|n| n.parse::<usize>().ok());
        if old.is_some_and(|k| k + 1 < epoch) {
            discard(dir, &entry.path());
        }
    }
    Ok(())
}

/// Deletes a checkpoint folder so that a kill at any moment leaves either
/// the whole folder or none of it under its name: first a rename out of
/// the way (atomic), then the deletion.
fn discard(dir: &Path, folder: &Path) {
    let name = folder.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let trash = dir.join(format!(".trash-{name}-{}", std::process::id()));
    if std::fs::rename(folder, &trash).is_ok() {
        let _ = std::fs::remove_dir_all(&trash);
    }
}

/// The metrics of a run directory's `metrics.jsonl`; unreadable lines are skipped.
pub fn read_metrics(dir: &Path) -> Vec<EpochMetrics> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn write_metrics(dir: &Path, history: &[EpochMetrics]) -> Result<(), String> {
    // Cannot fire: metrics are plain numbers (non-finite ones are refused before).
    let text: String = history.iter().map(|m| serde_json::to_string(m).expect("metrics serialise") + "\n").collect();
    tensor::write_atomically(&dir.join("metrics.jsonl"), text.as_bytes())?;
    use crate::runtime::export::{Panel, Series};
    let line = |label: &str, points: Vec<(usize, f64)>| Series { label: label.into(), points };
    let mut panels = vec![
        Panel {
            title: "training loss".into(),
            y_label: "mean loss per batch".into(),
            series: vec![line("loss", history.iter().map(|m| (m.epoch, m.loss)).collect())],
        },
        Panel {
            title: "gradient norm".into(),
            y_label: "mean L2 norm per step".into(),
            series: vec![line("gradient norm", history.iter().map(|m| (m.epoch, m.grad_norm)).collect())],
        },
    ];
    let ll: Vec<(usize, f64)> = history.iter().filter_map(|m| m.log_likelihood.map(|l| (m.epoch, l))).collect();
    if !ll.is_empty() {
        panels.insert(
            1,
            Panel {
                title: "exact log-likelihood".into(),
                y_label: "nats per row".into(),
                series: vec![line("log-likelihood", ll)],
            },
        );
    }
    tensor::write_atomically(&dir.join("curve.png"), &crate::runtime::export::line_plots(&panels))
}
