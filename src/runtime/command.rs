//! What an `ebmc` command can fail with, as plain data. The command line
//! maps each failure to one of these and `messages.rs` words it, with the
//! same table and the stable codes E0901–E0907 of docs/diagnostics.md
//! ("Command errors"), so a host that drives the same runtime functions can
//! report them as the CLI does.

use crate::analysis::limits::LimitError;
use crate::backend::TrainError;
use crate::runtime::data::DataError;
use crate::runtime::sample::Diverged;
use std::path::PathBuf;

/// A command's failure without a source span.
#[derive(Debug)]
pub enum CommandError {
    /// A file that cannot be read.
    Read { path: PathBuf, reason: String },
    /// An output that cannot be created.
    Write { path: PathBuf, reason: String },
    /// An output path that names a directory.
    WriteDirectory { path: PathBuf },
    /// The result cannot be written to stdout (other than a reader that has gone).
    Stdout { reason: String },
    /// A file operation of the runtime that failed; its reason names the file.
    Io(String),
    /// Arguments the parser refused, in its words.
    Arguments { message: String },
    /// An output whose extension names none of `formats`.
    OutputFormat { path: PathBuf, formats: Vec<&'static str> },
    /// `--png` with no image-shaped variable and no 2-D density to draw.
    NoPicture,
    /// A flag the runtime refused for this model or run; its reason says why.
    Flag(String),
    /// `--model NAME` names no model of the file.
    NoSuchModel { name: String, known: Vec<String> },
    /// A command that needs one model, on a file that declares none.
    NoModel { command: String },
    /// A command that needs one model, on a file with several and no `--model`.
    SeveralModels { command: String, models: Vec<String> },
    /// `train` on a model without a train block.
    NoTrainBlock { model: String },
    /// `eval`/`energy` on a model without a train block, which binds the data.
    NoDataBinding { model: String },
    /// Data that cannot be read (exit 2) or does not fit the model (exit 1).
    Data(DataError),
    /// Parameters that cannot be read or do not fit the model.
    Params(String),
    /// A sampled state that is not finite.
    SamplingDiverged(Diverged),
    /// A training run that failed at `epoch`; `last_good` is its last good checkpoint.
    TrainingDiverged { error: TrainError, epoch: usize, last_good: Option<PathBuf> },
    /// A result the backend could not compute.
    Result(String),
    /// The energy of a row (counted from 1) that is not finite.
    NonFiniteEnergy { row: usize, value: f64 },
    /// Limits a run passes on this machine (never empty); each keeps its own code.
    Limits(Vec<LimitError>),
}

/// Where an error is: file, and the row or line and the column when known.
pub type Location<'a> = (Option<&'a str>, Option<usize>, Option<usize>);

impl CommandError {
    /// 1 when the input has errors, 2 when the command could not run.
    pub fn exit_code(&self) -> u8 {
        use CommandError::*;
        match self {
            NoSuchModel { .. }
            | NoModel { .. }
            | SeveralModels { .. }
            | NoTrainBlock { .. }
            | NoDataBinding { .. }
            | SamplingDiverged(_)
            | TrainingDiverged { .. } => 1,
            Data(DataError::Read { .. }) => 2,
            Data(_) => 1,
            _ => 2,
        }
    }

    /// The data file, row and column a data error is at; nothing for the others.
    pub fn location(&self) -> Location<'_> {
        use DataError::*;
        let CommandError::Data(e) = self else {
            return (None, None, None);
        };
        match e {
            ColumnCount { source, row, .. } => (Some(source), Some(*row), None),
            NotANumber { source, row, column, .. }
            | NotFinite { source, row, column }
            | OutOfRange { source, row, column, .. }
            | MixedHeader { source, row, column, .. }
            | OutOfDomain { source, row, column, .. } => (Some(source), Some(*row), Some(*column)),
            Read { source, .. }
            | Empty { source }
            | Format { source, .. }
            | AlreadyBinary { source, .. }
            | Shape { source, .. }
            | RecordSize { source, .. }
            | ImageBinding { source, .. }
            | NoLabels { source, .. } => (Some(source), None, None),
            RowCounts { labels, .. } => (Some(labels), None, None),
            Split { .. } | NoSource { .. } => (None, None, None),
        }
    }
}

/// A line a command prints for people beside its result: what it assumed,
/// or what to run next. Not an error; nothing in JSON.
#[derive(Debug, Clone, PartialEq)]
pub enum CommandNote {
    /// `sample` without `--params` runs the model's initialisers.
    DefaultParams { seed: u64 },
    /// `fmt --check` found a file that is not formatted.
    Unformatted { path: PathBuf },
    /// The picture at `path` of an unbounded real, shaded from the samples' own range.
    ImageRange { path: PathBuf, var: String, lo: f32, hi: f32 },
    /// A staged run's start: what `init` loaded, kept and ignored.
    Init(crate::runtime::train::InitReport),
    /// A staged run's `freeze`: the parameters held fixed, and those trained.
    Frozen { frozen: Vec<String>, trained: Vec<String> },
}

/// A count or size flag that does not parse or is out of range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlagError {
    /// Not a whole number of `unit`.
    NotACount { text: String, unit: &'static str },
    /// Below the flag's least value.
    BelowMin { min: u128 },
    /// Past the flag's limit (docs/limits.md).
    PastLimit { value: u128, unit: &'static str, max: u128 },
    /// Within the limit but wider than this machine's `usize`.
    TooWide { value: u128 },
    /// An image size that is not `HxW`; `part` is the side that is not a size.
    ImageShape { part: Option<String> },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::front::diagnostic::Diagnostic;

    fn one_of_each() -> Vec<CommandError> {
        let data = |e| CommandError::Data(e);
        vec![
            CommandError::Read { path: "m.ebm".into(), reason: "gone".into() },
            CommandError::Arguments { message: "unexpected argument".into() },
            CommandError::NoSuchModel { name: "x".into(), known: vec!["rbm".into()] },
            data(DataError::ColumnCount { source: "d.csv".into(), row: 3, found: 2, expected: 4 }),
            CommandError::Params("no checkpoint".into()),
            CommandError::SamplingDiverged(Diverged { var: "x".into(), chain: 0, value: f32::NAN, sweeps: 10 }),
            CommandError::NonFiniteEnergy { row: 1, value: f64::INFINITY },
        ]
    }

    #[test]
    fn every_command_error_code_is_documented() {
        let doc = include_str!("../../docs/diagnostics.md");
        let codes: Vec<&str> = one_of_each().iter().map(|e| Diagnostic::from(e).code).collect();
        assert_eq!(codes, ["E0901", "E0902", "E0903", "E0904", "E0905", "E0906", "E0907"]);
        for c in codes {
            assert!(doc.contains(&format!("| {c} |")), "{c} is not in docs/diagnostics.md");
        }
    }

    #[test]
    fn a_data_error_keeps_its_place_and_its_help_lines_become_help() {
        let e = CommandError::Data(DataError::ColumnCount { source: "d.csv".into(), row: 3, found: 2, expected: 4 });
        let d = Diagnostic::from(&e);
        assert_eq!(d.message, "d.csv:3: 2 columns, expected 4");
        assert!(d.help.is_some_and(|h| h.starts_with("the bound variables take 4 columns")));
        assert_eq!(e.location(), (Some("d.csv"), Some(3), None));
        assert_eq!(e.exit_code(), 1);
        let unreadable = CommandError::Data(DataError::Read { source: "d.csv".into(), reason: "gone".into() });
        assert_eq!((Diagnostic::from(&unreadable).code, unreadable.exit_code()), ("E0901", 2));
    }

    #[test]
    fn several_limits_read_as_one_error_whose_help_lists_the_others() {
        let limit = |value| LimitError::Count { flag: "--steps", value, limit: 10, unit: "sweeps" };
        let e = CommandError::Limits(vec![limit(20), limit(30)]);
        let text = e.to_string();
        assert!(text.starts_with("error[E0506]: --steps: 20 sweeps in all (limit 10)"), "{text}");
        assert!(text.contains("\n  help: use at most 10 sweeps\n  help: also [E0506] --steps: 30 sweeps"), "{text}");
        assert_eq!(e.exit_code(), 2);
    }
}
