//! The `ebmc` command line: reads files, calls the library, prints results.
//! Exit codes: 0 success, 1 the input has errors, 2 the command could not run
//! (unreadable file, bad arguments).

use clap::{Parser, Subcommand, ValueEnum};
use codespan_reporting::term::termcolor::{ColorChoice, StandardStream};
use ebmc::front::diagnostic::{self, Diagnostic};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "ebmc",
    version,
    about = "Compile, train, sample and evaluate energy-based models written in the .ebm language"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Parse and check files; print diagnostics. Silent when all is well.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// `human` renders source excerpts; `json` prints one JSON object per diagnostic.
        #[arg(long, value_enum, default_value_t = MessageFormat::Human)]
        message_format: MessageFormat,
    },
    /// Print the factor graph: variables, energy terms and the degree of each term in each variable.
    Graph {
        file: PathBuf,
        #[arg(long, value_enum, default_value_t = GraphFormat::Text)]
        format: GraphFormat,
        /// Only this model (default: every model in the file).
        #[arg(long)]
        model: Option<String>,
    },
    /// Explain how each model will be sampled and trained, and why.
    Plan {
        file: PathBuf,
        /// Print the plan as JSON.
        #[arg(long)]
        json: bool,
        #[arg(long)]
        model: Option<String>,
    },
    /// Run the planned sampler and write the visible variables' samples.
    Sample {
        file: PathBuf,
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
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Write samples as CSV (`.csv`) or NPY (`.npy`).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Write the final states of an image-shaped visible variable as a PNG grid.
        #[arg(long)]
        png: Option<PathBuf>,
        /// Image size HxW for --png when the variable is not a square (e.g. 28x28).
        #[arg(long, value_parser = parse_image_shape)]
        image: Option<(usize, usize)>,
        #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
        device: DeviceArg,
    },
    /// Train a model as its `train` block says; write checkpoints, metrics and plots.
    Train {
        file: PathBuf,
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
        #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
        device: DeviceArg,
    },
    /// Evaluate trained parameters: exact or AIS log Z, log-likelihood, pseudo-likelihood, reconstruction error.
    Eval {
        file: PathBuf,
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
        /// Bounds of the grid integral for one- or two-dimensional continuous models.
        #[arg(long, default_value_t = -6.0, allow_hyphen_values = true)]
        grid_low: f64,
        #[arg(long, default_value_t = 6.0, allow_hyphen_values = true)]
        grid_high: f64,
        /// Grid points per axis.
        #[arg(long, default_value_t = 300)]
        grid: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long)]
        json: bool,
        #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
        device: DeviceArg,
    },
    /// Print the (free) energy of each data row: latents summed out as planned, and a JEM label the rows leave out (an out-of-distribution score).
    Energy {
        file: PathBuf,
        #[arg(long)]
        model: Option<String>,
        #[arg(long)]
        params: PathBuf,
        /// Rows to score (CSV, NPY or IDX), bound as the train block binds its data.
        #[arg(long)]
        data: PathBuf,
        #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
        device: DeviceArg,
    },
    /// Rewrite files in the canonical layout (comments are kept).
    Fmt {
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

/// A run past a limit cannot start on this machine (exit 2).
fn limits_failure(errors: Vec<ebmc::analysis::limits::LimitError>) -> Failure {
    Failure::Io(errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\nerror: "))
}

fn parse_image_shape(s: &str) -> Result<(usize, usize), String> {
    let (h, w) = s.split_once('x').ok_or("expected HxW, e.g. 28x28")?;
    let parse =
        |x: &str| x.trim().parse::<usize>().map_err(|_| format!("`{x}` is not a size; expected HxW, e.g. 28x28"));
    Ok((parse(h)?, parse(w)?))
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum GraphFormat {
    Text,
    /// Graphviz; render with `dot -Tpng` or `neato -Tpng`.
    Dot,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum MessageFormat {
    Human,
    Json,
}

/// Why a command failed: the input was wrong (1) or the command could not run (2).
enum Failure {
    Input,
    Io(String),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check { files, message_format } => check(&files, message_format),
        Command::Graph { file, format, model } => graph(&file, format, model.as_deref()),
        Command::Plan { file, json, model } => plan(&file, json, model.as_deref()),
        Command::Sample { file, model, params, chains, steps, burn_in, every, seed, out, png, image, device } => {
            let opts =
                SampleArgs { params, chains, steps, burn_in, every, seed, out, png, image, device: device.into() };
            sample(&file, model.as_deref(), &opts)
        }
        Command::Train { file, model, data, epochs, seed, out, resume, device } => {
            train(&file, model.as_deref(), TrainArgs { data, epochs, seed, out, resume, device: device.into() })
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
        } => eval(
            &file,
            model.as_deref(),
            &EvalArgs {
                params,
                data,
                ais,
                runs,
                temperatures,
                pl_units,
                grid: (grid_low, grid_high, grid),
                seed,
                json,
                device: device.into(),
            },
        ),
        Command::Energy { file, model, params, data, device } => {
            energy(&file, model.as_deref(), &params, &data, device.into())
        }
        Command::Fmt { files, check } => fmt(&files, check),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Input) => ExitCode::from(1),
        Err(Failure::Io(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

fn read(path: &Path) -> Result<String, Failure> {
    std::fs::read_to_string(path).map_err(|e| Failure::Io(format!("cannot read `{}`: {e}", path.display())))
}

fn report(path: &Path, source: &str, diagnostics: &[Diagnostic], format: MessageFormat) {
    let name = path.display().to_string();
    match format {
        MessageFormat::Json => print!("{}", diagnostic::render_json(&name, source, diagnostics)),
        MessageFormat::Human => {
            let color = if std::io::stderr().is_terminal() { ColorChoice::Auto } else { ColorChoice::Never };
            let stream = StandardStream::stderr(color);
            let _ = diagnostic::render(&mut stream.lock(), &name, source, diagnostics);
        }
    }
}

fn check(files: &[PathBuf], format: MessageFormat) -> Result<(), Failure> {
    let mut failed = false;
    for path in files {
        let source = read(path)?;
        match ebmc::check_source(&source) {
            Ok(warnings) => report(path, &source, &warnings, format),
            Err(diagnostics) => {
                report(path, &source, &diagnostics, format);
                failed = true;
            }
        }
    }
    if failed { Err(Failure::Input) } else { Ok(()) }
}

/// Reads and compiles a file, printing its warnings; errors end the command.
fn compile(path: &Path) -> Result<(String, ebmc::Compiled), Failure> {
    let source = read(path)?;
    match ebmc::compile(&source) {
        Ok(compiled) => {
            report(path, &source, &compiled.warnings, MessageFormat::Human);
            Ok((source, compiled))
        }
        Err(diagnostics) => {
            report(path, &source, &diagnostics, MessageFormat::Human);
            Err(Failure::Input)
        }
    }
}

fn selected<'a>(
    program: &'a ebmc::analysis::program::Program,
    only: Option<&str>,
) -> Result<Vec<&'a ebmc::analysis::program::Model>, Failure> {
    match only {
        None => Ok(program.models.values().collect()),
        Some(name) => match program.models.get(name) {
            Some(m) => Ok(vec![m]),
            None => {
                let known: Vec<&str> = program.models.keys().map(String::as_str).collect();
                eprintln!("error: no model `{name}` in this file; models: {}", known.join(", "));
                Err(Failure::Input)
            }
        },
    }
}

fn plans(
    path: &Path,
    source: &str,
    program: &ebmc::analysis::program::Program,
) -> Result<Vec<ebmc::analysis::plan::Plan>, Failure> {
    match ebmc::plan(program) {
        Ok((plans, warnings)) => {
            report(path, source, &warnings, MessageFormat::Human);
            Ok(plans)
        }
        Err(diagnostics) => {
            report(path, source, &diagnostics, MessageFormat::Human);
            Err(Failure::Input)
        }
    }
}

fn graph(path: &Path, format: GraphFormat, only: Option<&str>) -> Result<(), Failure> {
    let (source, compiled) = compile(path)?;
    let models = selected(&compiled.program, only)?;
    // Colour classes come from the plan; a model the planner refuses is drawn without them.
    let planned = ebmc::analysis::plan::program_to_plans(&compiled.program).map(|(p, _)| p).unwrap_or_default();
    let _ = source;
    for model in models {
        let g = ebmc::analysis::graph::program_to_graph(model);
        let colours = planned.iter().find(|p| p.model == model.name).map(|p| p.colour_classes()).unwrap_or_default();
        match format {
            GraphFormat::Text => print!("{}", g.to_text(&colours)),
            GraphFormat::Dot => print!("{}", g.to_dot(&colours)),
        }
    }
    Ok(())
}

fn plan(path: &Path, json: bool, only: Option<&str>) -> Result<(), Failure> {
    let (source, compiled) = compile(path)?;
    let names: Vec<String> = selected(&compiled.program, only)?.iter().map(|m| m.name.clone()).collect();
    let plans: Vec<_> =
        plans(path, &source, &compiled.program)?.into_iter().filter(|p| names.contains(&p.model)).collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&plans).expect("plans serialise"));
    } else {
        for p in &plans {
            print!("{}", p.to_text());
        }
    }
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
fn one_model<'a>(
    program: &'a ebmc::analysis::program::Program,
    only: Option<&str>,
    command: &str,
) -> Result<&'a ebmc::analysis::program::Model, Failure> {
    let models = selected(program, only)?;
    if models.is_empty() {
        eprintln!("error: this file declares no model for `ebmc {command}`; write one as `model NAME {{ ... }}`");
        return Err(Failure::Input);
    }
    if models.len() > 1 {
        let names: Vec<&str> = models.iter().map(|m| m.name.as_str()).collect();
        eprintln!(
            "error: this file has several models ({}); pick one with `ebmc {command} --model NAME`",
            names.join(", ")
        );
        return Err(Failure::Input);
    }
    Ok(models[0])
}

/// Checked parameters for `model` from `path`, or its initialisers.
fn load_params(
    path: Option<&Path>,
    model: &ebmc::analysis::program::Model,
    lowered: &ebmc::ir::Lowered,
    seed: u64,
) -> Result<ebmc::tensor::Tensors, Failure> {
    match path {
        Some(p) => ebmc::runtime::train::load_model_params(p, model).map_err(Failure::Io),
        None => {
            eprintln!("note: no --params given; using the model's initialisers (seed {seed})");
            Ok(ebmc::tensor::initialise(&lowered.params, seed))
        }
    }
}

fn progress(len: u64, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} {bar:40} {pos}/{len} [{elapsed_precise}<{eta_precise}, {per_sec}]",
        )
        .expect("valid template"),
    );
    bar.set_message(what.to_string());
    bar
}

fn sample(path: &Path, only: Option<&str>, a: &SampleArgs) -> Result<(), Failure> {
    let (source, compiled) = compile(path)?;
    let model = one_model(&compiled.program, only, "sample")?;
    let plan =
        plans(path, &source, &compiled.program)?.into_iter().find(|p| p.model == model.name).ok_or(Failure::Input)?;
    if let Some(out) = &a.out {
        writable(out, &["csv", "npy"])?;
    }
    if let Some(png) = &a.png {
        writable(png, &["png"])?;
    }
    let lowered = &plan.lowered;
    let run =
        ebmc::analysis::limits::SampleRun { chains: a.chains, burn_in: a.burn_in, steps: a.steps, every: a.every };
    ebmc::analysis::limits::check_sample(model, lowered, &run, available_memory()).map_err(limits_failure)?;
    let params = load_params(a.params.as_deref(), model, lowered, a.seed)?;
    let picture = match &a.png {
        Some(_) => Some(picture_of(model, &plan, a.image).ok_or_else(|| Failure::Io("no visible variable is image-shaped (a square number of units), nor is the model's density over one 2-D real variable; give an image's size with --image HxW".into()))?),
        None => None,
    };
    let mut sampler =
        ebmc::backend::Sampler::new(model, &plan, &params, a.chains, a.seed, a.device).map_err(Failure::Io)?;
    let total = a.burn_in + a.steps;
    let bar = progress(total as u64, "sampling");
    let mut kept: Vec<ebmc::tensor::Tensors> = Vec::new();
    for sweep in 1..=total {
        sampler.sweep();
        bar.inc(1);
        if let Some(every) = a.every {
            if sweep > a.burn_in && (sweep - a.burn_in) % every == 0 {
                kept.push(sampler.state());
            }
        }
    }
    bar.finish_and_clear();
    let last = sampler.state();
    if kept.is_empty() {
        kept.push(last.clone());
    }
    for state in kept.iter().chain(std::iter::once(&last)) {
        if let Some((var, chain, value)) = ebmc::tensor::first_non_finite(state) {
            eprintln!(
                "error: sampling diverged: `{var}` of chain {} is {value} after {total} sweeps, so no samples are written",
                chain + 1
            );
            eprintln!(
                "  help: lower the Langevin step (`sample {{ {var}: langevin(step: ...); }}`), add `clip`, or check that the energy grows in every direction"
            );
            return Err(Failure::Input);
        }
    }
    println!("{} sweeps of {} chains of model {}", total, a.chains, model.name);
    if let Some(rate) = sampler.acceptance() {
        println!("MALA acceptance rate: {rate:.3}");
    }
    if let Some(out) = &a.out {
        let mut names = Vec::new();
        let mut rows = Vec::new();
        for state in &kept {
            let (n, r) = ebmc::runtime::export::visible_table(model, state);
            names = n;
            rows.extend(r);
        }
        let bytes = match out.extension().and_then(|e| e.to_str()) {
            Some("npy") => ebmc::runtime::export::npy(&rows),
            _ => ebmc::runtime::export::csv(&names, &rows).into_bytes(),
        };
        ebmc::tensor::write_atomically(out, &bytes).map_err(Failure::Io)?;
        println!("wrote {} samples ({} columns) to {}", rows.len(), names.len(), out.display());
    }
    match (&a.png, picture) {
        (Some(png), Some(Picture::Images(var, (h, w)))) => {
            let images = ebmc::runtime::export::images_of(model, &last, &var);
            let scale = if h * w <= 256 { 4 } else { 2 };
            ebmc::tensor::write_atomically(png, &ebmc::runtime::export::png_grid(&images, h, w, scale))
                .map_err(Failure::Io)?;
            println!("wrote {} images of {var} ({h}x{w}) to {}", images.len(), png.display());
        }
        (Some(png), Some(Picture::Density(var))) => {
            let (bytes, n) = density_picture(model, &plan, &params, &kept, &var, a.device)?;
            ebmc::tensor::write_atomically(png, &bytes).map_err(Failure::Io)?;
            println!("wrote {n} samples of {var} over the model's density to {}", png.display());
        }
        _ => {}
    }
    Ok(())
}

/// Checks, before any work, that an output can be written: its extension
/// is one of `formats` and a file can be created beside it.
fn writable(path: &Path, formats: &[&str]) -> Result<(), Failure> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or_default();
    if !formats.contains(&ext) {
        let names: Vec<String> = formats.iter().map(|f| format!(".{f}")).collect();
        return Err(Failure::Io(format!(
            "cannot tell the format of `{}`: use a {} file name",
            path.display(),
            names.join(" or ")
        )));
    }
    if path.is_dir() {
        return Err(Failure::Io(format!("cannot write `{}`: it is a directory", path.display())));
    }
    let mut probe = path.as_os_str().to_owned();
    probe.push(".tmp");
    let probe = PathBuf::from(probe);
    std::fs::File::create(&probe).map_err(|e| Failure::Io(format!("cannot write `{}`: {e}", path.display())))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// A data error as a failure: an unreadable file means the command could not run (2), a bad one is an input error (1).
fn data_failure(e: ebmc::runtime::data::DataError) -> Failure {
    match e {
        ebmc::runtime::data::DataError::Read { .. } => Failure::Io(e.to_string()),
        e => {
            eprintln!("error: {e}");
            Failure::Input
        }
    }
}

/// What a PNG of samples shows.
enum Picture {
    /// A grid of images of an image-shaped visible variable, with its size.
    Images(String, (usize, usize)),
    /// The samples of a 2-D real visible variable over the model's density.
    Density(String),
}

/// A density is drawn when, latents summed out, one 2-D real variable is left.
fn picture_of(
    model: &ebmc::analysis::program::Model,
    plan: &ebmc::analysis::plan::Plan,
    image: Option<(usize, usize)>,
) -> Option<Picture> {
    let visible = || model.variables.iter().filter(|v| v.role == ebmc::front::ast::Role::Visible);
    if let Some(v) = visible().find(|v| ebmc::runtime::export::image_shape(model, &v.name, image).is_some()) {
        return Some(Picture::Images(v.name.clone(), ebmc::runtime::export::image_shape(model, &v.name, image)?));
    }
    let summed = plan.summed_out.as_ref().map(|m| m.summed.clone()).unwrap_or_default();
    let mut rest = model.variables.iter().filter(|v| !summed.contains(&v.name));
    match (rest.next(), rest.next()) {
        (Some(v), None)
            if v.role == ebmc::front::ast::Role::Visible
                && !v.domain.is_discrete()
                && v.shape.iter().product::<usize>() == 2 =>
        {
            Some(Picture::Density(v.name.clone()))
        }
        _ => None,
    }
}

/// A heat map of the model's density over the square the samples span
/// (padded by a tenth), with the samples drawn on it; and how many there are.
fn density_picture(
    model: &ebmc::analysis::program::Model,
    plan: &ebmc::analysis::plan::Plan,
    params: &ebmc::tensor::Tensors,
    states: &[ebmc::tensor::Tensors],
    var: &str,
    device: ebmc::backend::DeviceKind,
) -> Result<(Vec<u8>, usize), Failure> {
    let points: Vec<[f32; 2]> = states
        .iter()
        .flat_map(|s| s[var].data.chunks(2).map(|p| [p[0], p[1]]).collect::<Vec<_>>())
        .filter(|p| p.iter().all(|x| x.is_finite()))
        .collect();
    let (lo, hi) = points
        .iter()
        .flatten()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| (lo.min(f64::from(*x)), hi.max(f64::from(*x))));
    let (lo, hi) = if hi > lo { (lo - 0.1 * (hi - lo), hi + 0.1 * (hi - lo)) } else { (-1.0, 1.0) };
    const RESOLUTION: usize = 200;
    let grid =
        ebmc::runtime::evaluate::Grid::new(model, plan, params, lo, hi, RESOLUTION, device).map_err(Failure::Io)?;
    let log_density: Vec<f64> = grid.free_energy.iter().map(|f| -f).collect();
    Ok((ebmc::runtime::export::density_png(&log_density, RESOLUTION, (lo, hi), &points), points.len()))
}

struct TrainArgs {
    data: Option<PathBuf>,
    epochs: Option<usize>,
    seed: Option<u64>,
    out: Option<PathBuf>,
    resume: Option<PathBuf>,
    device: ebmc::backend::DeviceKind,
}

fn train(path: &Path, only: Option<&str>, a: TrainArgs) -> Result<(), Failure> {
    let (source, compiled) = compile(path)?;
    let model = one_model(&compiled.program, only, "train")?;
    let Some(spec) = compiled.program.trains.get(&model.name) else {
        eprintln!(
            "error: model `{}` has no `train {} {{ ... }}` block; add one to say what data and objective to use",
            model.name, model.name
        );
        return Err(Failure::Input);
    };
    let plan =
        plans(path, &source, &compiled.program)?.into_iter().find(|p| p.model == model.name).ok_or(Failure::Input)?;
    let graph = ebmc::analysis::graph::program_to_graph(model);
    let base = path.parent().unwrap_or(Path::new("."));
    let data_spec = match &a.data {
        Some(file) => ebmc::runtime::data::with_file(&spec.data, file),
        None => spec.data.clone(),
    };
    let data = ebmc::runtime::data::load(&data_spec, model, base).map_err(data_failure)?;
    let (train_rows, test_rows) =
        ebmc::runtime::data::split(data, spec.test.as_ref(), model, base).map_err(data_failure)?;
    let out = a.resume.clone().or(a.out.clone()).unwrap_or_else(|| PathBuf::from("runs").join(&model.name));
    // A resumed run continues with the seed it was started with.
    if let (Some(dir), Some(seed)) = (&a.resume, a.seed) {
        let meta = ebmc::runtime::train::checkpoint_meta(dir).map_err(Failure::Io)?;
        if meta.seed != seed {
            return Err(Failure::Io(format!(
                "the run in `{}` was started with seed {}; a resumed run keeps it: drop --seed or pass --seed {}",
                dir.display(),
                meta.seed,
                meta.seed
            )));
        }
    }
    ebmc::analysis::limits::check_train(
        model,
        &plan.lowered,
        spec,
        train_rows.rows,
        a.epochs.unwrap_or(spec.epochs),
        available_memory(),
    )
    .map_err(limits_failure)?;
    let opts = ebmc::runtime::train::RunOptions {
        epochs: a.epochs.unwrap_or(spec.epochs),
        seed: a.seed.unwrap_or(spec.seed),
        out: out.clone(),
        resume: a.resume.is_some(),
        device: a.device,
    };
    eprintln!(
        "training {} on {} rows ({} held out) with {}, {} epochs",
        model.name,
        train_rows.rows,
        test_rows.as_ref().map_or(0, |t| t.rows),
        spec.objective.name,
        opts.epochs
    );
    let started = std::time::Instant::now();
    let mut bar = None;
    let mut last_loss = 0.0;
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
                let b = indicatif::ProgressBar::new(total as u64);
                b.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{msg} {bar:30} {pos}/{len} steps [{elapsed_precise}<{eta_precise}, {per_sec}]",
                    )
                    .expect("valid template"),
                );
                bar = Some(b);
            }
            ebmc::runtime::train::Progress::Step { epoch, loss } => {
                last_loss = 0.9 * last_loss + 0.1 * loss;
                if let Some(b) = &bar {
                    b.set_message(format!("epoch {epoch} loss {last_loss:.4}"));
                    b.inc(1);
                }
            }
            ebmc::runtime::train::Progress::Epoch(m) => {
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
    match result {
        Ok(history) => {
            let checkpoint = ebmc::runtime::train::latest_checkpoint(&out).unwrap_or(out.clone());
            println!("trained {} in {:.1}s", model.name, started.elapsed().as_secs_f64());
            if let Some(m) = history.last() {
                let ll = m
                    .log_likelihood
                    .map(|l| {
                        format!(
                            ", average log-likelihood {l:.3} nats ({})",
                            if test_rows.is_some() { "test rows" } else { "training rows" }
                        )
                    })
                    .unwrap_or_default();
                println!("final loss {:.4}{ll}", m.loss);
            }
            println!("checkpoint: {}", checkpoint.display());
            println!("metrics:    {}", out.join("metrics.jsonl").display());
            println!("curve:      {}", out.join("curve.png").display());
            if let Some(grid) = sample_grid(model, &plan, &out)? {
                println!("samples:    {}", grid.display());
            }
            Ok(())
        }
        Err(ebmc::runtime::train::RunError::Io(e)) => Err(Failure::Io(e)),
        Err(ebmc::runtime::train::RunError::Train { error, epoch, last_good }) => {
            match &error {
                ebmc::backend::TrainError::NonFinite { what, step } => eprintln!(
                    "error: training diverged at epoch {epoch}, step {step}: {what} is not finite (NaN or infinite)"
                ),
                other => eprintln!("error: {other} (epoch {epoch})"),
            }
            match last_good {
                Some(dir) => eprintln!("  the last good checkpoint is kept: {}", dir.display()),
                None => eprintln!("  no checkpoint was written before this"),
            }
            if matches!(error, ebmc::backend::TrainError::NonFinite { .. }) {
                eprintln!(
                    "  help: lower the learning rate, add `regularize = clip_grad(norm: 10);`, or check the data's scale"
                );
            }
            Err(Failure::Input)
        }
    }
}

/// Draws a PNG grid of samples from the trained model when a visible variable is image-shaped.
fn sample_grid(
    model: &ebmc::analysis::program::Model,
    plan: &ebmc::analysis::plan::Plan,
    out: &Path,
) -> Result<Option<PathBuf>, Failure> {
    let Some(picture) = picture_of(model, plan, None) else {
        return Ok(None);
    };
    let params = ebmc::runtime::train::load_model_params(out, model).map_err(Failure::Io)?;
    let chains = if matches!(picture, Picture::Density(_)) { 500 } else { 64 };
    let mut sampler =
        ebmc::backend::Sampler::new(model, plan, &params, chains, 0, Default::default()).map_err(Failure::Io)?;
    for _ in 0..200 {
        sampler.sweep();
    }
    let bytes = match picture {
        Picture::Images(var, (h, w)) => ebmc::runtime::export::png_grid(
            &ebmc::runtime::export::images_of(model, &sampler.state(), &var),
            h,
            w,
            if h * w <= 256 { 4 } else { 2 },
        ),
        Picture::Density(var) => density_picture(model, plan, &params, &[sampler.state()], &var, Default::default())?.0,
    };
    let path = out.join("samples.png");
    ebmc::tensor::write_atomically(&path, &bytes).map_err(Failure::Io)?;
    Ok(Some(path))
}

struct EvalArgs {
    params: PathBuf,
    data: Option<PathBuf>,
    ais: bool,
    runs: usize,
    temperatures: usize,
    pl_units: Option<usize>,
    grid: (f64, f64, usize),
    seed: u64,
    json: bool,
    device: ebmc::backend::DeviceKind,
}

/// The model, its plan and graph, its train block, and trained parameters.
struct Loaded {
    source: String,
    model: ebmc::analysis::program::Model,
    plan: ebmc::analysis::plan::Plan,
    graph: ebmc::analysis::graph::FactorGraph,
    spec: ebmc::analysis::program::Train,
    params: ebmc::tensor::Tensors,
}

fn load_trained(path: &Path, only: Option<&str>, params: &Path, command: &str) -> Result<Loaded, Failure> {
    let (source, compiled) = compile(path)?;
    let model = one_model(&compiled.program, only, command)?.clone();
    let Some(spec) = compiled.program.trains.get(&model.name).cloned() else {
        eprintln!(
            "error: model `{}` has no train block, so ebmc does not know how its data is bound; add `train {} {{ data = ... -> ...; objective = ...; }}`",
            model.name, model.name
        );
        return Err(Failure::Input);
    };
    let plan =
        plans(path, &source, &compiled.program)?.into_iter().find(|p| p.model == model.name).ok_or(Failure::Input)?;
    let graph = ebmc::analysis::graph::program_to_graph(&model);
    let params = ebmc::runtime::train::load_model_params(params, &model).map_err(Failure::Io)?;
    Ok(Loaded { source, model, plan, graph, spec, params })
}

/// The rows to score, what they are, and the training rows when they can be
/// loaded (AIS takes its base rates from them).
struct Scored {
    rows: ebmc::runtime::data::Dataset,
    which: &'static str,
    training: Option<ebmc::runtime::data::Dataset>,
}

fn rows_to_score(l: &Loaded, path: &Path, data: Option<&Path>) -> Result<Scored, Failure> {
    let base = path.parent().unwrap_or(Path::new("."));
    let fail = data_failure;
    if let Some(file) = data {
        let rows = ebmc::runtime::data::load(&ebmc::runtime::data::with_file(&l.spec.data, file), &l.model, base)
            .map_err(fail)?;
        // The train block's own data may be absent (e.g. MNIST elsewhere); then there are no training rows.
        let training = ebmc::runtime::data::load(&l.spec.data, &l.model, base)
            .ok()
            .and_then(|all| ebmc::runtime::data::split(all, l.spec.test.as_ref(), &l.model, base).ok())
            .map(|(train, _)| train);
        return Ok(Scored { rows, which: "given rows", training });
    }
    let all = ebmc::runtime::data::load(&l.spec.data, &l.model, base).map_err(fail)?;
    match ebmc::runtime::data::split(all, l.spec.test.as_ref(), &l.model, base).map_err(fail)? {
        (train, Some(test)) => Ok(Scored { rows: test, which: "held-out test rows", training: Some(train) }),
        (train, None) => Ok(Scored {
            rows: train.clone(),
            which: "training rows (the train block has no test split)",
            training: Some(train),
        }),
    }
}

/// A figure for the report, refused when it is not finite (NaN would print as `null`).
fn figure(
    report: &mut serde_json::Map<String, serde_json::Value>,
    key: &str,
    what: &str,
    x: f64,
) -> Result<(), Failure> {
    if !x.is_finite() {
        return Err(Failure::Io(format!(
            "{what} is {x}, not a finite number; the parameters are likely not finite or too large"
        )));
    }
    report.insert(key.into(), x.into());
    Ok(())
}

fn mean(x: &[f64]) -> f64 {
    x.iter().sum::<f64>() / x.len() as f64
}

fn eval(path: &Path, only: Option<&str>, a: &EvalArgs) -> Result<(), Failure> {
    let l = load_trained(path, only, &a.params, "eval")?;
    let _ = &l.source;
    ebmc::backend::check_ais_options(&l.model, a.runs, a.temperatures).map_err(Failure::Io)?;
    if let Ok((_, _, dims)) = ebmc::runtime::evaluate::grid_variable(&l.model, &l.plan) {
        ebmc::runtime::evaluate::check_grid_options(a.grid.0, a.grid.1, a.grid.2, dims).map_err(Failure::Io)?;
    }
    if a.pl_units == Some(0) {
        return Err(Failure::Io("`--pl-units` must be at least 1".into()));
    }
    let Scored { rows, which, training } = rows_to_score(&l, path, a.data.as_deref())?;
    if rows.rows == 0 {
        return Err(Failure::Io(format!("there are no {which} to evaluate on")));
    }
    let mut report = serde_json::Map::new();
    report.insert("model".into(), l.model.name.clone().into());
    report.insert("rows".into(), rows.rows.into());
    report.insert("evaluated_on".into(), which.into());
    let mut notes = Vec::new();
    let mut warnings = Vec::new();
    let continuous = l.model.variables.iter().any(|v| !v.domain.is_discrete());
    let exact_z = match ebmc::runtime::evaluate::exact_log_z(&l.graph, &l.plan, &l.params, a.device) {
        Ok(z) => {
            figure(&mut report, "exact_log_z", "the exact log Z", z)?;
            let ll =
                ebmc::runtime::evaluate::exact_log_likelihood(&l.graph, &l.plan, &l.params, &rows.vars, z, a.device)
                    .map_err(Failure::Io)?;
            figure(&mut report, "log_likelihood", "the average log-likelihood", mean(&ll))?;
            Some(z)
        }
        Err(why) => {
            notes.push(format!("no exact log Z: {why}"));
            None
        }
    };
    if continuous {
        let (low, high, n) = a.grid;
        match ebmc::runtime::evaluate::grid_log_z(&l.model, &l.plan, &l.params, low, high, n, a.device) {
            Ok(z) => {
                // The grid is this model's log Z: the enumeration note does not apply.
                notes.clear();
                figure(&mut report, "grid_log_z", "the grid log Z", z)?;
                let f = ebmc::runtime::evaluate::row_free_energy(&l.model, &l.plan, &l.params, &rows.vars, a.device)
                    .map_err(Failure::Io)?;
                let ll = -mean(&f) - z;
                figure(&mut report, "log_likelihood_grid", "the average log-likelihood (grid)", ll)?;
                // With a toy set whose density is known: the gap to the true log-likelihood.
                if let Some(name) = l
                    .spec
                    .data
                    .source
                    .options
                    .get("name")
                    .and_then(|v| v.as_str())
                    .filter(|_| l.spec.data.source.name == "toy")
                {
                    let x = rows.vars.values().next().expect("rows");
                    let truth: Option<Vec<f64>> = x
                        .data
                        .chunks(2)
                        .map(|p| ebmc::runtime::data::toy_log_density(name, f64::from(p[0]), f64::from(p[1])))
                        .collect();
                    if let Some(t) = truth {
                        let true_ll = mean(&t);
                        figure(&mut report, "true_log_likelihood", "the true log-likelihood", true_ll)?;
                        figure(&mut report, "kl_gap", "the KL gap", true_ll - ll)?;
                    }
                }
            }
            Err(why) if exact_z.is_none() => notes.push(format!("no grid integral: {why}")),
            Err(_) => {}
        }
    }
    if a.ais || (exact_z.is_none() && !continuous) {
        // Base rates from the training rows (S&M 2008); uniform only without rows.
        let (base, base_from) = match &training {
            Some(t) => {
                (ebmc::runtime::evaluate::base_rates(&l.model, &l.plan, &t.vars), "the training rows' base rates")
            }
            None => (
                ebmc::runtime::evaluate::base_rates(&l.model, &l.plan, &rows.vars),
                "the evaluated rows' base rates (the training data could not be loaded)",
            ),
        };
        let base_from = if base.is_empty() {
            "the uniform distribution (no rows bind the variables AIS samples)"
        } else {
            base_from
        };
        let opts = ebmc::backend::AisOptions { runs: a.runs, temperatures: a.temperatures, seed: a.seed, base };
        match ebmc::backend::ais(&l.model, &l.plan, &l.params, &opts, a.device) {
            Ok(est) => {
                figure(&mut report, "ais_log_z", "the AIS log Z", est.log_z)?;
                report.insert("ais".into(), serde_json::to_value(&est).expect("serialises"));
                report.insert("ais_base".into(), base_from.into());
                if est.ess < 10.0f64.max(0.1 * a.runs as f64) {
                    warnings.push(format!("the AIS importance weights have an effective sample size of {:.1} of {} runs: a few runs carry the estimate, and its error bar is unreliable; use more `--temperatures`", est.ess, a.runs));
                }
                let f = match ebmc::runtime::evaluate::row_free_energy(
                    &l.model, &l.plan, &l.params, &rows.vars, a.device,
                ) {
                    Ok(f) => Some(f),
                    Err(why) => {
                        notes.push(format!("no log-likelihood from AIS: {why}"));
                        None
                    }
                };
                let raise = ebmc::backend::raise(&l.model, &l.plan, &l.params, &rows.vars, &opts, a.device);
                if let Some(f) = &f {
                    let fit = -mean(f);
                    figure(&mut report, "log_likelihood_ais", "the average log-likelihood (AIS)", fit - est.log_z)?;
                    match raise {
                        Ok(up) => {
                            figure(&mut report, "raise_log_z", "the reverse-AIS log Z", up.log_z)?;
                            report.insert("raise".into(), serde_json::to_value(&up).expect("serialises"));
                            report.insert("log_z_bracket".into(), vec![est.log_z, up.log_z].into());
                            report
                                .insert("log_likelihood_bracket".into(), vec![fit - up.log_z, fit - est.log_z].into());
                            let noise = 3.0 * (up.std_error + est.std_error);
                            if up.log_z + noise < est.log_z {
                                warnings.push("the reverse-AIS upper bound lies below the AIS lower bound beyond their error bars: the chains do not mix at this schedule; use more `--temperatures`".into());
                            } else if up.log_z - est.log_z > 1.0 + noise {
                                // ESS cannot see chains that all miss the same mass; the bracket can.
                                warnings.push(format!("the log Z bracket is {:.1} nats wide: AIS and reverse AIS disagree, so neither log Z nor the log-likelihood is known better than that; use more `--temperatures` or `--runs`", up.log_z - est.log_z));
                            }
                        }
                        Err(why) => notes.push(format!("no upper bound on log Z (reverse AIS): {why}")),
                    }
                }
                if exact_z.is_none() {
                    if let Some(ll) = num(&report, "log_likelihood_ais").filter(|ll| *ll > 0.0 && !continuous) {
                        warnings.push(format!("the AIS log-likelihood {ll:.4} is positive, impossible for discrete data: log Z is underestimated; use more `--temperatures`"));
                    }
                }
            }
            Err(why) => notes.push(format!("no AIS: {why}")),
        }
    }
    let discrete_visible =
        l.model.variables.iter().filter(|v| v.role == ebmc::front::ast::Role::Visible).all(|v| v.domain.is_discrete());
    if discrete_visible {
        match ebmc::runtime::evaluate::pseudo_likelihood(
            &l.model, &l.plan, &l.params, &rows.vars, a.pl_units, a.seed, a.device,
        ) {
            Ok(pl) => figure(
                &mut report,
                if a.pl_units.is_some() { "pseudo_log_likelihood_stochastic" } else { "pseudo_log_likelihood" },
                "the pseudo-likelihood",
                pl,
            )?,
            Err(why) => notes.push(format!("no pseudo-likelihood: {why}")),
        }
    }
    if l.plan.label_marginal.is_some() {
        match ebmc::runtime::evaluate::classification(&l.model, &l.plan, &l.params, &rows.vars, a.device) {
            Ok((acc, ece)) => {
                figure(&mut report, "accuracy", "the classification accuracy", acc)?;
                figure(&mut report, "expected_calibration_error", "the expected calibration error", ece)?;
            }
            Err(why) => notes.push(format!("no classification metrics: {why}")),
        }
    }
    if !continuous && l.model.variables.iter().any(|v| v.role == ebmc::front::ast::Role::Hidden) {
        match ebmc::runtime::evaluate::reconstruction_error(&l.model, &l.plan, &l.params, &rows.vars, a.seed, a.device)
        {
            Ok(e) => figure(&mut report, "reconstruction_error", "the reconstruction error", e)?,
            Err(why) => notes.push(format!("no reconstruction error: {why}")),
        }
    }
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    report.insert("notes".into(), notes.clone().into());
    report.insert("warnings".into(), warnings.clone().into());
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report).expect("serialises"));
        return Ok(());
    }
    println!("model {} on {} {which}", l.model.name, rows.rows);
    let num = |k: &str| num(&report, k);
    if let Some(z) = num("exact_log_z") {
        println!("  log Z (exact)                  {z:.4}");
    }
    if let Some(ais) = report.get("ais") {
        let f = |k: &str| ais[k].as_f64().unwrap_or(f64::NAN);
        println!(
            "  log Z (AIS, {} runs x {} temps) {:.4} ± {:.4}, effective sample size {:.1}; from {}",
            a.runs,
            a.temperatures,
            f("log_z"),
            f("std_error"),
            f("ess"),
            report["ais_base"].as_str().unwrap_or("")
        );
    }
    if let Some(up) = report.get("raise") {
        println!(
            "  log Z (reverse AIS from {} rows) {:.4} ± {:.4}",
            a.runs,
            up["log_z"].as_f64().unwrap_or(f64::NAN),
            up["std_error"].as_f64().unwrap_or(f64::NAN)
        );
    }
    let pair = |k: &str| report.get(k).and_then(|v| Some((v[0].as_f64()?, v[1].as_f64()?)));
    if let Some((lo, hi)) = pair("log_z_bracket") {
        println!("  log Z in [{lo:.4}, {hi:.4}]         (AIS lower, reverse AIS upper; stochastic bounds)");
    }
    if let Some(ll) = num("log_likelihood") {
        println!("  average log-likelihood         {ll:.4} nats");
    }
    if let Some(z) = num("grid_log_z") {
        println!("  log Z (grid, {} points per axis) {z:.4}", a.grid.2);
    }
    if let Some(ll) = num("log_likelihood_grid") {
        println!("  average log-likelihood (grid)  {ll:.4} nats");
    }
    if let (Some(t), Some(gap)) = (num("true_log_likelihood"), num("kl_gap")) {
        println!("  true log-likelihood            {t:.4} nats (KL gap {gap:.4} nats)");
    }
    match pair("log_likelihood_bracket") {
        Some((lo, hi)) => println!("  average log-likelihood in [{lo:.4}, {hi:.4}] nats (from the log Z bracket)"),
        None => {
            if let Some(ll) = num("log_likelihood_ais") {
                println!("  average log-likelihood (AIS)   {ll:.4} nats (an upper estimate: AIS underestimates log Z)");
            }
        }
    }
    if let Some(pl) = num("pseudo_log_likelihood").or(num("pseudo_log_likelihood_stochastic")) {
        println!("  average log pseudo-likelihood  {pl:.4} nats");
    }
    if let Some(acc) = num("accuracy") {
        println!("  classification accuracy        {acc:.4}");
    }
    if let Some(ece) = num("expected_calibration_error") {
        println!("  expected calibration error     {ece:.4}");
    }
    if let Some(e) = num("reconstruction_error") {
        println!("  reconstruction error           {e:.4} (squared, per row)");
    }
    for n in notes {
        println!("  note: {n}");
    }
    Ok(())
}

fn num(report: &serde_json::Map<String, serde_json::Value>, key: &str) -> Option<f64> {
    report.get(key).and_then(|v| v.as_f64())
}

fn energy(
    path: &Path,
    only: Option<&str>,
    params: &Path,
    data: &Path,
    device: ebmc::backend::DeviceKind,
) -> Result<(), Failure> {
    let mut l = load_trained(path, only, params, "energy")?;
    // A JEM label is summed out: the rows need only the inputs.
    if let Some(m) = &l.plan.label_marginal {
        l.spec.data.binding.retain(|b| *b != m.var);
    }
    let Scored { rows, .. } = rows_to_score(&l, path, Some(data))?;
    let f = ebmc::runtime::evaluate::row_free_energy(&l.model, &l.plan, &l.params, &rows.vars, device)
        .map_err(Failure::Io)?;
    if let Some(i) = f.iter().position(|e| !e.is_finite()) {
        return Err(Failure::Io(format!(
            "the energy of row {} is {}, not a finite number; the parameters are likely not finite or too large",
            i + 1,
            f[i]
        )));
    }
    let mut out = String::from("row,energy\n");
    for (i, e) in f.iter().enumerate() {
        out.push_str(&format!("{},{e}\n", i + 1));
    }
    print!("{out}");
    Ok(())
}

fn fmt(files: &[PathBuf], check_only: bool) -> Result<(), Failure> {
    let mut failed = false;
    for path in files {
        let source = read(path)?;
        let formatted = match ebmc::format_source(&source) {
            Ok(f) => f,
            Err(d) => {
                report(path, &source, &[d], MessageFormat::Human);
                failed = true;
                continue;
            }
        };
        if formatted == source {
            continue;
        }
        if check_only {
            eprintln!("{} is not formatted; run `ebmc fmt {}`", path.display(), path.display());
            failed = true;
        } else {
            write_atomically(path, formatted.as_bytes())?;
        }
    }
    if failed { Err(Failure::Input) } else { Ok(()) }
}

/// Writes through a synced temporary file and a rename, so an interrupted write never leaves half a file.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    ebmc::tensor::write_atomically(path, bytes).map_err(Failure::Io)
}
