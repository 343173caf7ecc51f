//! The binary's own modules: what the flags are (`args`), how results and
//! errors are printed (`output`) and each subcommand as calls into the
//! library (`commands`). None of it is part of the library a host embeds.

pub mod args;
pub mod commands;
pub mod output;
