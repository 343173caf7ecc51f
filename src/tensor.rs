//! Host-side tensors: parameter values, constants, samples and data as plain
//! `Vec<f32>` with a shape. The backend moves them onto a device; everything
//! else in the crate works with these.

use crate::analysis::graph::lattice_adjacency;
use crate::analysis::program::{ConstValue, Init, Model};
use crate::ir::ParamSpec;
use rand::SeedableRng;
use rand_distr::{Distribution, Normal, Uniform};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// A float32 tensor in host memory, row-major.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostTensor {
    /// Axis lengths, outermost first.
    pub shape: Vec<usize>,
    /// The elements, row-major; `shape`'s product of them.
    pub data: Vec<f32>,
}

impl HostTensor {
    /// A tensor of `shape` holding `data`, whose length must be `shape`'s product.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        HostTensor { shape, data }
    }

    /// A tensor of `shape` with every element `value`.
    pub fn filled(shape: Vec<usize>, value: f32) -> Self {
        let n = shape.iter().product();
        HostTensor { shape, data: vec![value; n] }
    }
}

/// Named tensors: variables' rows or parameters, by name.
pub type Tensors = BTreeMap<String, HostTensor>;

/// Why tensors handed to the library do not fit the model. Wording lives in `messages.rs`.
#[derive(Debug, Clone, PartialEq)]
pub enum ShapeError {
    /// The rows give no values for a variable the computation reads.
    MissingVariable {
        /// The variable.
        var: String,
    },
    /// A variable's rows are not `[rows, ...shape]`.
    VariableShape {
        /// The variable.
        var: String,
        /// The shape given.
        found: Vec<usize>,
        /// The shape expected, `[rows, ...shape]`.
        expected: Vec<usize>,
    },
    /// Two variables give different numbers of rows.
    RowCounts {
        /// One variable.
        var: String,
        /// Its rows.
        rows: usize,
        /// Another variable.
        other: String,
        /// Its rows.
        other_rows: usize,
    },
    /// No rows at all.
    NoRows,
    /// A tensor whose data length is not the product of its shape.
    Inconsistent {
        /// The tensor's name.
        name: String,
        /// Its shape.
        shape: Vec<usize>,
        /// The length of its data.
        len: usize,
    },
    /// A parameter of the model that the tensors do not give.
    MissingParameter {
        /// The parameter.
        name: String,
    },
    /// A parameter tensor of the wrong shape.
    ParameterShape {
        /// The parameter.
        name: String,
        /// The shape given.
        found: Vec<usize>,
        /// The shape the model declares.
        expected: Vec<usize>,
    },
    /// A checkpoint tensor the model has no parameter for.
    UnknownParameter {
        /// The tensor's name.
        name: String,
        /// The model's parameter names.
        known: Vec<String>,
    },
    /// A NaN or infinite value: in `what`, at flat index `index` of a tensor of `shape`.
    NonFinite {
        /// Where the value is.
        what: String,
        /// The tensor's shape.
        shape: Vec<usize>,
        /// The flat, row-major index of the value.
        index: usize,
        /// The value.
        value: f32,
    },
}

/// `m` rows gathered from every tensor of `tensors` (each `[rows, ...]`):
/// row `r` of the result is row `pick(r)` of the input.
pub fn gather_rows(tensors: &Tensors, m: usize, pick: impl Fn(usize) -> usize) -> Tensors {
    tensors
        .iter()
        .map(|(k, t)| {
            let per: usize = t.shape[1..].iter().product();
            let mut shape = t.shape.clone();
            shape[0] = m;
            (
                k.clone(),
                HostTensor::new(
                    shape,
                    (0..m).flat_map(|r| t.data[pick(r) * per..(pick(r) + 1) * per].iter().copied()).collect(),
                ),
            )
        })
        .collect()
}

/// Checks rows handed to the library: every variable in `needed` is given
/// as `[rows, ...shape]`, all with the same number of rows (at least one),
/// each with as many values as its shape says. Returns the number of rows.
/// Every public entry point of the backend that takes rows calls this, so a
/// batch of the wrong width is an error rather than a panic inside dfdx.
pub fn check_rows(model: &Model, rows: &Tensors, needed: &[String]) -> Result<usize, ShapeError> {
    let mut count: Option<(usize, &str)> = None;
    for name in needed {
        let Some(v) = model.variable(name) else { continue };
        let t = rows.get(name).ok_or_else(|| ShapeError::MissingVariable { var: name.clone() })?;
        check_consistent(name, t)?;
        let mut expected = vec![t.shape.first().copied().unwrap_or(0)];
        expected.extend(&v.shape);
        if t.shape != expected {
            let mut wanted = vec![count.map_or(t.shape.first().copied().unwrap_or(0), |c| c.0)];
            wanted.extend(&v.shape);
            return Err(ShapeError::VariableShape { var: name.clone(), found: t.shape.clone(), expected: wanted });
        }
        match count {
            Some((n, other)) if n != t.shape[0] => {
                return Err(ShapeError::RowCounts {
                    var: name.clone(),
                    rows: t.shape[0],
                    other: other.to_string(),
                    other_rows: n,
                });
            }
            _ => count = Some((t.shape[0], name)),
        }
    }
    match count {
        Some((0, _)) => Err(ShapeError::NoRows),
        Some((n, _)) => Ok(n),
        None => Ok(rows.values().next().map_or(0, |t| t.shape.first().copied().unwrap_or(0))),
    }
}

/// Checks parameter values against the model's parameters: each present,
/// of its declared shape and finite. Names the model does not declare are
/// left alone (objectives keep their own, such as `nce.log_z`).
pub fn check_params(specs: &[ParamSpec], params: &Tensors) -> Result<(), ShapeError> {
    for spec in specs {
        let t = params.get(&spec.name).ok_or_else(|| ShapeError::MissingParameter { name: spec.name.clone() })?;
        check_consistent(&spec.name, t)?;
        if t.shape != spec.shape {
            return Err(ShapeError::ParameterShape {
                name: spec.name.clone(),
                found: t.shape.clone(),
                expected: spec.shape.clone(),
            });
        }
        check_finite(&format!("parameter `{}`", spec.name), t)?;
    }
    Ok(())
}

/// Checks that every value of `t` is finite; `what` names it in the error.
pub fn check_finite(what: &str, t: &HostTensor) -> Result<(), ShapeError> {
    match t.data.iter().position(|x| !x.is_finite()) {
        Some(index) => {
            Err(ShapeError::NonFinite { what: what.to_string(), shape: t.shape.clone(), index, value: t.data[index] })
        }
        None => Ok(()),
    }
}

fn check_consistent(name: &str, t: &HostTensor) -> Result<(), ShapeError> {
    match t.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) {
        Some(n) if n == t.data.len() => Ok(()),
        _ => Err(ShapeError::Inconsistent { name: name.to_string(), shape: t.shape.clone(), len: t.data.len() }),
    }
}

/// Draws every parameter from its initialiser, in name order, from one seeded stream.
pub fn initialise(specs: &[ParamSpec], seed: u64) -> Tensors {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut sorted: Vec<&ParamSpec> = specs.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    sorted
        .into_iter()
        .map(|p| {
            let n: usize = p.shape.iter().product();
            let data: Vec<f32> = match p.init {
                Init::Constant(c) => vec![c as f32; n],
                Init::Normal { mean, std } => {
                    // Cannot fire: the checker types `std` as a positive number.
                    let d = Normal::new(mean, std).expect("std > 0 is checked");
                    (0..n).map(|_| d.sample(&mut rng) as f32).collect()
                }
                Init::Uniform { low, high } => {
                    let d = Uniform::new(low, high);
                    (0..n).map(|_| d.sample(&mut rng) as f32).collect()
                }
            };
            (p.name.clone(), HostTensor::new(p.shape.clone(), data))
        })
        .collect()
}

/// Dense values of a model's constants (graph adjacencies as 0/1 matrices).
pub fn constants(model: &Model) -> Tensors {
    model
        .consts
        .iter()
        .map(|c| {
            let t = match &c.value {
                ConstValue::Fill(x) => HostTensor::filled(c.shape.clone(), *x as f32),
                ConstValue::Graph(g) => {
                    let n = g.units();
                    let mut data = vec![0.0; n * n];
                    for (u, ns) in lattice_adjacency(g).into_iter().enumerate() {
                        for w in ns {
                            data[u * n + w] = 1.0;
                        }
                    }
                    HostTensor::new(vec![n, n], data)
                }
            };
            (c.name.clone(), t)
        })
        .collect()
}

/// Writes tensors as safetensors (f32, little-endian) through a temporary
/// file and a rename, so a crash never leaves a partial file.
pub fn save_safetensors(path: &Path, tensors: &Tensors) -> Result<(), String> {
    save_safetensors_with_metadata(path, tensors, &BTreeMap::new())
}

/// `save_safetensors` with string pairs in the file's `__metadata__` block,
/// which any safetensors reader returns (`safe_open(...).metadata()` in Python).
pub fn save_safetensors_with_metadata(
    path: &Path,
    tensors: &Tensors,
    metadata: &BTreeMap<String, String>,
) -> Result<(), String> {
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .iter()
        .map(|(k, t)| (k.clone(), t.data.iter().flat_map(|x| x.to_le_bytes()).collect(), t.shape.clone()))
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bytes
        .iter()
        .map(|(k, b, s)| {
            (
                k.clone(),
                // Cannot fire: the bytes are the tensor's own data, 4 per element of its shape.
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b).expect("sizes agree"),
            )
        })
        .collect();
    let info = (!metadata.is_empty()).then(|| metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
    let mut data = safetensors::serialize(views, info).map_err(|e| format!("cannot encode tensors: {e}"))?;
    sort_metadata(&mut data);
    write_atomically(path, &data)
}

/// safetensors writes `__metadata__` from a `HashMap`, in an order that
/// changes from process to process; the header is rewritten with its keys
/// sorted, so a file's bytes depend only on its contents (a resumed run is
/// checked byte for byte against an uninterrupted one). The JSON has the
/// same text in another order, so the same length: the offsets stand.
fn sort_metadata(file: &mut [u8]) {
    // Cannot fire: `file` is what safetensors just serialised, which starts with its 8-byte header length.
    let len = u64::from_le_bytes(file[..8].try_into().expect("8 bytes")) as usize;
    let header = &file[8..8 + len];
    let text_len = header.iter().rposition(|b| *b != b' ').map_or(0, |i| i + 1);
    let Ok(mut entries) = serde_json::from_slice::<BTreeMap<String, serde_json::Value>>(&header[..text_len]) else {
        return;
    };
    if let Some(meta) = entries.get_mut("__metadata__") {
        let sorted: BTreeMap<String, String> = serde_json::from_value(meta.take()).unwrap_or_default();
        // Cannot fire: a map of strings always serialises.
        *meta = serde_json::to_value(sorted).expect("strings serialise");
    }
    // Cannot fire: `entries` was just parsed from JSON.
    let text = serde_json::to_vec(&entries).expect("JSON serialises");
    if text.len() == text_len {
        file[8..8 + text_len].copy_from_slice(&text);
    }
}

/// Reads the tensors of a `.safetensors` file.
pub fn load_safetensors(path: &Path) -> Result<Tensors, String> {
    load_safetensors_with(path).map(|(tensors, _)| tensors)
}

/// `load_safetensors` with the file's `__metadata__` header (empty if none).
pub fn load_safetensors_with(path: &Path) -> Result<(Tensors, BTreeMap<String, String>), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    let not_safetensors =
        |e: safetensors::SafeTensorError| format!("`{}` is not a safetensors file: {e}", path.display());
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).map_err(not_safetensors)?;
    let metadata: BTreeMap<String, String> = header.metadata().clone().unwrap_or_default().into_iter().collect();
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(not_safetensors)?;
    let mut out = Tensors::new();
    for (name, view) in st.tensors() {
        if view.dtype() != safetensors::Dtype::F32 {
            return Err(format!("`{}`: tensor `{name}` is {:?}, expected F32", path.display(), view.dtype()));
        }
        let data = view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        out.insert(name, HostTensor::new(view.shape().to_vec(), data));
    }
    Ok((out, metadata))
}

/// The `__metadata__` block of a safetensors file (empty when it has none).
pub fn safetensors_metadata(path: &Path) -> Result<BTreeMap<String, String>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| format!("`{}` is not a safetensors file: {e}", path.display()))?;
    Ok(header.metadata().clone().unwrap_or_default().into_iter().collect())
}

/// Writes `bytes` to `path` through `path.tmp`: written, flushed to disk,
/// then renamed over `path` (and the directory synced), so a crash or a
/// full disk never leaves a partial file under `path`, and no `.tmp` file is
/// left behind when writing fails.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let written = std::fs::File::create(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!("cannot write `{}`: {e}", path.display()));
    }
    sync_dir(path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")))
}

/// Flushes a directory's entries (new names, renames) to disk.
pub fn sync_dir(dir: &Path) -> Result<(), String> {
    match std::fs::File::open(dir).and_then(|d| d.sync_all()) {
        Ok(()) => Ok(()),
        // Some platforms and file systems cannot sync a directory; the data itself is synced.
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::PermissionDenied
                    | std::io::ErrorKind::Unsupported
                    | std::io::ErrorKind::InvalidInput
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(format!("cannot sync `{}`: {e}", dir.display())),
    }
}

/// The first non-finite value among `tensors`: its tensor and row (first index).
pub fn first_non_finite(tensors: &Tensors) -> Option<(String, usize, f32)> {
    tensors.iter().find_map(|(name, t)| {
        let per = t.shape.get(1..).map_or(1, |s| s.iter().product::<usize>()).max(1);
        t.data.iter().position(|x| !x.is_finite()).map(|i| (name.clone(), i / per, t.data[i]))
    })
}
