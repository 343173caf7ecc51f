//! The training run: epochs of shuffled batches through `backend::Trainer`,
//! a learning-rate schedule, per-epoch metrics, and checkpoints that are
//! written atomically and resume exactly.
//!
//! A checkpoint directory holds `epoch-N/` folders (`params.safetensors`,
//! `state.safetensors` with optimiser moments and persistent chains,
//! `meta.json`) and a `latest` file naming the newest; a folder is complete
//! before `latest` points to it, so a kill never leaves a half-written one.

use crate::backend::{DeviceKind, TrainError, Trainer};
use crate::data::Dataset;
use crate::graph::FactorGraph;
use crate::plan::Plan;
use crate::program::{Call, Train};
use crate::tensor::{self, Tensors};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    pub model: String,
    /// FNV-1a hash of the model file's text.
    pub source_hash: String,
    pub compiler_version: String,
    pub seed: u64,
    pub epoch: usize,
    pub step: usize,
    pub device: DeviceKind,
    pub train: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub step: usize,
    pub loss: f64,
    pub grad_norm: f64,
    pub lr: f64,
    pub seconds: f64,
    /// Exact average log-likelihood of the test rows (or of the training rows
    /// when there is no test split), when the model is small enough to enumerate.
    pub log_likelihood: Option<f64>,
}

pub struct RunOptions {
    pub epochs: usize,
    pub seed: u64,
    pub out: PathBuf,
    pub resume: bool,
    pub device: DeviceKind,
}

/// What a run reports as it goes.
pub enum Progress<'a> {
    Start { epochs: usize, steps_per_epoch: usize, from_epoch: usize },
    Step { epoch: usize, loss: f64 },
    Epoch(&'a EpochMetrics),
}

#[derive(Debug)]
pub enum RunError {
    Io(String),
    Train { error: TrainError, epoch: usize, last_good: Option<PathBuf> },
}

pub fn source_hash(source: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in source.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The learning rate of `epoch` (0-based) under the schedule.
pub fn learning_rate(base: f64, schedule: &Call, epoch: usize, epochs: usize) -> f64 {
    let e = epoch as f64;
    match schedule.name.as_str() {
        "exponential" => base * schedule.num("gamma").unwrap_or(1.0).powf(e),
        "step" => base * schedule.num("gamma").unwrap_or(0.1).powf((epoch / schedule.int("every").unwrap_or(1).max(1) as usize) as f64),
        "cosine" => {
            let min = schedule.num("min_lr").unwrap_or(0.0);
            min + (base - min) * (1.0 + (std::f64::consts::PI * e / epochs.max(1) as f64).cos()) / 2.0
        }
        _ => base,
    }
}

/// Seed of one epoch's randomness, from the run's seed.
fn epoch_seed(seed: u64, epoch: usize) -> u64 {
    seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (epoch as u64).wrapping_mul(0xbf58_476d_1ce4_e5b9)
}

/// The checkpoint folder `latest` names in `dir`, if any.
pub fn latest_checkpoint(dir: &Path) -> Option<PathBuf> {
    let name = std::fs::read_to_string(dir.join("latest")).ok()?;
    let path = dir.join(name.trim());
    path.is_dir().then_some(path)
}

/// Reads `params.safetensors` from a checkpoint directory (its latest epoch),
/// an epoch folder, or a `.safetensors` file.
pub fn load_params(path: &Path) -> Result<Tensors, String> {
    let file = if path.is_dir() {
        latest_checkpoint(path).unwrap_or_else(|| path.to_path_buf()).join("params.safetensors")
    } else {
        path.to_path_buf()
    };
    tensor::load_safetensors(&file)
}

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
    let model = &graph.model;
    let io = |e: String| RunError::Io(e);
    std::fs::create_dir_all(&opts.out).map_err(|e| io(format!("cannot create `{}`: {e}", opts.out.display())))?;
    let hash = source_hash(source);
    let lowered = crate::ir::program_to_ir(model);
    let (params, state, first_epoch, mut step, mut history) = if opts.resume {
        let dir = latest_checkpoint(&opts.out).ok_or_else(|| io(format!("no checkpoint to resume in `{}` (no `latest` file)", opts.out.display())))?;
        let meta: Meta = serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json")).map_err(|e| io(format!("cannot read `{}`: {e}", dir.join("meta.json").display())))?)
            .map_err(|e| io(format!("`{}` is not a checkpoint's metadata: {e}", dir.join("meta.json").display())))?;
        if meta.model != model.name || meta.source_hash != hash {
            return Err(io(format!("the checkpoint in `{}` was made from a different model source; train afresh with another --out", opts.out.display())));
        }
        let params = tensor::load_safetensors(&dir.join("params.safetensors")).map_err(io)?;
        let state = tensor::load_safetensors(&dir.join("state.safetensors")).map_err(io)?;
        let history: Vec<EpochMetrics> = read_metrics(&opts.out).into_iter().filter(|m| m.epoch <= meta.epoch).collect();
        (params, state, meta.epoch + 1, meta.step, history)
    } else {
        (tensor::initialise(&lowered.params, opts.seed), Tensors::new(), 1, 0, Vec::new())
    };
    let mut trainer = Trainer::new(model, plan, train, &params, &state, opts.seed, opts.device).map_err(|error| RunError::Train { error, epoch: first_epoch, last_good: None })?;
    trainer.prepare(&data.vars);
    let batch = train.batch.min(data.rows).max(1);
    let steps_per_epoch = data.rows / batch;
    progress(Progress::Start { epochs: opts.epochs, steps_per_epoch, from_epoch: first_epoch });
    let base_lr = train.optimizer.num("lr").unwrap_or(0.01);
    let exact = crate::evaluate::enumeration(graph, plan).is_ok();
    write_metrics(&opts.out, &history).map_err(io)?;
    for epoch in first_epoch..=opts.epochs {
        let started = Instant::now();
        let seed = epoch_seed(opts.seed, epoch);
        trainer.begin_epoch(seed);
        let mut order: Vec<usize> = (0..data.rows).collect();
        order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
        let lr = learning_rate(base_lr, &train.schedule, epoch - 1, opts.epochs);
        let (mut loss_sum, mut norm_sum) = (0.0, 0.0);
        for b in 0..steps_per_epoch {
            let rows = data.rows_at(&order[b * batch..(b + 1) * batch]);
            step += 1;
            let report = trainer.step(&rows, lr, step).map_err(|error| RunError::Train { error, epoch, last_good: latest_checkpoint(&opts.out) })?;
            loss_sum += report.loss;
            norm_sum += report.grad_norm;
            progress(Progress::Step { epoch, loss: report.loss });
        }
        let params = trainer.params();
        if let Some((name, _)) = params.iter().find(|(_, t)| t.data.iter().any(|x| !x.is_finite())) {
            return Err(RunError::Train { error: TrainError::NonFinite { what: format!("parameter `{name}`"), step }, epoch, last_good: latest_checkpoint(&opts.out) });
        }
        let log_likelihood = if exact {
            let eval_rows = test.unwrap_or(data);
            crate::evaluate::exact_log_z(graph, plan, &params, opts.device)
                .and_then(|z| crate::evaluate::exact_log_likelihood(graph, plan, &params, &eval_rows.vars, z, opts.device))
                .ok()
                .map(|ll| ll.iter().sum::<f64>() / ll.len() as f64)
        } else {
            None
        };
        let metrics = EpochMetrics { epoch, step, loss: loss_sum / steps_per_epoch as f64, grad_norm: norm_sum / steps_per_epoch as f64, lr, seconds: started.elapsed().as_secs_f64(), log_likelihood };
        let meta = Meta {
            model: model.name.clone(),
            source_hash: hash.clone(),
            compiler_version: env!("CARGO_PKG_VERSION").to_string(),
            seed: opts.seed,
            epoch,
            step,
            device: opts.device,
            train: serde_json::to_value(train).expect("train spec serialises"),
        };
        save_checkpoint(&opts.out, epoch, &params, &trainer.state(), &meta).map_err(io)?;
        history.push(metrics.clone());
        write_metrics(&opts.out, &history).map_err(io)?;
        progress(Progress::Epoch(&metrics));
    }
    Ok(history)
}

fn save_checkpoint(dir: &Path, epoch: usize, params: &Tensors, state: &Tensors, meta: &Meta) -> Result<(), String> {
    let name = format!("epoch-{epoch}");
    let staging = dir.join(format!(".{name}.partial"));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(|e| format!("cannot create `{}`: {e}", staging.display()))?;
    tensor::save_safetensors(&staging.join("params.safetensors"), params)?;
    tensor::save_safetensors(&staging.join("state.safetensors"), state)?;
    tensor::write_atomically(&staging.join("meta.json"), serde_json::to_string_pretty(meta).expect("meta serialises").as_bytes())?;
    let target = dir.join(&name);
    let _ = std::fs::remove_dir_all(&target);
    std::fs::rename(&staging, &target).map_err(|e| format!("cannot write `{}`: {e}", target.display()))?;
    tensor::write_atomically(&dir.join("latest"), name.as_bytes())?;
    // Keep the newest two complete checkpoints.
    for entry in std::fs::read_dir(dir).map_err(|e| format!("cannot list `{}`: {e}", dir.display()))?.flatten() {
        let old = entry.file_name().to_str().and_then(|n| n.strip_prefix("epoch-")).and_then(|n| n.parse::<usize>().ok());
        if old.is_some_and(|k| k + 1 < epoch) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    Ok(())
}

pub fn read_metrics(dir: &Path) -> Vec<EpochMetrics> {
    std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap_or_default().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

fn write_metrics(dir: &Path, history: &[EpochMetrics]) -> Result<(), String> {
    let text: String = history.iter().map(|m| serde_json::to_string(m).expect("metrics serialise") + "\n").collect();
    tensor::write_atomically(&dir.join("metrics.jsonl"), text.as_bytes())?;
    let loss: Vec<(f64, f64)> = history.iter().map(|m| (m.epoch as f64, m.loss)).collect();
    let ll: Vec<(f64, f64)> = history.iter().filter_map(|m| m.log_likelihood.map(|l| (m.epoch as f64, l))).collect();
    let mut panels = vec![("loss", loss)];
    if !ll.is_empty() {
        panels.push(("log-likelihood (nats)", ll));
    }
    tensor::write_atomically(&dir.join("curve.png"), &crate::export::line_plots(&panels))
}
