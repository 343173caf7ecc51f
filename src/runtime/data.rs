//! Data sources → host tensors for the visible variables (`load`). Reads CSV,
//! NPY and IDX files, the bundled 8×8 digits, and generates bars-and-stripes
//! and 2-D toy sets. Every value is checked against its variable's type, and
//! a bad value is reported with the source, row and column.

use crate::analysis::check;
use crate::analysis::program::{
    DataSource, DataSpec, Domain, FileFormat, Model, TestSpec, TestSplit, Train, ValueOptions, Variable,
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
    /// Columns that do not fit the variables bound to them.
    Binding {
        /// The file, or the source as written.
        source: String,
        /// What does not fit.
        reason: String,
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
        DataSource::Digits { values } => {
            let table = transform(parse_csv("digits (bundled)", DIGITS_CSV, Some(true))?, values)?;
            bind(&table, &vars, true)
        }
        DataSource::Csv { path, header, values } => {
            let path = resolve(base, path);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| DataError::Read { source: path.display().to_string(), reason: e.to_string() })?;
            let table = transform(parse_csv(&path.display().to_string(), &text, *header)?, values)?;
            bind(&table, &vars, false)
        }
        DataSource::Npy { path, values } | DataSource::Idx { path, values } => {
            let path = resolve(base, path);
            let bytes = std::fs::read(&path)
                .map_err(|e| DataError::Read { source: path.display().to_string(), reason: e.to_string() })?;
            let name = path.display().to_string();
            let table = match spec.source {
                DataSource::Npy { .. } => parse_npy(&name, &bytes)?,
                _ => parse_idx(&name, &bytes)?,
            };
            bind(&transform(table, values)?, &vars, false)
        }
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
                TestSplit::Fraction { of } => (of * n as f64).round() as usize,
            };
            if test_rows == 0 || test_rows >= n {
                return Err(DataError::Split {
                    reason: format!(
                        "cannot hold out {test_rows} of {n} rows for testing; keep at least one row for each side"
                    ),
                });
            }
            Ok((data.slice(0, n - test_rows), Some(data.slice(n - test_rows, n))))
        }
    }
}

impl Dataset {
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
/// (the model file's directory).
fn resolve(base: &Path, path: &str) -> PathBuf {
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
    Ok(Table { source: source.to_string(), first_row: body[0].0, width, values, header })
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
    Ok(Table { source: source.to_string(), first_row: 1, width, values, header: None })
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
    Ok(Table { source: source.to_string(), first_row: 1, width, values, header: None })
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
    match v.domain {
        Domain::Categorical { categories } => v.shape.iter().product::<usize>() / categories,
        _ => v.shape.iter().product(),
    }
}

/// Binds table columns to variables: by header names when every variable's
/// columns are found there (`v0`..`v63`, or `y` for a one-column variable),
/// else by position, in binding order, using every column.
/// `digits`: the table is the bundled digits.
fn bind(t: &Table, vars: &[&Variable], digits: bool) -> Result<Dataset, DataError> {
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
    // The bundled digits: pixels then label, whatever the variables are called.
    let digits_layout = if digits && by_name.is_none() { Some(digits_columns(t, vars)?) } else { None };
    let columns = match by_name.or(digits_layout) {
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

/// The bundled digits' columns for `vars`: 64 pixels, then the label.
fn digits_columns(t: &Table, vars: &[&Variable]) -> Result<Vec<Vec<usize>>, DataError> {
    let widths: Vec<usize> = vars.iter().map(|v| columns_of(v)).collect();
    if !matches!(widths[..], [64] | [64, 1]) {
        let found: Vec<String> = vars.iter().zip(&widths).map(|(v, w)| format!("`{}` takes {w}", v.name)).collect();
        return Err(DataError::Binding {
            source: t.source.clone(),
            reason: format!(
                "the digits are 64 pixel columns (8x8) and one label column, but {}; bind them as `-> x` or `-> (x, y)` with `x` 64 units (e.g. `binary[64]`) and `y` one unit (`categorical(10)`)",
                found.join(" and ")
            ),
        });
    }
    let mut cols = vec![(0..64).collect::<Vec<_>>()];
    if vars.len() > 1 {
        cols.push(vec![64]);
    }
    Ok(cols)
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
    };
    bind(&table, vars, false)
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
            DataSource::Npy { path: "b.npy".into(), values: halves }
        );
        assert_eq!(
            with_file(&spec, Path::new("t10k-images.idx3-ubyte"), FileValues::AsTrained).source,
            DataSource::Idx { path: "t10k-images.idx3-ubyte".into(), values: halves }
        );
        // A generated set has no value options: the file's numbers are read as they are.
        let plain = ValueOptions { scale: 1.0, binarize: None };
        let spec = data_of("bars_and_stripes(size: 2)");
        assert_eq!(
            with_file(&spec, Path::new("p.idx"), FileValues::AsTrained).source,
            DataSource::Idx { path: "p.idx".into(), values: plain }
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
        let table = |values: Vec<f64>| Table { source: "s.csv".into(), first_row: 1, width: 2, values, header: None };
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
}
