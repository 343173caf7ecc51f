//! Encoders for samples and data leaving ebmc: CSV, NPY and PNG image grids.
//! Each returns bytes; the caller decides where they go.

use crate::analysis::program::{Domain, Model};
use crate::tensor::Tensors;
use std::fmt::Write;

/// Column names and per-row values of the visible variables: one column per
/// unit, a categorical unit as its category index.
pub fn visible_table(model: &Model, samples: &Tensors) -> (Vec<String>, Vec<Vec<f32>>) {
    let mut names = Vec::new();
    let rows = samples.values().next().map_or(0, |t| t.shape[0]);
    let mut table = vec![Vec::new(); rows];
    for v in model.variables.iter().filter(|v| v.role == crate::front::ast::Role::Visible) {
        let t = &samples[&v.name];
        let per: usize = v.shape.iter().product();
        match v.domain {
            Domain::Categorical { categories } => {
                let units = per / categories;
                names.extend((0..units).map(|u| if units == 1 { v.name.clone() } else { format!("{}{u}", v.name) }));
                for (r, row) in table.iter_mut().enumerate() {
                    for u in 0..units {
                        let one_hot = &t.data[r * per + u * categories..r * per + (u + 1) * categories];
                        let k = one_hot
                            .iter()
                            .enumerate()
                            .fold(0, |best, (i, x)| if *x > one_hot[best] { i } else { best });
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

/// An 8-bit PNG of `pixels`, rows top to bottom, in memory.
fn encode_png(pixels: &[u8], width: usize, height: usize, colour: png::ColorType) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, width as u32, height as u32);
        enc.set_color(colour);
        enc.set_depth(png::BitDepth::Eight);
        // Cannot fire: the encoder writes to a Vec<u8>.
        let mut writer = enc.write_header().expect("writing to memory");
        writer.write_image_data(pixels).expect("writing to memory");
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
    encode_png(&pixels, img_w, img_h, png::ColorType::Grayscale)
}

/// A heat map of a 2-D density with points drawn over it: `log_density`
/// holds `resolution`² values on the grid's midpoints over `[low, high]`²,
/// first coordinate the outer index (drawn left to right), second the inner
/// (drawn bottom to top). Density is shown relative to its maximum on a
/// dark-to-light scale; points outside the square are left out.
pub fn density_png(log_density: &[f64], resolution: usize, (low, high): (f64, f64), points: &[[f32; 2]]) -> Vec<u8> {
    const SCALE: usize = 2;
    // A dark purple to pale yellow ramp (after matplotlib's "magma").
    const RAMP: [[f64; 3]; 5] =
        [[0.0, 0.0, 4.0], [81.0, 18.0, 124.0], [183.0, 55.0, 121.0], [252.0, 137.0, 97.0], [252.0, 253.0, 191.0]];
    let side = resolution * SCALE;
    let top = log_density.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let mut pixels = vec![0u8; side * side * 3];
    for (k, ld) in log_density.iter().enumerate() {
        let (i, j) = (k / resolution, k % resolution);
        let t = if top.is_finite() { (ld - top).exp() } else { 0.0 } * (RAMP.len() - 1) as f64;
        let lower = (t.floor() as usize).min(RAMP.len() - 2);
        let f = t - lower as f64;
        let colour: Vec<u8> =
            (0..3).map(|c| (RAMP[lower][c] * (1.0 - f) + RAMP[lower + 1][c] * f).round() as u8).collect();
        let (x0, y0) = (i * SCALE, (resolution - 1 - j) * SCALE);
        for y in y0..y0 + SCALE {
            for x in x0..x0 + SCALE {
                pixels[(y * side + x) * 3..(y * side + x) * 3 + 3].copy_from_slice(&colour);
            }
        }
    }
    let to_pixel = |v: f32| ((f64::from(v) - low) / (high - low) * side as f64).floor();
    for [a, b] in points {
        let (x, y) = (to_pixel(*a), side as f64 - 1.0 - to_pixel(*b));
        if !(0.0..side as f64).contains(&x) || !(0.0..side as f64).contains(&y) {
            continue;
        }
        let (x, y) = (x as usize, y as usize);
        for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
            let (px, py) = ((x + dx).min(side - 1), (y + dy).min(side - 1));
            pixels[(py * side + px) * 3..(py * side + px) * 3 + 3].copy_from_slice(&[80, 220, 255]);
        }
    }
    encode_png(&pixels, side, side, png::ColorType::Rgb)
}

/// Images of one visible variable, scaled to [0, 1] by its domain: binary and
/// [0, 1]-bounded as they are, spins from [-1, 1], categories by index, other
/// reals by the range of the samples.
pub fn images_of(model: &Model, samples: &Tensors, var: &str) -> Vec<Vec<f32>> {
    // Cannot fire: callers pass a variable of the model (the CLI picks it from the plan).
    let v = model.variable(var).expect("variable exists");
    let t = &samples[var];
    let rows = t.shape[0];
    let per: usize = v.shape.iter().product();
    let values: Vec<Vec<f32>> = match v.domain {
        Domain::Categorical { categories } => (0..rows)
            .map(|r| {
                t.data[r * per..(r + 1) * per]
                    .chunks(categories)
                    .map(|c| {
                        c.iter().enumerate().fold(0, |best, (i, x)| if *x > c[best] { i } else { best }) as f32
                            / (categories - 1) as f32
                    })
                    .collect()
            })
            .collect(),
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

/// 3x5 pixel glyphs (rows top to bottom, 3 bits each, high bit left).
fn glyph(c: char) -> [u8; 5] {
    match c.to_ascii_uppercase() {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 1, 1],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        '.' => [0, 0, 0, 0, 2],
        '-' => [0, 0, 7, 0, 0],
        '(' => [1, 2, 2, 2, 1],
        ')' => [4, 2, 2, 2, 4],
        'A' => [2, 5, 7, 5, 5],
        'B' => [6, 5, 6, 5, 6],
        'C' => [7, 4, 4, 4, 7],
        'D' => [6, 5, 5, 5, 6],
        'E' => [7, 4, 6, 4, 7],
        'F' => [7, 4, 6, 4, 4],
        'G' => [7, 4, 5, 5, 7],
        'H' => [5, 5, 7, 5, 5],
        'I' => [7, 2, 2, 2, 7],
        'K' => [5, 5, 6, 5, 5],
        'L' => [4, 4, 4, 4, 7],
        'M' => [5, 7, 7, 5, 5],
        'N' => [6, 5, 5, 5, 5],
        'O' => [7, 5, 5, 5, 7],
        'P' => [7, 5, 7, 4, 4],
        'R' => [6, 5, 6, 5, 5],
        'S' => [7, 4, 7, 1, 7],
        'T' => [7, 2, 2, 2, 2],
        'U' => [5, 5, 5, 5, 7],
        'V' => [5, 5, 5, 5, 2],
        'W' => [5, 5, 7, 7, 5],
        'X' => [5, 5, 2, 5, 5],
        'Y' => [5, 5, 2, 2, 2],
        _ => [0; 5],
    }
}

struct Canvas {
    w: usize,
    h: usize,
    rgb: Vec<u8>,
}

impl Canvas {
    fn set(&mut self, x: usize, y: usize, c: [u8; 3]) {
        if x < self.w && y < self.h {
            self.rgb[(y * self.w + x) * 3..(y * self.w + x) * 3 + 3].copy_from_slice(&c);
        }
    }

    /// Text at 2x scale, top-left at (x, y).
    fn text(&mut self, x: usize, y: usize, s: &str, c: [u8; 3]) {
        for (i, ch) in s.chars().enumerate() {
            for (row, bits) in glyph(ch).iter().enumerate() {
                for col in 0..3 {
                    if bits >> (2 - col) & 1 == 1 {
                        for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                            self.set(x + i * 8 + col * 2 + dx, y + row * 2 + dy, c);
                        }
                    }
                }
            }
        }
    }

    fn line(&mut self, (x0, y0): (f64, f64), (x1, y1): (f64, f64), c: [u8; 3]) {
        let n = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as usize).max(1);
        for i in 0..=n {
            let t = i as f64 / n as f64;
            let (x, y) = (x0 + t * (x1 - x0), y0 + t * (y1 - y0));
            self.set(x.round() as usize, y.round() as usize, c);
            self.set(x.round() as usize, y.round() as usize + 1, c);
        }
    }
}

fn short(x: f64) -> String {
    if x.abs() >= 1e4 || (x != 0.0 && x.abs() < 1e-2) { format!("{x:.1E}") } else { format!("{x:.3}") }
}

/// A PNG of one panel per series, stacked: title, y range, x range and the
/// curve — a training curve to look at, not a figure to publish.
pub fn line_plots(panels: &[(&str, Vec<(f64, f64)>)]) -> Vec<u8> {
    let (w, ph) = (640usize, 220usize);
    let mut c = Canvas { w, h: ph * panels.len().max(1), rgb: vec![255; w * ph * panels.len().max(1) * 3] };
    let (left, right, top, bottom) = (90.0, 20.0, 30.0, 30.0);
    for (p, (title, points)) in panels.iter().enumerate() {
        let y0 = (p * ph) as f64;
        c.text(left as usize, p * ph + 8, title, [20, 20, 20]);
        let (x_lo, x_hi) =
            points.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), (x, _)| (a.min(*x), b.max(*x)));
        let (mut lo, mut hi) =
            points.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), (_, y)| (a.min(*y), b.max(*y)));
        if !(hi > lo) {
            lo -= 1.0;
            hi += 1.0;
        }
        let (pw, plot_h) = (w as f64 - left - right, ph as f64 - top - bottom);
        let grey = [170, 170, 170];
        c.line((left, y0 + top), (left, y0 + top + plot_h), grey);
        c.line((left, y0 + top + plot_h), (left + pw, y0 + top + plot_h), grey);
        c.text(4, p * ph + top as usize, &short(hi), [80, 80, 80]);
        c.text(4, p * ph + (top + plot_h) as usize - 10, &short(lo), [80, 80, 80]);
        if points.is_empty() {
            continue;
        }
        c.text(left as usize, p * ph + ph - 22, &short(x_lo), [80, 80, 80]);
        c.text(w - 80, p * ph + ph - 22, &short(x_hi), [80, 80, 80]);
        let span = if x_hi > x_lo { x_hi - x_lo } else { 1.0 };
        let at = |(x, y): (f64, f64)| (left + (x - x_lo) / span * pw, y0 + top + (hi - y) / (hi - lo) * plot_h);
        for pair in points.windows(2) {
            c.line(at(pair[0]), at(pair[1]), [30, 90, 200]);
        }
        for pt in points {
            let (x, y) = at(*pt);
            for d in 0..3 {
                c.set(x as usize + d, y as usize, [200, 60, 30]);
            }
        }
    }
    encode_png(&c.rgb, c.w, c.h, png::ColorType::Rgb)
}
