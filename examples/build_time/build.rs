//! Checks and plans the crate's models when the crate is built: a broken
//! model fails the build with ebmc's usual diagnostic, and editing a model
//! reruns this script.

fn main() -> std::process::ExitCode {
    ebmc::build::check_models(&["models/coin_flips.ebm"])
}
