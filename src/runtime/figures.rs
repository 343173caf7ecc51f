//! Pictures of a model's samples: which picture a model allows (a grid of
//! images, or samples over a 2-D density) and the PNG bytes of it. Nothing
//! here writes files; the caller decides where the bytes go.

use crate::analysis::plan::Plan;
use crate::analysis::program::Model;
use crate::backend::{DeviceKind, Sampler};
use crate::front::ast::Role;
use crate::runtime::export::ImageLayout;
use crate::runtime::sample::{Snapshot, Trace};
use crate::runtime::{evaluate, export};
use crate::tensor::Tensors;

/// What a PNG of samples shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Picture {
    /// A grid of images of an image-shaped visible variable, with their layout.
    Images(String, ImageLayout),
    /// The samples of a 2-D real visible variable over the model's density.
    Density(String),
}

/// The picture `model`'s samples allow: images of the first visible
/// variable that is image-shaped (see `export::image_shape`; `image` gives
/// a height × width), else the density when, latents summed out, one 2-D real
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

/// A picture of `var`'s images: the PNG, how many images it shows, and the
/// range of sampled values shaded black to white when `var` is an unbounded
/// real (other domains are shaded by their own values).
#[derive(Debug, Clone, PartialEq)]
pub struct ImageGrid {
    /// The PNG's bytes.
    pub png: Vec<u8>,
    /// Images drawn.
    pub count: usize,
    /// The sampled range drawn from black to white, for an unbounded real.
    pub range: Option<(f32, f32)>,
}

/// The PNG of `var`'s images in the last state of the chains, as square a grid as it can be.
pub fn image_grid(model: &Model, state: &Tensors, var: &str, layout: ImageLayout) -> ImageGrid {
    let (images, range) = export::images_of(model, &[state], var);
    let png = export::png_grid(&images, layout, export::square_columns(images.len()));
    ImageGrid { png, count: images.len(), range }
}

/// Chains drawn over time by `ebmc sample`: the first 8 (rows) after 10
/// sweeps spread over the run (columns), so each picture keeps at most 80
/// images whatever the run's length.
pub fn chains_trace(var: &str) -> Trace {
    Trace { var: var.to_string(), chains: 8, count: 10 }
}

/// The PNG of recorded chains over time: one row per chain, one column per
/// snapshot from the first to the last, shaded on one scale over them all.
pub fn chains_grid(model: &Model, snapshots: &[Snapshot], var: &str, layout: ImageLayout) -> ImageGrid {
    let states: Vec<&Tensors> = snapshots.iter().map(|s| &s.state).collect();
    let (by_snapshot, range) = export::images_of(model, &states, var);
    let chains = by_snapshot.len() / snapshots.len().max(1);
    // images_of lists snapshot by snapshot; the grid wants chain by chain.
    let images: Vec<Vec<f32>> = (0..chains)
        .flat_map(|c| (0..snapshots.len()).map(move |s| s * chains + c))
        .map(|i| by_snapshot[i].clone())
        .collect();
    let png = export::png_grid(&images, layout, snapshots.len());
    ImageGrid { png, count: images.len(), range }
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
/// density, after 200 sweeps from `seed`, or the objective's `k` when
/// training's chains are short-run (`Plan::short_run`): the samples training
/// shaped. `None` when the model allows no picture.
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
    for _ in 0..plan.short_run.map_or(200, |s| s.sweeps) {
        sampler.sweep();
    }
    let bytes = match picture {
        Picture::Images(var, layout) => image_grid(model, &sampler.state(), &var, layout).png,
        Picture::Density(var) => density_picture(model, plan, params, &[sampler.state()], &var, device)?.0,
    };
    Ok(Some(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::program::Domain;
    use crate::runtime::export::tests::{decode, model_of, variable};
    use crate::tensor::HostTensor;

    #[test]
    fn chains_over_time_are_rows_of_chains_and_columns_of_sweeps() {
        // 2 chains of a [1, 1, 1] image over 3 snapshots; chain c after
        // snapshot k holds (c + 2k) / 5, so each cell says where it belongs.
        let m = model_of(vec![variable("x", Domain::Real { bounds: Some((0.0, 1.0)) }, vec![1, 1, 1])]);
        let snapshots: Vec<Snapshot> = (0..3)
            .map(|k| {
                let data = (0..2).map(|c| (c + 2 * k) as f32 / 5.0).collect();
                let state = Tensors::from([("x".to_string(), HostTensor::new(vec![2, 1, 1, 1], data))]);
                Snapshot { sweep: 1 + 4 * k, state }
            })
            .collect();
        let layout = ImageLayout::grey(1, 1);
        let grid = chains_grid(&m, &snapshots, "x", layout);
        assert_eq!((grid.count, grid.range), (6, None));
        let (w, h, _, pixels) = decode(&grid.png);
        // One value is 48 pixels; cells 50 apart after a 2-pixel border.
        assert_eq!((w, h), (3 * 50 + 2, 2 * 50 + 2));
        for c in 0..2 {
            for k in 0..3 {
                let (x, y) = (2 + 50 * k + 24, 2 + 50 * c + 24);
                let want = ((c + 2 * k) as f32 / 5.0 * 255.0).round() as u8;
                assert_eq!(pixels[y * w + x], want, "chain {c}, snapshot {k}");
            }
        }
    }
}
