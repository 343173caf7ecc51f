//! Host-side tensors: parameter values, constants, samples and data as plain
//! `Vec<f32>` with a shape. The backend moves them onto a device; everything
//! else in the crate works with these.

use crate::graph::lattice_adjacency;
use crate::ir::ParamSpec;
use crate::program::{ConstValue, Init, Model};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal, Uniform};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl HostTensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        HostTensor { shape, data }
    }

    pub fn filled(shape: Vec<usize>, value: f32) -> Self {
        let n = shape.iter().product();
        HostTensor { shape, data: vec![value; n] }
    }
}

pub type Tensors = BTreeMap<String, HostTensor>;

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
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> =
        tensors.iter().map(|(k, t)| (k.clone(), t.data.iter().flat_map(|x| x.to_le_bytes()).collect(), t.shape.clone())).collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bytes
        .iter()
        .map(|(k, b, s)| (k.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b).expect("sizes agree")))
        .collect();
    let data = safetensors::serialize(views, &None).map_err(|e| format!("cannot encode tensors: {e}"))?;
    write_atomically(path, &data)
}

pub fn load_safetensors(path: &Path) -> Result<Tensors, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| format!("`{}` is not a safetensors file: {e}", path.display()))?;
    let mut out = Tensors::new();
    for (name, view) in st.tensors() {
        if view.dtype() != safetensors::Dtype::F32 {
            return Err(format!("`{}`: tensor `{name}` is {:?}, expected F32", path.display(), view.dtype()));
        }
        let data = view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        out.insert(name, HostTensor::new(view.shape().to_vec(), data));
    }
    Ok(out)
}

pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).map_err(|e| format!("cannot write `{}`: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot write `{}`: {e}", path.display()))
}
