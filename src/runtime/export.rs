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

/// Grids narrower than this are upscaled: a person can judge an 8x8 digit
/// at 8 to the row only when each is at least 64 pixels across.
const MIN_GRID_PIXELS: usize = 512;
/// Grey pixels between cells and around the grid.
const GRID_GAP: usize = 2;

/// Tiles `images` (each `height * width` values in [0, 1]) into a grayscale
/// PNG grid, each value a square of at least `min_scale` pixels and more
/// until the grid is at least 512 pixels wide, with a 2-pixel grey gap
/// between cells.
pub fn png_grid(images: &[Vec<f32>], height: usize, width: usize, min_scale: usize) -> Vec<u8> {
    let n = images.len().max(1);
    let cols = (n as f64).sqrt().ceil() as usize;
    let rows = n.div_ceil(cols);
    // Cannot fire: the grid's width grows with the scale without bound.
    let scale =
        (min_scale.max(1)..).find(|s| cols * (width * s + GRID_GAP) + GRID_GAP >= MIN_GRID_PIXELS).expect("unbounded");
    let (cell_h, cell_w) = (height * scale + GRID_GAP, width * scale + GRID_GAP);
    let (img_h, img_w) = (rows * cell_h + GRID_GAP, cols * cell_w + GRID_GAP);
    let mut pixels = vec![128u8; img_h * img_w];
    for (i, image) in images.iter().enumerate() {
        let (gr, gc) = (i / cols, i % cols);
        for y in 0..height * scale {
            for x in 0..width * scale {
                let v = image[(y / scale) * width + x / scale].clamp(0.0, 1.0);
                pixels[(gr * cell_h + GRID_GAP + y) * img_w + gc * cell_w + GRID_GAP + x] = (v * 255.0).round() as u8;
            }
        }
    }
    encode_png(&pixels, img_w, img_h, png::ColorType::Grayscale)
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
mod tests {
    use super::*;

    fn size(png: &[u8]) -> (u32, u32) {
        let info = png::Decoder::new(std::io::Cursor::new(png)).read_info().expect("a PNG").info().clone();
        (info.width, info.height)
    }

    #[test]
    fn a_grid_of_64_digits_is_at_least_512_pixels_with_gaps() {
        let images = vec![vec![1.0; 64]; 64];
        let png = png_grid(&images, 8, 8, 4);
        let (w, h) = size(&png);
        assert!(w >= 512 && h >= 512, "{w}x{h}");
        // 8 cells of 8 values at scale s, 9 gaps of 2 pixels.
        assert_eq!((w - 18) % 64, 0);
        // Large images keep the scale they were given.
        assert_eq!(size(&png_grid(&[vec![0.5; 784]], 28, 28, 20)).0, 28 * 20 + 4);
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
