//! ebmc: a declarative language and compiler for energy-based models.
//!
//! The pipeline, one folder per part and one module per stage:
//!
//! - `front`: text to syntax tree and back (`parse`, `format`, `diagnostic`);
//! - `analysis`: syntax tree to checked program, factor graph and plan
//!   (`check`, `limits`, `graph`, `plan`);
//! - `ir`: a model's energy as a DAG with symbolic derivatives (`lower`,
//!   `build`, `derive`, `print`, `reference`); the plan carries it
//!   (`Plan::lowered`), so later stages never lower again;
//! - `backend`: the only code that names the tensor library (samplers,
//!   trainers, kernels); a training step is `train` (the `Trainer`) asking an
//!   objective in `objectives/` for its draw and its loss, then `optim`;
//! - `runtime`: data, training runs and their directories (`run_dir`),
//!   evaluation, the two-sample statistics it compares rows with
//!   (`compare`) and its report (`report`), whether a sampling run's chains
//!   mixed (`diagnostics`: R̂ and ESS), pictures of samples (`figures`)
//!   and exports on top of the backend;
//! - `messages`: every wording, above the stages it words;
//! - `api`: the façade a host program embeds ([`Model`], [`Rows`],
//!   [`Params`], [`Sampler`], [`Error`]; see `docs/library.md`), and `build`
//!   for checking models from a host's `build.rs`. The CLI is a thin layer
//!   over `api` and `runtime`.
//!
//! ```text
//! source ──parse::source_to_ast──▶ ast::File ──check::ast_to_program──▶ program::Program
//!                                     │                                       │
//!            canonical source ◀──format::ast_to_source          limits::check_program
//!                                                                             │
//!                                                               graph::program_to_graph
//!                                                                             ▼
//!      plan::Plan ◀──plan::graph_to_plan── graph::FactorGraph         ir::program_to_ir ──▶ ir::Lowered
//! ```
//!
//! `limits` bounds every size input can make large (`docs/limits.md`):
//! nesting before the parser runs, declared sizes after the checker, and a
//! run's chains, sweeps and memory (`limits::check_sample`,
//! `limits::check_train`) before a command allocates anything.
//!
//! Every stage is pure: it takes data and returns data or its own error type.
//! `messages` turns stage errors into `diagnostic::Diagnostic`s, which render
//! for people (codespan-reporting) or programs (JSON lines).

pub mod analysis;
pub mod api;
pub mod backend;
pub mod build;
pub mod front;
pub mod ir;
pub mod messages;
pub mod runtime;
pub mod tensor;

pub use api::{Control, Error, Event, FitOptions, Fitted, LogLikelihood, Method, Model, Params, Rows, Sampler};

use analysis::{check, limits, plan as planner, program};
use front::diagnostic::Diagnostic;
use front::{ast, format, parse};

/// A file that parsed and checked, with its warnings.
#[derive(Debug)]
pub struct Compiled {
    /// The syntax tree as parsed.
    pub ast: ast::File,
    /// The checked program.
    pub program: program::Program,
    /// The checker's warnings, as diagnostics.
    pub warnings: Vec<Diagnostic>,
}

/// Parses and checks `source`, and checks its declared sizes against the
/// limits. On failure, every diagnostic found (errors and warnings, in
/// source order within each kind).
pub fn compile(source: &str) -> Result<Compiled, Vec<Diagnostic>> {
    let ast = parse::source_to_ast(source).map_err(|e| vec![Diagnostic::from(&e)])?;
    match check::ast_to_program(&ast) {
        Ok((program, warnings)) => {
            let too_large = limits::check_program(&program);
            if !too_large.is_empty() {
                return Err(too_large
                    .iter()
                    .map(Diagnostic::from)
                    .chain(warnings.iter().map(Diagnostic::from))
                    .collect());
            }
            Ok(Compiled { ast, program, warnings: warnings.iter().map(Diagnostic::from).collect() })
        }
        Err(problems) => Err(problems.iter().map(Diagnostic::from).collect()),
    }
}

/// Everything `ebmc check` reports: `compile`, then the planner's checks of
/// every model (normalisability, objectives, sampler overrides). `Ok` holds
/// the warnings of both stages.
pub fn check_source(source: &str) -> Result<Vec<Diagnostic>, Vec<Diagnostic>> {
    let compiled = compile(source)?;
    match plan(&compiled.program) {
        Ok((_, warnings)) => Ok(compiled.warnings.into_iter().chain(warnings).collect()),
        Err(problems) => {
            let mut all: Vec<Diagnostic> = problems.into_iter().chain(compiled.warnings).collect();
            all.sort_by_key(|d| !d.is_error());
            Err(all)
        }
    }
}

/// Plans every model of a compiled program: samplers, summed-out latents,
/// objective checks. Warnings come back with the plans.
pub fn plan(program: &program::Program) -> Result<(Vec<planner::Plan>, Vec<Diagnostic>), Vec<Diagnostic>> {
    match planner::program_to_plans(program) {
        Ok((plans, warnings)) => Ok((plans, warnings.iter().map(Diagnostic::from).collect())),
        Err(problems) => Err(problems.iter().map(Diagnostic::from).collect()),
    }
}

/// Formats `source` canonically, or returns its syntax error.
pub fn format_source(source: &str) -> Result<String, Diagnostic> {
    let ast = parse::source_to_ast(source).map_err(|e| Diagnostic::from(&e))?;
    Ok(format::ast_to_source(&ast, source))
}
