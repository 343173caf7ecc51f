//! Analysis: a syntax tree to a checked program, its factor graph and its
//! inference plan.
//!
//! `check` resolves names, types and shapes and binds options against the
//! `schema` table into a `program::Program`; `limits` bounds every size the
//! input can make large; `graph` builds the factor graph; `plan` chooses the
//! samplers and sums latents out.

pub mod check;
pub mod gaussian;
pub mod graph;
pub mod limits;
pub mod plan;
pub mod program;
pub mod schema;
