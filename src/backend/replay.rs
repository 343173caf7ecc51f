//! The replay buffer of persistent Langevin chains (PCD on continuous data,
//! JEM): past end states, from which the next step's chains restart.

use crate::tensor::{HostTensor, Tensors};

/// A replay buffer: past samples, a row each, from which chains restart.
pub(super) struct Replay {
    rows: Vec<Tensors>,
    capacity: usize,
    /// The fraction of chains restarted from fresh random states instead.
    reinit: f64,
    pub(super) rng: rand::rngs::SmallRng,
}

impl Replay {
    pub(super) fn new(capacity: usize, reinit: f64, seed: u64, saved: &Tensors) -> Replay {
        let mut replay = Replay { rows: Vec::new(), capacity, reinit, rng: rand::SeedableRng::seed_from_u64(seed) };
        // Saved as `replay.<var>` tensors of shape (rows, ...).
        let saved: Vec<(&str, &HostTensor)> =
            saved.iter().filter_map(|(k, t)| k.strip_prefix("replay.").map(|n| (n, t))).collect();
        let n = saved.first().map_or(0, |(_, t)| t.shape[0]);
        replay.rows =
            (0..n).map(|r| saved.iter().map(|(name, t)| (name.to_string(), row_of(t, r))).collect()).collect();
        replay
    }

    /// Start states: `fresh` rows kept with probability `reinit` (always while
    /// the buffer holds fewer rows than a batch), the rest drawn from the buffer.
    pub(super) fn start(&mut self, mut fresh: Tensors) -> Tensors {
        let rows = fresh.values().next().map_or(0, |t| t.shape[0]);
        for r in 0..rows {
            if self.rows.len() >= rows && rand::Rng::r#gen::<f64>(&mut self.rng) >= self.reinit {
                let pick = &self.rows[rand::Rng::gen_range(&mut self.rng, 0..self.rows.len())];
                for (name, t) in fresh.iter_mut() {
                    let per: usize = t.shape[1..].iter().product();
                    t.data[r * per..(r + 1) * per].copy_from_slice(&pick[name].data);
                }
            }
        }
        fresh
    }

    /// Adds the chains' end states, replacing random rows once full.
    pub(super) fn keep(&mut self, end: &Tensors) {
        let rows = end.values().next().map_or(0, |t| t.shape[0]);
        for r in 0..rows {
            let row: Tensors = end.iter().map(|(name, t)| (name.clone(), row_of(t, r))).collect();
            if self.rows.len() < self.capacity {
                self.rows.push(row);
            } else {
                let at = rand::Rng::gen_range(&mut self.rng, 0..self.capacity);
                self.rows[at] = row;
            }
        }
    }

    /// For each row of `rows`, the buffer row nearest to it in Euclidean
    /// distance over every variable (the first of equals); `None` while the
    /// buffer is empty. Improved CD's entropy estimate reads these.
    pub(super) fn nearest(&self, rows: &Tensors) -> Option<Tensors> {
        if self.rows.is_empty() {
            return None;
        }
        let n = rows.values().next().map_or(0, |t| t.shape[0]);
        // The buffer as one row-major matrix, so the search is a tight loop.
        let flat: Vec<f32> = self
            .rows
            .iter()
            .flat_map(|past| rows.keys().flat_map(move |name| past[name].data.iter().copied()))
            .collect();
        let width = flat.len() / self.rows.len();
        let mut out = rows.clone();
        let mut query = Vec::with_capacity(width);
        for r in 0..n {
            query.clear();
            for t in rows.values() {
                let per: usize = t.shape[1..].iter().product();
                query.extend_from_slice(&t.data[r * per..(r + 1) * per]);
            }
            let mut best = (f64::INFINITY, 0);
            for (i, past) in flat.chunks_exact(width).enumerate() {
                let d: f64 = query.iter().zip(past).map(|(a, b)| f64::from(a - b).powi(2)).sum();
                if d < best.0 {
                    best = (d, i);
                }
            }
            for (name, t) in out.iter_mut() {
                let per: usize = t.shape[1..].iter().product();
                t.data[r * per..(r + 1) * per].copy_from_slice(&self.rows[best.1][name].data);
            }
        }
        Some(out)
    }

    /// The buffer as `replay.<var>` tensors, for checkpoints.
    pub(super) fn saved(&self) -> Tensors {
        let Some(first) = self.rows.first() else { return Tensors::new() };
        first
            .iter()
            .map(|(name, t)| {
                let mut shape = vec![self.rows.len()];
                shape.extend(&t.shape);
                (
                    format!("replay.{name}"),
                    HostTensor::new(shape, self.rows.iter().flat_map(|r| r[name].data.iter().copied()).collect()),
                )
            })
            .collect()
    }
}

/// Row `r` of a batched host tensor.
fn row_of(t: &HostTensor, r: usize) -> HostTensor {
    let per: usize = t.shape[1..].iter().product();
    HostTensor::new(t.shape[1..].to_vec(), t.data[r * per..(r + 1) * per].to_vec())
}
