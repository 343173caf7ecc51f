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
