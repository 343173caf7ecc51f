//! Each subcommand: read the files it names, call the library, hand the
//! result to `output`. Failures are `CommandError`s and hints `CommandNote`s,
//! both worded in `ebmc::messages`.

use crate::cli::args::GraphFormat;
use crate::cli::output::{self, CheckSummary, Failure, FmtFile, Out, SampleResult, TrainResult};
use crate::cli::output::{HeldPart, WrittenChains, WrittenPicture, WrittenSamples};
use ebmc::analysis::limits::{self, LimitError, SampleRun};
use ebmc::analysis::plan::{Kernel, Plan};
use ebmc::analysis::program::{Model, Program, Temperature};
use ebmc::backend::DeviceKind;
use ebmc::runtime::command::{CommandError, CommandNote};
use ebmc::runtime::data::FileValues;
use ebmc::runtime::export::{self, TableFormat};
use ebmc::runtime::figures::{self, Picture};
use ebmc::runtime::{report, run_dir, train as runs};
use serde_json::json;
use std::path::{Path, PathBuf};

fn read(path: &Path) -> Result<String, Failure> {
    std::fs::read_to_string(path)
        .map_err(|e| CommandError::Read { path: path.to_path_buf(), reason: e.to_string() }.into())
}

/// Writes through a synced temporary file and a rename, so an interrupted write never leaves half a file.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    ebmc::tensor::write_atomically(path, bytes).map_err(|e| CommandError::Io(e).into())
}

/// Checks, before any work, that an output can be written: its extension
/// is one of `formats` and a file can be created beside it.
fn writable(path: &Path, formats: &[&'static str]) -> Result<(), Failure> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or_default();
    if !formats.contains(&ext) {
        return Err(CommandError::OutputFormat { path: path.to_path_buf(), formats: formats.to_vec() }.into());
    }
    if path.is_dir() {
        return Err(CommandError::WriteDirectory { path: path.to_path_buf() }.into());
    }
    let mut probe = path.as_os_str().to_owned();
    probe.push(".tmp");
    let probe = PathBuf::from(probe);
    std::fs::File::create(&probe)
        .map_err(|e| CommandError::Write { path: path.to_path_buf(), reason: e.to_string() })?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// A run past a limit cannot start on this machine (exit 2).
fn limits_failure(errors: Vec<LimitError>) -> Failure {
    CommandError::Limits(errors).into()
}

fn params_failure(reason: String) -> Failure {
    CommandError::Params(reason).into()
}

fn data_failure(e: ebmc::runtime::data::DataError) -> Failure {
    CommandError::Data(e).into()
}

pub fn check(out: Out, files: &[PathBuf]) -> Result<(), Failure> {
    let mut summary = CheckSummary { files: files.len(), errors: 0, warnings: 0 };
    for path in files {
        let source = read(path)?;
        let diagnostics = ebmc::check_source(&source).unwrap_or_else(|d| d);
        summary.errors += diagnostics.iter().filter(|d| d.is_error()).count();
        summary.warnings += diagnostics.iter().filter(|d| !d.is_error()).count();
        if out.json_results {
            // check's diagnostics are its result: on stdout, one JSON object a line.
            for line in output::diagnostic_json(path, &source, &diagnostics) {
                output::stdout(&format!("{line}\n"));
            }
        } else {
            out.diagnostics(path, &source, &diagnostics);
        }
    }
    if out.json_results {
        output::stdout(&format!("{}\n", output::with_kind("check", &summary)));
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
            None => Err(CommandError::NoSuchModel {
                name: name.to_string(),
                known: program.models.keys().cloned().collect(),
            }
            .into()),
        },
    }
}

/// One model of a file: the named one, or the only one.
fn one_model<'a>(program: &'a Program, only: Option<&str>, command: &str) -> Result<&'a Model, Failure> {
    let models = selected(program, only)?;
    match models.as_slice() {
        [m] => Ok(m),
        [] => Err(CommandError::NoModel { command: command.to_string() }.into()),
        _ => Err(CommandError::SeveralModels {
            command: command.to_string(),
            models: models.iter().map(|m| m.name.clone()).collect(),
        }
        .into()),
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

/// The plan of `model` among a file's plans.
fn plan_of(out: Out, path: &Path, source: &str, program: &Program, model: &Model) -> Result<Plan, Failure> {
    plans(out, path, source, program)?.into_iter().find(|p| p.model == model.name).ok_or(Failure::Reported)
}

pub fn graph(out: Out, path: &Path, format: GraphFormat, only: Option<&str>) -> Result<(), Failure> {
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

pub fn plan(out: Out, path: &Path, only: Option<&str>, schedule: bool) -> Result<(), Failure> {
    let (source, compiled) = compile(out, path)?;
    let names: Vec<String> = selected(&compiled.program, only)?.iter().map(|m| m.name.clone()).collect();
    let plans: Vec<_> =
        plans(out, path, &source, &compiled.program)?.into_iter().filter(|p| names.contains(&p.model)).collect();
    let mut schedules = Vec::new();
    if schedule {
        for p in &plans {
            let model = &compiled.program.models[&p.model];
            let train = compiled.program.trains.get(&p.model);
            // Listing the training step runs one step on a batch of random rows: check its memory first.
            if let Some(t) = train {
                limits::check_train(model, &p.lowered, t, t.batch, 1, limits::available_memory())
                    .map_err(limits_failure)?;
            }
            let listings = ebmc::backend::step_schedules(model, p, train)
                .map_err(|e| CommandError::Result(format!("cannot compile the steps of `{}`: {e}", p.model)))?;
            schedules.extend(listings.into_iter().map(|(title, listing)| (p.model.clone(), title, listing)));
        }
    }
    let value = json!({
        "plans": plans,
        "schedules": schedules.iter().map(|(m, t, l)| json!({ "model": m, "step": t, "listing": l })).collect::<Vec<_>>(),
    });
    out.result("plan", &value, || {
        let mut text: String = plans.iter().map(|p| p.to_text()).collect();
        for (model, title, listing) in &schedules {
            text.push_str(&format!("\n{model}: {title}\n{listing}"));
        }
        text
    });
    Ok(())
}

/// Where `sample` puts the chains over time: `chains.png` beside the final
/// grid at `png`, or `STEM-chains.png` when that grid is itself `chains.png`.
fn chains_path(png: &Path) -> PathBuf {
    let beside = png.with_file_name("chains.png");
    if beside.file_name() != png.file_name() {
        return beside;
    }
    png.with_file_name(format!("{}-chains.png", png.file_stem().unwrap_or_default().to_string_lossy()))
}

/// Sweeps `ebmc sample` runs when neither `--steps` nor the plan says otherwise.
pub const DEFAULT_SAMPLE_STEPS: usize = 1000;

/// `ebmc sample`'s flags.
pub struct SampleArgs {
    pub params: Option<PathBuf>,
    pub chains: usize,
    pub burn_in: usize,
    /// `--steps`; `None`: the plan's short-run default, else `DEFAULT_SAMPLE_STEPS`.
    pub steps: Option<usize>,
    pub every: Option<usize>,
    pub seed: u64,
    pub out: Option<PathBuf>,
    pub png: Option<PathBuf>,
    pub image: Option<(usize, usize)>,
    /// Parts held at the rows of files (`--given PART=FILE`).
    pub given: Vec<(String, PathBuf)>,
    pub device: DeviceKind,
}

pub fn sample(out: Out, path: &Path, only: Option<&str>, a: &SampleArgs) -> Result<(), Failure> {
    let (source, compiled) = compile(out, path)?;
    let model = one_model(&compiled.program, only, "sample")?;
    let plan = plan_of(out, path, &source, &compiled.program, model)?;
    let steps = a.steps.or(plan.short_run.map(|s| s.sweeps)).unwrap_or(DEFAULT_SAMPLE_STEPS);
    let run = SampleRun { chains: a.chains, burn_in: a.burn_in, steps, every: a.every };
    if let Some(file) = &a.out {
        writable(file, &["csv", "npy"])?;
    }
    if let Some(png) = &a.png {
        writable(png, &["png"])?;
    }
    limits::check_sample(model, &plan.lowered, &run, limits::available_memory()).map_err(limits_failure)?;
    let params = match &a.params {
        Some(p) => runs::load_model_params(p, model).map_err(params_failure)?,
        None => {
            out.note(CommandNote::DefaultParams { seed: a.seed });
            ebmc::tensor::initialise(&plan.lowered.params, a.seed)
        }
    };
    let picture = match &a.png {
        Some(_) => Some(figures::picture_of(model, &plan, a.image).ok_or(CommandError::NoPicture)?),
        None => None,
    };
    // Image models also get their chains over time, beside the final grid.
    let trace = match (&a.png, &picture) {
        (Some(png), Some(Picture::Images(var, layout))) => {
            let path = chains_path(png);
            writable(&path, &["png"])?;
            Some((path, figures::chains_trace(var), *layout))
        }
        _ => None,
    };
    let mut clamps = Vec::new();
    let mut held = Vec::new();
    for (text, file) in &a.given {
        use ebmc::runtime::given::{self, GivenError, Part};
        let flag = |e: given::PartError| CommandError::Flag(format!("--given: {e}"));
        let part = Part::parse(text, model).map_err(flag)?;
        let clamp = given::load(&part, model, file, run.chains).map_err(|e| match e {
            GivenError::Part(e) => flag(e),
            GivenError::Data(e) => CommandError::Data(e),
        })?;
        held.push(HeldPart { part: part.text.clone(), file: file.clone() });
        clamps.push(clamp);
    }
    let mut sampler = ebmc::backend::Sampler::new(model, &plan, &params, run.chains, a.seed, a.device)
        .map_err(CommandError::Result)?;
    sampler.set_clamps(&clamps).map_err(CommandError::Result)?;
    let total = run.burn_in + run.steps;
    let bar = out.progress(total as u64, "sampling {bar:40} {pos}/{len} [{elapsed_precise}<{eta_precise}, {per_sec}]");
    let samples = ebmc::runtime::sample::run(&mut sampler, &run, trace.as_ref().map(|(_, t, _)| t), &mut || bar.inc(1));
    bar.finish_and_clear();
    let samples = samples.map_err(CommandError::SamplingDiverged)?;
    let mixing = samples.statistics.summarise();
    let ramp = match &plan.temperature {
        Some(Temperature::Anneal { sweeps, .. }) if *sweeps > run.burn_in => {
            Some(ebmc::messages::anneal_burn_in_warning(*sweeps, run.burn_in))
        }
        _ => None,
    };
    let tempering = sampler.tempering();
    let hot = tempering.as_ref().and_then(ebmc::messages::tempering_diverged_warning);
    let warnings: Vec<String> = ramp.into_iter().chain(hot).chain(ebmc::messages::mixing_warning(&mixing)).collect();
    let mut metropolis = Vec::new();
    for v in &plan.variables {
        let name = match v.kernel {
            Kernel::Langevin { mala: true, .. } => "MALA",
            Kernel::Hmc { .. } => "HMC",
            _ => continue,
        };
        if !metropolis.contains(&name) {
            metropolis.push(name);
        }
    }
    for w in &warnings {
        out.warning(w);
    }
    let mut result = SampleResult {
        model: model.name.clone(),
        sweeps: total,
        chains: run.chains,
        acceptance: sampler.acceptance(),
        given: held,
        metropolis,
        tempering,
        mixing,
        warnings,
        samples: None,
        picture: None,
        chains_picture: None,
    };
    if let Some(file) = &a.out {
        let (bytes, rows, columns) = export::samples_file(model, &samples.kept, TableFormat::of(file));
        write_atomically(file, &bytes)?;
        result.samples = Some(WrittenSamples { path: file.clone(), rows, columns });
    }
    if let (Some(png), Some(picture)) = (&a.png, picture) {
        let written = match picture {
            Picture::Images(variable, layout) => {
                let grid = figures::image_grid(model, &samples.last, &variable, layout);
                if let Some((lo, hi)) = grid.range {
                    out.note(CommandNote::ImageRange { path: png.clone(), var: variable.clone(), lo, hi });
                }
                write_atomically(png, &grid.png)?;
                WrittenPicture {
                    path: png.clone(),
                    shows: "images",
                    variable,
                    count: grid.count,
                    size: Some((layout.height, layout.width)),
                    channels: Some(layout.channels),
                    range: grid.range,
                }
            }
            Picture::Density(variable) => {
                let (bytes, count) =
                    figures::density_picture(model, &plan, &params, &samples.kept, &variable, a.device)
                        .map_err(CommandError::Result)?;
                write_atomically(png, &bytes)?;
                WrittenPicture {
                    path: png.clone(),
                    shows: "density",
                    variable,
                    count,
                    size: None,
                    channels: None,
                    range: None,
                }
            }
        };
        result.picture = Some(written);
    }
    if let Some((path, t, layout)) = trace {
        let grid = figures::chains_grid(model, &samples.snapshots, &t.var, layout);
        if let Some((lo, hi)) = grid.range {
            out.note(CommandNote::ImageRange { path: path.clone(), var: t.var.clone(), lo, hi });
        }
        write_atomically(&path, &grid.png)?;
        let sweeps = samples.snapshots.iter().map(|s| s.sweep).collect::<Vec<_>>();
        let chains = grid.count / sweeps.len().max(1);
        result.chains_picture = Some(WrittenChains { path, variable: t.var, chains, sweeps, range: grid.range });
    }
    out.result("sample", &result, || result.to_text());
    Ok(())
}

/// `ebmc train`'s flags.
pub struct TrainArgs {
    pub data: Option<PathBuf>,
    /// How the numbers of `data` are read.
    pub data_values: FileValues,
    pub epochs: Option<usize>,
    pub seed: Option<u64>,
    pub out: Option<PathBuf>,
    pub resume: Option<PathBuf>,
    pub device: DeviceKind,
}

pub fn train(out: Out, path: &Path, only: Option<&str>, a: TrainArgs) -> Result<(), Failure> {
    let (source, compiled) = compile(out, path)?;
    let model = one_model(&compiled.program, only, "train")?;
    let Some(spec) = compiled.program.trains.get(&model.name) else {
        return Err(CommandError::NoTrainBlock { model: model.name.clone() }.into());
    };
    let plan = plan_of(out, path, &source, &compiled.program, model)?;
    let graph = ebmc::analysis::graph::program_to_graph(model);
    let base = path.parent().unwrap_or(Path::new("."));
    let own = ebmc::runtime::data::spec_of(spec).map_err(data_failure)?;
    let data_spec = match &a.data {
        Some(file) => ebmc::runtime::data::with_file(own, file, a.data_values),
        None => own.clone(),
    };
    let data = ebmc::runtime::data::load(&data_spec, model, base).map_err(data_failure)?;
    let (train_rows, test_rows) =
        ebmc::runtime::data::split(data, spec.test.as_ref(), model, base).map_err(data_failure)?;
    let dir = a.resume.clone().or(a.out.clone()).unwrap_or_else(|| run_dir::default_run_dir(&model.name));
    // A resumed run continues with the seed it was started with.
    if let Some(resumed) = &a.resume {
        run_dir::check_resume_seed(resumed, a.seed).map_err(CommandError::Flag)?;
    }
    let epochs = a.epochs.unwrap_or(spec.epochs);
    limits::check_train(model, &plan.lowered, spec, train_rows.rows, epochs, limits::available_memory())
        .map_err(limits_failure)?;
    let opts = runs::RunOptions {
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
    // The checkpoints record the data actually used (`--data` replaces the
    // block's) and the `init` path as resolved.
    let init = spec.init.as_ref().map(|p| ebmc::runtime::data::resolve(base, p).display().to_string());
    let spec = &ebmc::analysis::program::Train { data: Some(data_spec), init, ..spec.clone() };
    if !spec.frozen.is_empty() {
        let trained = plan.lowered.params.iter().map(|p| p.name.clone()).filter(|p| !spec.frozen.contains(p));
        out.note(CommandNote::Frozen { frozen: spec.frozen.clone(), trained: trained.collect() });
    }
    let mut init_report = None;
    let outliers = match &spec.outliers {
        Some(o) => Some(ebmc::runtime::data::load(o, model, base).map_err(data_failure)?),
        None => None,
    };
    let (rows, test, outliers) = (&train_rows, test_rows.as_ref(), outliers.as_ref());
    let result = runs::run_with_outliers(&source, &graph, &plan, spec, rows, test, outliers, &opts, &mut |p| match p {
        runs::Progress::Init(report) => {
            out.note(CommandNote::Init(report.clone()));
            init_report = Some(report.clone());
        }
        runs::Progress::Start { epochs, steps_per_epoch, from_epoch } => {
            let total = (epochs + 1 - from_epoch.min(epochs + 1)) * steps_per_epoch;
            bar = Some(out.progress(
                total as u64,
                "{msg} {bar:30} {pos}/{len} steps [{elapsed_precise}<{eta_precise}, {per_sec}]",
            ));
        }
        runs::Progress::Step { epoch, loss } => {
            last_loss = 0.9 * last_loss + 0.1 * loss;
            if let Some(b) = &bar {
                b.set_message(format!("epoch {epoch} loss {last_loss:.4}"));
                b.inc(1);
            }
        }
        runs::Progress::Epoch(m) => {
            if out.json_results {
                // One JSON line per epoch, as it ends.
                output::stdout(&format!("{}\n", output::with_kind("epoch", m)));
                return;
            }
            match &bar {
                Some(b) if !b.is_hidden() => b.println(output::epoch_line(m)),
                _ => eprintln!("{}", output::epoch_line(m)),
            }
        }
    });
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let history = match result {
        Ok(history) => history,
        Err(runs::RunError::Io(e)) => return Err(CommandError::Io(e).into()),
        Err(runs::RunError::Init(e)) => return Err(params_failure(e.to_string())),
        Err(runs::RunError::Train { error, epoch, last_good }) => {
            return Err(CommandError::TrainingDiverged { error, epoch, last_good }.into());
        }
    };
    // A picture of fresh samples from the trained model, beside its checkpoints.
    let params = runs::load_model_params(&dir, model).map_err(params_failure)?;
    if let Some(bytes) =
        figures::samples_picture(model, &plan, &params, 0, Default::default()).map_err(CommandError::Result)?
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
        init: init_report,
        frozen: spec.frozen.clone(),
    };
    out.result("train", &result, || result.to_text());
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
        return Err(CommandError::NoDataBinding { model: model.name.clone() }.into());
    }
    let plans = plans(out, path, &source, &compiled.program)?;
    let params = runs::load_model_params(params, model).map_err(params_failure)?;
    report::Trained::new(&compiled.program, &plans, &model.name, params).ok_or(Failure::Reported)
}

/// A data file and how its numbers are read.
type ReadFile<'a> = (&'a Path, FileValues);

/// A sampling limit as `eval` words it: its chains and sweeps are `--sample-chains` and `--sample-sweeps`.
fn eval_sample_flags(e: LimitError) -> LimitError {
    match e {
        LimitError::Batch { what, flag: Some(_), span, rows, values } => {
            LimitError::Batch { what, flag: Some("--sample-chains"), span, rows, values }
        }
        LimitError::Count { value, limit, unit, .. } => {
            LimitError::Count { flag: "--sample-sweeps", value, limit, unit }
        }
        other => other,
    }
}

pub fn eval(
    out: Out,
    path: &Path,
    only: Option<&str>,
    params: &Path,
    (data, ood): (Option<ReadFile>, Option<ReadFile>),
    opts: &report::EvalOptions,
) -> Result<(), Failure> {
    let trained = load_trained(out, path, only, params, "eval")?;
    if report::compares_samples(&trained) {
        let run = SampleRun { chains: opts.sample_chains, burn_in: 0, steps: opts.sweeps(&trained.plan), every: None };
        limits::check_sample(&trained.model, &trained.plan.lowered, &run, limits::available_memory())
            .map_err(|errors| limits_failure(errors.into_iter().map(eval_sample_flags).collect()))?;
    }
    let base = path.parent().unwrap_or(Path::new("."));
    let mut rows = report::rows_to_evaluate(&trained, base, data).map_err(data_failure)?;
    if let Some((file, values)) = ood {
        rows.ood = Some(report::ood_rows(&trained, base, file, values).map_err(data_failure)?);
    }
    let r = report::evaluate(&trained, &rows, opts).map_err(|e| match e {
        report::EvalError::Options(reason) => CommandError::Flag(reason),
        other => CommandError::Result(other.to_string()),
    })?;
    for w in &r.warnings {
        out.warning(w);
    }
    out.result("eval", &r, || r.to_text());
    Ok(())
}

pub fn energy(
    out: Out,
    path: &Path,
    only: Option<&str>,
    params: &Path,
    (data, values): (&Path, FileValues),
    device: DeviceKind,
) -> Result<(), Failure> {
    let trained = load_trained(out, path, only, params, "energy")?;
    let base = path.parent().unwrap_or(Path::new("."));
    let f = report::row_energies(&trained, base, data, values, device)?;
    out.result("energy", &json!({ "model": trained.model.name, "rows": f.len(), "energy": f }), || {
        output::energies_csv(&f)
    });
    Ok(())
}

pub fn fmt(out: Out, files: &[PathBuf], check_only: bool) -> Result<(), Failure> {
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
                out.note(CommandNote::Unformatted { path: path.clone() });
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
