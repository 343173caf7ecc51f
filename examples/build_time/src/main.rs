//! A host program whose model was checked and planned when it was built
//! (`build.rs` fails the build on a broken model) and whose source is
//! embedded in the binary, so compiling it here cannot fail on the source.

use std::process::ExitCode;

const SOURCE: &str = include_str!("../models/coin_flips.ebm");

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), ebmc::Error> {
    let model = ebmc::Model::from_source(SOURCE)?;
    let params = model.init_params(7);
    let rows = ebmc::Rows::new().with("v", vec![1., 1., 1., 0., 0., 0., 0., 0., 0., 1., 1., 1.], &[2, 6])?;
    let free = model.free_energy(&params, &rows)?;
    let mut sampler = model.sampler(&params, 4, 7)?;
    let state = sampler.run(100);
    println!("model `{}`: free energies {free:.4?}", model.name());
    println!("first chain after 100 sweeps: v = {:?}", state.row("v", 0).unwrap_or_default());
    Ok(())
}
