//! The `ebmc` command line: reads files, calls the library, prints results.
//! Exit codes: 0 success, 1 the input has errors, 2 the command could not run
//! (unreadable file, bad arguments).
//!
//! With `--message-format json`, stdout carries the results as JSON (one
//! document, or JSON lines for `check`'s diagnostics and `train`'s epochs)
//! and stderr carries every diagnostic and error as one JSON object a line.

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use codespan_reporting::term::termcolor::{ColorChoice, StandardStream};
use ebmc::analysis::plan::Plan;
use ebmc::analysis::program::{Model, Program};
use ebmc::front::diagnostic::{self, Diagnostic};
use ebmc::runtime::figures::{self, Picture};
use ebmc::runtime::{report, run_dir};
use serde::Serialize;
use serde_json::{Value, json};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "ebmc",
    version = env!("EBMC_VERSION"),
    about = "Compile, train, sample and evaluate energy-based models written in the .ebm language",
    after_help = "Examples:\n  ebmc check models/*.ebm\n  ebmc train models/rbm.ebm && ebmc eval models/rbm.ebm --params runs/rbm\n\nExit codes: 0 ok, 1 the input has errors, 2 the command could not run."
)]
struct Cli {
    /// `human` for people; `json` for programs: results on stdout, diagnostics and errors as JSON lines on stderr.
    #[arg(long, global = true, value_enum, default_value_t = MessageFormat::Human)]
    message_format: MessageFormat,
    /// When to colour diagnostics: `auto` colours only on a terminal.
    #[arg(long, global = true, value_enum, default_value_t = ColorArg::Auto)]
    color: ColorArg,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
    #[command(after_help = "Example:\n  ebmc plan models/dbm.ebm --message-format json")]
    Plan {
        /// The .ebm file.
        file: PathBuf,
        /// Deprecated spelling of `--message-format json` for the plan itself (errors stay human).
        #[arg(long, hide = true)]
        json: bool,
        /// Only this model (default: every model in the file).
        #[arg(long)]
        model: Option<String>,
    },
    /// Run the planned sampler and write the visible variables' samples.
    #[command(
        after_help = "Example:\n  ebmc sample models/rbm.ebm --params runs/rbm --chains 64 --steps 1000 --out samples.csv --png samples.png"
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
        /// Sweeps after burn-in.
        #[arg(long, default_value_t = 1000, value_parser = parse_sweeps)]
        steps: usize,
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
        /// Write the final states of an image-shaped visible variable as a PNG grid
        /// (or, for one 2-D real variable, the samples over the model's density).
        #[arg(long)]
        png: Option<PathBuf>,
        /// Image size HxW for --png when the variable is not a square (e.g. 28x28).
        #[arg(long, value_parser = parse_image_shape)]
        image: Option<(usize, usize)>,
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
    /// Evaluate trained parameters: exact or AIS log Z, log-likelihood, pseudo-likelihood, reconstruction error.
    #[command(
        after_help = "Example:\n  ebmc eval models/bars.ebm --params runs/bars --ais --runs 100 --temperatures 1000\n  ebmc eval models/toy/8gaussians_sm.ebm --params runs/8gaussians_sm --message-format json"
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
        /// Seed of AIS, the stochastic pseudo-likelihood and reconstructions.
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
    #[command(after_help = "Example:\n  ebmc energy models/rbm.ebm --params runs/rbm --data rows.csv > energies.csv")]
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
enum DeviceArg {
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
fn count_flag(s: &str, min: u128, max: u128, unit: &str) -> Result<usize, String> {
    let n: u128 = s.trim().parse().map_err(|_| format!("`{s}` is not a whole number of {unit}"))?;
    if n < min {
        return Err(format!("must be at least {min}"));
    }
    if n > max {
        return Err(format!("{n} {unit} is past the limit of {max} (see docs/limits.md)"));
    }
    usize::try_from(n).map_err(|_| format!("{n} does not fit in this machine's word"))
}

fn parse_chains(s: &str) -> Result<usize, String> {
    // Chains times units is checked against the model once it is compiled.
    count_flag(s, 1, ebmc::analysis::limits::MAX_BATCH_VALUES, "chains")
}

fn parse_sweeps(s: &str) -> Result<usize, String> {
    count_flag(s, 0, ebmc::analysis::limits::MAX_SWEEPS, "sweeps")
}

fn parse_every(s: &str) -> Result<usize, String> {
    count_flag(s, 1, ebmc::analysis::limits::MAX_SWEEPS, "sweeps")
}

fn parse_epochs(s: &str) -> Result<usize, String> {
    count_flag(s, 1, ebmc::analysis::limits::MAX_EPOCHS, "epochs")
}

/// Memory the limits check runs against: Linux's MemAvailable, when known.
fn available_memory() -> Option<u64> {
    let free =
        std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| ebmc::analysis::limits::available_from_meminfo(&t));
    let cap =
        std::fs::read_to_string("/proc/self/limits").ok().and_then(|t| ebmc::analysis::limits::address_space_cap(&t));
    match (free, cap) {
        (Some(f), Some(c)) => Some(f.min(c)),
        (f, c) => f.or(c),
    }
}

fn parse_image_shape(s: &str) -> Result<(usize, usize), String> {
    let (h, w) = s.split_once('x').ok_or("expected HxW, e.g. 28x28")?;
    let parse =
        |x: &str| x.trim().parse::<usize>().map_err(|_| format!("`{x}` is not a size; expected HxW, e.g. 28x28"));
    Ok((parse(h)?, parse(w)?))
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum GraphFormat {
    /// Variables, factors and interactions, to read.
    Text,
    /// Graphviz; render with `dot -Tpng` or `neato -Tpng`.
    Dot,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum MessageFormat {
    /// Text for people; diagnostics with source excerpts.
    Human,
    /// JSON documents and JSON lines for programs (docs/cli.md).
    Json,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ColorArg {
    /// Colour when stderr is a terminal.
    Auto,
    Always,
    Never,
}

/// The codes of errors that have no source span (docs/diagnostics.md, "Command errors").
mod code {
    /// A file that cannot be read or written.
    pub const IO: &str = "E0901";
    /// A flag that is malformed, missing, conflicting or out of range for this model.
    pub const USAGE: &str = "E0902";
    /// No model, several models, no such model, or no train block.
    pub const MODEL: &str = "E0903";
    /// Data rows that do not fit the model.
    pub const DATA: &str = "E0904";
    /// Parameters that cannot be read or do not fit the model.
    pub const PARAMS: &str = "E0905";
    /// Training or sampling diverged.
    pub const DIVERGED: &str = "E0906";
    /// A result that is not finite or could not be computed.
    pub const RESULT: &str = "E0907";
}

/// An error without a source span: a stable code, the message, where it is
/// (file, row or line, column) when known, help, and the exit code.
struct Problem {
    code: &'static str,
    message: String,
    file: Option<String>,
    line: Option<usize>,
    column: Option<usize>,
    help: Vec<String>,
    exit: u8,
}

impl Problem {
    /// A problem with the input (exit 1). A message's `\n  help: ...` lines become help.
    fn input(code: &'static str, message: impl Into<String>) -> Problem {
        let message = message.into();
        let mut parts = message.split("\n  help: ");
        let first = parts.next().unwrap_or_default().to_string();
        let help = parts.map(String::from).collect();
        Problem { code, message: first, file: None, line: None, column: None, help, exit: 1 }
    }

    /// A command that could not run (exit 2).
    fn run(code: &'static str, message: impl Into<String>) -> Problem {
        Problem { exit: 2, ..Problem::input(code, message) }
    }

    fn at(mut self, file: &str, line: Option<usize>, column: Option<usize>) -> Problem {
        (self.file, self.line, self.column) = (Some(file.to_string()), line, column);
        self
    }

    fn help(mut self, help: impl Into<String>) -> Problem {
        self.help.push(help.into());
        self
    }
}

/// Why a command failed: diagnostics already printed (1), or a problem to print.
enum Failure {
    Reported,
    /// Boxed: a `Result<_, Failure>` stays small on the happy path.
    Problem(Box<Problem>),
}

impl From<Problem> for Failure {
    fn from(p: Problem) -> Self {
        Failure::Problem(Box::new(p))
    }
}

/// How this invocation prints.
#[derive(Clone, Copy)]
struct Out {
    /// Results as JSON on stdout.
    json_results: bool,
    /// Diagnostics and errors as JSON lines on stderr.
    json_messages: bool,
    /// The deprecated `--json`: one pretty-printed document, as it always was.
    pretty: bool,
    color: ColorChoice,
}

impl Out {
    /// The command's result: JSON (one line, with its `kind`) or the human text.
    fn result(&self, kind: &str, value: &impl Serialize, human: impl FnOnce() -> String) {
        if self.pretty {
            stdout(&format!("{:#}\n", with_kind(kind, value)));
        } else if self.json_results {
            stdout(&format!("{}\n", with_kind(kind, value)));
        } else {
            stdout(&human());
        }
    }

    /// A line of progress or commentary for people; nothing in JSON.
    fn note(&self, line: impl std::fmt::Display) {
        if !self.json_results {
            eprintln!("{line}");
        }
    }

    /// A file's diagnostics, on stderr.
    fn diagnostics(&self, path: &Path, source: &str, diagnostics: &[Diagnostic]) {
        if diagnostics.is_empty() {
            return;
        }
        if self.json_messages {
            for line in diagnostic_json(path, source, diagnostics) {
                eprintln!("{line}");
            }
        } else {
            let stream = StandardStream::stderr(self.color);
            let _ = diagnostic::render(&mut stream.lock(), &path.display().to_string(), source, diagnostics);
        }
    }

    fn problem(&self, p: &Problem) {
        if self.json_messages {
            let j = json!({
                "kind": "diagnostic",
                "severity": "error",
                "code": p.code,
                "message": p.message,
                "file": p.file,
                "line": p.line,
                "column": p.column,
                "labels": [],
                "help": (!p.help.is_empty()).then(|| p.help.join("\n")),
            });
            eprintln!("{j}");
        } else {
            eprintln!("error[{}]: {}", p.code, p.message);
            for h in &p.help {
                eprintln!("  help: {h}");
            }
        }
    }

    fn warning(&self, message: &str) {
        if !self.json_messages {
            eprintln!("warning: {message}");
        }
    }
}

/// Writes to stdout. A reader that has gone (`ebmc plan f | head`) ends the
/// command quietly instead of the panic `print!` would raise; any other
/// failure (a full disk) is an error, so a cut-off result never exits 0.
fn stdout(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => {
            eprintln!("error[{}]: cannot write the result to stdout: {e}", code::IO);
            std::process::exit(2);
        }
    }
}

/// `value` as a JSON object with `"kind": kind` added.
fn with_kind(kind: &str, value: &impl Serialize) -> Value {
    let mut v = serde_json::to_value(value).unwrap_or(Value::Null);
    match &mut v {
        Value::Object(map) => {
            map.insert("kind".into(), kind.into());
            v
        }
        _ => json!({ "kind": kind, "value": v }),
    }
}

/// A file's diagnostics as JSON objects (`diagnostic::render_json`), each with `"kind": "diagnostic"`.
fn diagnostic_json(path: &Path, source: &str, diagnostics: &[Diagnostic]) -> Vec<Value> {
    diagnostic::render_json(&path.display().to_string(), source, diagnostics)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|mut v| {
            if let Value::Object(map) = &mut v {
                map.insert("kind".into(), "diagnostic".into());
            }
            v
        })
        .collect()
}

/// The value of a flag in the raw arguments, before clap has parsed them
/// (clap's own errors must already be printed in the asked format).
fn raw_flag(args: &[String], flag: &str) -> Option<String> {
    let eq = format!("{flag}=");
    args.iter()
        .enumerate()
        .find_map(|(i, a)| if a == flag { args.get(i + 1).cloned() } else { a.strip_prefix(&eq).map(String::from) })
}

fn color_choice(color: ColorArg) -> ColorChoice {
    match color {
        ColorArg::Always => ColorChoice::Always,
        ColorArg::Never => ColorChoice::Never,
        ColorArg::Auto if std::io::stderr().is_terminal() => ColorChoice::Auto,
        ColorArg::Auto => ColorChoice::Never,
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let json = raw_flag(&args, "--message-format").as_deref() == Some("json");
    let clap_color = match raw_flag(&args, "--color").as_deref() {
        Some("always") => clap::ColorChoice::Always,
        Some("never") => clap::ColorChoice::Never,
        _ => clap::ColorChoice::Auto,
    };
    let parsed = Cli::command().color(clap_color).try_get_matches_from(&args).and_then(|m| Cli::from_arg_matches(&m));
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) if json => {
            let text = e.render().to_string();
            let mut lines = text.lines().filter(|l| !l.trim().is_empty());
            let message = lines.next().unwrap_or_default().trim_start_matches("error: ").to_string();
            let out = Out { json_results: true, json_messages: true, pretty: false, color: ColorChoice::Never };
            out.problem(&Problem::run(code::USAGE, message).help("run `ebmc --help` for the flags"));
            return ExitCode::from(2);
        }
        Err(e) => {
            // clap's message with the code every error carries; plain, so the code can be put in.
            let text = e.render().to_string();
            eprint!(
                "{}",
                text.strip_prefix("error: ").map_or(text.clone(), |t| format!("error[{}]: {t}", code::USAGE))
            );
            return ExitCode::from(2);
        }
    };
    let json = cli.message_format == MessageFormat::Json;
    let out = Out { json_results: json, json_messages: json, pretty: false, color: color_choice(cli.color) };
    // The deprecated `--json` of `plan` and `eval`: results as JSON, messages as before.
    let legacy = Out { json_results: true, pretty: true, ..out };
    let (out, result) = match cli.command {
        Command::Check { files } => (out, check(out, &files)),
        Command::Graph { file, format, model } => (out, graph(out, &file, format, model.as_deref())),
        Command::Plan { file, json, model } => {
            let out = if json { legacy } else { out };
            (out, plan(out, &file, model.as_deref()))
        }
        Command::Sample {
            file,
            model,
            params,
            chains,
            steps,
            burn_in,
            every,
            seed,
            out: samples,
            png,
            image,
            device,
        } => {
            let opts = SampleArgs {
                params,
                chains,
                steps,
                burn_in,
                every,
                seed,
                out: samples,
                png,
                image,
                device: device.into(),
            };
            (out, sample(out, &file, model.as_deref(), &opts))
        }
        Command::Train { file, model, data, epochs, seed, out: dir, resume, device } => {
            let opts = TrainArgs { data, epochs, seed, out: dir, resume, device: device.into() };
            (out, train(out, &file, model.as_deref(), opts))
        }
        Command::Eval {
            file,
            model,
            params,
            data,
            ais,
            runs,
            temperatures,
            pl_units,
            grid_low,
            grid_high,
            grid,
            seed,
            json,
            device,
        } => {
            let out = if json { legacy } else { out };
            let opts = report::EvalOptions {
                ais,
                runs,
                temperatures,
                pl_units,
                grid_low,
                grid_high,
                grid_points: grid,
                seed,
                device: device.into(),
            };
            (out, eval(out, &file, model.as_deref(), &params, data.as_deref(), &opts))
        }
        Command::Energy { file, model, params, data, device } => {
            (out, energy(out, &file, model.as_deref(), &params, &data, device.into()))
        }
        Command::Fmt { files, check } => (out, fmt(out, &files, check)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Reported) => ExitCode::from(1),
        Err(Failure::Problem(p)) => {
            out.problem(&p);
            ExitCode::from(p.exit)
        }
    }
}

fn read(path: &Path) -> Result<String, Failure> {
    std::fs::read_to_string(path)
        .map_err(|e| Problem::run(code::IO, format!("cannot read `{}`: {e}", path.display())).into())
}

/// The result of `check`: how many files, errors and warnings.
#[derive(Serialize)]
struct CheckSummary {
    files: usize,
    errors: usize,
    warnings: usize,
}

fn check(out: Out, files: &[PathBuf]) -> Result<(), Failure> {
    let mut summary = CheckSummary { files: files.len(), errors: 0, warnings: 0 };
    for path in files {
        let source = read(path)?;
        let diagnostics = ebmc::check_source(&source).unwrap_or_else(|d| d);
        summary.errors += diagnostics.iter().filter(|d| d.is_error()).count();
        summary.warnings += diagnostics.iter().filter(|d| !d.is_error()).count();
        if out.json_results {
            // check's diagnostics are its result: on stdout, one JSON object a line.
            for line in diagnostic_json(path, &source, &diagnostics) {
                stdout(&format!("{line}\n"));
            }
        } else {
            out.diagnostics(path, &source, &diagnostics);
        }
    }
    if out.json_results {
        stdout(&format!("{}\n", with_kind("check", &summary)));
    }
    if summary.errors > 0 { Err(Failure::Reported) } else { Ok(()) }
}

/// Reads and compiles a file, printing its warnings; errors end the command.
fn compile(out: Out, path: &Path) -> Result<(String, ebmc::Compiled), Failure> {
    let source = read(path)?;
    match ebmc::compile(&source) {
        Ok(compiled) => {
            out.diagnostics(path, &source, &compiled.warnings);
            Ok((source, compiled))
        }
        Err(diagnostics) => {
            out.diagnostics(path, &source, &diagnostics);
            Err(Failure::Reported)
        }
    }
}

fn selected<'a>(program: &'a Program, only: Option<&str>) -> Result<Vec<&'a Model>, Failure> {
    match only {
        None => Ok(program.models.values().collect()),
        Some(name) => match program.models.get(name) {
            Some(m) => Ok(vec![m]),
            None => {
                let known: Vec<&str> = program.models.keys().map(String::as_str).collect();
                Err(Problem::input(
                    code::MODEL,
                    format!("no model `{name}` in this file; models: {}", known.join(", ")),
                )
                .into())
            }
        },
    }
}

fn plans(out: Out, path: &Path, source: &str, program: &Program) -> Result<Vec<Plan>, Failure> {
    match ebmc::plan(program) {
        Ok((plans, warnings)) => {
            out.diagnostics(path, source, &warnings);
            Ok(plans)
        }
        Err(diagnostics) => {
            out.diagnostics(path, source, &diagnostics);
            Err(Failure::Reported)
        }
    }
}

fn graph(out: Out, path: &Path, format: GraphFormat, only: Option<&str>) -> Result<(), Failure> {
    let (_, compiled) = compile(out, path)?;
    let models = selected(&compiled.program, only)?;
    // Colour classes come from the plan; a model the planner refuses is drawn without them.
    let planned = ebmc::analysis::plan::program_to_plans(&compiled.program).map(|(p, _)| p).unwrap_or_default();
    let mut graphs = Vec::new();
    let mut text = String::new();
    for model in models {
        let g = ebmc::analysis::graph::program_to_graph(model);
        let colours = planned.iter().find(|p| p.model == model.name).map(|p| p.colour_classes()).unwrap_or_default();
        match format {
            GraphFormat::Text => text.push_str(&g.to_text(&colours)),
            GraphFormat::Dot => text.push_str(&g.to_dot(&colours)),
        }
        graphs.push(report::graph_report(&g, &colours));
    }
    out.result("graph", &json!({ "graphs": graphs }), || text);
    Ok(())
}

fn plan(out: Out, path: &Path, only: Option<&str>) -> Result<(), Failure> {
    let (source, compiled) = compile(out, path)?;
    let names: Vec<String> = selected(&compiled.program, only)?.iter().map(|m| m.name.clone()).collect();
    let plans: Vec<_> =
        plans(out, path, &source, &compiled.program)?.into_iter().filter(|p| names.contains(&p.model)).collect();
    out.result("plan", &json!({ "plans": plans }), || plans.iter().map(|p| p.to_text()).collect());
    Ok(())
}

struct SampleArgs {
    params: Option<PathBuf>,
    chains: usize,
    steps: usize,
    burn_in: usize,
    every: Option<usize>,
    seed: u64,
    out: Option<PathBuf>,
    png: Option<PathBuf>,
    image: Option<(usize, usize)>,
    device: ebmc::backend::DeviceKind,
}

/// One model of a file: the named one, or the only one.
fn one_model<'a>(program: &'a Program, only: Option<&str>, command: &str) -> Result<&'a Model, Failure> {
    let models = selected(program, only)?;
    match models.as_slice() {
        [m] => Ok(m),
        [] => Err(Problem::input(
            code::MODEL,
            format!("this file declares no model for `ebmc {command}`; write one as `model NAME {{ ... }}`"),
        )
        .into()),
        _ => {
            let names: Vec<&str> = models.iter().map(|m| m.name.as_str()).collect();
            Err(Problem::input(
                code::MODEL,
                format!(
                    "this file has several models ({}); pick one with `ebmc {command} --model NAME`",
                    names.join(", ")
                ),
            )
            .into())
        }
    }
}

/// The plan of `model` among a file's plans.
fn plan_of(out: Out, path: &Path, source: &str, program: &Program, model: &Model) -> Result<Plan, Failure> {
    plans(out, path, source, program)?.into_iter().find(|p| p.model == model.name).ok_or(Failure::Reported)
}

fn params_problem(e: String) -> Failure {
    Problem::run(code::PARAMS, e).into()
}

/// A run past a limit cannot start on this machine (exit 2).
fn limits_failure(errors: Vec<ebmc::analysis::limits::LimitError>) -> Failure {
    // The first carries the code; the rest are listed as help, each with its own.
    let mut problems = errors.iter().map(|e| {
        let d = Diagnostic::from(e);
        let flag = match e {
            ebmc::analysis::limits::LimitError::Batch { flag: Some(flag), .. } => format!(" ({flag})"),
            _ => String::new(),
        };
        (d.code, format!("{}{flag}", d.message), d.help)
    });
    let Some((code, message, help)) = problems.next() else {
        return Problem::run(code::USAGE, "a limit was passed").into();
    };
    let mut p = Problem::run(code, message);
    p.help.extend(help);
    for (code, message, _) in problems {
        p.help.push(format!("also [{code}] {message}"));
    }
    p.into()
}

/// Checked parameters for `model` from `path`, or its initialisers.
fn load_params(
    out: Out,
    path: Option<&Path>,
    model: &Model,
    lowered: &ebmc::ir::Lowered,
    seed: u64,
) -> Result<ebmc::tensor::Tensors, Failure> {
    match path {
        Some(p) => ebmc::runtime::train::load_model_params(p, model).map_err(params_problem),
        None => {
            out.note(format!("note: no --params given; using the model's initialisers (seed {seed})"));
            Ok(ebmc::tensor::initialise(&lowered.params, seed))
        }
    }
}

fn progress(out: Out, len: u64, template: &str) -> indicatif::ProgressBar {
    if out.json_results {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}

/// What `sample` did: sweeps, chains, MALA's acceptance and the files written.
#[derive(Serialize)]
struct SampleResult {
    model: String,
    sweeps: usize,
    chains: usize,
    acceptance: Option<f64>,
    samples: Option<WrittenSamples>,
    picture: Option<WrittenPicture>,
}

#[derive(Serialize)]
struct WrittenSamples {
    path: PathBuf,
    rows: usize,
    columns: usize,
}

#[derive(Serialize)]
struct WrittenPicture {
    path: PathBuf,
    /// `images` or `density`.
    shows: &'static str,
    variable: String,
    /// Images drawn, or samples over the density.
    count: usize,
    /// Height and width of each image.
    size: Option<(usize, usize)>,
}

fn sample(out: Out, path: &Path, only: Option<&str>, a: &SampleArgs) -> Result<(), Failure> {
    let (source, compiled) = compile(out, path)?;
    let model = one_model(&compiled.program, only, "sample")?;
    let plan = plan_of(out, path, &source, &compiled.program, model)?;
    if let Some(file) = &a.out {
        writable(file, &["csv", "npy"])?;
    }
    if let Some(png) = &a.png {
        writable(png, &["png"])?;
    }
    let lowered = &plan.lowered;
    let run =
        ebmc::analysis::limits::SampleRun { chains: a.chains, burn_in: a.burn_in, steps: a.steps, every: a.every };
    ebmc::analysis::limits::check_sample(model, lowered, &run, available_memory()).map_err(limits_failure)?;
    let params = load_params(out, a.params.as_deref(), model, lowered, a.seed)?;
    let picture = match &a.png {
        Some(_) => Some(figures::picture_of(model, &plan, a.image).ok_or_else(|| Problem::run(code::USAGE, "no visible variable is image-shaped (a square number of units), nor is the model's density over one 2-D real variable; give an image's size with --image HxW"))?),
        None => None,
    };
    let mut sampler = ebmc::backend::Sampler::new(model, &plan, &params, a.chains, a.seed, a.device)
        .map_err(|e| Problem::run(code::RESULT, e))?;
    let total = a.burn_in + a.steps;
    let bar = progress(out, total as u64, "sampling {bar:40} {pos}/{len} [{elapsed_precise}<{eta_precise}, {per_sec}]");
    let mut kept: Vec<ebmc::tensor::Tensors> = Vec::new();
    for sweep in 1..=total {
        sampler.sweep();
        bar.inc(1);
        if a.every.is_some_and(|every| sweep > a.burn_in && (sweep - a.burn_in).is_multiple_of(every)) {
            kept.push(sampler.state());
        }
    }
    bar.finish_and_clear();
    let last = sampler.state();
    if kept.is_empty() {
        kept.push(last.clone());
    }
    for state in kept.iter().chain(std::iter::once(&last)) {
        if let Some((var, chain, value)) = ebmc::tensor::first_non_finite(state) {
            return Err(Problem::input(
                code::DIVERGED,
                format!(
                    "sampling diverged: `{var}` of chain {} is {value} after {total} sweeps, so no samples are written",
                    chain + 1
                ),
            )
            .help(format!(
                "lower the Langevin step (`sample {{ {var}: langevin(step: ...); }}`), add `clip`, or check that the energy grows in every direction"
            ))
            .into());
        }
    }
    let mut result = SampleResult {
        model: model.name.clone(),
        sweeps: total,
        chains: a.chains,
        acceptance: sampler.acceptance(),
        samples: None,
        picture: None,
    };
    if let Some(file) = &a.out {
        let mut names = Vec::new();
        let mut rows = Vec::new();
        for state in &kept {
            let (n, r) = ebmc::runtime::export::visible_table(model, state);
            names = n;
            rows.extend(r);
        }
        let bytes = match file.extension().and_then(|e| e.to_str()) {
            Some("npy") => ebmc::runtime::export::npy(&rows),
            _ => ebmc::runtime::export::csv(&names, &rows).into_bytes(),
        };
        write_atomically(file, &bytes)?;
        result.samples = Some(WrittenSamples { path: file.clone(), rows: rows.len(), columns: names.len() });
    }
    if let (Some(png), Some(picture)) = (&a.png, picture) {
        let (bytes, shows, variable, count, size) = match picture {
            Picture::Images(var, shape) => {
                let (bytes, n) = figures::image_grid(model, &last, &var, shape);
                (bytes, "images", var, n, Some(shape))
            }
            Picture::Density(var) => {
                let (bytes, n) = figures::density_picture(model, &plan, &params, &kept, &var, a.device)
                    .map_err(|e| Problem::run(code::RESULT, e))?;
                (bytes, "density", var, n, None)
            }
        };
        write_atomically(png, &bytes)?;
        result.picture = Some(WrittenPicture { path: png.clone(), shows, variable, count, size });
    }
    out.result("sample", &result, || {
        let mut s = format!("{} sweeps of {} chains of model {}\n", total, a.chains, model.name);
        if let Some(rate) = result.acceptance {
            s += &format!("MALA acceptance rate: {rate:.3}\n");
        }
        if let Some(w) = &result.samples {
            s += &format!("wrote {} samples ({} columns) to {}\n", w.rows, w.columns, w.path.display());
        }
        if let Some(p) = &result.picture {
            s += &match p.size {
                Some((h, w)) => {
                    format!("wrote {} images of {} ({h}x{w}) to {}\n", p.count, p.variable, p.path.display())
                }
                None => {
                    format!(
                        "wrote {} samples of {} over the model's density to {}\n",
                        p.count,
                        p.variable,
                        p.path.display()
                    )
                }
            };
        }
        s
    });
    Ok(())
}

/// Checks, before any work, that an output can be written: its extension
/// is one of `formats` and a file can be created beside it.
fn writable(path: &Path, formats: &[&str]) -> Result<(), Failure> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or_default();
    if !formats.contains(&ext) {
        let names: Vec<String> = formats.iter().map(|f| format!(".{f}")).collect();
        return Err(Problem::run(
            code::USAGE,
            format!("cannot tell the format of `{}`: use a {} file name", path.display(), names.join(" or ")),
        )
        .into());
    }
    if path.is_dir() {
        return Err(Problem::run(code::IO, format!("cannot write `{}`: it is a directory", path.display())).into());
    }
    let mut probe = path.as_os_str().to_owned();
    probe.push(".tmp");
    let probe = PathBuf::from(probe);
    std::fs::File::create(&probe)
        .map_err(|e| Problem::run(code::IO, format!("cannot write `{}`: {e}", path.display())))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// A data error as a failure: an unreadable file means the command could not run (2), a bad one is an input error (1).
fn data_failure(e: ebmc::runtime::data::DataError) -> Failure {
    use ebmc::runtime::data::DataError::*;
    let message = e.to_string();
    match &e {
        Read { source, .. } => Problem::run(code::IO, message).at(source, None, None),
        ColumnCount { source, row, .. } => Problem::input(code::DATA, message).at(source, Some(*row), None),
        NotANumber { source, row, column, .. }
        | NotFinite { source, row, column }
        | OutOfRange { source, row, column, .. }
        | MixedHeader { source, row, column, .. }
        | OutOfDomain { source, row, column, .. } => {
            Problem::input(code::DATA, message).at(source, Some(*row), Some(*column))
        }
        Empty { source } | Binding { source, .. } | Format { source, .. } => {
            Problem::input(code::DATA, message).at(source, None, None)
        }
        Split { .. } | NoSource { .. } => Problem::input(code::DATA, message),
    }
    .into()
}

struct TrainArgs {
    data: Option<PathBuf>,
    epochs: Option<usize>,
    seed: Option<u64>,
    out: Option<PathBuf>,
    resume: Option<PathBuf>,
    device: ebmc::backend::DeviceKind,
}

/// What `train` did: the run's size, its last epoch and its files.
#[derive(Serialize)]
struct TrainResult {
    model: String,
    rows: usize,
    held_out: usize,
    objective: String,
    epochs: usize,
    seconds: f64,
    last: Option<ebmc::runtime::train::EpochMetrics>,
    /// Which rows `last.log_likelihood` is of.
    log_likelihood_on: &'static str,
    files: run_dir::RunFiles,
}

fn train(out: Out, path: &Path, only: Option<&str>, a: TrainArgs) -> Result<(), Failure> {
    let (source, compiled) = compile(out, path)?;
    let model = one_model(&compiled.program, only, "train")?;
    let Some(spec) = compiled.program.trains.get(&model.name) else {
        return Err(Problem::input(
            code::MODEL,
            format!(
                "model `{}` has no `train {} {{ ... }}` block; add one to say what data and objective to use",
                model.name, model.name
            ),
        )
        .into());
    };
    let plan = plan_of(out, path, &source, &compiled.program, model)?;
    let graph = ebmc::analysis::graph::program_to_graph(model);
    let base = path.parent().unwrap_or(Path::new("."));
    let own = ebmc::runtime::data::spec_of(spec).map_err(data_failure)?;
    let data_spec = match &a.data {
        Some(file) => ebmc::runtime::data::with_file(own, file),
        None => own.clone(),
    };
    let data = ebmc::runtime::data::load(&data_spec, model, base).map_err(data_failure)?;
    let (train_rows, test_rows) =
        ebmc::runtime::data::split(data, spec.test.as_ref(), model, base).map_err(data_failure)?;
    let dir = a.resume.clone().or(a.out.clone()).unwrap_or_else(|| run_dir::default_run_dir(&model.name));
    // A resumed run continues with the seed it was started with.
    if let Some(resumed) = &a.resume {
        run_dir::check_resume_seed(resumed, a.seed).map_err(|e| Problem::run(code::USAGE, e))?;
    }
    let epochs = a.epochs.unwrap_or(spec.epochs);
    ebmc::analysis::limits::check_train(model, &plan.lowered, spec, train_rows.rows, epochs, available_memory())
        .map_err(limits_failure)?;
    let opts = ebmc::runtime::train::RunOptions {
        epochs,
        seed: a.seed.unwrap_or(spec.seed),
        out: dir.clone(),
        resume: a.resume.is_some(),
        device: a.device,
    };
    let held_out = test_rows.as_ref().map_or(0, |t| t.rows);
    out.note(format!(
        "training {} on {} rows ({held_out} held out) with {}, {} epochs",
        model.name, train_rows.rows, spec.objective.name, opts.epochs
    ));
    let started = std::time::Instant::now();
    let mut bar = None;
    let mut last_loss = 0.0;
    // The checkpoints record the data actually used: `--data` replaces the block's.
    let spec = &ebmc::analysis::program::Train { data: Some(data_spec), ..spec.clone() };
    let result = ebmc::runtime::train::run(
        &source,
        &graph,
        &plan,
        spec,
        &train_rows,
        test_rows.as_ref(),
        &opts,
        &mut |p| match p {
            ebmc::runtime::train::Progress::Start { epochs, steps_per_epoch, from_epoch } => {
                let total = (epochs + 1 - from_epoch.min(epochs + 1)) * steps_per_epoch;
                bar = Some(progress(
                    out,
                    total as u64,
                    "{msg} {bar:30} {pos}/{len} steps [{elapsed_precise}<{eta_precise}, {per_sec}]",
                ));
            }
            ebmc::runtime::train::Progress::Step { epoch, loss } => {
                last_loss = 0.9 * last_loss + 0.1 * loss;
                if let Some(b) = &bar {
                    b.set_message(format!("epoch {epoch} loss {last_loss:.4}"));
                    b.inc(1);
                }
            }
            ebmc::runtime::train::Progress::Epoch(m) => {
                if out.json_results {
                    // One JSON line per epoch, as it ends.
                    stdout(&format!("{}\n", with_kind("epoch", m)));
                    return;
                }
                let ll = m.log_likelihood.map(|l| format!(", log-likelihood {l:.3} nats")).unwrap_or_default();
                let line = format!(
                    "epoch {:>3}: loss {:.4}, |grad| {:.3}, lr {:.4}{ll} ({:.2}s)",
                    m.epoch, m.loss, m.grad_norm, m.lr, m.seconds
                );
                match &bar {
                    Some(b) if !b.is_hidden() => b.println(line),
                    _ => eprintln!("{line}"),
                }
            }
        },
    );
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let history = match result {
        Ok(history) => history,
        Err(ebmc::runtime::train::RunError::Io(e)) => return Err(Problem::run(code::IO, e).into()),
        Err(ebmc::runtime::train::RunError::Train { error, epoch, last_good }) => {
            let mut p = match &error {
                ebmc::backend::TrainError::NonFinite { what, step } => Problem::input(
                    code::DIVERGED,
                    format!("training diverged at epoch {epoch}, step {step}: {what} is not finite (NaN or infinite)"),
                ),
                other => Problem::input(code::DIVERGED, format!("{other} (epoch {epoch})")),
            };
            p = p.help(match last_good {
                Some(dir) => format!("the last good checkpoint is kept: {}", dir.display()),
                None => "no checkpoint was written before this".to_string(),
            });
            if matches!(error, ebmc::backend::TrainError::NonFinite { .. }) {
                p = p.help(
                    "lower the learning rate, add `regularize = clip_grad(norm: 10);`, or check the data's scale",
                );
            }
            return Err(p.into());
        }
    };
    // A picture of fresh samples from the trained model, beside its checkpoints.
    let params = ebmc::runtime::train::load_model_params(&dir, model).map_err(params_problem)?;
    if let Some(bytes) = figures::samples_picture(model, &plan, &params, 0, Default::default())
        .map_err(|e| Problem::run(code::RESULT, e))?
    {
        write_atomically(&dir.join(run_dir::SAMPLES), &bytes)?;
    }
    let result = TrainResult {
        model: model.name.clone(),
        rows: train_rows.rows,
        held_out,
        objective: spec.objective.name.clone(),
        epochs: opts.epochs,
        seconds: started.elapsed().as_secs_f64(),
        last: history.last().cloned(),
        log_likelihood_on: if test_rows.is_some() { "test rows" } else { "training rows" },
        files: run_dir::run_files(&dir),
    };
    out.result("train", &result, || {
        let mut s = format!("trained {} in {:.1}s\n", result.model, result.seconds);
        if let Some(m) = &result.last {
            let ll = m
                .log_likelihood
                .map(|l| format!(", average log-likelihood {l:.3} nats ({})", result.log_likelihood_on))
                .unwrap_or_default();
            s += &format!("final loss {:.4}{ll}\n", m.loss);
        }
        let f = &result.files;
        s += &format!("checkpoint: {}\n", f.checkpoint.display());
        s += &format!("metrics:    {}\n", f.metrics.display());
        s += &format!("curve:      {}\n", f.curve.display());
        if let Some(samples) = &f.samples {
            s += &format!("samples:    {}\n", samples.display());
        }
        s
    });
    Ok(())
}

/// The model of `path` with its plan, train block and the parameters in `params`.
fn load_trained(
    out: Out,
    path: &Path,
    only: Option<&str>,
    params: &Path,
    command: &str,
) -> Result<report::Trained, Failure> {
    let (source, compiled) = compile(out, path)?;
    let model = one_model(&compiled.program, only, command)?;
    if !compiled.program.trains.contains_key(&model.name) {
        return Err(Problem::input(
            code::MODEL,
            format!(
                "model `{}` has no train block, so ebmc does not know how its data is bound; add `train {} {{ data = ... -> ...; objective = ...; }}`",
                model.name, model.name
            ),
        )
        .into());
    }
    let plans = plans(out, path, &source, &compiled.program)?;
    let params = ebmc::runtime::train::load_model_params(params, model).map_err(params_problem)?;
    report::Trained::new(&compiled.program, &plans, &model.name, params).ok_or(Failure::Reported)
}

fn eval(
    out: Out,
    path: &Path,
    only: Option<&str>,
    params: &Path,
    data: Option<&Path>,
    opts: &report::EvalOptions,
) -> Result<(), Failure> {
    let trained = load_trained(out, path, only, params, "eval")?;
    let base = path.parent().unwrap_or(Path::new("."));
    let rows = report::rows_to_evaluate(&trained, base, data).map_err(data_failure)?;
    let r = report::evaluate(&trained, &rows, opts).map_err(|e| {
        let code = if matches!(e, report::EvalError::Options(_)) { code::USAGE } else { code::RESULT };
        Problem::run(code, e.to_string())
    })?;
    for w in &r.warnings {
        out.warning(w);
    }
    out.result("eval", &r, || r.to_text());
    Ok(())
}

fn energy(
    out: Out,
    path: &Path,
    only: Option<&str>,
    params: &Path,
    data: &Path,
    device: ebmc::backend::DeviceKind,
) -> Result<(), Failure> {
    let mut t = load_trained(out, path, only, params, "energy")?;
    // A JEM label is summed out: the rows need only the inputs.
    if let (Some(m), Some(spec)) = (&t.plan.label_marginal, &mut t.spec.data) {
        spec.binding.retain(|b| *b != m.var);
    }
    let base = path.parent().unwrap_or(Path::new("."));
    let rows = report::rows_to_evaluate(&t, base, Some(data)).map_err(data_failure)?;
    let f = ebmc::runtime::evaluate::row_free_energy(&t.model, &t.plan, &t.params, &rows.rows.vars, device)
        .map_err(|e| Problem::run(code::RESULT, e))?;
    if let Some(i) = f.iter().position(|e| !e.is_finite()) {
        return Err(Problem::run(
            code::RESULT,
            format!(
                "the energy of row {} is {}, not a finite number; the parameters are likely not finite or too large",
                i + 1,
                f[i]
            ),
        )
        .into());
    }
    out.result("energy", &json!({ "model": t.model.name, "rows": f.len(), "energy": f }), || {
        let mut s = String::from("row,energy\n");
        for (i, e) in f.iter().enumerate() {
            s.push_str(&format!("{},{e}\n", i + 1));
        }
        s
    });
    Ok(())
}

/// What `fmt` did to one file: `formatted` (left as it was), `rewritten`,
/// `unformatted` (with `--check`) or `error` (a syntax error; see stderr).
#[derive(Serialize)]
struct FmtFile {
    file: PathBuf,
    status: &'static str,
}

fn fmt(out: Out, files: &[PathBuf], check_only: bool) -> Result<(), Failure> {
    let mut failed = false;
    let mut done = Vec::new();
    for path in files {
        let source = read(path)?;
        let status = match ebmc::format_source(&source) {
            Err(d) => {
                out.diagnostics(path, &source, &[d]);
                failed = true;
                "error"
            }
            Ok(formatted) if formatted == source => "formatted",
            Ok(_) if check_only => {
                out.note(format!("{} is not formatted; run `ebmc fmt {}`", path.display(), path.display()));
                failed = true;
                "unformatted"
            }
            Ok(formatted) => {
                write_atomically(path, formatted.as_bytes())?;
                "rewritten"
            }
        };
        done.push(FmtFile { file: path.clone(), status });
    }
    out.result("fmt", &json!({ "files": done }), String::new);
    if failed { Err(Failure::Reported) } else { Ok(()) }
}

/// Writes through a synced temporary file and a rename, so an interrupted write never leaves half a file.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    ebmc::tensor::write_atomically(path, bytes).map_err(|e| Problem::run(code::IO, e).into())
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn every_command_error_code_is_documented() {
        let doc = include_str!("../docs/diagnostics.md");
        for c in [code::IO, code::USAGE, code::MODEL, code::DATA, code::PARAMS, code::DIVERGED, code::RESULT] {
            assert!(doc.contains(&format!("| {c} |")), "{c} is not in docs/diagnostics.md");
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
    fn help_lines_of_a_message_become_help() {
        let p = Problem::input(code::DATA, "d.csv:3: 2 columns, expected 4\n  help: bind by name");
        assert_eq!(p.message, "d.csv:3: 2 columns, expected 4");
        assert_eq!(p.help, ["bind by name"]);
        assert_eq!(p.exit, 1);
        assert_eq!(Problem::run(code::IO, "x").exit, 2);
    }
}
