//! The flags of every subcommand (clap), and what reads them before clap
//! does: `--message-format` and `--color` decide how clap's own errors print.

use clap::{Parser, Subcommand, ValueEnum};
use codespan_reporting::term::termcolor::ColorChoice;
use ebmc::runtime::command::FlagError;
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "ebmc",
    version = env!("EBMC_VERSION"),
    about = "Compile, train, sample and evaluate energy-based models written in the .ebm language",
    after_help = "Examples:\n  ebmc check models/*.ebm\n  ebmc train models/rbm.ebm && ebmc eval models/rbm.ebm --params runs/rbm\n\nExit codes: 0 ok, 1 the input has errors, 2 the command could not run."
)]
pub struct Cli {
    /// `human` for people; `json` for programs: results on stdout, diagnostics and errors as JSON lines on stderr.
    #[arg(long, global = true, value_enum, default_value_t = MessageFormat::Human)]
    pub message_format: MessageFormat,
    /// When to colour diagnostics: `auto` colours only on a terminal.
    #[arg(long, global = true, value_enum, default_value_t = ColorArg::Auto)]
    pub color: ColorArg,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Parse and check files; print diagnostics. Silent when all is well.
    #[command(
        after_help = "Example:\n  ebmc check models/rbm.ebm models/grbm.ebm\n\nWith --message-format json: one JSON object per diagnostic on stdout, then a summary object."
    )]
    Check {
        /// The .ebm files to check.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print the factor graph: variables, energy terms and the degree of each term in each variable.
    #[command(after_help = "Example:\n  ebmc graph models/rbm.ebm --format dot | dot -Tpng > rbm.png")]
    Graph {
        /// The .ebm file.
        file: PathBuf,
        /// `text` to read, `dot` for Graphviz (ignored with --message-format json).
        #[arg(long, value_enum, default_value_t = GraphFormat::Text)]
        format: GraphFormat,
        /// Only this model (default: every model in the file).
        #[arg(long)]
        model: Option<String>,
    },
    /// Explain how each model will be sampled and trained, and why.
    #[command(
        after_help = "Example:\n  ebmc plan models/dbm.ebm --message-format json\n  ebmc plan models/toy/8gaussians_dsm.ebm --schedule"
    )]
    Plan {
        /// The .ebm file.
        file: PathBuf,
        /// Also print the compiled CPU schedules of the training step and of each Langevin step, for one batch of the train block (or 128 rows): fused loops, GEMMs, arena.
        #[arg(long)]
        schedule: bool,
        /// Deprecated spelling of `--message-format json` for the plan itself (errors stay human).
        #[arg(long, hide = true)]
        json: bool,
        /// Only this model (default: every model in the file).
        #[arg(long)]
        model: Option<String>,
    },
    /// Run the planned sampler and write the visible variables' samples.
    #[command(
        after_help = "Example:\n  ebmc sample models/rbm.ebm --params runs/rbm --chains 64 --steps 1000 --out samples.csv --png samples.png\n  ebmc sample models/rbm.ebm --params runs/rbm --given 'v[0..32]=top_halves.csv' --png inpainted.png"
    )]
    Sample {
        /// The .ebm file.
        file: PathBuf,
        /// The model to sample, when the file has several.
        #[arg(long)]
        model: Option<String>,
        /// Trained parameters: a checkpoint directory or a .safetensors file
        /// (default: the model's initialisers).
        #[arg(long)]
        params: Option<PathBuf>,
        /// Independent chains (one sample each, unless --every).
        #[arg(long, default_value_t = 64, value_parser = parse_chains)]
        chains: usize,
        /// Sweeps after burn-in (default: the objective's k when training's chains are
        /// short-run, as `ebmc plan` says; else 1000).
        #[arg(long, value_parser = parse_sweeps)]
        steps: Option<usize>,
        /// Sweeps before any sample is kept.
        #[arg(long, default_value_t = 0, value_parser = parse_sweeps)]
        burn_in: usize,
        /// Keep the chains' states every N sweeps after burn-in (default: only the last).
        #[arg(long, value_parser = parse_every)]
        every: Option<usize>,
        /// Seed of the chains' initial states and of every sweep (and of the initialisers without --params).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Write samples as CSV (`.csv`) or NPY (`.npy`).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Write the final states of an image-shaped visible variable as a PNG grid, and
        /// its first 8 chains over 10 sweeps of the run as `chains.png` beside it
        /// (or, for one 2-D real variable, the samples over the model's density).
        #[arg(long)]
        png: Option<PathBuf>,
        /// Image size HxW for --png when the variable is not a square (e.g. 28x28).
        #[arg(long, value_parser = parse_image_shape)]
        image: Option<(usize, usize)>,
        /// Hold part of a variable at the rows of a CSV or NPY file while the rest is sampled:
        /// `PART=FILE`, PART a variable or a range per unit axis (`v[0..32]`, `x[0, 0..4]`),
        /// one column per unit; chain i takes row i mod rows. Repeatable.
        #[arg(long, value_name = "PART=FILE", value_parser = parse_given)]
        given: Vec<(String, PathBuf)>,
        /// Where tensors run (`cuda` needs a build with the `cuda` feature).
        #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
        device: DeviceArg,
    },
    /// Train a model as its `train` block says; write checkpoints, metrics and plots.
    #[command(
        after_help = "Example:\n  ebmc train models/rbm.ebm --epochs 10 --out runs/rbm\n  ebmc train models/rbm.ebm --resume runs/rbm --epochs 20\n\nWith --message-format json: one JSON object per epoch on stdout, then the run's summary."
    )]
    Train {
        /// The .ebm file.
        file: PathBuf,
        /// The model to train, when the file has several.
        #[arg(long)]
        model: Option<String>,
        /// Read the training data from this file instead (CSV, NPY or IDX), with the same binding.
        #[arg(long)]
        data: Option<PathBuf>,
        /// Read the `--data` file's numbers as they are, without the train block's `scale` and `binarize` (for values already in the model's domain, such as samples `ebmc sample` wrote).
        #[arg(long, requires = "data")]
        data_as_is: bool,
        /// Override the number of epochs.
        #[arg(long, value_parser = parse_epochs)]
        epochs: Option<usize>,
        /// Override the seed.
        #[arg(long)]
        seed: Option<u64>,
        /// Where checkpoints, metrics.jsonl, curve.png and samples.png go (default runs/MODEL).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Continue the run in this directory from its latest checkpoint.
        #[arg(long, conflicts_with = "out")]
        resume: Option<PathBuf>,
        /// Where tensors run (`cuda` needs a build with the `cuda` feature).
        #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
        device: DeviceArg,
    },
    /// Evaluate trained parameters: exact or AIS log Z, log-likelihood, pseudo-likelihood, reconstruction error; for real-valued data, energies, OOD detection and MMD.
    #[command(
        after_help = "Example:\n  ebmc eval models/bars.ebm --params runs/bars --ais --runs 100 --temperatures 1000\n  ebmc eval models/toy/8gaussians_sm.ebm --params runs/8gaussians_sm --message-format json\n  ebmc eval models/ring.ebm --params runs/ring --ood other.csv --sample-chains 1000 --sample-sweeps 500"
    )]
    Eval {
        /// The .ebm file.
        file: PathBuf,
        /// The model to evaluate, when the file has several.
        #[arg(long)]
        model: Option<String>,
        /// A checkpoint directory or .safetensors file.
        #[arg(long)]
        params: PathBuf,
        /// Evaluate on this file (default: the train block's test split, else its data).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Read the `--data` file's numbers as they are, without the train block's `scale` and `binarize` (for values already in the model's domain, such as samples `ebmc sample` wrote).
        #[arg(long, requires = "data")]
        data_as_is: bool,
        /// Estimate log Z by annealed importance sampling (also when it can be enumerated, to compare).
        #[arg(long)]
        ais: bool,
        /// AIS runs (and reverse-AIS runs, each from a random evaluated row).
        #[arg(long, default_value_t = 100)]
        runs: usize,
        /// Intermediate distributions of the AIS path, spaced as Salakhutdinov & Murray's 14,500.
        #[arg(long, default_value_t = 14_500)]
        temperatures: usize,
        /// Stochastic pseudo-likelihood over this many random units per row (default: all units).
        #[arg(long)]
        pl_units: Option<usize>,
        /// Lower bound of the grid integral for one- or two-dimensional continuous models.
        #[arg(long, default_value_t = -6.0, allow_hyphen_values = true)]
        grid_low: f64,
        /// Upper bound of the grid integral.
        #[arg(long, default_value_t = 6.0, allow_hyphen_values = true)]
        grid_high: f64,
        /// Grid points per axis.
        #[arg(long, default_value_t = 300)]
        grid: usize,
        /// Rows of another data set (CSV, NPY or IDX, bound as --data): how well the energy tells them from the evaluated rows (AUROC, AUPR, FPR at 95% TPR).
        #[arg(long)]
        ood: Option<PathBuf>,
        /// Read the `--ood` file's numbers as they are, without the train block's `scale` and `binarize`.
        #[arg(long, requires = "ood")]
        ood_as_is: bool,
        /// Chains of the model's own sampler compared with the rows (energies, MMD) when the visible variables are real-valued.
        #[arg(long, default_value_t = 256, value_parser = parse_sample_chains)]
        sample_chains: usize,
        /// Sweeps those chains run from the sampler's random start (default: the objective's k when
        /// training's chains are short-run, as `ebmc plan` says; else 200).
        #[arg(long, value_parser = parse_every)]
        sample_sweeps: Option<usize>,
        /// Seed of AIS, the stochastic pseudo-likelihood, reconstructions, model samples, noise rows and the MMD test.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Deprecated spelling of `--message-format json` for the report itself (errors stay human).
        #[arg(long, hide = true)]
        json: bool,
        /// Where tensors run (`cuda` needs a build with the `cuda` feature).
        #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
        device: DeviceArg,
    },
    /// Print the (free) energy of each data row: latents summed out as planned, and a JEM label the rows leave out (an out-of-distribution score).
    #[command(
        after_help = "Example:\n  ebmc energy models/rbm.ebm --params runs/rbm --data rows.csv > energies.csv\n  ebmc energy models/rbm.ebm --params runs/rbm --data samples.csv --data-as-is"
    )]
    Energy {
        /// The .ebm file.
        file: PathBuf,
        /// The model to score with, when the file has several.
        #[arg(long)]
        model: Option<String>,
        /// A checkpoint directory or .safetensors file.
        #[arg(long)]
        params: PathBuf,
        /// Rows to score (CSV, NPY or IDX), bound as the train block binds its data.
        #[arg(long)]
        data: PathBuf,
        /// Read the `--data` file's numbers as they are, without the train block's `scale` and `binarize` (for values already in the model's domain, such as samples `ebmc sample` wrote).
        #[arg(long, requires = "data")]
        data_as_is: bool,
        /// Where tensors run (`cuda` needs a build with the `cuda` feature).
        #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
        device: DeviceArg,
    },
    /// Rewrite files in the canonical layout (comments are kept).
    #[command(after_help = "Example:\n  ebmc fmt models/*.ebm\n  ebmc fmt --check models/*.ebm   # in CI")]
    Fmt {
        /// The .ebm files to format in place.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Change nothing; exit 1 if any file is not formatted.
        #[arg(long)]
        check: bool,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeviceArg {
    Cpu,
    /// An NVIDIA GPU (a build with the `cuda` feature).
    Cuda,
}

impl From<DeviceArg> for ebmc::backend::DeviceKind {
    fn from(d: DeviceArg) -> Self {
        match d {
            DeviceArg::Cpu => ebmc::backend::DeviceKind::Cpu,
            DeviceArg::Cuda => ebmc::backend::DeviceKind::Cuda,
        }
    }
}

/// A count flag between `min` and `max`, read wide so that a huge value is
/// reported against its limit rather than as "too large" for the type.
fn count_flag(s: &str, min: u128, max: u128, unit: &'static str) -> Result<usize, FlagError> {
    let value: u128 = s.trim().parse().map_err(|_| FlagError::NotACount { text: s.to_string(), unit })?;
    if value < min {
        return Err(FlagError::BelowMin { min });
    }
    if value > max {
        return Err(FlagError::PastLimit { value, unit, max });
    }
    usize::try_from(value).map_err(|_| FlagError::TooWide { value })
}

fn parse_chains(s: &str) -> Result<usize, FlagError> {
    // Chains times units is checked against the model once it is compiled.
    count_flag(s, 1, ebmc::analysis::limits::MAX_BATCH_VALUES, "chains")
}

fn parse_sample_chains(s: &str) -> Result<usize, FlagError> {
    // The unbiased MMD needs two samples.
    count_flag(s, 2, ebmc::analysis::limits::MAX_BATCH_VALUES, "chains")
}

fn parse_sweeps(s: &str) -> Result<usize, FlagError> {
    count_flag(s, 0, ebmc::analysis::limits::MAX_SWEEPS, "sweeps")
}

fn parse_every(s: &str) -> Result<usize, FlagError> {
    count_flag(s, 1, ebmc::analysis::limits::MAX_SWEEPS, "sweeps")
}

fn parse_epochs(s: &str) -> Result<usize, FlagError> {
    count_flag(s, 1, ebmc::analysis::limits::MAX_EPOCHS, "epochs")
}

fn parse_image_shape(s: &str) -> Result<(usize, usize), FlagError> {
    let (h, w) = s.split_once('x').ok_or(FlagError::ImageShape { part: None })?;
    let parse = |x: &str| x.trim().parse::<usize>().map_err(|_| FlagError::ImageShape { part: Some(x.to_string()) });
    Ok((parse(h)?, parse(w)?))
}

fn parse_given(s: &str) -> Result<(String, PathBuf), ebmc::runtime::given::PartError> {
    ebmc::runtime::given::parse_given(s)
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    /// Variables, factors and interactions, to read.
    Text,
    /// Graphviz; render with `dot -Tpng` or `neato -Tpng`.
    Dot,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MessageFormat {
    /// Text for people; diagnostics with source excerpts.
    Human,
    /// JSON documents and JSON lines for programs (docs/cli.md).
    Json,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorArg {
    /// Colour when stderr is a terminal.
    Auto,
    Always,
    Never,
}

/// The value of a flag in the raw arguments, before clap has parsed them
/// (clap's own errors must already be printed in the asked format).
pub fn raw_flag(args: &[String], flag: &str) -> Option<String> {
    let eq = format!("{flag}=");
    args.iter()
        .enumerate()
        .find_map(|(i, a)| if a == flag { args.get(i + 1).cloned() } else { a.strip_prefix(&eq).map(String::from) })
}

/// The colour of diagnostics: `auto` colours only when stderr is a terminal.
pub fn color_choice(color: ColorArg) -> ColorChoice {
    match color {
        ColorArg::Always => ColorChoice::Always,
        ColorArg::Never => ColorChoice::Never,
        ColorArg::Auto if std::io::stderr().is_terminal() => ColorChoice::Auto,
        ColorArg::Auto => ColorChoice::Never,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed_and_every_flag_has_help() {
        let cli = Cli::command();
        cli.clone().debug_assert();
        for sub in cli.get_subcommands() {
            let name = sub.get_name();
            assert!(sub.get_about().is_some(), "`ebmc {name}` has no description");
            let after = sub.get_after_help().map(|h| h.to_string()).unwrap_or_default();
            assert!(after.contains(&format!("ebmc {name} ")), "`ebmc {name}` has no example: {after}");
            for arg in sub.get_arguments().filter(|a| !a.is_hide_set()) {
                assert!(arg.get_help().is_some(), "`ebmc {name}` flag `{}` has no help", arg.get_id());
            }
        }
    }

    #[test]
    fn raw_flags_are_read_in_both_spellings() {
        let args: Vec<String> = ["ebmc", "check", "--color=never", "--message-format", "json"].map(String::from).into();
        assert_eq!(raw_flag(&args, "--message-format").as_deref(), Some("json"));
        assert_eq!(raw_flag(&args, "--color").as_deref(), Some("never"));
        assert_eq!(raw_flag(&args, "--model"), None);
    }

    #[test]
    fn count_flags_are_refused_against_their_limits() {
        assert_eq!(parse_chains("0"), Err(FlagError::BelowMin { min: 1 }));
        assert_eq!(parse_sample_chains("1"), Err(FlagError::BelowMin { min: 2 }));
        assert_eq!(parse_sweeps("x"), Err(FlagError::NotACount { text: "x".into(), unit: "sweeps" }));
        assert!(matches!(parse_epochs("99999999999999999999"), Err(FlagError::PastLimit { unit: "epochs", .. })));
        assert_eq!(parse_image_shape("28x28"), Ok((28, 28)));
        assert_eq!(parse_image_shape("28"), Err(FlagError::ImageShape { part: None }));
    }
}
