//! The one diagnostic shape every stage reports through, and its two
//! renderings: codespan-reporting text for people, JSON lines for programs.
//! The wording itself lives in `messages.rs`.

use crate::front::span::{Span, line_col};
use codespan_reporting::diagnostic as cs;
use codespan_reporting::files::SimpleFile;
use codespan_reporting::term::{self, termcolor::WriteColor};
use serde::Serialize;

/// How serious a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Stops the command.
    Error,
    /// Reported; the command goes on.
    Warning,
}

/// A span of source marked in a diagnostic, with a note.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Label {
    /// The marked source.
    pub span: Span,
    /// The note shown at it.
    pub message: String,
    /// Whether this is the main span (else context).
    pub primary: bool,
}

/// A problem found in a source file, with its code, spans and help.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// Stable code such as `E0100`; documented in `docs/diagnostics.md`.
    pub code: &'static str,
    /// The one-line summary.
    pub message: String,
    /// Marked spans, in the order added.
    pub labels: Vec<Label>,
    /// A suggestion of what to do, shown after the spans.
    pub help: Option<String>,
}

impl Diagnostic {
    /// An error with `code` and `message`, no labels yet.
    pub fn error(code: &'static str, message: impl Into<String>) -> Self {
        Diagnostic { severity: Severity::Error, code, message: message.into(), labels: vec![], help: None }
    }

    /// A warning with `code` and `message`, no labels yet.
    pub fn warning(code: &'static str, message: impl Into<String>) -> Self {
        Diagnostic { severity: Severity::Warning, ..Diagnostic::error(code, message) }
    }

    /// Adds the main label at `span`.
    pub fn primary(mut self, span: Span, message: impl Into<String>) -> Self {
        self.labels.push(Label { span, message: message.into(), primary: true });
        self
    }

    /// Adds a context label at `span`.
    pub fn secondary(mut self, span: Span, message: impl Into<String>) -> Self {
        self.labels.push(Label { span, message: message.into(), primary: false });
        self
    }

    /// Sets the help line.
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// True for an error.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// Where the primary label starts.
    pub fn primary_span(&self) -> Span {
        self.labels.iter().find(|l| l.primary).or(self.labels.first()).map_or(Span::default(), |l| l.span)
    }

    fn to_codespan(&self) -> cs::Diagnostic<()> {
        let base = match self.severity {
            Severity::Error => cs::Diagnostic::error(),
            Severity::Warning => cs::Diagnostic::warning(),
        };
        let labels = self
            .labels
            .iter()
            .map(|l| {
                let label = if l.primary {
                    cs::Label::primary((), l.span.range())
                } else {
                    cs::Label::secondary((), l.span.range())
                };
                label.with_message(l.message.clone())
            })
            .collect();
        base.with_code(self.code)
            .with_message(self.message.clone())
            .with_labels(labels)
            .with_notes(self.help.iter().map(|h| format!("help: {h}")).collect())
    }
}

/// Renders diagnostics for a person: file name, line and column, the source
/// lines with underlined spans, and the hint.
pub fn render(
    writer: &mut dyn WriteColor,
    file_name: &str,
    source: &str,
    diagnostics: &[Diagnostic],
) -> std::io::Result<()> {
    let file = SimpleFile::new(file_name, source);
    let config = term::Config::default();
    for d in diagnostics {
        term::emit_to_write_style(writer, &config, &file, &d.to_codespan()).map_err(std::io::Error::other)?;
    }
    Ok(())
}

/// The same diagnostics as a string without colour (tests and snapshots).
pub fn render_plain(file_name: &str, source: &str, diagnostics: &[Diagnostic]) -> String {
    let mut buf = term::termcolor::NoColor::new(Vec::new());
    // Cannot fire: writing to a Vec<u8> cannot fail.
    render(&mut buf, file_name, source, diagnostics).expect("writing to memory cannot fail");
    String::from_utf8_lossy(&buf.into_inner()).into_owned()
}

#[derive(Serialize)]
struct JsonLabel<'a> {
    line: usize,
    column: usize,
    end_line: usize,
    end_column: usize,
    start: usize,
    end: usize,
    message: &'a str,
    primary: bool,
}

#[derive(Serialize)]
struct JsonDiagnostic<'a> {
    file: &'a str,
    severity: Severity,
    code: &'a str,
    message: &'a str,
    line: usize,
    column: usize,
    labels: Vec<JsonLabel<'a>>,
    help: Option<&'a str>,
}

/// One JSON object per diagnostic, one per line.
pub fn render_json(file_name: &str, source: &str, diagnostics: &[Diagnostic]) -> String {
    let mut out = String::new();
    for d in diagnostics {
        let (line, column) = line_col(source, d.primary_span().start);
        let labels = d
            .labels
            .iter()
            .map(|l| {
                let (line, column) = line_col(source, l.span.start);
                let (end_line, end_column) = line_col(source, l.span.end);
                JsonLabel {
                    line,
                    column,
                    end_line,
                    end_column,
                    start: l.span.start,
                    end: l.span.end,
                    message: &l.message,
                    primary: l.primary,
                }
            })
            .collect();
        let j = JsonDiagnostic {
            file: file_name,
            severity: d.severity,
            code: d.code,
            message: &d.message,
            line,
            column,
            labels,
            help: d.help.as_deref(),
        };
        // Cannot fire: a map of strings and numbers always serialises.
        out.push_str(&serde_json::to_string(&j).expect("diagnostics serialise"));
        out.push('\n');
    }
    out
}
