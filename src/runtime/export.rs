//! Encoders for samples and data leaving ebmc: CSV, NPY, PNG image grids and
//! plots (drawn with plotters). Each returns bytes; the caller decides where they go.

use crate::analysis::program::{Domain, Model};
use crate::tensor::Tensors;

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

/// A file of samples: CSV with a header row, or a 2-D NPY array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableFormat {
    /// Comma-separated, with a header row.
    Csv,
    /// A 2-D NumPy array.
    Npy,
}

impl TableFormat {
    /// The format a file name's extension names: `.npy`, else CSV.
    pub fn of(path: &std::path::Path) -> TableFormat {
        match path.extension().and_then(|e| e.to_str()) {
            Some("npy") => TableFormat::Npy,
            _ => TableFormat::Csv,
        }
    }
}

/// The visible variables of every state in `states`, one after the other,
/// as a file in `format`, with its rows and columns.
pub fn samples_file(model: &Model, states: &[Tensors], format: TableFormat) -> (Vec<u8>, usize, usize) {
    let mut names = Vec::new();
    let mut rows = Vec::new();
    for state in states {
        let (n, r) = visible_table(model, state);
        names = n;
        rows.extend(r);
    }
    let bytes = match format {
        TableFormat::Npy => npy(&rows),
        TableFormat::Csv => csv(&names, &rows).into_bytes(),
    };
    (bytes, rows.len(), names.len())
}

/// A header row of `names`, then one row per sample (values as Rust prints
/// f32: the shortest text that reads back to the same number).
pub fn csv(names: &[String], rows: &[Vec<f32>]) -> String {
    // Cannot fire (each `expect` below): the writer writes into a `Vec`, which never fails, and
    // the fields are UTF-8 names and printed numbers.
    let mut out = csv::WriterBuilder::new().terminator(csv::Terminator::Any(b'\n')).from_writer(Vec::new());
    out.write_record(names).expect("writing to memory");
    for row in rows {
        out.write_record(row.iter().map(|x| format!("{x}"))).expect("writing to memory");
    }
    String::from_utf8(out.into_inner().expect("writing to memory")).expect("the CSV is UTF-8")
}

/// A 2-D little-endian f32 NPY array, as `numpy.load` reads it.
pub fn npy(rows: &[Vec<f32>]) -> Vec<u8> {
    use npyz::WriterBuilder;
    let cols = rows.first().map_or(0, Vec::len);
    let mut out = Vec::new();
    // Cannot fire (each `expect` below): the writer writes into a `Vec`, which never fails.
    let mut writer = npyz::WriteOptions::<f32>::new()
        .default_dtype()
        .shape(&[rows.len() as u64, cols as u64])
        .writer(&mut out)
        .begin_nd()
        .expect("writing to memory");
    writer.extend(rows.iter().flatten().copied()).expect("writing to memory");
    writer.finish().expect("writing to memory");
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

/// How the units of an image-shaped variable are laid out: `channels`
/// planes (1 for grey; 3 for red, green and blue, in that order) of
/// `height` rows of `width` values, row-major.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ImageLayout {
    /// 1 (grey) or 3 (RGB).
    pub channels: usize,
    /// Rows of each plane.
    pub height: usize,
    /// Values in each row.
    pub width: usize,
}

impl ImageLayout {
    /// A grey image of `height` rows of `width` values.
    pub fn grey(height: usize, width: usize) -> ImageLayout {
        ImageLayout { channels: 1, height, width }
    }

    /// Values in one image; `None` past `usize` (a size given on the command line can be anything).
    pub fn units(&self) -> Option<usize> {
        self.channels.checked_mul(self.height)?.checked_mul(self.width)
    }
}

/// The least side of a grid cell, in pixels: a person can judge an 8x8
/// digit only when it is drawn about 48 pixels across.
const MIN_CELL_PIXELS: usize = 48;
/// Grey pixels between cells and around the grid.
const GRID_GAP: usize = 2;
/// The grey of the gaps (mid grey, apart from the black and white of binary images).
const GAP_GREY: u8 = 128;

/// Pixels per value in a grid of images of `layout`: the least whole
/// number that makes a cell at least `MIN_CELL_PIXELS` across (8x8 is
/// drawn 6 times larger, 28x28 and 32x32 twice), and 1 for large images.
pub fn cell_scale(layout: ImageLayout) -> usize {
    MIN_CELL_PIXELS.div_ceil(layout.height.max(layout.width).max(1)).max(1)
}

/// Columns of a grid of `n` cells that keeps it as square as it can be (64 cells as 8x8).
pub fn square_columns(n: usize) -> usize {
    (n.max(1) as f64).sqrt().ceil() as usize
}

/// Tiles `images` (each `channels * height * width` values in [0, 1], clamped) into a
/// PNG grid of `cols` columns, filled row by row: grey for one channel, RGB
/// for three. Each value is a square of `cell_scale(layout)` pixels, with a
/// 2-pixel grey gap between cells and around the grid.
pub fn png_grid(images: &[Vec<f32>], layout: ImageLayout, cols: usize) -> Vec<u8> {
    let ImageLayout { channels, height, width } = layout;
    let cols = cols.max(1);
    let rows = images.len().max(1).div_ceil(cols);
    let scale = cell_scale(layout);
    let (cell_h, cell_w) = (height * scale + GRID_GAP, width * scale + GRID_GAP);
    let (img_h, img_w) = (rows * cell_h + GRID_GAP, cols * cell_w + GRID_GAP);
    let mut pixels = vec![GAP_GREY; img_h * img_w * channels];
    let plane = height * width;
    for (i, image) in images.iter().enumerate() {
        let (top, left) = ((i / cols) * cell_h + GRID_GAP, (i % cols) * cell_w + GRID_GAP);
        for y in 0..height * scale {
            for x in 0..width * scale {
                let unit = (y / scale) * width + x / scale;
                let at = ((top + y) * img_w + left + x) * channels;
                for c in 0..channels {
                    pixels[at + c] = (image[c * plane + unit].clamp(0.0, 1.0) * 255.0).round() as u8;
                }
            }
        }
    }
    let colour = if channels == 3 { png::ColorType::Rgb } else { png::ColorType::Grayscale };
    encode_png(&pixels, img_w, img_h, colour)
}

/// The bundled font: a Latin-1 subset of DejaVu Sans (see `data/README.md`),
/// so plots need no system font library.
static FONT: &[u8] = include_bytes!("../../data/fonts/DejaVuSans-subset.ttf");
const SANS: &str = "sans-serif";

/// A dark purple to pale yellow ramp (after matplotlib's "magma"), `t` in [0, 1].
fn magma(t: f64) -> plotters::style::RGBColor {
    const RAMP: [[f64; 3]; 5] =
        [[0.0, 0.0, 4.0], [81.0, 18.0, 124.0], [183.0, 55.0, 121.0], [252.0, 137.0, 97.0], [252.0, 253.0, 191.0]];
    let t = t.clamp(0.0, 1.0) * (RAMP.len() - 1) as f64;
    let lower = (t.floor() as usize).min(RAMP.len() - 2);
    let f = t - lower as f64;
    let c = |k: usize| (RAMP[lower][k] * (1.0 - f) + RAMP[lower + 1][k] * f).round() as u8;
    plotters::style::RGBColor(c(0), c(1), c(2))
}

/// Ticks on a value axis: plotters puts them at round numbers (steps of 1,
/// 2 or 5 times a power of ten).
const VALUE_TICKS: usize = 8;

/// Tick labels for the `VALUE_TICKS` ticks plotters puts on `lo..hi`, all
/// with the fewest decimals that print every tick exactly (`-24.6`,
/// `-24.8`; `0.05`, `0.10`; `200`).
fn tick_format(lo: f64, hi: f64) -> impl Fn(&f64) -> String {
    use plotters::coord::ranged1d::Ranged;
    let ticks = plotters::coord::types::RangedCoordf64::from(lo..hi).key_points(VALUE_TICKS);
    let exact = |v: f64, d: i32| {
        let p = 10f64.powi(d);
        ((v * p).round() / p - v).abs() <= 1e-9 * v.abs().max(1.0)
    };
    let decimals = ticks.iter().map(|&v| (0..8).find(|&d| exact(v, d)).unwrap_or(8)).max().unwrap_or(0) as usize;
    let large = lo.abs().max(hi.abs()) >= 1e5;
    move |x: &f64| if large { format!("{x:.2e}") } else { format!("{x:.decimals$}") }
}

type Area<'a> = plotters::drawing::DrawingArea<plotters::prelude::BitMapBackend<'a>, plotters::coord::Shift>;
type DrawResult<'a> = Result<
    (),
    plotters::drawing::DrawingAreaErrorKind<
        <plotters::prelude::BitMapBackend<'a> as plotters::prelude::DrawingBackend>::ErrorType,
    >,
>;

/// A `w` x `h` RGB PNG drawn by `draw` on a white canvas.
fn plot_png(w: u32, h: u32, draw: impl for<'a> FnOnce(&Area<'a>) -> DrawResult<'a>) -> Vec<u8> {
    use plotters::prelude::*;
    static FONT_REGISTERED: std::sync::Once = std::sync::Once::new();
    FONT_REGISTERED.call_once(|| {
        // Cannot fire: the font is compiled in, and a test draws with it.
        plotters::style::register_font(SANS, plotters::style::FontStyle::Normal, FONT)
            .unwrap_or_else(|_| panic!("the bundled font does not parse"))
    });
    let mut rgb = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        // Cannot fire: drawing into memory with a bundled font fails only on a bug in ebmc.
        root.fill(&WHITE).and_then(|()| draw(&root)).and_then(|()| root.present()).expect("drawing in memory");
    }
    encode_png(&rgb, w as usize, h as usize, png::ColorType::Rgb)
}

/// A heat map of a 2-D density with points drawn over it: `log_density`
/// holds `resolution`² values on the grid's midpoints over `[low, high]`²,
/// first coordinate the outer index (the x axis), second the inner (the y
/// axis). Density is shown relative to its maximum on a dark-to-light scale
/// with a colour bar; points outside the square are left out.
pub fn density_png(log_density: &[f64], resolution: usize, (low, high): (f64, f64), points: &[[f32; 2]]) -> Vec<u8> {
    use plotters::prelude::*;
    let (w, h) = (760u32, 640u32);
    let top = log_density.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let relative = |ld: f64| if top.is_finite() { (ld - top).exp() } else { 0.0 };
    let step = (high - low) / resolution.max(1) as f64;
    plot_png(w, h, |root| {
        let (map, bar) = root.split_horizontally(w - 120);
        let mut chart = ChartBuilder::on(&map)
            .caption("model density with samples", (SANS, 20))
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(low..high, low..high)?;
        let ticks = tick_format(low, high);
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("first coordinate")
            .y_desc("second coordinate")
            .x_labels(VALUE_TICKS)
            .y_labels(VALUE_TICKS)
            .x_label_formatter(&ticks)
            .y_label_formatter(&ticks)
            .label_style((SANS, 14))
            .axis_desc_style((SANS, 15))
            .draw()?;
        chart.draw_series(log_density.iter().enumerate().map(|(k, ld)| {
            let (i, j) = (k / resolution, k % resolution);
            let (x, y) = (low + i as f64 * step, low + j as f64 * step);
            Rectangle::new([(x, y), (x + step, y + step)], magma(relative(*ld)).filled())
        }))?;
        let inside = |v: f32| (low..=high).contains(&f64::from(v));
        chart.draw_series(
            points
                .iter()
                .filter(|[a, b]| inside(*a) && inside(*b))
                .map(|[a, b]| Circle::new((f64::from(*a), f64::from(*b)), 2, RGBColor(80, 220, 255).filled())),
        )?;
        let mut scale = ChartBuilder::on(&bar)
            .margin_top(44)
            .margin_bottom(57)
            .margin_right(20)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..1.0, 0.0..1.0)?;
        scale
            .configure_mesh()
            .disable_mesh()
            .disable_x_axis()
            .y_desc("density / its maximum")
            .y_label_formatter(&|v| format!("{v:.1}"))
            .label_style((SANS, 14))
            .axis_desc_style((SANS, 15))
            .draw()?;
        scale.draw_series((0..100).map(|k| {
            let y = k as f64 / 100.0;
            Rectangle::new([(0.0, y), (1.0, y + 0.01)], magma(y + 0.005).filled())
        }))?;
        Ok(())
    })
}

/// Images of one visible variable in each of `states`, one state after
/// another, scaled to [0, 1] by its domain: binary and spins from their two
/// values, a bounded real from its box, categories by index, an unbounded
/// real from the range of all the values shown, which is returned so that a
/// caller can say how its pictures are shaded.
pub fn images_of(model: &Model, states: &[&Tensors], var: &str) -> (Vec<Vec<f32>>, Option<(f32, f32)>) {
    // Cannot fire: callers pass a variable of the model (the CLI picks it from the plan).
    let v = model.variable(var).expect("variable exists");
    let per: usize = v.shape.iter().product();
    let rows = states.iter().flat_map(|state| {
        let t = &state[var];
        (0..t.shape[0]).map(move |r| &t.data[r * per..(r + 1) * per])
    });
    let values: Vec<Vec<f32>> = match v.domain {
        Domain::Categorical { categories } => rows
            .map(|row| {
                row.chunks(categories)
                    .map(|c| {
                        c.iter().enumerate().fold(0, |best, (i, x)| if *x > c[best] { i } else { best }) as f32
                            / (categories - 1) as f32
                    })
                    .collect()
            })
            .collect(),
        _ => rows.map(<[f32]>::to_vec).collect(),
    };
    let ((lo, hi), from_samples) = match v.domain {
        Domain::Binary | Domain::Categorical { .. } => ((0.0, 1.0), false),
        Domain::Spin => ((-1.0, 1.0), false),
        Domain::Real { bounds: Some((lo, hi)) } => ((lo as f32, hi as f32), false),
        Domain::Real { bounds: None } => {
            let all = values.iter().flatten();
            let lo = all.clone().cloned().fold(f32::INFINITY, f32::min);
            let hi = all.cloned().fold(f32::NEG_INFINITY, f32::max);
            // One value everywhere (or none) is drawn black rather than divided by zero.
            ((lo, if hi > lo { hi } else { lo + 1.0 }), true)
        }
    };
    let images = values.into_iter().map(|img| img.into_iter().map(|x| (x - lo) / (hi - lo)).collect()).collect();
    (images, from_samples.then_some((lo, hi)))
}

/// How a variable's units make an image: `[C, H, W]` with 1 or 3 channels
/// (grey, or red, green and blue planes), `[H, W]` grey, a square number of
/// units (64 is 8x8, 784 is 28x28) grey, or the height and width given
/// (with the variable's own channels). A categorical variable's last axis
/// holds its categories, so one image value is one unit's category.
pub fn image_shape(model: &Model, var: &str, given: Option<(usize, usize)>) -> Option<ImageLayout> {
    let v = model.variable(var)?;
    let categorical = matches!(v.domain, Domain::Categorical { .. });
    let axes = if categorical { &v.shape[..v.shape.len().saturating_sub(1)] } else { &v.shape[..] };
    let units: usize = axes.iter().product();
    let natural = match *axes {
        // Colour comes from three real or binary planes; a categorical unit is one value.
        [channels @ (1 | 3), height, width] if !(categorical && channels == 3) => {
            Some(ImageLayout { channels, height, width })
        }
        [height, width] => Some(ImageLayout::grey(height, width)),
        _ => None,
    };
    match given {
        Some((height, width)) => [natural.map_or(1, |l| l.channels), 1]
            .into_iter()
            .map(|channels| ImageLayout { channels, height, width })
            .find(|l| l.units() == Some(units)),
        None => natural.or_else(|| {
            let side = (units as f64).sqrt().round() as usize;
            (side * side == units && side > 1).then_some(ImageLayout::grey(side, side))
        }),
    }
}

/// One line of a panel.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Shown in the panel's legend when it has more than one line.
    pub label: String,
    /// (epoch, value) pairs.
    pub points: Vec<(usize, f64)>,
}

/// One panel of `line_plots`: a title, the y axis's title with its unit,
/// and one or more lines over epochs.
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    /// The panel's title.
    pub title: String,
    /// The y axis's title, with its unit.
    pub y_label: String,
    /// The lines drawn, over epochs.
    pub series: Vec<Series>,
}

const LINE_COLOURS: [plotters::style::RGBColor; 4] = [
    plotters::style::RGBColor(31, 119, 180),
    plotters::style::RGBColor(255, 127, 14),
    plotters::style::RGBColor(44, 160, 44),
    plotters::style::RGBColor(214, 39, 40),
];

/// A PNG of one panel per entry, stacked, each with its title, an `epoch`
/// x axis with whole-number ticks, the y axis titled with its unit and
/// round ticks, and a legend when lines share the panel.
pub fn line_plots(panels: &[Panel]) -> Vec<u8> {
    use plotters::prelude::*;
    let (w, ph) = (800u32, 300u32);
    plot_png(w, ph * panels.len().max(1) as u32, |root| {
        for (panel, area) in panels.iter().zip(root.split_evenly((panels.len().max(1), 1))) {
            let all = panel.series.iter().flat_map(|s| s.points.iter());
            let (x_lo, x_hi) = all.clone().fold((usize::MAX, 0), |(a, b), (x, _)| (a.min(*x), b.max(*x)));
            let (x_lo, x_hi) = if x_lo > x_hi { (0, 1) } else { (x_lo, x_hi.max(x_lo + 1)) };
            let (lo, hi) = all.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), (_, y)| (a.min(*y), b.max(*y)));
            let (lo, hi) = match (lo.is_finite() && hi.is_finite(), hi - lo) {
                (false, _) => (0.0, 1.0),
                (true, d) if d > 0.0 => (lo - 0.05 * d, hi + 0.05 * d),
                (true, _) => (lo - 0.1 * lo.abs().max(1.0), hi + 0.1 * hi.abs().max(1.0)),
            };
            let mut chart = ChartBuilder::on(&area)
                .caption(&panel.title, (SANS, 20))
                .margin(12)
                .x_label_area_size(45)
                .y_label_area_size(80)
                .build_cartesian_2d(x_lo as f64..x_hi as f64, lo..hi)?;
            let y_ticks = tick_format(lo, hi);
            chart
                .configure_mesh()
                .x_desc("epoch")
                .y_desc(&panel.y_label)
                // Whole epochs only: never more ticks than there are epochs.
                .x_labels((x_hi - x_lo + 1).min(11))
                .x_label_formatter(&|x| format!("{x:.0}"))
                .y_labels(VALUE_TICKS)
                .y_label_formatter(&y_ticks)
                .label_style((SANS, 14))
                .axis_desc_style((SANS, 15))
                .light_line_style(RGBColor(235, 235, 235))
                .draw()?;
            for (series, colour) in panel.series.iter().zip(LINE_COLOURS.iter().cycle()) {
                let points = series.points.iter().map(|(x, y)| (*x as f64, *y));
                chart
                    .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))?
                    .label(series.label.as_str())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
                chart.draw_series(points.map(|p| Circle::new(p, 2, colour.filled())))?;
            }
            if panel.series.len() > 1 {
                chart
                    .configure_series_labels()
                    .position(SeriesLabelPosition::UpperRight)
                    .label_font((SANS, 14))
                    .background_style(WHITE.mix(0.85))
                    .border_style(RGBColor(160, 160, 160))
                    .draw()?;
            }
        }
        Ok(())
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn size(png: &[u8]) -> (u32, u32) {
        let info = png::Decoder::new(std::io::Cursor::new(png)).read_info().expect("a PNG").info().clone();
        (info.width, info.height)
    }

    /// A PNG's width, height, channels and pixels, row-major.
    pub(crate) fn decode(png: &[u8]) -> (usize, usize, usize, Vec<u8>) {
        let mut reader = png::Decoder::new(std::io::Cursor::new(png)).read_info().expect("a PNG");
        let mut pixels = vec![0; reader.output_buffer_size().expect("a size")];
        let frame = reader.next_frame(&mut pixels).expect("one frame");
        pixels.truncate(frame.buffer_size());
        (frame.width as usize, frame.height as usize, frame.color_type.samples(), pixels)
    }

    pub(crate) fn variable(name: &str, domain: Domain, shape: Vec<usize>) -> crate::analysis::program::Variable {
        let (role, span) = (crate::front::ast::Role::Visible, Default::default());
        crate::analysis::program::Variable { name: name.into(), role, domain, shape, span }
    }

    pub(crate) fn model_of(variables: Vec<crate::analysis::program::Variable>) -> Model {
        Model {
            name: "m".into(),
            span: Default::default(),
            variables,
            params: vec![],
            consts: vec![],
            nets: vec![],
            energies: vec![],
            overrides: vec![],
            temperature: None,
        }
    }

    #[test]
    fn cells_are_upscaled_to_at_least_48_pixels_with_grey_gaps() {
        // Two 2x2 grey images side by side: each value a 24-pixel square
        // (48 / 2), cells 24 * 2 + 2 apart, 2-pixel gaps around.
        let images = vec![vec![0.0, 1.0, 0.5, 0.25], vec![1.0, 0.0, 0.0, 2.0]];
        let (w, h, channels, pixels) = decode(&png_grid(&images, ImageLayout::grey(2, 2), 2));
        assert_eq!((w, h, channels), (2 * 50 + 2, 50 + 2, 1));
        let at = |x: usize, y: usize| pixels[y * w + x];
        // First image: its four values, each over the whole of its square.
        for (dx, dy, v) in [(0, 0, 0), (1, 0, 255), (0, 1, 128), (1, 1, 64)] {
            for (ox, oy) in [(0, 0), (23, 0), (0, 23), (23, 23)] {
                assert_eq!(at(2 + dx * 24 + ox, 2 + dy * 24 + oy), v, "value ({dx}, {dy})");
            }
        }
        // The second cell starts after the first and its gap; values past 1 are clamped.
        assert_eq!((at(52, 2), at(52 + 24, 2), at(52 + 24, 2 + 24)), (255, 0, 255));
        for (x, y) in [(0, 0), (1, 30), (50, 10), (51, 40), (30, 50), (101, 51)] {
            assert_eq!(at(x, y), GAP_GREY, "gap at ({x}, {y})");
        }
        // Eight 8x8 digits to the row at 6 pixels a value: 64 cells make a square grid.
        let digits = vec![vec![1.0; 64]; 64];
        let (w, h, ..) = decode(&png_grid(&digits, ImageLayout::grey(8, 8), square_columns(64)));
        assert_eq!((w, h), (8 * (8 * 6 + 2) + 2, 8 * (8 * 6 + 2) + 2));
        // 28x28 and 32x32 are drawn twice as large; 64x64 as it is.
        let scale = |side| cell_scale(ImageLayout::grey(side, side));
        assert_eq!((scale(8), scale(28), scale(32), scale(64), scale(100)), (6, 2, 2, 1, 1));
        assert_eq!(cell_scale(ImageLayout { channels: 3, height: 32, width: 32 }), 2);
    }

    #[test]
    fn three_channels_make_an_rgb_grid_from_their_planes() {
        // One [3, 1, 2] image: red plane (1, 0), green (0, 1), blue (0.5, 0).
        let image = vec![1.0, 0.0, 0.0, 1.0, 0.5, 0.0];
        let layout = ImageLayout { channels: 3, height: 1, width: 2 };
        let (w, h, channels, pixels) = decode(&png_grid(&[image], layout, 1));
        assert_eq!((w, h, channels), (2 * 24 + 4, 24 + 4, 3));
        let at = |x: usize, y: usize| &pixels[(y * w + x) * 3..(y * w + x) * 3 + 3];
        assert_eq!(at(2, 2), [255, 0, 128]);
        assert_eq!(at(2 + 23, 2 + 23), [255, 0, 128]);
        assert_eq!(at(2 + 24, 2), [0, 255, 0]);
        assert_eq!(at(0, 0), [GAP_GREY; 3]);
        assert_eq!(at(w - 1, h - 1), [GAP_GREY; 3]);
    }

    #[test]
    fn image_layouts_follow_the_shape_and_domain() {
        let bounded = Domain::Real { bounds: Some((0.0, 1.0)) };
        let m = model_of(vec![
            variable("cifar", bounded.clone(), vec![3, 32, 32]),
            variable("mnist", bounded.clone(), vec![1, 28, 28]),
            variable("plane", Domain::Binary, vec![5, 7]),
            variable("flat", Domain::Binary, vec![64]),
            variable("two", bounded.clone(), vec![2, 4, 4]),
            variable("labels", Domain::Categorical { categories: 4 }, vec![8, 8, 4]),
            variable("onehot", Domain::Categorical { categories: 3 }, vec![64, 3]),
            variable("odd", Domain::Real { bounds: None }, vec![3]),
        ]);
        let shape = |v: &str, given| image_shape(&m, v, given);
        assert_eq!(shape("cifar", None), Some(ImageLayout { channels: 3, height: 32, width: 32 }));
        assert_eq!(shape("mnist", None), Some(ImageLayout::grey(28, 28)));
        assert_eq!(shape("plane", None), Some(ImageLayout::grey(5, 7)));
        assert_eq!(shape("flat", None), Some(ImageLayout::grey(8, 8)));
        assert_eq!(shape("flat", Some((4, 16))), Some(ImageLayout::grey(4, 16)));
        assert_eq!(shape("cifar", Some((16, 64))), Some(ImageLayout { channels: 3, height: 16, width: 64 }));
        // Two channels are neither grey nor RGB, nor 32 a square.
        assert_eq!(shape("two", None), None);
        assert_eq!(shape("two", Some((4, 8))), Some(ImageLayout::grey(4, 8)));
        assert_eq!(shape("labels", None), Some(ImageLayout::grey(8, 8)));
        assert_eq!(shape("onehot", None), Some(ImageLayout::grey(8, 8)));
        assert_eq!((shape("odd", None), shape("flat", Some((8, 9)))), (None, None));
        assert_eq!(shape("cifar", Some((usize::MAX, 2))), None);
    }

    #[test]
    fn rank_3_images_are_shaded_by_their_box_or_their_sampled_range() {
        let m = model_of(vec![
            variable("x", Domain::Real { bounds: Some((0.0, 2.0)) }, vec![3, 1, 2]),
            variable("y", Domain::Real { bounds: None }, vec![1, 2, 2]),
            variable("s", Domain::Spin, vec![1, 1, 2]),
        ]);
        let rows = |shape: Vec<usize>, data: Vec<f32>| crate::tensor::HostTensor::new(shape, data);
        let mut a = Tensors::new();
        a.insert("x".into(), rows(vec![1, 3, 1, 2], vec![0.0, 2.0, 1.0, 0.5, 2.0, 1.5]));
        a.insert("y".into(), rows(vec![1, 1, 2, 2], vec![-1.0, 0.0, 1.0, 3.0]));
        a.insert("s".into(), rows(vec![2, 1, 1, 2], vec![-1.0, 1.0, 1.0, 1.0]));
        let mut b = Tensors::new();
        b.insert("y".into(), rows(vec![1, 1, 2, 2], vec![-5.0, 0.0, 0.0, 0.0]));
        assert_eq!(images_of(&m, &[&a], "x"), (vec![vec![0.0, 1.0, 0.5, 0.25, 1.0, 0.75]], None));
        assert_eq!(images_of(&m, &[&a], "s"), (vec![vec![0.0, 1.0], vec![1.0, 1.0]], None));
        // An unbounded real: one range over every state shown, reported.
        let (images, range) = images_of(&m, &[&a, &b], "y");
        assert_eq!(range, Some((-5.0, 3.0)));
        assert_eq!(images, [vec![0.5, 0.625, 0.75, 1.0], vec![0.0, 0.625, 0.625, 0.625]]);
    }

    #[test]
    fn plots_are_drawn_with_the_bundled_font() {
        let series = |label: &str, k: f64| Series {
            label: label.into(),
            points: (1..=60).map(|e| (e, k * (e as f64).ln())).collect(),
        };
        let panels = [
            Panel { title: "loss".into(), y_label: "mean loss per batch".into(), series: vec![series("loss", -1.0)] },
            Panel {
                title: "log-likelihood".into(),
                y_label: "nats per row".into(),
                series: vec![series("train", 2.0), series("test", 1.5)],
            },
        ];
        let png = line_plots(&panels);
        assert_eq!(size(&png), (800, 600));
        // One epoch, or no points at all, still draws.
        let one = Panel {
            title: "t".into(),
            y_label: "y".into(),
            series: vec![Series { label: "a".into(), points: vec![(1, 3.0)] }],
        };
        assert_eq!(size(&line_plots(&[one])), (800, 300));
        assert_eq!(size(&line_plots(&[])), (800, 300));
        let density: Vec<f64> =
            (0..400).map(|k| -(((k / 20) as f64 - 10.0).powi(2) + ((k % 20) as f64 - 10.0).powi(2)) / 20.0).collect();
        assert_eq!(size(&density_png(&density, 20, (-2.0, 2.0), &[[0.0, 0.0], [9.0, 9.0]])), (760, 640));
    }

    #[test]
    fn tick_labels_are_round() {
        // Ticks every 0.05 need two decimals, every 0.1 one, every 100 none.
        let f = tick_format(-0.3, 0.05);
        assert_eq!((f(&-0.25), f(&0.0)), ("-0.25".to_string(), "0.00".to_string()));
        assert_eq!(tick_format(-25.3, -24.6)(&-24.8), "-24.8");
        assert_eq!(tick_format(0.0, 600.0)(&200.0), "200");
    }
}
