//! The runtime: what runs a planned model on data. Data sources, training
//! runs (epochs, checkpoints, locks), evaluation and exports. It drives the
//! `backend`, which alone names the tensor library.

pub mod command;
pub mod compare;
pub mod data;
pub mod diagnostics;
pub mod evaluate;
pub mod export;
pub mod figures;
pub mod given;
pub mod report;
pub mod run_dir;
pub mod sample;
pub mod train;
