//! Inpainting with clamped sampling: trains `models/rbm.ebm` on the bundled
//! digits as its train block says, holds the top half of each held-out digit
//! (`v[0..32]`, the first four of eight pixel rows) and samples the bottom
//! half and the hidden units given it. It prints how many bottom-half pixels
//! the inpainted digits get right, against the same chains sampled with
//! nothing held, and draws a PNG grid: in each band of four rows, the true
//! digits, their top halves (the bottom grey), and two inpaintings of each.
//! Run with `cargo run --release --example inpaint_digits [out.png]`.

use ebmc::runtime::figures;
use ebmc::tensor::{HostTensor, Tensors};
use ebmc::{FitOptions, Model, Rows};

/// Chains per held-out digit, and sweeps each chain runs.
const CHAINS_EACH: usize = 4;
const SWEEPS: usize = 200;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args().nth(1).unwrap_or_else(|| "inpainted.png".into());
    let model = Model::from_file("models/rbm.ebm")?;
    let (train, test) = model.train_data("models")?;
    let test = test.ok_or("the train block holds out a test split")?;
    let fitted = model.fit(&model.init_params(7), &train, &FitOptions::new())?;
    let (digits, shape) = test.get("v").ok_or("the rows bind v")?;
    let n = shape[0];
    let tops: Vec<f32> = digits.chunks(64).flat_map(|d| d[..32].to_vec()).collect();

    // Chain i holds digit i mod n: CHAINS_EACH chains per digit.
    let chains = n * CHAINS_EACH;
    let mut sampler = model.sampler(&fitted.params, chains, 1)?;
    sampler.clamp_part("v[0..32]", &tops)?;
    let inpainted = sampler.run(SWEEPS);
    let mut free = model.sampler(&fitted.params, chains, 1)?;
    let unclamped = free.run(SWEEPS);

    // The share of bottom-half pixels equal to the true digit's.
    let right = |rows: &Rows| {
        let (v, _) = rows.get("v").expect("every variable is sampled");
        let hits: usize =
            (0..chains).map(|c| (32..64).filter(|&p| v[c * 64 + p] == digits[(c % n) * 64 + p]).count()).sum();
        hits as f64 / (chains * 32) as f64
    };
    println!(
        "{n} held-out digits, {CHAINS_EACH} chains each, {SWEEPS} sweeps: bottom-half pixels right {:.3} with the top half held, {:.3} with nothing held",
        right(&inpainted),
        right(&unclamped)
    );

    // Four bands of 8 digits: true, top half only, two inpaintings.
    let (v, _) = inpainted.get("v").expect("every variable is sampled");
    let mut grid = Vec::new();
    for band in 0..2 {
        let picked: Vec<usize> = (band * 8..band * 8 + 8).collect();
        for &d in &picked {
            grid.extend_from_slice(&digits[d * 64..d * 64 + 64]);
        }
        for &d in &picked {
            grid.extend_from_slice(&digits[d * 64..d * 64 + 32]);
            grid.extend(std::iter::repeat_n(0.5, 32));
        }
        for k in 0..2 {
            for &d in &picked {
                let c = d + k * n;
                grid.extend_from_slice(&v[c * 64..c * 64 + 64]);
            }
        }
    }
    let compiled = &model.graph().model;
    let Some(figures::Picture::Images(var, layout)) = figures::picture_of(compiled, model.plan(), None) else {
        return Err("the RBM's visible units are not image-shaped".into());
    };
    let state = Tensors::from([(var.clone(), HostTensor::new(vec![grid.len() / 64, 64], grid))]);
    let picture = figures::image_grid(compiled, &state, &var, layout);
    std::fs::write(&out, &picture.png)?;
    println!("wrote {} images to {out}", picture.count);
    Ok(())
}
