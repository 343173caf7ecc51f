//! The `ebmc` command line: reads files, calls the library, prints results.
//! Exit codes: 0 success, 1 the input has errors, 2 the command could not run
//! (unreadable file, bad arguments).

use clap::{Parser, Subcommand, ValueEnum};
use codespan_reporting::term::termcolor::{ColorChoice, StandardStream};
use ebmc::diagnostic::{self, Diagnostic};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "ebmc", version, about = "Compile, train, sample and evaluate energy-based models written in the .ebm language")]
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
        match ebmc::compile(&source) {
            Ok(compiled) => report(path, &source, &compiled.warnings, format),
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

fn selected<'a>(program: &'a ebmc::program::Program, only: Option<&str>) -> Result<Vec<&'a ebmc::program::Model>, Failure> {
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

fn plans(path: &Path, source: &str, program: &ebmc::program::Program) -> Result<Vec<ebmc::plan::Plan>, Failure> {
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
    let planned = ebmc::plan::program_to_plans(&compiled.program).map(|(p, _)| p).unwrap_or_default();
    let _ = source;
    for model in models {
        let g = ebmc::graph::program_to_graph(model);
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
    let plans: Vec<_> = plans(path, &source, &compiled.program)?.into_iter().filter(|p| names.contains(&p.model)).collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&plans).expect("plans serialise"));
    } else {
        for p in &plans {
            print!("{}", p.to_text());
        }
    }
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

/// Writes through a temporary file and a rename, so an interrupted write never leaves half a file.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    let tmp = path.with_extension("ebm.tmp");
    let io = |e: std::io::Error| Failure::Io(format!("cannot write `{}`: {e}", path.display()));
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}
