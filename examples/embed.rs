//! A host program embedding ebmc: it compiles a model from a string, fits it
//! to rows it already holds, samples from it and scores energies. No data
//! file, no train block, no file written. Run with
//! `cargo run --example embed --no-default-features`.

use ebmc::{FitOptions, Model, Rows};

const SOURCE: &str = "
model patterns {
    visible v : binary[4];
    hidden h : binary[3];
    param W : real[4, 3] = normal(0, 0.1);
    param b : real[4] = zeros;
    param c : real[3] = zeros;
    energy e = -(v @ W @ h) - b @ v - c @ h;
}";

fn main() -> Result<(), ebmc::Error> {
    // The rows this program holds: two patterns, each 8 times.
    let patterns = [[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]];
    let data: Vec<f32> = (0..16).flat_map(|i| patterns[i % 2]).collect();
    let rows = Rows::new().with("v", data, &[16, 4])?;

    let model = Model::from_source(SOURCE)?;
    let settings = "objective = cd(k: 1); optimizer = sgd(lr: 0.1, momentum: 0.5); batch = 4;";
    let fitted = model.fit(&model.init_params(1), &rows, &FitOptions::new().settings(settings).epochs(100))?;
    let ll = model.log_likelihood(&fitted.params, &rows)?;
    println!("average log-likelihood {:.3} nats ({:?}); the best possible is {:.3}", ll.mean, ll.method, 0.5f64.ln());

    let mut sampler = model.sampler(&fitted.params, 1000, 2)?;
    let samples = sampler.run(200);
    let (v, _) = samples.get("v").expect("the sampler returns every variable");
    let seen = |p: &[f32; 4]| v.chunks(4).filter(|row| *row == p).count();
    println!("of 1000 chains: {} show the first pattern, {} the second", seen(&patterns[0]), seen(&patterns[1]));

    let probe = Rows::new().with("v", vec![1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0], &[2, 4])?;
    let free = model.free_energy(&fitted.params, &probe)?;
    println!("free energy of a training pattern {:.3}, of an unseen one {:.3}", free[0], free[1]);
    Ok(())
}
