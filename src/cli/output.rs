//! How results and errors are printed: as text for people, or with
//! `--message-format json` as JSON on stdout and JSON lines on stderr
//! (docs/cli.md). Every wording of an error comes from `ebmc::messages`.

use codespan_reporting::term::termcolor::{ColorChoice, StandardStream};
use ebmc::front::diagnostic::{self, Diagnostic};
use ebmc::runtime::command::CommandError;
use ebmc::runtime::diagnostics::Mixing;
use ebmc::runtime::run_dir::RunFiles;
use ebmc::runtime::train::EpochMetrics;
use serde::Serialize;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// Why a command failed: diagnostics already printed (exit 1), or an error to print.
pub enum Failure {
    Reported,
    /// Boxed: a `Result<_, Failure>` stays small on the happy path.
    Error(Box<CommandError>),
}

impl From<CommandError> for Failure {
    fn from(e: CommandError) -> Self {
        Failure::Error(Box::new(e))
    }
}

/// How this invocation prints.
#[derive(Clone, Copy)]
pub struct Out {
    /// Results as JSON on stdout.
    pub json_results: bool,
    /// Diagnostics and errors as JSON lines on stderr.
    pub json_messages: bool,
    /// The deprecated `--json`: one pretty-printed document, as it always was.
    pub pretty: bool,
    pub color: ColorChoice,
}

impl Out {
    /// The command's result: JSON (one line, with its `kind`) or the human text.
    pub fn result(&self, kind: &str, value: &impl Serialize, human: impl FnOnce() -> String) {
        if self.pretty {
            stdout(&format!("{:#}\n", with_kind(kind, value)));
        } else if self.json_results {
            stdout(&format!("{}\n", with_kind(kind, value)));
        } else {
            stdout(&human());
        }
    }

    /// A line of progress or commentary for people; nothing in JSON.
    pub fn note(&self, line: impl std::fmt::Display) {
        if !self.json_results {
            eprintln!("{line}");
        }
    }

    /// A file's diagnostics, on stderr.
    pub fn diagnostics(&self, path: &Path, source: &str, diagnostics: &[Diagnostic]) {
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

    /// An error without a source span, on stderr: worded by `ebmc::messages`, with its file, row and column.
    pub fn error(&self, e: &CommandError) {
        if self.json_messages {
            let d = Diagnostic::from(e);
            let (file, line, column) = e.location();
            let j = json!({
                "kind": "diagnostic",
                "severity": "error",
                "code": d.code,
                "message": d.message,
                "file": file,
                "line": line,
                "column": column,
                "labels": [],
                "help": d.help,
            });
            eprintln!("{j}");
        } else {
            eprintln!("{e}");
        }
    }

    pub fn warning(&self, message: &str) {
        if !self.json_messages {
            eprintln!("warning: {message}");
        }
    }

    /// A progress bar for people; hidden in JSON.
    pub fn progress(&self, len: u64, template: &str) -> indicatif::ProgressBar {
        if self.json_results {
            return indicatif::ProgressBar::hidden();
        }
        let bar = indicatif::ProgressBar::new(len);
        if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
            bar.set_style(style);
        }
        bar
    }
}

/// Writes to stdout. A reader that has gone (`ebmc plan f | head`) ends the
/// command quietly instead of the panic `print!` would raise; any other
/// failure (a full disk) is an error, so a cut-off result never exits 0.
pub fn stdout(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => {
            let e = CommandError::Stdout { reason: e.to_string() };
            eprintln!("{e}");
            std::process::exit(e.exit_code().into());
        }
    }
}

/// `value` as a JSON object with `"kind": kind` added.
pub fn with_kind(kind: &str, value: &impl Serialize) -> Value {
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
pub fn diagnostic_json(path: &Path, source: &str, diagnostics: &[Diagnostic]) -> Vec<Value> {
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

/// The result of `check`: how many files, errors and warnings.
#[derive(Serialize)]
pub struct CheckSummary {
    pub files: usize,
    pub errors: usize,
    pub warnings: usize,
}

/// What `sample` did: sweeps, chains, MALA's or HMC's acceptance, tempering's swap rates and the files written.
#[derive(Serialize)]
pub struct SampleResult {
    pub model: String,
    pub sweeps: usize,
    pub chains: usize,
    pub acceptance: Option<f64>,
    /// The parts held at given rows (`--given`).
    pub given: Vec<HeldPart>,
    /// The Metropolis-adjusted kernels the acceptance rate is of (`MALA`, `HMC`).
    #[serde(skip)]
    pub metropolis: Vec<&'static str>,
    /// Parallel tempering's ladder, swap rates and per-replica acceptance.
    pub tempering: Option<ebmc::backend::Tempering>,
    /// R̂ and bulk ESS of each variable's summary statistics.
    pub mixing: Mixing,
    /// Why the run's figures may mislead (the chains may not have mixed).
    pub warnings: Vec<String>,
    pub samples: Option<WrittenSamples>,
    pub picture: Option<WrittenPicture>,
    /// Chains over time, beside an image grid.
    pub chains_picture: Option<WrittenChains>,
}

/// A part of a variable `sample` held at the rows of a file.
#[derive(Serialize)]
pub struct HeldPart {
    pub part: String,
    pub file: PathBuf,
}

#[derive(Serialize)]
pub struct WrittenSamples {
    pub path: PathBuf,
    pub rows: usize,
    pub columns: usize,
}

#[derive(Serialize)]
pub struct WrittenPicture {
    pub path: PathBuf,
    /// `images` or `density`.
    pub shows: &'static str,
    pub variable: String,
    /// Images drawn, or samples over the density.
    pub count: usize,
    /// Height and width of each image.
    pub size: Option<(usize, usize)>,
    /// Channels of each image: 1 (grey) or 3 (RGB).
    pub channels: Option<usize>,
    /// The sampled range shaded from black to white, for an unbounded real.
    pub range: Option<(f32, f32)>,
}

/// The picture of chains over time `sample` wrote beside an image grid.
#[derive(Serialize)]
pub struct WrittenChains {
    pub path: PathBuf,
    pub variable: String,
    /// Rows of the grid: the first chains of the run.
    pub chains: usize,
    /// Columns of the grid: the sweep after which each was drawn.
    pub sweeps: Vec<usize>,
    /// The sampled range shaded from black to white, for an unbounded real.
    pub range: Option<(f32, f32)>,
}

impl SampleResult {
    pub fn to_text(&self) -> String {
        let mut s = format!("{} sweeps of {} chains of model {}\n", self.sweeps, self.chains, self.model);
        for h in &self.given {
            s += &format!("{} held at the rows of {}\n", h.part, h.file.display());
        }
        if let Some(rate) = self.acceptance {
            s += &ebmc::messages::acceptance_line(&self.metropolis, rate, self.tempering.is_some());
            s.push('\n');
        }
        for line in self.tempering.iter().flat_map(ebmc::messages::tempering_lines) {
            s += &line;
            s.push('\n');
        }
        for line in ebmc::messages::mixing_lines(&self.mixing) {
            s += &line;
            s.push('\n');
        }
        if let Some(w) = &self.samples {
            s += &format!("wrote {} samples ({} columns) to {}\n", w.rows, w.columns, w.path.display());
        }
        if let Some(p) = &self.picture {
            s += &match p.size {
                Some((h, w)) => {
                    let colour = if p.channels == Some(3) { ", RGB" } else { "" };
                    format!("wrote {} images of {} ({h}x{w}{colour}) to {}\n", p.count, p.variable, p.path.display())
                }
                None => format!(
                    "wrote {} samples of {} over the model's density to {}\n",
                    p.count,
                    p.variable,
                    p.path.display()
                ),
            };
        }
        if let Some(c) = &self.chains_picture {
            let (first, last) = (c.sweeps.first().unwrap_or(&0), c.sweeps.last().unwrap_or(&0));
            s += &format!(
                "wrote {} chains of {} at {} sweeps ({first} to {last}) to {}\n",
                c.chains,
                c.variable,
                c.sweeps.len(),
                c.path.display()
            );
        }
        s
    }
}

/// What `train` did: the run's size, its last epoch and its files.
#[derive(Serialize)]
pub struct TrainResult {
    pub model: String,
    pub rows: usize,
    pub held_out: usize,
    pub objective: String,
    pub epochs: usize,
    pub seconds: f64,
    pub last: Option<EpochMetrics>,
    /// Which rows `last.log_likelihood` is of.
    pub log_likelihood_on: &'static str,
    pub files: RunFiles,
    /// What `init` loaded, on a fresh staged run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init: Option<ebmc::runtime::train::InitReport>,
    /// The parameters `freeze` held fixed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub frozen: Vec<String>,
}

impl TrainResult {
    pub fn to_text(&self) -> String {
        let mut s = format!("trained {} in {:.1}s\n", self.model, self.seconds);
        if let Some(m) = &self.last {
            let ll = m
                .log_likelihood
                .map(|l| format!(", average log-likelihood {l:.3} nats ({})", self.log_likelihood_on))
                .unwrap_or_default();
            s += &format!("final loss {:.4}{ll}\n", m.loss);
        }
        let f = &self.files;
        s += &format!("checkpoint: {}\n", f.checkpoint.display());
        s += &format!("metrics:    {}\n", f.metrics.display());
        s += &format!("curve:      {}\n", f.curve.display());
        if let Some(samples) = &f.samples {
            s += &format!("samples:    {}\n", samples.display());
        }
        s
    }
}

/// An epoch's line for people, as it ends.
pub fn epoch_line(m: &EpochMetrics) -> String {
    let ll = m.log_likelihood.map(|l| format!(", log-likelihood {l:.3} nats")).unwrap_or_default();
    format!(
        "epoch {:>3}: loss {:.4}, |grad| {:.3}, lr {:.4}{ll} ({:.2}s)",
        m.epoch, m.loss, m.grad_norm, m.lr, m.seconds
    )
}

/// Energies for people: a CSV of row numbers (from 1) and energies.
pub fn energies_csv(energies: &[f64]) -> String {
    let mut s = String::from("row,energy\n");
    for (i, e) in energies.iter().enumerate() {
        s.push_str(&format!("{},{e}\n", i + 1));
    }
    s
}

/// What `fmt` did to one file: `formatted` (left as it was), `rewritten`,
/// `unformatted` (with `--check`) or `error` (a syntax error; see stderr).
#[derive(Serialize)]
pub struct FmtFile {
    pub file: PathBuf,
    pub status: &'static str,
}
