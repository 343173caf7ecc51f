//! Data sources → host tensors for the visible variables (`load`). Reads CSV,
//! NPY and IDX files, the bundled 8×8 digits, and generates bars-and-stripes
//! and 2-D toy sets. Every value is checked against its variable's type, and
//! a bad value is reported with the source, row and column.

use crate::program::{Call, DataSpec, Domain, Model, TestSpec, Variable};
use crate::schema::Value;
use crate::tensor::{HostTensor, Tensors};
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};
use std::path::{Path, PathBuf};

static DIGITS_CSV: &str = include_str!("../data/digits.csv");

/// Rows bound to visible variables: each `[rows, ...shape]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    pub rows: usize,
    pub vars: Tensors,
}

/// Why data could not be loaded. Wording lives in `messages.rs`.
#[derive(Debug, Clone, PartialEq)]
pub enum DataError {
    Read { source: String, reason: String },
    Empty { source: String },
    ColumnCount { source: String, row: usize, found: usize, expected: usize },
    NotANumber { source: String, row: usize, column: usize, text: String },
    NotFinite { source: String, row: usize, column: usize },
    OutOfDomain { source: String, row: usize, column: usize, value: f64, var: String, domain: String },
    Format { source: String, reason: String },
    Split { reason: String },
}

/// A table of numbers with the place each came from.
struct Table {
    source: String,
    /// Row number in the source (1-based) of the first data row.
    first_row: usize,
    width: usize,
    values: Vec<f64>,
    header: Option<Vec<String>>,
}

impl Table {
    fn rows(&self) -> usize {
        self.values.len() / self.width.max(1)
    }
}

/// Loads the data a `train` block (or a `--data` override) names.
/// `base` is the directory relative paths are resolved against.
pub fn load(spec: &DataSpec, model: &Model, base: &Path) -> Result<Dataset, DataError> {
    let vars: Vec<&Variable> = spec.binding.iter().map(|n| model.variable(n).expect("binding checked")).collect();
    let src = &spec.source;
    match src.name.as_str() {
        "bars_and_stripes" => bind_positional(&bars_and_stripes(src.int("size").unwrap_or(4) as usize), &vars),
        "toy" => {
            let name = src.options.get("name").and_then(Value::as_str).unwrap_or("8gaussians");
            let points = toy(name, src.int("n").unwrap_or(10000) as usize, src.int("seed").unwrap_or(0) as u64);
            bind_positional(&points, &vars)
        }
        "digits" => {
            let table = transform(parse_csv("digits (bundled)", DIGITS_CSV, Some(true))?, src);
            bind(&table, &vars, src)
        }
        "csv" => {
            let path = resolve(base, src);
            let text = std::fs::read_to_string(&path).map_err(|e| DataError::Read { source: path.display().to_string(), reason: e.to_string() })?;
            let header = src.options.get("header").and_then(Value::as_bool);
            let table = transform(parse_csv(&path.display().to_string(), &text, header)?, src);
            bind(&table, &vars, src)
        }
        "npy" | "idx" => {
            let path = resolve(base, src);
            let bytes = std::fs::read(&path).map_err(|e| DataError::Read { source: path.display().to_string(), reason: e.to_string() })?;
            let name = path.display().to_string();
            let table = if src.name == "npy" { parse_npy(&name, &bytes)? } else { parse_idx(&name, &bytes)? };
            bind(&transform(table, src), &vars, src)
        }
        other => unreachable!("data source `{other}` is not in the schema"),
    }
}

/// Splits off test rows as the train block says; `None` when it says nothing.
pub fn split(data: Dataset, test: Option<&TestSpec>, model: &Model, base: &Path) -> Result<(Dataset, Option<Dataset>), DataError> {
    match test {
        None => Ok((data, None)),
        Some(TestSpec::Data(spec)) => {
            let test = load(spec, model, base)?;
            Ok((data, Some(test)))
        }
        Some(TestSpec::Split(call)) => {
            let n = data.rows;
            let test_rows = match call.name.as_str() {
                "last" => call.int("rows").unwrap_or(0) as usize,
                _ => (call.num("of").unwrap_or(0.0) * n as f64).round() as usize,
            };
            if test_rows == 0 || test_rows >= n {
                return Err(DataError::Split { reason: format!("cannot hold out {test_rows} of {n} rows for testing; keep at least one row for each side") });
            }
            Ok((data.slice(0, n - test_rows), Some(data.slice(n - test_rows, n))))
        }
    }
}

impl Dataset {
    pub fn slice(&self, from: usize, to: usize) -> Dataset {
        let vars = self
            .vars
            .iter()
            .map(|(k, t)| {
                let per: usize = t.shape[1..].iter().product();
                let mut shape = t.shape.clone();
                shape[0] = to - from;
                (k.clone(), HostTensor::new(shape, t.data[from * per..to * per].to_vec()))
            })
            .collect();
        Dataset { rows: to - from, vars }
    }

    /// The rows at `indices`, in that order.
    pub fn rows_at(&self, indices: &[usize]) -> Tensors {
        self.vars
            .iter()
            .map(|(k, t)| {
                let per: usize = t.shape[1..].iter().product();
                let mut shape = t.shape.clone();
                shape[0] = indices.len();
                let data = indices.iter().flat_map(|&i| t.data[i * per..(i + 1) * per].iter().copied()).collect();
                (k.clone(), HostTensor::new(shape, data))
            })
            .collect()
    }
}

/// A relative path is tried from the working directory, then from `base`
/// (the model file's directory).
fn resolve(base: &Path, src: &Call) -> PathBuf {
    let p = PathBuf::from(src.options.get("path").and_then(Value::as_str).unwrap_or_default());
    if p.is_absolute() || p.exists() { p } else { base.join(p) }
}

/// The data spec with its file replaced by `path` (the `--data` option):
/// same binding, the format from the file name.
pub fn with_file(spec: &DataSpec, path: &Path) -> DataSpec {
    let kind = match path.extension().and_then(|e| e.to_str()) {
        Some("npy") => "npy",
        Some("idx") | Some("ubyte") => "idx",
        _ => "csv",
    };
    let mut options = if spec.source.name == kind { spec.source.options.clone() } else { Default::default() };
    options.insert("path".into(), Value::Str(path.display().to_string()));
    DataSpec { source: Call { name: kind.into(), options, span: spec.source.span }, binding: spec.binding.clone(), span: spec.span }
}

/// Applies `scale` and then `binarize` (values at or above the threshold become 1).
fn transform(mut t: Table, src: &Call) -> Table {
    let scale = src.num("scale").unwrap_or(1.0);
    let threshold = src.num("binarize");
    for v in t.values.iter_mut() {
        *v *= scale;
        if let Some(th) = threshold {
            *v = f64::from(u8::from(*v >= th));
        }
    }
    t
}

fn parse_csv(source: &str, text: &str, header: Option<bool>) -> Result<Table, DataError> {
    let lines: Vec<(usize, &str)> = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())).filter(|(_, l)| !l.is_empty()).collect();
    let Some(&(_, first)) = lines.first() else { return Err(DataError::Empty { source: source.to_string() }) };
    let has_header = header.unwrap_or_else(|| first.split(',').any(|c| c.trim().parse::<f64>().is_err()));
    let header = has_header.then(|| first.split(',').map(|c| c.trim().to_string()).collect::<Vec<_>>());
    let body = if has_header { &lines[1..] } else { &lines[..] };
    if body.is_empty() {
        return Err(DataError::Empty { source: source.to_string() });
    }
    let width = header.as_ref().map_or_else(|| body[0].1.split(',').count(), Vec::len);
    let mut values = Vec::with_capacity(body.len() * width);
    for &(row, line) in body {
        let cells: Vec<&str> = line.split(',').collect();
        if cells.len() != width {
            return Err(DataError::ColumnCount { source: source.to_string(), row, found: cells.len(), expected: width });
        }
        for (c, cell) in cells.iter().enumerate() {
            let v: f64 = cell.trim().parse().map_err(|_| DataError::NotANumber { source: source.to_string(), row, column: c + 1, text: cell.trim().to_string() })?;
            if !v.is_finite() {
                return Err(DataError::NotFinite { source: source.to_string(), row, column: c + 1 });
            }
            values.push(v);
        }
    }
    Ok(Table { source: source.to_string(), first_row: body[0].0, width, values, header })
}

fn parse_npy(source: &str, bytes: &[u8]) -> Result<Table, DataError> {
    let bad = |reason: &str| DataError::Format { source: source.to_string(), reason: reason.to_string() };
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("not an NPY file (no \\x93NUMPY magic)"));
    }
    let (len, start) = if bytes[6] == 1 { (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10) } else { (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12) };
    let header = std::str::from_utf8(bytes.get(start..start + len).ok_or_else(|| bad("truncated header"))?).map_err(|_| bad("header is not text"))?;
    if header.contains("'fortran_order': True") {
        return Err(bad("Fortran-ordered arrays are not supported; save with numpy.ascontiguousarray"));
    }
    let descr = header.split("'descr':").nth(1).and_then(|s| s.split('\'').nth(1)).ok_or_else(|| bad("no 'descr' in header"))?;
    let shape_text = header.split("'shape':").nth(1).and_then(|s| s.split('(').nth(1)).and_then(|s| s.split(')').next()).ok_or_else(|| bad("no 'shape' in header"))?;
    let shape: Vec<usize> = shape_text.split(',').filter(|s| !s.trim().is_empty()).map(|s| s.trim().parse().map_err(|_| bad("bad shape"))).collect::<Result<_, _>>()?;
    let data = &bytes[start + len..];
    let values: Vec<f64> = match descr {
        "<f4" => data.chunks_exact(4).map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]]))).collect(),
        "<f8" => data.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes"))).collect(),
        "|u1" | "<u1" => data.iter().map(|b| f64::from(*b)).collect(),
        "<i4" => data.chunks_exact(4).map(|c| f64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]]))).collect(),
        "<i8" => data.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")) as f64).collect(),
        other => return Err(bad(&format!("dtype {other} is not supported (use float32, float64, uint8, int32 or int64)"))),
    };
    let rows = *shape.first().ok_or_else(|| bad("a 0-d array has no rows"))?;
    let width = shape[1..].iter().product::<usize>().max(1);
    if values.len() != rows * width {
        return Err(bad("data length does not match the shape"));
    }
    if rows == 0 {
        return Err(DataError::Empty { source: source.to_string() });
    }
    check_finite(source, &values, width, 1)?;
    Ok(Table { source: source.to_string(), first_row: 1, width, values, header: None })
}

/// The IDX format of MNIST: magic 0, 0, type, rank; big-endian sizes; data.
fn parse_idx(source: &str, bytes: &[u8]) -> Result<Table, DataError> {
    let bad = |reason: &str| DataError::Format { source: source.to_string(), reason: reason.to_string() };
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(bad("not an IDX file (magic must start with two zero bytes)"));
    }
    let (kind, rank) = (bytes[2], bytes[3] as usize);
    let dims: Vec<usize> = (0..rank)
        .map(|i| bytes.get(4 + 4 * i..8 + 4 * i).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize).ok_or_else(|| bad("truncated header")))
        .collect::<Result<_, _>>()?;
    let data = &bytes[4 + 4 * rank..];
    let values: Vec<f64> = match kind {
        0x08 => data.iter().map(|b| f64::from(*b)).collect(),
        0x09 => data.iter().map(|b| f64::from(*b as i8)).collect(),
        0x0D => data.chunks_exact(4).map(|c| f64::from(f32::from_be_bytes([c[0], c[1], c[2], c[3]]))).collect(),
        0x0E => data.chunks_exact(8).map(|c| f64::from_be_bytes(c.try_into().expect("8 bytes"))).collect(),
        other => return Err(bad(&format!("IDX type 0x{other:02X} is not supported (use unsigned byte, byte, float or double)"))),
    };
    let rows = *dims.first().ok_or_else(|| bad("rank 0"))?;
    let width = dims[1..].iter().product::<usize>().max(1);
    if values.len() != rows * width {
        return Err(bad("data length does not match the dimensions"));
    }
    if rows == 0 {
        return Err(DataError::Empty { source: source.to_string() });
    }
    check_finite(source, &values, width, 1)?;
    Ok(Table { source: source.to_string(), first_row: 1, width, values, header: None })
}

fn check_finite(source: &str, values: &[f64], width: usize, first_row: usize) -> Result<(), DataError> {
    match values.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(DataError::NotFinite { source: source.to_string(), row: first_row + i / width, column: i % width + 1 }),
        None => Ok(()),
    }
}

/// Columns a variable takes: one per unit (a categorical unit is one column holding its index).
fn columns_of(v: &Variable) -> usize {
    match v.domain {
        Domain::Categorical { categories } => v.shape.iter().product::<usize>() / categories,
        _ => v.shape.iter().product(),
    }
}

/// Binds table columns to variables: by header names when every variable's
/// columns are found there (`v0`..`v63`, or `y` for a one-column variable),
/// else by position, in binding order, using every column.
fn bind(t: &Table, vars: &[&Variable], src: &Call) -> Result<Dataset, DataError> {
    let by_name: Option<Vec<Vec<usize>>> = t.header.as_ref().and_then(|h| {
        vars.iter()
            .map(|v| {
                let n = columns_of(v);
                (0..n)
                    .map(|i| {
                        let names = if n == 1 { vec![v.name.clone(), format!("{}0", v.name)] } else { vec![format!("{}{i}", v.name), format!("{}_{i}", v.name)] };
                        h.iter().position(|c| names.contains(c))
                    })
                    .collect::<Option<Vec<usize>>>()
            })
            .collect()
    });
    // The bundled digits: pixels then label, whatever the variables are called.
    let digits_layout = (src.name == "digits").then(|| {
        let mut cols = vec![(0..64).collect::<Vec<_>>()];
        if vars.len() > 1 {
            cols.push(vec![64]);
        }
        cols
    });
    let columns = match by_name.or(digits_layout) {
        Some(c) => c,
        None => {
            let expected: usize = vars.iter().map(|v| columns_of(v)).sum();
            if t.width != expected {
                return Err(DataError::ColumnCount { source: t.source.clone(), row: t.first_row, found: t.width, expected });
            }
            let mut next = 0;
            vars.iter()
                .map(|v| {
                    let c: Vec<usize> = (next..next + columns_of(v)).collect();
                    next += c.len();
                    c
                })
                .collect()
        }
    };
    let rows = t.rows();
    let mut out = Tensors::new();
    for (v, cols) in vars.iter().zip(&columns) {
        let mut data = Vec::with_capacity(rows * v.shape.iter().product::<usize>());
        for r in 0..rows {
            for &c in cols {
                let value = t.values[r * t.width + c];
                push_value(&mut data, value, v).map_err(|domain| DataError::OutOfDomain {
                    source: t.source.clone(),
                    row: t.first_row + r,
                    column: c + 1,
                    value,
                    var: v.name.clone(),
                    domain,
                })?;
            }
        }
        let mut shape = vec![rows];
        shape.extend(&v.shape);
        out.insert(v.name.clone(), HostTensor::new(shape, data));
    }
    Ok(Dataset { rows, vars: out })
}

/// Appends one unit's value, or says which values the variable accepts.
fn push_value(data: &mut Vec<f32>, value: f64, v: &Variable) -> Result<(), String> {
    match &v.domain {
        Domain::Binary if value == 0.0 || value == 1.0 => data.push(value as f32),
        Domain::Binary => return Err("binary: 0 or 1 (use `binarize: t` on the source to threshold)".into()),
        Domain::Spin if value == -1.0 || value == 1.0 => data.push(value as f32),
        Domain::Spin => return Err("spin: -1 or 1".into()),
        Domain::Categorical { categories } if value.fract() == 0.0 && value >= 0.0 && (value as usize) < *categories => {
            data.extend((0..*categories).map(|k| f32::from(u8::from(k == value as usize))));
        }
        Domain::Categorical { categories } => return Err(format!("categorical({categories}): a whole number from 0 to {}", categories - 1)),
        Domain::Real { bounds: Some((lo, hi)) } if value < *lo || value > *hi => return Err(format!("real in [{lo}, {hi}]")),
        Domain::Real { .. } => data.push(value as f32),
    }
    Ok(())
}

fn bind_positional(points: &[Vec<f64>], vars: &[&Variable]) -> Result<Dataset, DataError> {
    let width = points.first().map_or(0, Vec::len);
    let table = Table { source: "generated data".into(), first_row: 1, width, values: points.iter().flatten().copied().collect(), header: None };
    bind(&table, vars, &Call { name: "generated".into(), options: Default::default(), span: Default::default() })
}

/// Every `size x size` image made of whole bars or whole stripes (30 for size 4).
pub fn bars_and_stripes(size: usize) -> Vec<Vec<f64>> {
    let mut out: Vec<Vec<f64>> = Vec::new();
    for mask in 0..(1usize << size) {
        let on = |i: usize| f64::from(u8::from(mask >> i & 1 == 1));
        let bars: Vec<f64> = (0..size * size).map(|p| on(p % size)).collect();
        let stripes: Vec<f64> = (0..size * size).map(|p| on(p / size)).collect();
        for img in [bars, stripes] {
            if !out.contains(&img) {
                out.push(img);
            }
        }
    }
    out
}

/// 2-D toy sets used across the EBM literature, scaled to about [-4, 4].
pub fn toy(name: &str, n: usize, seed: u64) -> Vec<Vec<f64>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let normal = Normal::new(0.0, 1.0).expect("unit normal");
    let g = |rng: &mut rand::rngs::StdRng| normal.sample(rng);
    (0..n)
        .map(|i| match name {
            "8gaussians" => {
                let (cx, cy) = EIGHT_GAUSSIANS[rng.gen_range(0..8)];
                vec![cx + EIGHT_GAUSSIANS_STD * g(&mut rng), cy + EIGHT_GAUSSIANS_STD * g(&mut rng)]
            }
            "rings" => {
                let (r, _) = RINGS[rng.gen_range(0..RINGS.len())];
                let t = rng.gen_range(0.0..std::f64::consts::TAU);
                vec![r * t.cos() + RINGS_STD * g(&mut rng), r * t.sin() + RINGS_STD * g(&mut rng)]
            }
            "2spirals" => {
                let t = rng.r#gen::<f64>().sqrt() * 540.0_f64.to_radians();
                let sign = if i % 2 == 0 { 1.0 } else { -1.0 };
                vec![sign * (-t.cos() * t) / 3.0 + 0.1 * g(&mut rng), sign * (t.sin() * t) / 3.0 + 0.1 * g(&mut rng)]
            }
            "moons" => {
                let t = rng.gen_range(0.0..std::f64::consts::PI);
                let (x, y) = if i % 2 == 0 { (t.cos(), t.sin()) } else { (1.0 - t.cos(), 0.5 - t.sin()) };
                vec![2.0 * x - 1.0 + 0.1 * g(&mut rng), 2.0 * y - 0.25 + 0.1 * g(&mut rng)]
            }
            "checkerboard" => {
                let x1 = rng.r#gen::<f64>() * 4.0 - 2.0;
                let x2 = rng.r#gen::<f64>() - 2.0 * f64::from(rng.gen_range(0..2u8)) + (x1.floor().rem_euclid(2.0));
                vec![2.0 * x1, 2.0 * x2]
            }
            "swissroll" => {
                let t = 1.5 * std::f64::consts::PI * (1.0 + 2.0 * rng.r#gen::<f64>());
                vec![t * t.cos() / 3.0 + 0.15 * g(&mut rng), t * t.sin() / 3.0 + 0.15 * g(&mut rng)]
            }
            _ => {
                // pinwheel: 5 arms whose rotation grows with the radius.
                let arm = (i % 5) as f64;
                let (radial, tangential) = (0.3 * g(&mut rng) + 1.0, 0.1 * g(&mut rng));
                let angle = arm * std::f64::consts::TAU / 5.0 + 0.25 * radial.exp();
                let (c, s) = (angle.cos(), angle.sin());
                vec![2.0 * (radial * c - tangential * s), 2.0 * (radial * s + tangential * c)]
            }
        })
        .collect()
}

/// Centres of the 8 Gaussians: radius 2√2 ≈ 2.83, every 45°.
pub const EIGHT_GAUSSIANS: [(f64, f64); 8] = [
    (2.828427, 0.0),
    (2.0, 2.0),
    (0.0, 2.828427),
    (-2.0, 2.0),
    (-2.828427, 0.0),
    (-2.0, -2.0),
    (0.0, -2.828427),
    (2.0, -2.0),
];
/// Standard deviation of each of the 8 Gaussians: 0.5 before the set is
/// divided by 1.414, as in the set's usual definition (FFJORD's toy data),
/// which puts the centres at radius 4 / 1.414.
pub const EIGHT_GAUSSIANS_STD: f64 = 0.5 / 1.414;
/// Radii and weights of the rings.
pub const RINGS: [(f64, f64); 4] = [(1.0, 0.25), (2.0, 0.25), (3.0, 0.25), (4.0, 0.25)];
/// Radial noise of the rings.
pub const RINGS_STD: f64 = 0.08;

/// The exact log-density of the generating distribution, where it has one.
pub fn toy_log_density(name: &str, x: f64, y: f64) -> Option<f64> {
    match name {
        "8gaussians" => {
            let s2 = EIGHT_GAUSSIANS_STD * EIGHT_GAUSSIANS_STD;
            let terms: Vec<f64> = EIGHT_GAUSSIANS.iter().map(|(cx, cy)| -((x - cx).powi(2) + (y - cy).powi(2)) / (2.0 * s2) - (2.0 * std::f64::consts::PI * s2).ln()).collect();
            Some(log_mean_exp(&terms))
        }
        "rings" => {
            // Radius r = R_k + noise only approximately; the density of a ring
            // of radius R blurred by isotropic noise s, with the angle uniform,
            // is exp(-(|x| - R)^2 / 2s^2) / ((2π)^{3/2} s R) for R >> s.
            let r = (x * x + y * y).sqrt();
            let s = RINGS_STD;
            let terms: Vec<f64> = RINGS.iter().map(|(rk, _)| -(r - rk).powi(2) / (2.0 * s * s) - (2.0 * std::f64::consts::PI).powf(1.5).ln() - s.ln() - rk.ln()).collect();
            Some(log_mean_exp(&terms))
        }
        _ => None,
    }
}

fn log_mean_exp(x: &[f64]) -> f64 {
    let m = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    m + (x.iter().map(|v| (v - m).exp()).sum::<f64>() / x.len() as f64).ln()
}
