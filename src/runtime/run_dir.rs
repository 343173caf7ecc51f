//! A training run's directory as a caller sees it: where a run goes by
//! default, whether a resumed run may go on with a given seed, and which
//! files a finished run leaves. The files themselves are written by
//! `runtime::train::run` (checkpoints, metrics, curve); `samples.png` by the
//! caller, from `runtime::figures::samples_picture`.

use crate::runtime::train;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// The file a run's metrics go to, one JSON object per epoch.
pub const METRICS: &str = "metrics.jsonl";
/// The plot of the run's loss and log-likelihood per epoch.
pub const CURVE: &str = "curve.png";
/// The picture of samples from the trained model.
pub const SAMPLES: &str = "samples.png";

/// Where a run of `model` goes when no directory is given: `runs/MODEL`.
pub fn default_run_dir(model: &str) -> PathBuf {
    PathBuf::from("runs").join(model)
}

/// Checks that resuming the run in `dir` with `seed` (if one is asked for)
/// keeps the seed the run was started with, since a resumed run continues
/// its own random stream.
pub fn check_resume_seed(dir: &Path, seed: Option<u64>) -> Result<(), String> {
    let Some(seed) = seed else {
        return Ok(());
    };
    let meta = train::checkpoint_meta(dir)?;
    if meta.seed == seed {
        return Ok(());
    }
    Err(format!(
        "the run in `{}` was started with seed {}; a resumed run keeps it: drop --seed or pass --seed {}",
        dir.display(),
        meta.seed,
        meta.seed
    ))
}

/// The files a run in a directory holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunFiles {
    /// The latest checkpoint folder (the directory itself if none is named).
    pub checkpoint: PathBuf,
    /// The `metrics.jsonl` file, one line per epoch.
    pub metrics: PathBuf,
    /// The `curve.png` training-curve plot.
    pub curve: PathBuf,
    /// `samples.png`, when it exists.
    pub samples: Option<PathBuf>,
}

/// The files of the run in `dir`, as they are now.
pub fn run_files(dir: &Path) -> RunFiles {
    let samples = dir.join(SAMPLES);
    RunFiles {
        checkpoint: train::latest_checkpoint(dir).unwrap_or_else(|| dir.to_path_buf()),
        metrics: dir.join(METRICS),
        curve: dir.join(CURVE),
        samples: samples.is_file().then_some(samples),
    }
}
