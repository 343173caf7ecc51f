//! The `ebmc` command line: reads files, calls the library, prints results.
//! Exit codes: 0 success, 1 the input has errors, 2 the command could not run
//! (unreadable file, bad arguments).
//!
//! With `--message-format json`, stdout carries the results as JSON (one
//! document, or JSON lines for `check`'s diagnostics and `train`'s epochs)
//! and stderr carries every diagnostic and error as one JSON object a line.
//!
//! This file parses the flags and dispatches; `cli::args` defines them,
//! `cli::commands` runs each subcommand and `cli::output` prints.

mod cli;

use clap::{CommandFactory, FromArgMatches};
use cli::args::{Cli, Command, MessageFormat};
use cli::commands::{SampleArgs, TrainArgs};
use cli::output::{Failure, Out};
use codespan_reporting::term::termcolor::ColorChoice;
use ebmc::runtime::command::CommandError;
use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let json = cli::args::raw_flag(&args, "--message-format").as_deref() == Some("json");
    let clap_color = match cli::args::raw_flag(&args, "--color").as_deref() {
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
        Err(e) => return arguments_refused(&e, json),
    };
    let json = cli.message_format == MessageFormat::Json;
    let out = Out { json_results: json, json_messages: json, pretty: false, color: cli::args::color_choice(cli.color) };
    // The deprecated `--json` of `plan` and `eval`: results as JSON, messages as before.
    let legacy = Out { json_results: true, pretty: true, ..out };
    let (out, result) = match cli.command {
        Command::Check { files } => (out, cli::commands::check(out, &files)),
        Command::Graph { file, format, model } => (out, cli::commands::graph(out, &file, format, model.as_deref())),
        Command::Plan { file, json, model, schedule } => {
            let out = if json { legacy } else { out };
            (out, cli::commands::plan(out, &file, model.as_deref(), schedule))
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
            given,
            device,
        } => {
            let opts = SampleArgs {
                params,
                chains,
                burn_in,
                steps,
                every,
                seed,
                out: samples,
                png,
                image,
                given,
                device: device.into(),
            };
            (out, cli::commands::sample(out, &file, model.as_deref(), &opts))
        }
        Command::Train { file, model, data, data_as_is, epochs, seed, out: dir, resume, device } => {
            let opts = TrainArgs {
                data: data.map(from_cwd),
                data_values: values_of(data_as_is),
                epochs,
                seed,
                out: dir,
                resume,
                device: device.into(),
            };
            (out, cli::commands::train(out, &file, model.as_deref(), opts))
        }
        Command::Eval {
            file,
            model,
            params,
            data,
            data_as_is,
            ais,
            runs,
            temperatures,
            pl_units,
            grid_low,
            grid_high,
            grid,
            ood,
            ood_as_is,
            sample_chains,
            sample_sweeps,
            seed,
            json,
            device,
        } => {
            let out = if json { legacy } else { out };
            let opts = ebmc::runtime::report::EvalOptions {
                ais,
                runs,
                temperatures,
                pl_units,
                grid_low,
                grid_high,
                grid_points: grid,
                sample_chains,
                sample_sweeps,
                seed,
                device: device.into(),
            };
            let data = data.map(from_cwd);
            let data = data.as_deref().map(|d| (d, values_of(data_as_is)));
            let ood = ood.map(from_cwd);
            let ood = ood.as_deref().map(|d| (d, values_of(ood_as_is)));
            (out, cli::commands::eval(out, &file, model.as_deref(), &params, (data, ood), &opts))
        }
        Command::Energy { file, model, params, data, data_as_is, device } => {
            let data = from_cwd(data);
            let data = (data.as_path(), values_of(data_as_is));
            (out, cli::commands::energy(out, &file, model.as_deref(), &params, data, device.into()))
        }
        Command::Fmt { files, check } => (out, cli::commands::fmt(out, &files, check)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Reported) => ExitCode::from(1),
        Err(Failure::Error(e)) => {
            out.error(&e);
            ExitCode::from(e.exit_code())
        }
    }
}

/// Prints clap's refusal of the arguments with its code: as a JSON line, or
/// clap's own text (plain, so the code can be put in after `error`).
fn arguments_refused(e: &clap::Error, json: bool) -> ExitCode {
    let text = e.render().to_string();
    let message = text.lines().find(|l| !l.trim().is_empty()).unwrap_or_default().trim_start_matches("error: ");
    let error = CommandError::Arguments { message: message.to_string() };
    if json {
        let out = Out { json_results: true, json_messages: true, pretty: false, color: ColorChoice::Never };
        out.error(&error);
    } else {
        let code = ebmc::front::diagnostic::Diagnostic::from(&error).code;
        eprint!("{}", text.strip_prefix("error: ").map_or(text.clone(), |t| format!("error[{code}]: {t}")));
    }
    ExitCode::from(error.exit_code())
}

/// A `--data` path as the user typed it, relative to the working directory
/// (the train block's own paths are relative to the model file instead).
fn from_cwd(path: PathBuf) -> PathBuf {
    std::path::absolute(&path).unwrap_or(path)
}

/// How `--data` files are read: `--data-as-is` keeps their numbers as they are.
fn values_of(data_as_is: bool) -> ebmc::runtime::data::FileValues {
    if data_as_is { ebmc::runtime::data::FileValues::AsIs } else { ebmc::runtime::data::FileValues::AsTrained }
}
