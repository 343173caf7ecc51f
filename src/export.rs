//! Encoders for samples and data leaving ebmc: CSV, NPY and PNG image grids.
//! Each returns bytes; the caller decides where they go.

use crate::program::{Domain, Model};
use crate::tensor::Tensors;
use std::fmt::Write;

/// Column names and per-row values of the visible variables: one column per
/// unit, a categorical unit as its category index.
pub fn visible_table(model: &Model, samples: &Tensors) -> (Vec<String>, Vec<Vec<f32>>) {
    let mut names = Vec::new();
    let rows = samples.values().next().map_or(0, |t| t.shape[0]);
    let mut table = vec![Vec::new(); rows];
    for v in model.variables.iter().filter(|v| v.role == crate::ast::Role::Visible) {
        let t = &samples[&v.name];
        let per: usize = v.shape.iter().product();
        match v.domain {
            Domain::Categorical { categories } => {
                let units = per / categories;
                names.extend((0..units).map(|u| if units == 1 { v.name.clone() } else { format!("{}{u}", v.name) }));
                for (r, row) in table.iter_mut().enumerate() {
                    for u in 0..units {
                        let one_hot = &t.data[r * per + u * categories..r * per + (u + 1) * categories];
                        let k = one_hot.iter().enumerate().fold(0, |best, (i, x)| if *x > one_hot[best] { i } else { best });
                        row.push(k as f32);
                    }
                }
            }
            _ => {
                names.extend((0..per).map(|u| if per == 1 { v.name.clone() } else { format!("{}{u}", v.name) }));
                for (r, row) in table.iter_mut().enumerate() {
                    row.extend_from_slice(&t.data[r * per..(r + 1) * per]);
                }
            }
        }
    }
    (names, table)
}

pub fn csv(names: &[String], rows: &[Vec<f32>]) -> String {
    let mut out = names.join(",");
    out.push('\n');
    for row in rows {
        let cells: Vec<String> = row.iter().map(|x| format!("{x}")).collect();
        let _ = writeln!(out, "{}", cells.join(","));
    }
    out
}

/// A 2-D little-endian f32 NPY array (format version 1.0).
pub fn npy(rows: &[Vec<f32>]) -> Vec<u8> {
    let cols = rows.first().map_or(0, Vec::len);
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({}, {}), }}", rows.len(), cols);
    // Pad so that magic (6) + version (2) + length (2) + header ends on a 64-byte boundary.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for row in rows {
        for x in row {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    out
}

/// Tiles `images` (each `height * width` values in [0, 1]) into a grayscale
/// PNG grid with a 1-pixel border, `scale` pixels per value.
pub fn png_grid(images: &[Vec<f32>], height: usize, width: usize, scale: usize) -> Vec<u8> {
    let n = images.len().max(1);
    let cols = (n as f64).sqrt().ceil() as usize;
    let rows = n.div_ceil(cols);
    let (cell_h, cell_w) = (height * scale + 1, width * scale + 1);
    let (img_h, img_w) = (rows * cell_h + 1, cols * cell_w + 1);
    let mut pixels = vec![96u8; img_h * img_w];
    for (i, image) in images.iter().enumerate() {
        let (gr, gc) = (i / cols, i % cols);
        for y in 0..height * scale {
            for x in 0..width * scale {
                let v = image[(y / scale) * width + x / scale].clamp(0.0, 1.0);
                pixels[(gr * cell_h + 1 + y) * img_w + gc * cell_w + 1 + x] = (v * 255.0).round() as u8;
            }
        }
    }
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, img_w as u32, img_h as u32);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header().expect("writing to memory");
        writer.write_image_data(&pixels).expect("writing to memory");
    }
    out
}

/// Images of one visible variable, scaled to [0, 1] by its domain: binary and
/// [0, 1]-bounded as they are, spins from [-1, 1], categories by index, other
/// reals by the range of the samples.
pub fn images_of(model: &Model, samples: &Tensors, var: &str) -> Vec<Vec<f32>> {
    let v = model.variable(var).expect("variable exists");
    let t = &samples[var];
    let rows = t.shape[0];
    let per: usize = v.shape.iter().product();
    let values: Vec<Vec<f32>> = match v.domain {
        Domain::Categorical { categories } => {
            (0..rows)
                .map(|r| {
                    t.data[r * per..(r + 1) * per]
                        .chunks(categories)
                        .map(|c| c.iter().enumerate().fold(0, |best, (i, x)| if *x > c[best] { i } else { best }) as f32 / (categories - 1) as f32)
                        .collect()
                })
                .collect()
        }
        _ => (0..rows).map(|r| t.data[r * per..(r + 1) * per].to_vec()).collect(),
    };
    let (lo, hi) = match v.domain {
        Domain::Binary | Domain::Categorical { .. } => (0.0, 1.0),
        Domain::Spin => (-1.0, 1.0),
        Domain::Real { bounds: Some((lo, hi)) } => (lo as f32, hi as f32),
        Domain::Real { bounds: None } => {
            let all = values.iter().flatten();
            let lo = all.clone().cloned().fold(f32::INFINITY, f32::min);
            let hi = all.cloned().fold(f32::NEG_INFINITY, f32::max);
            (lo, if hi > lo { hi } else { lo + 1.0 })
        }
    };
    values.into_iter().map(|img| img.into_iter().map(|x| (x - lo) / (hi - lo)).collect()).collect()
}

/// The image shape of a variable: a perfect square number of units (64 is
/// 8x8, 784 is 28x28) or the size given.
pub fn image_shape(model: &Model, var: &str, given: Option<(usize, usize)>) -> Option<(usize, usize)> {
    let v = model.variable(var)?;
    let units = match v.domain {
        Domain::Categorical { categories } => v.shape.iter().product::<usize>() / categories,
        _ => v.shape.iter().product(),
    };
    match given {
        Some((h, w)) => (h * w == units).then_some((h, w)),
        None if v.shape.len() == 2 && !matches!(v.domain, Domain::Categorical { .. }) => Some((v.shape[0], v.shape[1])),
        None => {
            let side = (units as f64).sqrt().round() as usize;
            (side * side == units && side > 1).then_some((side, side))
        }
    }
}
