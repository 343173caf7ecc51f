//! Data sources → host tensors for the visible variables (`load`). Reads CSV,
//! NPY and IDX files (images with a labels file beside them), CIFAR-10 binary
//! batches, the bundled 8×8 digits, and generates bars-and-stripes and 2-D
//! toy sets. Rows with a shape (images) are checked against the shape of the
//! variable they feed (`fits`), every value against its variable's type, and a
//! bad value is reported with the source, row and column.

use crate::analysis::check;
use crate::analysis::program::{
    DataSource, DataSpec, Domain, FileFormat, Model, Shape, TestSpec, TestSplit, Train, ValueOptions, Variable,
};
use crate::tensor::{HostTensor, Tensors};
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};
use std::path::{Path, PathBuf};

static DIGITS_CSV: &str = include_str!("../../data/digits.csv");

/// The largest `bars_and_stripes` size: 8,190 images of 144 pixels.
pub const MAX_BARS_AND_STRIPES: usize = 12;
/// The most points a `toy` set generates.
pub const MAX_TOY_POINTS: usize = 1_000_000;

/// Rows bound to visible variables: each `[rows, ...shape]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// Number of rows.
    pub rows: usize,
    /// One tensor per bound visible variable, keyed by name.
    pub vars: Tensors,
}

/// Why data could not be loaded. Wording lives in `messages.rs`.
#[derive(Debug, Clone, PartialEq)]
pub enum DataError {
    /// A file that could not be read.
    Read {
        /// The file, or the source as written.
        source: String,
        /// The I/O error, as text.
        reason: String,
    },
    /// A source with no data rows.
    Empty {
        /// The file, or the source as written.
        source: String,
    },
    /// A row with the wrong number of columns.
    ColumnCount {
        /// The file, or the source as written.
        source: String,
        /// The row, from 1.
        row: usize,
        /// Columns found.
        found: usize,
        /// Columns the bound variables take.
        expected: usize,
    },
    /// A cell that does not parse as a number.
    NotANumber {
        /// The file, or the source as written.
        source: String,
        /// The row, from 1.
        row: usize,
        /// The column, from 1.
        column: usize,
        /// The cell's text.
        text: String,
    },
    /// A NaN or infinite value.
    NotFinite {
        /// The file, or the source as written.
        source: String,
        /// The row, from 1.
        row: usize,
        /// The column, from 1.
        column: usize,
    },
    /// A finite value that f32, the type ebmc computes in, cannot hold.
    OutOfRange {
        /// The file, or the source as written.
        source: String,
        /// The row, from 1.
        row: usize,
        /// The column, from 1.
        column: usize,
        /// The offending value.
        value: f64,
    },
    /// A first row that mixes names and numbers.
    MixedHeader {
        /// The file, or the source as written.
        source: String,
        /// The row, from 1.
        row: usize,
        /// The column, from 1.
        column: usize,
        /// The cell that is not a name.
        text: String,
    },
    /// A value its variable's domain does not hold (e.g. 2 for a binary variable).
    OutOfDomain {
        /// The file, or the source as written.
        source: String,
        /// The row, from 1.
        row: usize,
        /// The column, from 1.
        column: usize,
        /// The offending value.
        value: f64,
        /// The variable the column feeds.
        var: String,
        /// The values the variable takes, as text.
        domain: String,
    },
    /// A file or generator whose contents or options are malformed.
    Format {
        /// The file, or the source as written.
        source: String,
        /// What is wrong.
        reason: String,
    },
    /// A test split that leaves no rows on one side.
    Split {
        /// What is wrong.
        reason: String,
    },
    /// `binarize` at a threshold above 1 on values that are all 0 or 1 already
    /// (samples, or data binarised before): every 1 would become 0.
    AlreadyBinary {
        /// The file, or the source as written.
        source: String,
        /// The `binarize` threshold.
        threshold: f64,
    },
    /// Train settings bound for rows in memory (`check::train_settings`) name no data source to read.
    NoSource {
        /// The model whose settings these are.
        model: String,
    },
    /// Rows (images) or labels whose shape does not fit the variable they feed.
    Shape {
        /// The file, or the source as written.
        source: String,
        /// The shape of one row (empty: one number per row).
        found: Shape,
        /// Whether the rows are the labels of images.
        labels: bool,
        /// The variable they feed (boxed: it keeps every `Result` small).
        declared: Box<Declared>,
    },
    /// An images file and its labels file with different numbers of rows.
    RowCounts {
        /// The images file.
        images: String,
        /// Its rows.
        rows: usize,
        /// The labels file.
        labels: String,
        /// Its rows.
        label_rows: usize,
    },
    /// A CIFAR-10 batch whose size is not a whole number of records.
    RecordSize {
        /// The file.
        source: String,
        /// Its size in bytes.
        bytes: usize,
    },
    /// Images (and labels) bound to a number of variables they cannot feed.
    ImageBinding {
        /// The images' file, or the source as written.
        source: String,
        /// The labels file a `labels:` option gives, if any.
        labels: Option<String>,
        /// The variables bound.
        bound: Vec<String>,
    },
    /// Rows of two or more axes (images) bound to several variables with no labels file.
    NoLabels {
        /// The file.
        source: String,
        /// The shape of one row.
        found: Shape,
        /// The variables bound.
        bound: Vec<String>,
    },
}

/// A variable as declared, for messages.
#[derive(Debug, Clone, PartialEq)]
pub struct Declared {
    /// Its name.
    pub var: String,
    /// Its domain.
    pub domain: Domain,
    /// Its per-example shape.
    pub shape: Shape,
}

/// A table of numbers with the place each came from.
#[derive(Debug)]
struct Table {
    source: String,
    /// Row number in the source (1-based) of the first data row.
    first_row: usize,
    width: usize,
    values: Vec<f64>,
    header: Option<Vec<String>>,
    /// The shape of one row in a format that has one (NPY, IDX, CIFAR-10,
    /// the digits); `None` for columns without one (CSV, generated sets).
    row_shape: Option<Shape>,
}

impl Table {
    fn rows(&self) -> usize {
        self.values.len() / self.width.max(1)
    }
}

/// Loads the data a `train` block (or a `--data` override) names.
/// `base` is the directory relative paths are resolved against.
pub fn load(spec: &DataSpec, model: &Model, base: &Path) -> Result<Dataset, DataError> {
    // Cannot fire: the checker refuses a binding to an undeclared variable.
    let vars: Vec<&Variable> = spec.binding.iter().map(|n| model.variable(n).expect("binding checked")).collect();
    match &spec.source {
        DataSource::BarsAndStripes { size } => {
            let size = *size;
            if !(2..=MAX_BARS_AND_STRIPES).contains(&size) {
                let reason = format!(
                    "size {size} would make {} images; sizes from 2 to {MAX_BARS_AND_STRIPES} are supported",
                    if size < 63 { ((1u64 << (size + 1)) - 2).to_string() } else { format!("about 2^{}", size + 1) }
                );
                return Err(DataError::Format { source: format!("bars_and_stripes(size: {size})"), reason });
            }
            bind_positional(&bars_and_stripes(size), &vars)
        }
        DataSource::Toy { name, n, seed } => {
            if !(1..=MAX_TOY_POINTS).contains(n) {
                return Err(DataError::Format {
                    source: format!("toy(name: \"{name}\", n: {n})"),
                    reason: format!("n must be from 1 to {MAX_TOY_POINTS}"),
                });
            }
            bind_positional(&toy(name, *n, *seed), &vars)
        }
        DataSource::Uniform { n, low, high, seed } => uniform(*n, *low, *high, *seed, &vars, &spec.source),
        DataSource::Digits { values } => {
            let (pixels, labels) = digits_tables(parse_csv("digits (bundled)", DIGITS_CSV, Some(true))?);
            bind_images(transform(pixels, values)?, Some(labels), &vars)
        }
        DataSource::Csv { path, header, values } => {
            let path = resolve(base, path);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| DataError::Read { source: path.display().to_string(), reason: e.to_string() })?;
            let table = transform(parse_csv(&path.display().to_string(), &text, *header)?, values)?;
            bind(&table, &vars)
        }
        DataSource::Npy { path, labels, values } | DataSource::Idx { path, labels, values } => {
            let parse = if matches!(spec.source, DataSource::Npy { .. }) { parse_npy } else { parse_idx };
            let (name, bytes) = read(base, path)?;
            let images = transform(parse(&name, &bytes)?, values)?;
            let labels = match labels {
                Some(file) => {
                    let (file, bytes) = read(base, file)?;
                    if vars.len() != 2 {
                        return Err(DataError::ImageBinding {
                            source: name,
                            labels: Some(file),
                            bound: spec.binding.clone(),
                        });
                    }
                    Some(parse(&file, &bytes)?)
                }
                None => None,
            };
            bind_images(images, labels, &vars)
        }
        DataSource::Cifar10 { paths, values } => {
            let mut out: Option<Dataset> = None;
            // Each file is bound alone, so that an error names its file and record.
            for path in paths {
                let (name, bytes) = read(base, path)?;
                let (pixels, labels) = parse_cifar(&name, &bytes)?;
                let part = bind_images(transform(pixels, values)?, Some(labels), &vars)?;
                match &mut out {
                    Some(data) => data.append(part),
                    None => out = Some(part),
                }
            }
            // Cannot fire: the checker refuses an empty list of paths.
            out.ok_or_else(|| DataError::Empty { source: spec.source.to_string() })
        }
    }
}

/// Reads rows of values for `v` from a CSV or NPY file (by its extension),
/// as they are (no `scale` or `binarize`): one column per unit in row-major
/// order (a categorical unit's index), each checked against `v`'s domain,
/// with errors naming the file, row and column. `v` may stand for part of
/// a variable (`ebmc sample --given`): its name and shape are the part's.
pub fn load_values(path: &Path, v: &Variable) -> Result<Dataset, DataError> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| DataError::Read { source: name.clone(), reason: e.to_string() })?;
    let table = match path.extension().and_then(|e| e.to_str()) {
        Some("npy") => parse_npy(&name, &bytes)?,
        _ => {
            let text = String::from_utf8(bytes)
                .map_err(|e| DataError::Format { source: name.clone(), reason: format!("not UTF-8 text: {e}") })?;
            parse_csv(&name, &text, None)?
        }
    };
    fits(&table, v, false)?;
    bind(&table, &[v])
}

/// The most values `uniform(...)` generates (256 MiB of f32).
pub const MAX_UNIFORM_VALUES: usize = 1 << 26;

/// `n` rows of every variable of `vars`, each unit uniform in `[low, high]`
/// (outlier rows for `classify`): the variables must be real, and the range
/// inside a bounded one's box, so every row is a value of its type.
fn uniform(
    n: usize,
    low: f64,
    high: f64,
    seed: u64,
    vars: &[&Variable],
    source: &DataSource,
) -> Result<Dataset, DataError> {
    use rand::{Rng, SeedableRng};
    let bad = |reason: String| Err(DataError::Format { source: source.to_string(), reason });
    let units: usize = vars.iter().map(|v| v.shape.iter().product::<usize>()).sum();
    if !(1..=MAX_TOY_POINTS).contains(&n) || n.saturating_mul(units) > MAX_UNIFORM_VALUES {
        return bad(format!(
            "n must be from 1 to {MAX_TOY_POINTS}, and n times the bound units ({units}) at most {MAX_UNIFORM_VALUES}"
        ));
    }
    // Both are finite (the checker's `Real` options).
    if low >= high {
        return bad(format!("low ({low}) must be below high ({high})"));
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = Tensors::new();
    for v in vars {
        match v.domain {
            Domain::Real { bounds: Some((lo, hi)) } if low < lo || high > hi => {
                return bad(format!("[{low}, {high}] leaves `{}`'s range [{lo}, {hi}]", v.name));
            }
            Domain::Real { .. } => {}
            _ => return bad(format!("it draws real values, and `{}` is discrete", v.name)),
        }
        let per: usize = v.shape.iter().product();
        let data = (0..n * per).map(|_| (low + (high - low) * rng.r#gen::<f64>()) as f32).collect();
        let mut shape = vec![n];
        shape.extend(&v.shape);
        out.insert(v.name.clone(), HostTensor::new(shape, data));
    }
    Ok(Dataset { rows: n, vars: out })
}

/// The file at `path` (resolved against `base`) and its name for messages.
fn read(base: &Path, path: &str) -> Result<(String, Vec<u8>), DataError> {
    let path = resolve(base, path);
    let name = path.display().to_string();
    match std::fs::read(&path) {
        Ok(bytes) => Ok((name, bytes)),
        Err(e) => Err(DataError::Read { source: name, reason: e.to_string() }),
    }
}

/// The data a train block reads, or `NoSource` for settings bound for rows in memory.
pub fn spec_of(train: &Train) -> Result<&DataSpec, DataError> {
    train.data.as_ref().ok_or_else(|| DataError::NoSource { model: train.model.clone() })
}

/// Splits off test rows as the train block says; `None` when it says nothing.
pub fn split(
    data: Dataset,
    test: Option<&TestSpec>,
    model: &Model,
    base: &Path,
) -> Result<(Dataset, Option<Dataset>), DataError> {
    match test {
        None => Ok((data, None)),
        Some(TestSpec::Data(spec)) => {
            let test = load(spec, model, base)?;
            Ok((data, Some(test)))
        }
        Some(TestSpec::Split(split)) => {
            let n = data.rows;
            let test_rows = match *split {
                TestSplit::Last { rows } => rows,
                TestSplit::Fraction { of } | TestSplit::Random { of, .. } => (of * n as f64).round() as usize,
            };
            if test_rows == 0 || test_rows >= n {
                return Err(DataError::Split {
                    reason: format!(
                        "cannot hold out {test_rows} of {n} rows for testing; keep at least one row for each side"
                    ),
                });
            }
            if let TestSplit::Random { seed, .. } = *split {
                let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
                let mut held = vec![false; n];
                for i in rand::seq::index::sample(&mut rng, n, test_rows) {
                    held[i] = true;
                }
                let side = |test: bool| {
                    let pick: Vec<usize> = (0..n).filter(|i| held[*i] == test).collect();
                    Dataset { rows: pick.len(), vars: data.rows_at(&pick) }
                };
                return Ok((side(false), Some(side(true))));
            }
            Ok((data.slice(0, n - test_rows), Some(data.slice(n - test_rows, n))))
        }
    }
}

impl Dataset {
    /// `other`'s rows after these; both bind the same variables.
    fn append(&mut self, other: Dataset) {
        for (name, t) in other.vars {
            if let Some(mine) = self.vars.get_mut(&name) {
                mine.shape[0] += t.shape[0];
                mine.data.extend(t.data);
            }
        }
        self.rows += other.rows;
    }

    /// Rows `from..to`, every variable sliced alike.
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
/// (the model file's directory): data paths, and a train block's `init`.
pub fn resolve(base: &Path, path: &str) -> PathBuf {
    let p = PathBuf::from(path);
    if p.is_absolute() || p.exists() { p } else { base.join(p) }
}

/// How `with_file` reads the numbers of the file it puts in a spec's place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileValues {
    /// With the replaced source's `scale` and `binarize` (raw data like the training data).
    AsTrained,
    /// As they are (values in the model's own domain, such as samples).
    AsIs,
}

/// The data spec with its file replaced by `path` (the `--data` option):
/// same binding, the format from the file name, and the numbers read as the
/// spec reads its own: its `scale` and `binarize` carry over (every file
/// format takes them), and so does a CSV's `header` to a CSV. A generated
/// set's options (`size`, `toy`'s `name`, `n`, `seed`) say how to make rows
/// the file now gives, so none carries over. With `FileValues::AsIs` the
/// file's numbers are read as they are (samples `ebmc sample` wrote are in
/// the model's own values already).
pub fn with_file(spec: &DataSpec, path: &Path, values: FileValues) -> DataSpec {
    let format = match path.extension().and_then(|e| e.to_str()) {
        Some("npy") => FileFormat::Npy,
        // MNIST's own names end `.idx3-ubyte` or `.ubyte`.
        Some(e) if e == "idx" || e.ends_with("ubyte") => FileFormat::Idx,
        // CIFAR-10's batches are `data_batch_1.bin` ... `test_batch.bin`.
        Some("bin") => FileFormat::Cifar10,
        _ => FileFormat::Csv,
    };
    let mut source = check::file_source(format, &path.display().to_string());
    if let (FileValues::AsTrained, Some(from), Some(to)) = (values, spec.source.values(), source.values_mut()) {
        *to = *from;
    }
    if let (DataSource::Csv { header: from, .. }, DataSource::Csv { header: to, .. }) = (&spec.source, &mut source) {
        *to = *from;
    }
    DataSpec { source, binding: spec.binding.clone(), span: spec.span }
}

/// Applies `scale` and then `binarize` (values at or above the threshold become 1).
/// Refuses to binarise values that are 0/1 already at a threshold that would
/// erase every 1, which would otherwise give a constant table and no error.
fn transform(mut t: Table, options: &ValueOptions) -> Result<Table, DataError> {
    if let Some(th) = options.binarize {
        let scaled = |v: &f64| *v * options.scale;
        let binary = t.values.iter().all(|v| scaled(v) == 0.0 || scaled(v) == 1.0);
        if th > 1.0 && binary && t.values.iter().any(|v| scaled(v) == 1.0) {
            return Err(DataError::AlreadyBinary { source: t.source.clone(), threshold: th });
        }
    }
    for v in t.values.iter_mut() {
        *v *= options.scale;
        if let Some(th) = options.binarize {
            *v = f64::from(u8::from(*v >= th));
        }
    }
    Ok(t)
}

/// Reads CSV with the `csv` crate (quoted cells, CRLF, a byte-order mark),
/// keeping each row's line number for errors; blank lines are skipped.
fn parse_csv(source: &str, text: &str, header: Option<bool>) -> Result<Table, DataError> {
    // A UTF-8 byte-order mark (Excel writes one) is not part of the first cell.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(text.as_bytes());
    let mut lines: Vec<(usize, Vec<String>)> = Vec::new();
    // Line numbers from byte offsets: the csv crate's own count lags a line
    // after CRLF terminators. A record's offset may fall on the end of the
    // line before, so its line is that of its first byte past line breaks.
    let bytes = text.as_bytes();
    let (mut counted_to, mut line) = (0, 1);
    for record in reader.records() {
        let record = record.map_err(|e| DataError::Format { source: source.to_string(), reason: e.to_string() })?;
        let cells: Vec<String> = record.iter().map(|c| c.trim().to_string()).collect();
        if cells.iter().all(String::is_empty) {
            continue;
        }
        let at = record.position().map_or(counted_to, |p| p.byte() as usize).clamp(counted_to, bytes.len());
        let start = bytes[at..].iter().position(|b| !matches!(b, b'\r' | b'\n')).map_or(bytes.len(), |i| at + i);
        line += bytes[counted_to..start].iter().filter(|&&b| b == b'\n').count();
        counted_to = start;
        lines.push((line, cells));
    }
    let Some((first_row, first)) = lines.first() else { return Err(DataError::Empty { source: source.to_string() }) };
    let has_header = match header {
        Some(h) => h,
        None => is_header(source, *first_row, first)?,
    };
    // Quotes that a space kept from being CSV quoting (`"a", "b"`) are not part of a name.
    let header = has_header.then(|| first.iter().map(|c| c.trim_matches('"').to_string()).collect::<Vec<_>>());
    let body = if has_header { &lines[1..] } else { &lines[..] };
    if body.is_empty() {
        return Err(DataError::Empty { source: source.to_string() });
    }
    let width = header.as_ref().map_or_else(|| body[0].1.len(), Vec::len);
    let mut values = Vec::with_capacity(body.len() * width);
    for (row, cells) in body {
        if cells.len() != width {
            return Err(DataError::ColumnCount {
                source: source.to_string(),
                row: *row,
                found: cells.len(),
                expected: width,
            });
        }
        for (c, cell) in cells.iter().enumerate() {
            let v: f64 = cell.parse().map_err(|_| DataError::NotANumber {
                source: source.to_string(),
                row: *row,
                column: c + 1,
                text: cell.to_string(),
            })?;
            if !v.is_finite() {
                return Err(DataError::NotFinite { source: source.to_string(), row: *row, column: c + 1 });
            }
            values.push(v);
        }
    }
    Ok(Table { source: source.to_string(), first_row: body[0].0, width, values, header, row_shape: None })
}

/// Whether the first row names the columns: every cell a name (not a
/// number) makes a header, every cell a number a data row; a mix is most
/// likely a data row with a typo, which is an error rather than a lost row.
fn is_header(source: &str, row: usize, cells: &[String]) -> Result<bool, DataError> {
    let cells: Vec<&str> = cells.iter().map(String::as_str).collect();
    let numeric = |c: &str| c.parse::<f64>().is_ok();
    if cells.iter().all(|c| numeric(c)) {
        return Ok(false);
    }
    if cells.iter().all(|c| !numeric(c) && !c.is_empty()) {
        return Ok(true);
    }
    let (column, text) = cells
        .iter()
        .enumerate()
        .find(|(_, c)| !numeric(c))
        .map(|(i, c)| (i + 1, c.to_string()))
        // Cannot fire: the all-numeric case returned above.
        .expect("some cell is not a number");
    Err(DataError::MixedHeader { source: source.to_string(), row, column, text })
}

/// NPY is read here rather than with `npyz` (which writes ebmc's NPY files):
/// on npyz 0.9.1, a header whose shape overflows `u64` panics (an overflowing
/// product), a file with bytes after its data is read without a word, and a
/// truncated file says only "failed to fill whole buffer". This reader
/// checks every size, bounds the header's nesting, and names what is wrong.
fn parse_npy(source: &str, bytes: &[u8]) -> Result<Table, DataError> {
    let bad = |reason: String| DataError::Format { source: source.to_string(), reason };
    if bytes.len() < 8 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("not an NPY file (it does not start with \\x93NUMPY); save arrays with numpy.save".into()));
    }
    let (len, start) = match bytes[6] {
        1 => (bytes.get(8..10).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize), 10usize),
        2 | 3 => (bytes.get(8..12).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize), 12),
        v => return Err(bad(format!("NPY format version {v} is not supported (1, 2 or 3)"))),
    };
    let len =
        len.ok_or_else(|| bad(format!("the file is truncated: {} bytes, too short for an NPY header", bytes.len())))?;
    let header = bytes.get(start..start.saturating_add(len)).ok_or_else(|| {
        bad(format!(
            "the file is truncated: the header needs {len} bytes after byte {start}, the file has {}",
            bytes.len()
        ))
    })?;
    let h = parse_npy_header(header).map_err(|e| bad(format!("bad NPY header: {e}")))?;
    let (kind, size, big_endian) = npy_dtype(&h.descr).map_err(bad)?;
    let count = h
        .shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|n| n.checked_mul(size).is_some())
        .ok_or_else(|| bad(format!("the shape {:?} is too large", h.shape)))?;
    let data = &bytes[start + len..];
    if data.len() != count * size {
        return Err(bad(format!(
            "the header's shape {:?} of {} needs {} bytes of data, the file holds {}; the file is truncated or not what its header says",
            h.shape,
            h.descr,
            count * size,
            data.len()
        )));
    }
    let mut values: Vec<f64> = data.chunks_exact(size).map(|c| decode(kind, c, big_endian)).collect();
    let rows = *h.shape.first().ok_or_else(|| bad("a 0-d array has no rows; save a 1-d or 2-d array".into()))?;
    let width = h.shape[1..].iter().product::<usize>();
    if rows == 0 || width == 0 {
        return Err(DataError::Empty { source: source.to_string() });
    }
    if h.fortran_order {
        values = row_major(&values, &h.shape);
    }
    check_finite(source, &values, width, 1)?;
    let row_shape = Some(h.shape[1..].to_vec());
    Ok(Table { source: source.to_string(), first_row: 1, width, values, header: None, row_shape })
}

/// A numeric NPY dtype: kind (`f`, `i`, `u`, `b`), bytes per value, byte order.
fn npy_dtype(descr: &str) -> Result<(u8, usize, bool), String> {
    let unsupported = || format!("dtype '{descr}' is not supported (use float32, float64, an integer type or bool)");
    let b = descr.as_bytes();
    if b.len() < 3 {
        return Err(unsupported());
    }
    let big_endian = match b[0] {
        b'<' => false,
        b'>' => true,
        b'|' | b'=' => cfg!(target_endian = "big"),
        _ => return Err(unsupported()),
    };
    let size: usize = descr[2..].parse().map_err(|_| unsupported())?;
    match (b[1], size) {
        (b'f', 4 | 8) | (b'i' | b'u', 1 | 2 | 4 | 8) | (b'b', 1) => Ok((b[1], size, big_endian)),
        _ => Err(unsupported()),
    }
}

/// One value of `kind` (`f`, `i`, `u`, `b`) from its bytes.
fn decode(kind: u8, c: &[u8], big_endian: bool) -> f64 {
    let mut b = [0u8; 8];
    b[..c.len()].copy_from_slice(c);
    if big_endian {
        b[..c.len()].reverse();
    }
    let bits = u64::from_le_bytes(b);
    match (kind, c.len()) {
        (b'f', 4) => f64::from(f32::from_bits(bits as u32)),
        (b'f', _) => f64::from_bits(bits),
        (b'u' | b'b', _) => bits as f64,
        // Sign-extend a little-endian integer of `n` bytes.
        (_, n) => ((bits << (64 - 8 * n)) as i64 >> (64 - 8 * n)) as f64,
    }
}

/// The values of a column-major (Fortran-ordered) array of `shape` in row-major order.
fn row_major(values: &[f64], shape: &[usize]) -> Vec<f64> {
    let mut out = Vec::with_capacity(values.len());
    let mut index = vec![0usize; shape.len()];
    for _ in 0..values.len() {
        let mut offset = 0;
        let mut stride = 1;
        for (i, d) in index.iter().zip(shape) {
            offset += i * stride;
            stride *= d;
        }
        out.push(values[offset]);
        // Advance the row-major index, last axis fastest.
        for axis in (0..shape.len()).rev() {
            index[axis] += 1;
            if index[axis] < shape[axis] {
                break;
            }
            index[axis] = 0;
        }
    }
    out
}

/// The IDX format of MNIST: magic 0, 0, type, rank; big-endian sizes; data.
fn parse_idx(source: &str, bytes: &[u8]) -> Result<Table, DataError> {
    let bad = |reason: String| DataError::Format { source: source.to_string(), reason };
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(bad("not an IDX file (its magic number must start with two zero bytes)".into()));
    }
    let (kind, rank) = (bytes[2], bytes[3] as usize);
    let (decode_kind, size) = match kind {
        0x08 => (b'u', 1),
        0x09 => (b'i', 1),
        0x0B => (b'i', 2),
        0x0C => (b'i', 4),
        0x0D => (b'f', 4),
        0x0E => (b'f', 8),
        other => return Err(bad(format!("IDX type 0x{other:02X} is not one of the format's types (0x08 to 0x0E)"))),
    };
    if rank == 0 {
        return Err(bad("the IDX file has rank 0 (no dimensions), so no rows".into()));
    }
    let dims: Vec<usize> = (0..rank)
        .map(|i| bytes.get(4 + 4 * i..8 + 4 * i).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize))
        .collect::<Option<_>>()
        .ok_or_else(|| {
            bad(format!(
                "the file is truncated: {} bytes, too short for the {rank} dimensions its header announces",
                bytes.len()
            ))
        })?;
    let count = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|n| n.checked_mul(size).is_some())
        .ok_or_else(|| bad(format!("the dimensions {dims:?} are too large")))?;
    let data = &bytes[4 + 4 * rank..];
    if data.len() != count * size {
        return Err(bad(format!(
            "the header's dimensions {dims:?} need {} bytes of data, the file holds {}; the file is truncated or not what its header says",
            count * size,
            data.len()
        )));
    }
    let values: Vec<f64> = data.chunks_exact(size).map(|c| decode(decode_kind, c, true)).collect();
    let (rows, width) = (dims[0], dims[1..].iter().product::<usize>());
    if rows == 0 || width == 0 {
        return Err(DataError::Empty { source: source.to_string() });
    }
    check_finite(source, &values, width, 1)?;
    let row_shape = Some(dims[1..].to_vec());
    Ok(Table { source: source.to_string(), first_row: 1, width, values, header: None, row_shape })
}

/// Bytes of one CIFAR-10 record: a label, then a 32×32 image's red, green and
/// blue planes, each row-major: a `[3, 32, 32]` image in row-major order.
const CIFAR_RECORD: usize = 1 + 3 * 32 * 32;

/// A CIFAR-10 binary batch as its pixels (rows of `[3, 32, 32]`) and labels.
fn parse_cifar(source: &str, bytes: &[u8]) -> Result<(Table, Table), DataError> {
    if bytes.is_empty() {
        return Err(DataError::Empty { source: source.to_string() });
    }
    if !bytes.len().is_multiple_of(CIFAR_RECORD) {
        return Err(DataError::RecordSize { source: source.to_string(), bytes: bytes.len() });
    }
    let rows = bytes.len() / CIFAR_RECORD;
    let mut pixels = Vec::with_capacity(rows * (CIFAR_RECORD - 1));
    let mut labels = Vec::with_capacity(rows);
    for record in bytes.chunks_exact(CIFAR_RECORD) {
        labels.push(f64::from(record[0]));
        pixels.extend(record[1..].iter().map(|&b| f64::from(b)));
    }
    let table = |width: usize, values: Vec<f64>, row_shape: Shape| Table {
        source: source.to_string(),
        first_row: 1,
        width,
        values,
        header: None,
        row_shape: Some(row_shape),
    };
    Ok((table(CIFAR_RECORD - 1, pixels, vec![3, 32, 32]), table(1, labels, vec![])))
}

/// The bundled digits as their pixels (rows of `[8, 8]`) and labels: the
/// CSV's 64 pixel columns and its label column. Without a header the
/// columns bind by position whatever the variables are called.
fn digits_tables(t: Table) -> (Table, Table) {
    let (pixels, labels): (Vec<&[f64]>, Vec<f64>) = t.values.chunks_exact(t.width).map(|r| (&r[..64], r[64])).unzip();
    let table = |width: usize, values: Vec<f64>, row_shape: Shape| Table {
        source: t.source.clone(),
        first_row: t.first_row,
        width,
        values,
        header: None,
        row_shape: Some(row_shape),
    };
    (table(64, pixels.concat(), vec![8, 8]), table(1, labels, vec![]))
}

/// The parts of an NPY header ebmc needs.
struct NpyHeader {
    descr: String,
    fortran_order: bool,
    shape: Vec<usize>,
}

/// A Python literal as NPY headers write them.
#[derive(Debug, Clone, PartialEq)]
enum PyValue {
    Str(String),
    Bool(bool),
    Int(u64),
    None,
    Tuple(Vec<PyValue>),
    Dict(Vec<(String, PyValue)>),
}

/// A recursive-descent parser for the Python literals of an NPY header (a
/// dict of strings, booleans, integers and tuples); nesting is bounded so a
/// hostile header cannot exhaust the stack.
struct PyParser<'a> {
    text: &'a [u8],
    at: usize,
}

impl PyParser<'_> {
    const MAX_DEPTH: usize = 16;

    fn skip_space(&mut self) {
        while self.text.get(self.at).is_some_and(u8::is_ascii_whitespace) {
            self.at += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        self.skip_space();
        if self.text.get(self.at) == Some(&c) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn value(&mut self, depth: usize) -> Result<PyValue, String> {
        if depth > Self::MAX_DEPTH {
            return Err("the header nests too deeply".into());
        }
        self.skip_space();
        let Some(&c) = self.text.get(self.at) else { return Err("the header ends in the middle of a value".into()) };
        match c {
            b'{' => {
                self.at += 1;
                let mut entries = Vec::new();
                loop {
                    if self.eat(b'}') {
                        break;
                    }
                    let PyValue::Str(key) = self.value(depth + 1)? else {
                        return Err("a header key is not a string".into());
                    };
                    if !self.eat(b':') {
                        return Err(format!("no `:` after the key '{key}'"));
                    }
                    entries.push((key, self.value(depth + 1)?));
                    if !self.eat(b',') && !self.eat(b'}') {
                        return Err("expected `,` or `}` in the header dict".into());
                    }
                    if self.text[self.at - 1] == b'}' {
                        break;
                    }
                }
                Ok(PyValue::Dict(entries))
            }
            b'(' | b'[' => {
                let close = if c == b'(' { b')' } else { b']' };
                self.at += 1;
                let mut items = Vec::new();
                loop {
                    if self.eat(close) {
                        break;
                    }
                    items.push(self.value(depth + 1)?);
                    if !self.eat(b',') && !self.eat(close) {
                        return Err("expected `,` or a closing bracket in a tuple".into());
                    }
                    if self.text[self.at - 1] == close {
                        break;
                    }
                }
                Ok(PyValue::Tuple(items))
            }
            b'\'' | b'"' => {
                self.at += 1;
                let start = self.at;
                while self.text.get(self.at).is_some_and(|&b| b != c) {
                    self.at += 1;
                }
                if self.at >= self.text.len() {
                    return Err("a string in the header is not closed".into());
                }
                let s = String::from_utf8_lossy(&self.text[start..self.at]).into_owned();
                self.at += 1;
                Ok(PyValue::Str(s))
            }
            b'0'..=b'9' => {
                let start = self.at;
                while self.text.get(self.at).is_some_and(|b| b.is_ascii_digit() || *b == b'L') {
                    self.at += 1;
                }
                let digits = std::str::from_utf8(&self.text[start..self.at]).unwrap_or_default().trim_end_matches('L');
                digits.parse().map(PyValue::Int).map_err(|_| format!("the integer {digits} in the header is too large"))
            }
            _ => {
                let rest = &self.text[self.at..];
                for (word, value) in
                    [(&b"True"[..], PyValue::Bool(true)), (b"False", PyValue::Bool(false)), (b"None", PyValue::None)]
                {
                    if rest.starts_with(word) {
                        self.at += word.len();
                        return Ok(value);
                    }
                }
                Err(format!("unexpected `{}` in the header", char::from(c)))
            }
        }
    }
}

fn parse_npy_header(text: &[u8]) -> Result<NpyHeader, String> {
    let mut p = PyParser { text, at: 0 };
    let PyValue::Dict(entries) = p.value(0)? else { return Err("the header is not a Python dict".into()) };
    p.skip_space();
    if p.at != text.len() {
        return Err("text after the header dict".into());
    }
    let get = |key: &str| {
        entries.iter().find(|(k, _)| k == key).map(|(_, v)| v).ok_or_else(|| format!("the header has no '{key}'"))
    };
    let descr = match get("descr")? {
        PyValue::Str(s) => s.clone(),
        _ => return Err("'descr' is a structured dtype; save a plain numeric array".into()),
    };
    let fortran_order = match get("fortran_order")? {
        PyValue::Bool(b) => *b,
        _ => return Err("'fortran_order' is not True or False".into()),
    };
    let shape = match get("shape")? {
        PyValue::Tuple(items) => items
            .iter()
            .map(|v| match v {
                PyValue::Int(n) => usize::try_from(*n).map_err(|_| "a dimension of 'shape' is too large".to_string()),
                _ => Err("'shape' holds something other than whole numbers".to_string()),
            })
            .collect::<Result<Vec<_>, _>>()?,
        _ => return Err("'shape' is not a tuple".into()),
    };
    Ok(NpyHeader { descr, fortran_order, shape })
}

fn check_finite(source: &str, values: &[f64], width: usize, first_row: usize) -> Result<(), DataError> {
    match values.iter().position(|v| !v.is_finite()) {
        Some(i) => {
            Err(DataError::NotFinite { source: source.to_string(), row: first_row + i / width, column: i % width + 1 })
        }
        None => Ok(()),
    }
}

/// Columns a variable takes: one per unit (a categorical unit is one column holding its index).
fn columns_of(v: &Variable) -> usize {
    unit_shape(v).iter().product()
}

/// The shape of a variable's units: its shape, less a categorical's one-hot axis.
fn unit_shape(v: &Variable) -> &[usize] {
    match v.domain {
        Domain::Categorical { .. } => &v.shape[..v.shape.len().saturating_sub(1)],
        _ => &v.shape,
    }
}

/// Whether rows of `t` fit the units of `v`: the same shape once axes of
/// size 1 are dropped (rows of `[28, 28]` feed `real[1, 28, 28]`), or, when
/// either side has at most one axis, the same number of values (a row of
/// `[28, 28]` feeds `real[784]`, a flat row of 64 feeds `real[1, 8, 8]`, in
/// row-major order). Anything else, such as `[32, 32, 3]` rows for
/// `real[3, 32, 32]`, would scramble the pixels, so it is an error.
/// Columns without a shape (CSV) are counted by `bind` instead.
fn fits(t: &Table, v: &Variable, labels: bool) -> Result<(), DataError> {
    let Some(row) = &t.row_shape else { return Ok(()) };
    let unit = unit_shape(v);
    let squeezed = |s: &[usize]| s.iter().copied().filter(|&d| d != 1).collect::<Vec<_>>();
    let count = |s: &[usize]| s.iter().product::<usize>();
    let flat = row.len() <= 1 || unit.len() <= 1;
    if squeezed(row) == squeezed(unit) || flat && count(row) == count(unit) {
        return Ok(());
    }
    Err(DataError::Shape {
        source: t.source.clone(),
        found: row.clone(),
        labels,
        declared: Box::new(Declared { var: v.name.clone(), domain: v.domain.clone(), shape: v.shape.clone() }),
    })
}

/// Binds images (and, for a second variable, their labels) to `vars`:
/// `-> x` the images alone, `-> (x, y)` images and labels row for row. Flat
/// rows without labels split by position across several variables, as CSV
/// columns do.
fn bind_images(images: Table, labels: Option<Table>, vars: &[&Variable]) -> Result<Dataset, DataError> {
    match (vars, labels) {
        ([x], _) => {
            fits(&images, x, false)?;
            bind(&images, vars)
        }
        ([x, y], Some(labels)) => {
            let (rows, label_rows) = (images.rows(), labels.rows());
            if label_rows != rows {
                return Err(DataError::RowCounts { images: images.source, rows, labels: labels.source, label_rows });
            }
            fits(&images, x, false)?;
            fits(&labels, y, true)?;
            let mut data = bind(&images, &[*x])?;
            data.vars.extend(bind(&labels, &[*y])?.vars);
            Ok(data)
        }
        (_, Some(_)) => Err(DataError::ImageBinding {
            source: images.source,
            labels: None,
            bound: vars.iter().map(|v| v.name.clone()).collect(),
        }),
        (_, None) => match images.row_shape {
            Some(found) if found.len() > 1 => Err(DataError::NoLabels {
                source: images.source,
                found,
                bound: vars.iter().map(|v| v.name.clone()).collect(),
            }),
            _ => bind(&images, vars),
        },
    }
}

/// Binds table columns to variables: by header names when every variable's
/// columns are found there (`v0`..`v63`, or `y` for a one-column variable),
/// else by position, in binding order, using every column.
fn bind(t: &Table, vars: &[&Variable]) -> Result<Dataset, DataError> {
    let by_name: Option<Vec<Vec<usize>>> = t.header.as_ref().and_then(|h| {
        vars.iter()
            .map(|v| {
                let n = columns_of(v);
                (0..n)
                    .map(|i| {
                        let names = if n == 1 {
                            vec![v.name.clone(), format!("{}0", v.name)]
                        } else {
                            vec![format!("{}{i}", v.name), format!("{}_{i}", v.name)]
                        };
                        h.iter().position(|c| names.contains(c))
                    })
                    .collect::<Option<Vec<usize>>>()
            })
            .collect()
    });
    let columns = match by_name {
        Some(c) => c,
        None => {
            let expected: usize = vars.iter().map(|v| columns_of(v)).sum();
            if t.width != expected {
                return Err(DataError::ColumnCount {
                    source: t.source.clone(),
                    row: t.first_row,
                    found: t.width,
                    expected,
                });
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
                if !(value as f32).is_finite() {
                    return Err(DataError::OutOfRange {
                        source: t.source.clone(),
                        row: t.first_row + r,
                        column: c + 1,
                        value,
                    });
                }
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
        Domain::Categorical { categories }
            if value.fract() == 0.0 && value >= 0.0 && (value as usize) < *categories =>
        {
            data.extend((0..*categories).map(|k| f32::from(u8::from(k == value as usize))));
        }
        Domain::Categorical { categories } => {
            return Err(format!("categorical({categories}): a whole number from 0 to {}", categories - 1));
        }
        Domain::Real { bounds: Some((lo, hi)) } if value < *lo || value > *hi => {
            return Err(format!("real in [{lo}, {hi}]"));
        }
        Domain::Real { .. } => data.push(value as f32),
    }
    Ok(())
}

fn bind_positional(points: &[Vec<f64>], vars: &[&Variable]) -> Result<Dataset, DataError> {
    let width = points.first().map_or(0, Vec::len);
    let table = Table {
        source: "generated data".into(),
        first_row: 1,
        width,
        values: points.iter().flatten().copied().collect(),
        header: None,
        row_shape: None,
    };
    bind(&table, vars)
}

/// Every `size x size` image made of whole bars or whole stripes (30 for size 4).
pub fn bars_and_stripes(size: usize) -> Vec<Vec<f64>> {
    let mut out: Vec<Vec<f64>> = Vec::new();
    let all = (1usize << size) - 1;
    for mask in 0..=all {
        let on = |i: usize| f64::from(u8::from(mask >> i & 1 == 1));
        out.push((0..size * size).map(|p| on(p % size)).collect());
        // All off and all on are both a bar pattern and a stripe pattern: count them once.
        if mask != 0 && mask != all {
            out.push((0..size * size).map(|p| on(p / size)).collect());
        }
    }
    out
}

/// 2-D toy sets used across the EBM literature, scaled to about [-4, 4].
pub fn toy(name: &str, n: usize, seed: u64) -> Vec<Vec<f64>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    // Cannot fire: a standard deviation of 1 is valid.
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
            let terms: Vec<f64> = EIGHT_GAUSSIANS
                .iter()
                .map(|(cx, cy)| {
                    -((x - cx).powi(2) + (y - cy).powi(2)) / (2.0 * s2) - (2.0 * std::f64::consts::PI * s2).ln()
                })
                .collect();
            Some(log_mean_exp(&terms))
        }
        "rings" => {
            // Radius r = R_k + noise only approximately; the density of a ring
            // of radius R blurred by isotropic noise s, with the angle uniform,
            // is exp(-(|x| - R)^2 / 2s^2) / ((2π)^{3/2} s R) for R >> s.
            let r = (x * x + y * y).sqrt();
            let s = RINGS_STD;
            let terms: Vec<f64> = RINGS
                .iter()
                .map(|(rk, _)| {
                    -(r - rk).powi(2) / (2.0 * s * s) - (2.0 * std::f64::consts::PI).powf(1.5).ln() - s.ln() - rk.ln()
                })
                .collect();
            Some(log_mean_exp(&terms))
        }
        _ => None,
    }
}

fn log_mean_exp(x: &[f64]) -> f64 {
    let m = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    m + (x.iter().map(|v| (v - m).exp()).sum::<f64>() / x.len() as f64).ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(header: &str, data: &[u8]) -> Vec<u8> {
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    fn f4(values: &[f32], big: bool) -> Vec<u8> {
        values.iter().flat_map(|v| if big { v.to_be_bytes() } else { v.to_le_bytes() }).collect()
    }

    fn format_reason(e: DataError) -> String {
        match e {
            DataError::Format { reason, .. } => reason,
            other => panic!("expected a format error, got {other:?}"),
        }
    }

    #[test]
    fn uniform_rows_fill_the_range_and_refuse_what_no_variable_can_hold() {
        let src = "model m { visible x : real[4] in [0, 1]; visible y : categorical(3); net f = mlp(4 -> 3);
            energy e = -(f(x) @ y); }
          train m { data = csv(\"rows.csv\") -> (x, y); outliers = uniform(n: 5000, low: 0.25, high: 1, seed: 2) -> x;
            objective = classify; }";
        let c = crate::compile(src).unwrap();
        let (model, train) = (&c.program.models["m"], &c.program.trains["m"]);
        let spec = train.outliers.clone().unwrap();
        let rows = load(&spec, model, Path::new(".")).unwrap();
        let x = &rows.vars["x"];
        assert_eq!((rows.rows, x.shape.clone()), (5000, vec![5000, 4]));
        assert!(x.data.iter().all(|v| (0.25..=1.0).contains(v)));
        // Uniform on [0.25, 1]: mean 0.625; the mean of 20,000 values has standard error 0.0015.
        let mean = x.data.iter().map(|v| f64::from(*v)).sum::<f64>() / x.data.len() as f64;
        assert!((mean - 0.625).abs() < 0.008, "{mean}");
        // The same seed gives the same rows.
        assert_eq!(load(&spec, model, Path::new(".")).unwrap().vars["x"], *x);
        let with =
            |source: DataSource, binding: &str| DataSpec { source, binding: vec![binding.into()], ..spec.clone() };
        let outside = with(DataSource::Uniform { n: 10, low: -1.0, high: 1.0, seed: 0 }, "x");
        assert!(format_reason(load(&outside, model, Path::new(".")).unwrap_err()).contains("leaves `x`'s range"));
        let label = with(DataSource::Uniform { n: 10, low: 0.0, high: 1.0, seed: 0 }, "y");
        assert!(format_reason(load(&label, model, Path::new(".")).unwrap_err()).contains("`y` is discrete"));
        let empty = with(DataSource::Uniform { n: 10, low: 1.0, high: 1.0, seed: 0 }, "x");
        assert!(format_reason(load(&empty, model, Path::new(".")).unwrap_err()).contains("must be below"));
    }

    #[test]
    fn npy_headers_are_parsed_as_python_literals() {
        // The same 2x3 array [[1, 2, 3], [4, 5, 6]] in C order, in Fortran order
        // written without spaces, and big-endian.
        let c =
            npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", &f4(&[1., 2., 3., 4., 5., 6.], false));
        let f = npy("{'descr':'<f4','fortran_order':True,'shape':(2,3)}", &f4(&[1., 4., 2., 5., 3., 6.], false));
        let be = npy(
            "{\"descr\": \">f4\", \"shape\": (2, 3), \"fortran_order\": False}",
            &f4(&[1., 2., 3., 4., 5., 6.], true),
        );
        for bytes in [c, f, be] {
            let t = parse_npy("a.npy", &bytes).unwrap();
            assert_eq!((t.width, t.values.clone()), (3, vec![1., 2., 3., 4., 5., 6.]));
        }
        // Three dimensions in Fortran order: element (i, j, k) at i + 2j + 4k.
        let data: Vec<f32> = (0..8).map(|o| o as f32).collect();
        let t = parse_npy("a.npy", &npy("{'descr':'<f4','fortran_order':True,'shape':(2,2,2)}", &f4(&data, false)))
            .unwrap();
        assert_eq!(t.values, vec![0., 4., 2., 6., 1., 5., 3., 7.]);
        // Integer dtypes are sign-extended in either byte order.
        let t =
            parse_npy("a.npy", &npy("{'descr':'>i2','fortran_order':False,'shape':(2,)}", &[0xFF, 0xFE, 0x00, 0x07]))
                .unwrap();
        assert_eq!(t.values, vec![-2., 7.]);
    }

    #[test]
    fn broken_npy_files_are_errors_not_panics() {
        let good = npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", &f4(&[1.; 6], false));
        for n in 0..good.len() {
            assert!(parse_npy("a.npy", &good[..n]).is_err(), "{n} bytes");
        }
        let mut v2 = good.clone();
        v2[6] = 2;
        assert!(parse_npy("a.npy", &v2[..10]).is_err());
        assert!(
            format_reason(parse_npy("a.npy", &[good.clone(), vec![0; 4]].concat()).unwrap_err())
                .contains("needs 24 bytes of data, the file holds 28")
        );
        for (header, says) in [
            ("{'descr': '<c8', 'fortran_order': False, 'shape': (2, 3)}", "dtype '<c8'"),
            ("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2, 3)}", "structured"),
            ("{'descr': '<f4', 'shape': (2, 3)}", "no 'fortran_order'"),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999, 99999999999999, 9999999)}",
                "too large",
            ),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)", "expected `,` or `}`"),
            ("((((((((((((((((((((((((((((((", "nests too deeply"),
        ] {
            let reason = format_reason(parse_npy("a.npy", &npy(header, &f4(&[1.; 6], false))).unwrap_err());
            assert!(reason.contains(says), "{header}: {reason}");
        }
    }

    #[test]
    fn idx_files_are_checked_against_their_header() {
        let mut good = vec![0, 0, 0x08, 2, 0, 0, 0, 2, 0, 0, 0, 3];
        good.extend([1, 2, 3, 4, 5, 6]);
        assert_eq!(parse_idx("a.idx", &good).unwrap().values, vec![1., 2., 3., 4., 5., 6.]);
        for n in 0..good.len() {
            assert!(parse_idx("a.idx", &good[..n]).is_err(), "{n} bytes");
        }
        assert!(format_reason(parse_idx("a.idx", &[1, 0, 8, 1]).unwrap_err()).contains("magic"));
        assert!(format_reason(parse_idx("a.idx", &[0, 0, 0x07, 1, 0, 0, 0, 1, 0]).unwrap_err()).contains("0x07"));
        assert!(
            format_reason(parse_idx("a.idx", &[0, 0, 0x0E, 2, 255, 255, 255, 255, 255, 255, 255, 255]).unwrap_err())
                .contains("too large")
        );
        assert!(
            format_reason(parse_idx("a.idx", &[0, 0, 0x08, 1, 0, 0, 0, 5, 1, 2, 3]).unwrap_err())
                .contains("need 5 bytes of data, the file holds 3")
        );
    }

    #[test]
    fn a_csv_header_is_all_names_and_a_bom_is_not_a_cell() {
        let t = parse_csv("a.csv", "\u{feff}1,0\n0,1\n", None).unwrap();
        assert_eq!((t.header, t.values.len(), t.first_row), (None, 4, 1));
        let t = parse_csv("a.csv", "\u{feff}v0,v1\n0,1\n", None).unwrap();
        assert_eq!(t.header, Some(vec!["v0".to_string(), "v1".to_string()]));
        match parse_csv("a.csv", "1,O,1\n0,1,1\n", None) {
            Err(DataError::MixedHeader { row: 1, column: 2, text, .. }) => assert_eq!(text, "O"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_csv("a.csv", "1,0\nnan,1\n", None),
            Err(DataError::NotFinite { row: 2, column: 1, .. })
        ));
    }

    #[test]
    fn csv_rows_keep_their_line_numbers_through_quotes_crlf_and_blank_lines() {
        let t = parse_csv("a.csv", "\"v0\", \"v1\"\r\n0,1\r\n\r\n1, 0\r\n", None).unwrap();
        assert_eq!(
            (t.header, t.values, t.first_row),
            (Some(vec!["v0".to_string(), "v1".to_string()]), vec![0., 1., 1., 0.], 2)
        );
        match parse_csv("a.csv", "v0,v1\n0,1\n\n1,x\n", None) {
            Err(DataError::NotANumber { row: 4, column: 2, text, .. }) => assert_eq!(text, "x"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_csv("a.csv", "0,1\n1,0,1\n", None),
            Err(DataError::ColumnCount { row: 2, found: 3, expected: 2, .. })
        ));
    }

    fn data_of(source: &str) -> DataSpec {
        let text = format!(
            "model m {{ visible v : binary[2]; param b : real[2]; energy e = -(b @ v); }} train m {{ data = {source} -> v; objective = pl; }}"
        );
        let compiled = crate::compile(&text).unwrap_or_else(|d| panic!("{source}: {d:?}"));
        compiled.program.trains["m"].data.clone().unwrap()
    }

    #[test]
    fn a_data_file_is_read_with_the_value_options_of_the_source_it_replaces() {
        let binarize_at_8 = ValueOptions { scale: 1.0, binarize: Some(8.0) };
        let spec = data_of("digits(binarize: 8)");
        assert_eq!(
            with_file(&spec, Path::new("pix.csv"), FileValues::AsTrained).source,
            DataSource::Csv { path: "pix.csv".into(), header: None, values: binarize_at_8 }
        );
        let spec = data_of("csv(\"a.csv\", header: true, binarize: 0.5, scale: 2)");
        let halves = ValueOptions { scale: 2.0, binarize: Some(0.5) };
        assert_eq!(
            with_file(&spec, Path::new("b.csv"), FileValues::AsTrained).source,
            DataSource::Csv { path: "b.csv".into(), header: Some(true), values: halves }
        );
        assert_eq!(
            with_file(&spec, Path::new("b.npy"), FileValues::AsTrained).source,
            DataSource::Npy { path: "b.npy".into(), labels: None, values: halves }
        );
        assert_eq!(
            with_file(&spec, Path::new("t10k-images.idx3-ubyte"), FileValues::AsTrained).source,
            DataSource::Idx { path: "t10k-images.idx3-ubyte".into(), labels: None, values: halves }
        );
        // A generated set has no value options: the file's numbers are read as they are.
        let plain = ValueOptions { scale: 1.0, binarize: None };
        let spec = data_of("bars_and_stripes(size: 2)");
        assert_eq!(
            with_file(&spec, Path::new("p.idx"), FileValues::AsTrained).source,
            DataSource::Idx { path: "p.idx".into(), labels: None, values: plain }
        );
        assert_eq!(with_file(&spec, Path::new("p.csv"), FileValues::AsTrained).binding, vec!["v".to_string()]);
        // Read as they are, the file's numbers keep the new source's defaults.
        let spec = data_of("digits(binarize: 8)");
        assert_eq!(
            with_file(&spec, Path::new("s.csv"), FileValues::AsIs).source,
            DataSource::Csv { path: "s.csv".into(), header: None, values: plain }
        );
    }

    #[test]
    fn binarising_values_that_are_0_or_1_already_at_a_threshold_above_1_is_an_error() {
        let table = |values: Vec<f64>| Table {
            source: "s.csv".into(),
            first_row: 1,
            width: 2,
            values,
            header: None,
            row_shape: None,
        };
        let at_8 = ValueOptions { scale: 1.0, binarize: Some(8.0) };
        match transform(table(vec![0.0, 1.0, 1.0, 0.0]), &at_8) {
            Err(DataError::AlreadyBinary { source, threshold }) => {
                assert_eq!((source.as_str(), threshold), ("s.csv", 8.0))
            }
            other => panic!("expected AlreadyBinary, got {other:?}"),
        }
        // Raw values, all-zero rows and thresholds at most 1 are binarised as asked.
        assert_eq!(transform(table(vec![0.0, 9.0, 16.0, 3.0]), &at_8).unwrap().values, vec![0.0, 1.0, 1.0, 0.0]);
        assert!(transform(table(vec![0.0; 4]), &at_8).is_ok());
        let at_half = ValueOptions { scale: 1.0, binarize: Some(0.5) };
        assert_eq!(transform(table(vec![0.0, 1.0, 1.0, 0.0]), &at_half).unwrap().values, vec![0.0, 1.0, 1.0, 0.0]);
    }

    #[test]
    fn sources_and_splits_print_as_calls_with_every_bound_option() {
        assert_eq!(data_of("digits(binarize: 8)").source.to_string(), "digits(binarize: 8, scale: 1)");
        assert_eq!(data_of("csv(\"a.csv\", scale: 0.5)").source.to_string(), "csv(path: \"a.csv\", scale: 0.5)");
        assert_eq!(data_of("toy(\"moons\")").source.to_string(), "toy(n: 10000, name: \"moons\", seed: 0)");
        assert_eq!(data_of("bars_and_stripes").source.to_string(), "bars_and_stripes(size: 4)");
        assert_eq!(TestSplit::Fraction { of: 0.25 }.to_string(), "fraction(of: 0.25)");
        assert_eq!(TestSplit::Random { of: 0.25, seed: 3 }.to_string(), "random(of: 0.25, seed: 3)");
    }

    /// A scratch directory, removed when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!("ebmc-data-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }

        /// Writes `bytes` to `name` and returns the file's path.
        fn write(&self, name: &str, bytes: &[u8]) -> String {
            let path = self.0.join(name);
            std::fs::write(&path, bytes).unwrap();
            path.display().to_string()
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn var(name: &str, domain: Domain, shape: &[usize]) -> Variable {
        Variable {
            name: name.into(),
            role: crate::front::ast::Role::Visible,
            domain,
            shape: shape.to_vec(),
            span: crate::front::span::Span::default(),
        }
    }

    const UNIT: Domain = Domain::Real { bounds: Some((0.0, 1.0)) };

    fn categorical(k: usize) -> Domain {
        Domain::Categorical { categories: k }
    }

    /// Loads `source` bound to `vars`, in this order. The loader reads only
    /// the model's variables, so they are set directly, of any rank.
    fn load_into(source: &DataSource, vars: Vec<Variable>) -> Result<Dataset, DataError> {
        let text = "model m { visible v : binary[2]; param b : real[2]; energy e = -(b @ v); }";
        let mut model = crate::compile(text).unwrap().program.models["m"].clone();
        let binding = vars.iter().map(|v| v.name.clone()).collect();
        model.variables = vars;
        load(&DataSpec { source: source.clone(), binding, span: Default::default() }, &model, Path::new("."))
    }

    fn load_err(source: &DataSource, vars: Vec<Variable>) -> String {
        match load_into(source, vars) {
            Ok(_) => "ok".into(),
            Err(e) => e.to_string(),
        }
    }

    /// One-hot rows of `labels` over `k` categories.
    fn one_hot(labels: &[usize], k: usize) -> Vec<f32> {
        labels.iter().flat_map(|&l| (0..k).map(move |c| f32::from(u8::from(c == l)))).collect()
    }

    #[test]
    fn the_digits_bind_as_images_of_any_rank_with_their_labels() {
        let csv = parse_csv("digits", DIGITS_CSV, Some(true)).unwrap();
        let labels: Vec<usize> = csv.values.chunks(65).map(|r| r[64] as usize).collect();
        let scaled = |values: ValueOptions| DataSource::Digits { values };
        let to_unit = scaled(ValueOptions { scale: 1.0 / 16.0, binarize: None });
        for shape in [&[1, 8, 8][..], &[8, 8], &[64]] {
            let data = load_into(&to_unit, vec![var("x", UNIT, shape), var("y", categorical(10), &[10])]).unwrap();
            let (x, y) = (&data.vars["x"], &data.vars["y"]);
            assert_eq!(data.rows, 1797);
            assert_eq!(x.shape, [&[1797][..], shape].concat());
            assert_eq!(y.shape, vec![1797, 10]);
            // Pixels 0-16 scaled into [0, 1], row-major; the labels are not scaled.
            let pixels: Vec<f32> =
                csv.values.chunks(65).flat_map(|r| r[..64].iter().map(|p| (p / 16.0) as f32)).collect();
            assert_eq!(x.data, pixels);
            assert_eq!(y.data, one_hot(&labels, 10));
        }
        // `binarize` thresholds the pixels and leaves the labels whole.
        let binary = scaled(ValueOptions { scale: 1.0, binarize: Some(8.0) });
        let data = load_into(&binary, vec![var("x", Domain::Binary, &[8, 8]), var("y", categorical(10), &[10])]);
        assert_eq!(data.unwrap().vars["y"].data, one_hot(&labels, 10));
        let alone = load_into(&to_unit, vec![var("x", UNIT, &[1, 8, 8])]).unwrap();
        assert_eq!(alone.vars.keys().collect::<Vec<_>>(), ["x"]);
        for (vars, says) in [
            (
                vec![var("x", Domain::Binary, &[2, 32])],
                "digits (bundled) holds rows of shape [8, 8]; `x` is declared binary[2, 32]",
            ),
            (vec![var("x", Domain::Binary, &[65])], "`x` is declared binary[65]"),
            (
                vec![var("x", Domain::Binary, &[64]), var("y", Domain::Binary, &[2])],
                "digits (bundled) holds one label per row; `y` is declared binary[2]",
            ),
            (
                vec![var("x", Domain::Binary, &[64]), var("y", categorical(10), &[10]), var("z", Domain::Binary, &[1])],
                "digits (bundled) gives images and their labels, but `-> (x, y, z)` binds 3 variables",
            ),
        ] {
            let err = load_err(&binary, vars);
            assert!(err.contains(says), "{err}");
        }
    }

    fn idx(kind: u8, dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut out = vec![0, 0, kind, dims.len() as u8];
        out.extend(dims.iter().flat_map(|d| d.to_be_bytes()));
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn idx_images_and_labels_bind_row_for_row_to_images_of_any_rank() {
        let dir = Scratch::new("idx");
        // Three 2x3 images, pixel p of image r being 10r + p, labelled 2, 0, 1.
        let pixels: Vec<u8> = (0..3).flat_map(|r| (0..6).map(move |p| 10 * r + p)).collect();
        let images = dir.write("img-idx3-ubyte", &idx(0x08, &[3, 2, 3], &pixels));
        let labels = dir.write("lab-idx1-ubyte", &idx(0x08, &[3], &[2, 0, 1]));
        let source = |labels: Option<&str>| DataSource::Idx {
            path: images.clone(),
            labels: labels.map(str::to_string),
            values: ValueOptions { scale: 1.0 / 255.0, binarize: None },
        };
        let pair = |shape: &[usize]| vec![var("x", UNIT, shape), var("y", categorical(3), &[3])];
        for shape in [&[1, 2, 3][..], &[2, 3], &[6]] {
            let data = load_into(&source(Some(&labels)), pair(shape)).unwrap();
            assert_eq!(data.rows, 3);
            assert_eq!(data.vars["x"].shape, [&[3][..], shape].concat());
            assert_eq!(data.vars["x"].data, pixels.iter().map(|&p| (f64::from(p) / 255.0) as f32).collect::<Vec<_>>());
            assert_eq!(data.vars["y"].data, one_hot(&[2, 0, 1], 3));
        }
        let short = dir.write("short-idx1-ubyte", &idx(0x08, &[2], &[2, 0]));
        let three = dir.write("three-idx1-ubyte", &idx(0x08, &[3], &[2, 3, 1]));
        let x_only = vec![var("x", UNIT, &[2, 3])];
        for (source, vars, says) in [
            (
                source(Some(&labels)),
                pair(&[3, 2]),
                format!("{images} holds rows of shape [2, 3]; `x` is declared real[3, 2] in [0, 1]"),
            ),
            (source(Some(&labels)), pair(&[1, 7]), "`x` is declared real[1, 7] in [0, 1]".into()),
            (source(Some(&short)), pair(&[2, 3]), format!("{short} holds 2 labels but {images} holds 3 images")),
            (
                source(Some(&three)),
                pair(&[2, 3]),
                format!("{three}:2:1: 3 is not a value of `y`, which takes categorical(3)"),
            ),
            (
                source(Some(&labels)),
                x_only,
                format!("{images}: `labels: \"{labels}\"` gives a label per image, but `-> x` binds 1 variable"),
            ),
            (
                source(None),
                pair(&[2, 3]),
                format!("{images} holds rows of shape [2, 3], which feed one variable, but `-> (x, y)` binds 2"),
            ),
            (
                source(Some(&images)),
                pair(&[2, 3]),
                format!("{images} holds labels of shape [2, 3]; `y` is declared categorical(3)"),
            ),
        ] {
            let err = load_err(&source, vars);
            assert!(err.contains(&says), "expected {says:?}, got {err}");
        }
        // Flat rows without labels still split by position across variables.
        let flat = dir.write("flat.idx", &idx(0x08, &[2, 3], &[1, 0, 2, 0, 1, 1]));
        let split = DataSource::Idx { path: flat, labels: None, values: ValueOptions { scale: 1.0, binarize: None } };
        let data = load_into(&split, vec![var("x", Domain::Binary, &[2]), var("y", categorical(3), &[3])]).unwrap();
        assert_eq!(
            (data.vars["x"].data.clone(), data.vars["y"].data.clone()),
            (vec![1., 0., 0., 1.], one_hot(&[2, 1], 3))
        );
    }

    fn cifar_record(label: u8, seed: u8) -> Vec<u8> {
        let mut r = vec![label];
        r.extend((0..3072u32).map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed)));
        r
    }

    #[test]
    fn cifar10_batches_bind_as_rgb_planes_and_labels() {
        let dir = Scratch::new("cifar");
        let a = dir.write("data_batch_1.bin", &[cifar_record(3, 0), cifar_record(9, 1)].concat());
        let b = dir.write("data_batch_2.bin", &cifar_record(0, 2));
        let both = DataSource::Cifar10 {
            paths: vec![a.clone(), b.clone()],
            values: ValueOptions { scale: 1.0 / 255.0, binarize: None },
        };
        let data = load_into(&both, vec![var("x", UNIT, &[3, 32, 32]), var("y", categorical(10), &[10])]).unwrap();
        let x = &data.vars["x"];
        assert_eq!((data.rows, x.shape.clone()), (3, vec![3, 3, 32, 32]));
        // Channel c, row i, column j of record r is its byte 1 + 1024c + 32i + j, in file order.
        for (r, seed) in [0u8, 1, 2].into_iter().enumerate() {
            let record = cifar_record(0, seed);
            for (c, i, j) in [(0, 0, 0), (0, 31, 5), (1, 3, 30), (2, 17, 9), (2, 31, 31)] {
                let at = r * 3072 + c * 1024 + i * 32 + j;
                assert_eq!(
                    x.data[at],
                    (f64::from(record[1 + c * 1024 + i * 32 + j]) / 255.0) as f32,
                    "{r} {c} {i} {j}"
                );
            }
        }
        assert_eq!(data.vars["y"].data, one_hot(&[3, 9, 0], 10));
        let flat = load_into(&both, vec![var("x", UNIT, &[3072])]).unwrap();
        assert_eq!((flat.vars.len(), &flat.vars["x"].data), (1, &x.data));

        let bad = dir.write("bad.bin", &[cifar_record(1, 0), vec![0; 10]].concat());
        let empty = dir.write("empty.bin", &[]);
        let label_10 = dir.write("ten.bin", &[cifar_record(1, 0), cifar_record(10, 0)].concat());
        let one = |path: &str| DataSource::Cifar10 {
            paths: vec![path.into()],
            values: ValueOptions { scale: 1.0, binarize: None },
        };
        let pair = || vec![var("x", Domain::Real { bounds: None }, &[3, 32, 32]), var("y", categorical(10), &[10])];
        for (source, vars, says) in [
            (one(&bad), pair(), format!("{bad}: 3083 bytes is not a whole number of CIFAR-10 records")),
            (one(&empty), pair(), format!("{empty}: no data rows")),
            (one(&label_10), pair(), format!("{label_10}:2:1: 10 is not a value of `y`")),
            (
                one(&a),
                vec![var("x", UNIT, &[32, 32, 3])],
                format!("{a} holds rows of shape [3, 32, 32]; `x` is declared real[32, 32, 3] in [0, 1]"),
            ),
            // Bytes up to 255 are not in [0, 1] without the default scale.
            (
                one(&a),
                vec![var("x", UNIT, &[3, 32, 32])],
                format!("{a}:1:2: 7 is not a value of `x`, which takes real in [0, 1]"),
            ),
        ] {
            let err = load_err(&source, vars);
            assert!(err.contains(&says), "expected {says:?}, got {err}");
        }
    }

    #[test]
    fn cifar10_takes_one_path_or_a_list_and_scales_bytes_into_the_unit_interval() {
        let bytes = ValueOptions { scale: 1.0 / 255.0, binarize: None };
        assert_eq!(
            data_of("cifar10(\"a.bin\")").source,
            DataSource::Cifar10 { paths: vec!["a.bin".into()], values: bytes }
        );
        let two = data_of("cifar10([\"a.bin\", \"b.bin\"], scale: 1)").source;
        let raw = ValueOptions { scale: 1.0, binarize: None };
        assert_eq!(two, DataSource::Cifar10 { paths: vec!["a.bin".into(), "b.bin".into()], values: raw });
        assert_eq!(two.to_string(), "cifar10(path: [\"a.bin\", \"b.bin\"], scale: 1)");
        assert_eq!(
            data_of("cifar10(\"a.bin\", scale: 0.5)").source.to_string(),
            "cifar10(path: \"a.bin\", scale: 0.5)"
        );
        for bad in ["cifar10([])", "cifar10(3)", "cifar10([\"a.bin\", 3])"] {
            let text = format!(
                "model m {{ visible v : binary[2]; param b : real[2]; energy e = -(b @ v); }} train m {{ data = {bad} -> v; objective = pl; }}"
            );
            let diagnostics = crate::compile(&text).err().unwrap_or_else(|| panic!("{bad} compiled"));
            assert!(format!("{diagnostics:?}").contains("a list of them"), "{bad}: {diagnostics:?}");
        }
        assert_eq!(
            with_file(&data_of("cifar10(\"a.bin\")"), Path::new("test_batch.bin"), FileValues::AsTrained).source,
            DataSource::Cifar10 { paths: vec!["test_batch.bin".into()], values: bytes }
        );
        let labelled = data_of("idx(\"i\", labels: \"l\")").source;
        assert_eq!(labelled.to_string(), "idx(labels: \"l\", path: \"i\", scale: 1)");
    }

    #[test]
    fn npy_rows_of_any_rank_fit_their_shape_or_a_flat_variable() {
        let dir = Scratch::new("npy");
        let values: Vec<f32> = (0..24).map(|v| v as f32).collect();
        let c = dir.write(
            "c.npy",
            &npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, 2, 2), }", &f4(&values, false)),
        );
        // The same array in column-major order: element (r, c, i, j) at r + 2c + 6i + 12j.
        let column_major: Vec<f32> =
            (0..24).map(|o| ((o % 2) * 12 + (o / 2 % 3) * 4 + (o / 6 % 2) * 2 + o / 12) as f32).collect();
        let f = dir.write(
            "f.npy",
            &npy("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3, 2, 2), }", &f4(&column_major, false)),
        );
        let flat = dir.write(
            "flat.npy",
            &npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 12), }", &f4(&values, false)),
        );
        let labels = dir.write(
            "y.npy",
            &npy(
                "{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }",
                &[1u64.to_le_bytes(), 0u64.to_le_bytes()].concat(),
            ),
        );
        let real = Domain::Real { bounds: None };
        let file = |path: &str, labels: Option<&str>| DataSource::Npy {
            path: path.into(),
            labels: labels.map(str::to_string),
            values: ValueOptions { scale: 1.0, binarize: None },
        };
        for (path, shape) in [
            (&c, &[3, 2, 2][..]),
            (&c, &[1, 3, 2, 2]),
            (&c, &[12]),
            (&f, &[3, 2, 2]),
            (&flat, &[3, 2, 2]),
            (&flat, &[1, 12]),
        ] {
            let data = load_into(&file(path, None), vec![var("x", real.clone(), shape)]).unwrap();
            assert_eq!(data.vars["x"].shape, [&[2][..], shape].concat(), "{path}");
            assert_eq!(data.vars["x"].data, values, "{path} as {shape:?}");
        }
        let data = load_into(
            &file(&c, Some(&labels)),
            vec![var("x", real.clone(), &[3, 2, 2]), var("y", categorical(2), &[2])],
        );
        assert_eq!(data.unwrap().vars["y"].data, one_hot(&[1, 0], 2));
        for (path, shape, says) in [
            (&c, &[2, 2, 3][..], format!("{c} holds rows of shape [3, 2, 2]; `x` is declared real[2, 2, 3]")),
            (&c, &[3, 4], format!("{c} holds rows of shape [3, 2, 2]; `x` is declared real[3, 4]")),
            (&flat, &[13], format!("{flat} holds rows of shape [12]; `x` is declared real[13]")),
            (&labels, &[2], format!("{labels} holds one number per row; `x` is declared real[2]")),
        ] {
            let err = load_err(&file(path, None), vec![var("x", real.clone(), shape)]);
            assert!(err.contains(&says), "expected {says:?}, got {err}");
        }
    }

    #[test]
    fn bars_and_stripes_counts_each_image_once() {
        for size in 2..=6 {
            let images = bars_and_stripes(size);
            assert_eq!(images.len(), (1 << (size + 1)) - 2);
            for (i, a) in images.iter().enumerate() {
                assert!(!images[i + 1..].contains(a));
            }
        }
    }

    #[test]
    fn a_random_split_holds_out_fixed_rows_in_order_and_keeps_the_rest() {
        let rows = 50;
        let data = Dataset {
            rows,
            vars: [("x".to_string(), HostTensor::new(vec![rows, 2], (0..2 * rows).map(|i| i as f32).collect()))]
                .into_iter()
                .collect(),
        };
        let model =
            crate::compile("model m { visible x : real[2]; energy e = sum(square(x)); }").unwrap().program.models["m"]
                .clone();
        let split = |seed| {
            let spec = TestSpec::Split(TestSplit::Random { of: 0.2, seed });
            let (train, test) = super::split(data.clone(), Some(&spec), &model, Path::new(".")).unwrap();
            let firsts = |d: &Dataset| d.vars["x"].data.chunks(2).map(|r| r[0] as usize / 2).collect::<Vec<_>>();
            (firsts(&train), firsts(&test.unwrap()))
        };
        let (train, test) = split(7);
        assert_eq!((train.len(), test.len()), (40, 10));
        // Every row on exactly one side, each side in the rows' order.
        let mut all: Vec<usize> = train.iter().chain(&test).copied().collect();
        all.sort();
        assert_eq!(all, (0..rows).collect::<Vec<_>>());
        assert!(train.windows(2).all(|w| w[0] < w[1]) && test.windows(2).all(|w| w[0] < w[1]));
        // The same seed gives the same rows; the held-out rows are not simply the last ones.
        assert_eq!(split(7), (train, test.clone()));
        assert_ne!(split(8).1, test);
        assert_ne!(test, (40..50).collect::<Vec<_>>());
    }
}
