//! The front end: source text to a syntax tree with spans, and back.
//!
//! `parse` runs the pest grammar (`grammar/ebm.pest`) into an `ast::File`;
//! `format` prints an AST canonically; `diagnostic` renders any stage's
//! errors for people or programs.

pub mod ast;
pub mod diagnostic;
pub mod format;
pub mod parse;
pub mod span;
