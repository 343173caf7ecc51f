//! Pictures of a model's samples: which picture a model allows (a grid of
//! images, or samples over a 2-D density) and the PNG bytes of it. Nothing
//! here writes files; the caller decides where the bytes go.

use crate::analysis::plan::Plan;
use crate::analysis::program::Model;
use crate::backend::{DeviceKind, Sampler};
use crate::front::ast::Role;
use crate::runtime::{evaluate, export};
use crate::tensor::Tensors;

/// What a PNG of samples shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Picture {
    /// A grid of images of an image-shaped visible variable, with its size (height, width).
    Images(String, (usize, usize)),
    /// The samples of a 2-D real visible variable over the model's density.
    Density(String),
}

/// The picture `model`'s samples allow: images of the first visible
/// variable that is image-shaped (a square number of units, or `image`'s
/// height × width), else the density when, latents summed out, one 2-D real
/// visible variable is left. `None` when neither applies.
pub fn picture_of(model: &Model, plan: &Plan, image: Option<(usize, usize)>) -> Option<Picture> {
    let visible = || model.variables.iter().filter(|v| v.role == Role::Visible);
    if let Some((v, shape)) = visible().find_map(|v| Some((v, export::image_shape(model, &v.name, image)?))) {
        return Some(Picture::Images(v.name.clone(), shape));
    }
    let summed = plan.summed_out.as_ref().map(|m| m.summed.clone()).unwrap_or_default();
    let mut rest = model.variables.iter().filter(|v| !summed.contains(&v.name));
    match (rest.next(), rest.next()) {
        (Some(v), None)
            if v.role == Role::Visible && !v.domain.is_discrete() && v.shape.iter().product::<usize>() == 2 =>
        {
            Some(Picture::Density(v.name.clone()))
        }
        _ => None,
    }
}

/// Pixels per unit in a sample grid: small images are drawn larger so that a grid stays legible.
pub fn image_scale(height: usize, width: usize) -> usize {
    if height * width <= 256 { 4 } else { 2 }
}

/// The PNG of `var`'s images in the last state of the chains.
pub fn image_grid(model: &Model, state: &Tensors, var: &str, (height, width): (usize, usize)) -> (Vec<u8>, usize) {
    let images = export::images_of(model, state, var);
    (export::png_grid(&images, height, width, image_scale(height, width)), images.len())
}

/// A heat map of the model's density over the square the samples of `var`
/// in `states` span (padded by a tenth), with the samples drawn on it; and
/// how many samples it shows (those that are finite).
pub fn density_picture(
    model: &Model,
    plan: &Plan,
    params: &Tensors,
    states: &[Tensors],
    var: &str,
    device: DeviceKind,
) -> Result<(Vec<u8>, usize), String> {
    let points: Vec<[f32; 2]> = states
        .iter()
        .filter_map(|s| s.get(var))
        .flat_map(|t| t.data.chunks_exact(2).map(|p| [p[0], p[1]]).collect::<Vec<_>>())
        .filter(|p| p.iter().all(|x| x.is_finite()))
        .collect();
    let (lo, hi) = points
        .iter()
        .flatten()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| (lo.min(f64::from(*x)), hi.max(f64::from(*x))));
    let (lo, hi) = if hi > lo { (lo - 0.1 * (hi - lo), hi + 0.1 * (hi - lo)) } else { (-1.0, 1.0) };
    const RESOLUTION: usize = 200;
    let grid = evaluate::Grid::new(model, plan, params, lo, hi, RESOLUTION, device)?;
    let log_density: Vec<f64> = grid.free_energy.iter().map(|f| -f).collect();
    Ok((export::density_png(&log_density, RESOLUTION, (lo, hi), &points), points.len()))
}

/// The picture of fresh samples from `params` that a training run keeps
/// beside its checkpoints (`samples.png`): 64 chains for images, 500 over a
/// density, after 200 sweeps from `seed`. `None` when the model allows no picture.
pub fn samples_picture(
    model: &Model,
    plan: &Plan,
    params: &Tensors,
    seed: u64,
    device: DeviceKind,
) -> Result<Option<Vec<u8>>, String> {
    let Some(picture) = picture_of(model, plan, None) else {
        return Ok(None);
    };
    let chains = if matches!(picture, Picture::Density(_)) { 500 } else { 64 };
    let mut sampler = Sampler::new(model, plan, params, chains, seed, device)?;
    for _ in 0..200 {
        sampler.sweep();
    }
    let bytes = match picture {
        Picture::Images(var, shape) => image_grid(model, &sampler.state(), &var, shape).0,
        Picture::Density(var) => density_picture(model, plan, params, &[sampler.state()], &var, device)?.0,
    };
    Ok(Some(bytes))
}
