//! Hamiltonian Monte Carlo for real variables (`x: hmc(step, leapfrog: L)`
//! in a `sample` block): each sweep draws a momentum per chain, follows the
//! leapfrog integrator of the symbolic ∇ₓE for `L` steps, and accepts the end
//! point by Metropolis. At inverse temperature β it is HMC on βE (the
//! gradients come scaled by β): H = βE(x) + |p|²/2, p ~ N(0, I).
//!
//! A bounded variable's trajectories reflect at the walls of its box: a
//! position step that crosses a wall is folded back into the box and that
//! momentum component changes sign. The reflected step is an isometry of
//! phase space and its own inverse under momentum flip, so the leapfrog map
//! stays volume-preserving and reversible and the Metropolis test stays
//! exact (Neal 2011, "MCMC using Hamiltonian dynamics", §5.1).

use super::{ChainSet, Domain, Id, Kernels, T3};
use rand::RngCore;
use std::collections::BTreeMap;

impl<D: Kernels> ChainSet<D> {
    /// One HMC trajectory for every chain, jointly over `vars` (each with its
    /// energy gradient), of `leapfrog` steps of size `step`.
    pub(super) fn hmc(&mut self, vars: &[(usize, Id)], step: f32, leapfrog: usize) {
        let b = self.chains;
        let start = self.state.clone();
        let mut x = self.state.clone();
        // Held units get no momentum and (from `langevin_gradients`) no force, so they never move.
        let mut p0: Vec<T3<D>> = Vec::with_capacity(vars.len());
        for (v, _) in vars {
            let z = self.normal(self.shape(*v));
            p0.push(self.free_part(*v, z));
        }
        let mut p = p0.clone();
        let mut g = self.langevin_gradients(vars, &x, None);
        for _ in 0..leapfrog {
            for (((v, _), pi), gi) in vars.iter().zip(p.iter_mut()).zip(&g) {
                let half = pi.clone() - gi.clone() * (step / 2.0);
                let name = self.vars[*v].name.clone();
                let (moved, momentum) = self.drift(*v, x[&name].clone(), half, step);
                x.insert(name, moved);
                *pi = momentum;
            }
            g = self.langevin_gradients(vars, &x, None);
            for (pi, gi) in p.iter_mut().zip(&g) {
                *pi = pi.clone() - gi.clone() * (step / 2.0);
            }
        }
        // log a = β(E(x₀) − E(x₁)) + (|p₀|² − |p₁|²) / 2, per chain.
        let (e0, e1) = (self.energies(&start).as_vec(), self.energies(&x).as_vec());
        let kinetic = |ps: &[T3<D>]| {
            let mut k = vec![0.0f64; b];
            for t in ps {
                let data = self.dev.to_host(t);
                let per = data.len() / b;
                for (c, chunk) in data.chunks(per).enumerate() {
                    k[c] += chunk.iter().map(|v| f64::from(*v) * f64::from(*v)).sum::<f64>();
                }
            }
            k
        };
        let (k0, k1) = (kinetic(&p0), kinetic(&p));
        let beta = f64::from(self.beta);
        let accept: Vec<bool> = (0..b)
            .map(|c| {
                let log_a = beta * (f64::from(e0[c]) - f64::from(e1[c])) + (k0[c] - k1[c]) / 2.0;
                let u = f64::from(self.fast_rng.next_u32() >> 8) / 16_777_216.0;
                // A diverged trajectory (log a NaN or −∞) is rejected.
                u.ln() < log_a
            })
            .collect();
        self.accepted += accept.iter().filter(|a| **a).count() as f64;
        self.proposed += b;
        // Chosen row by row, not blended arithmetically: a rejected end point may hold NaN.
        let mut next = BTreeMap::new();
        for (v, _) in vars {
            let name = &self.vars[*v].name;
            let (old, new) = (self.dev.to_host(&start[name]), self.dev.to_host(&x[name]));
            let per = old.len() / b;
            let rows: Vec<f32> = (0..b)
                .flat_map(|c| if accept[c] { &new[c * per..][..per] } else { &old[c * per..][..per] })
                .copied()
                .collect();
            next.insert(name.clone(), self.dev.tensor_from_vec(rows, self.shape(*v)));
        }
        self.state.extend(next);
    }

    /// A position step `x + step·p`, reflected into the variable's box when it
    /// has one (the momentum of each reflected component flips); the moved
    /// position and the momentum after it.
    fn drift(&self, var: usize, x: T3<D>, p: T3<D>, step: f32) -> (T3<D>, T3<D>) {
        let moved = x + p.clone() * step;
        let Domain::Real { bounds: Some((lo, hi)) } = self.vars[var].domain else { return (moved, p) };
        let shape = self.shape(var);
        let w = hi - lo;
        let (xs, ps) = (self.dev.to_host(&moved), self.dev.to_host(&p));
        let mut folded = Vec::with_capacity(xs.len());
        let mut momenta = Vec::with_capacity(xs.len());
        for (xv, pv) in xs.into_iter().zip(ps) {
            let offset = f64::from(xv) - lo;
            // Walls crossed: an odd count leaves the particle moving back.
            let crossings = (offset / w).floor();
            let within = offset - crossings * w;
            let odd = crossings.rem_euclid(2.0) == 1.0;
            folded.push((if odd { hi - within } else { lo + within }).clamp(lo, hi) as f32);
            momenta.push(if odd { -pv } else { pv });
        }
        (self.dev.tensor_from_vec(folded, shape), self.dev.tensor_from_vec(momenta, shape))
    }
}
