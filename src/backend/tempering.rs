//! Tempered chains: parallel tempering (replica exchange) over a temperature
//! ladder, and annealing from a hot start, as the `sample` block's
//! whole-model entry asks (`Plan::temperature`).
//!
//! Every kernel of a chain set samples exp(−βE) at its `beta`: each is its
//! T = 1 form on βE (Gibbs scales the conditionals' logits by β, Langevin,
//! MALA and HMC follow β∇E), so a replica at temperature T is the planned
//! sweep at β = 1/T. Parallel tempering runs one set of the chains
//! per temperature; after each sweep it offers swaps between adjacent
//! replicas, alternating the even pairs (T₀↔T₁, T₂↔T₃, …) and the odd ones
//! (deterministic even–odd, Okabe et al. 2001; Syed et al. 2022), each chain
//! accepted with min(1, exp((βᵢ − βⱼ)(Eᵢ − Eⱼ))), the Metropolis ratio that
//! keeps the product of the replicas' targets. Only the T = 1 replica is
//! reported. Annealing runs one set whose β rises from β₀ to 1.

use super::{ChainSet, Chains, Clamp, Kernels, Quantity};
use crate::analysis::plan::Plan;
use crate::analysis::program::{Model, Temperature};
use crate::tensor::{HostTensor, Tensors};
use rand::{Rng, SeedableRng};

/// What tempered chains report: the ladder, each adjacent pair's swap rate
/// and each replica's acceptance rate (MALA, HMC).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Tempering {
    /// The replicas' temperatures, from 1 up.
    pub temperatures: Vec<f64>,
    /// Accepted swaps over offered swaps, for pair (i, i + 1) at index i.
    pub swap_rates: Vec<f64>,
    /// Each replica's Metropolis acceptance rate, `None` without a Metropolis kernel.
    pub acceptance: Vec<Option<f64>>,
    /// Each replica's chains whose energy is not finite now. A hot replica
    /// can take in a diverging state by a swap (its energy makes the swap
    /// certain), where the check of the reported T = 1 states cannot see it.
    pub diverged: Vec<usize>,
}

/// The chains a plan asks for: plain, tempered or annealed.
pub(super) enum Ensemble<D: Kernels> {
    One(ChainSet<D>),
    Tempered(Tempered<D>),
    Annealed(Annealed<D>),
}

impl<D: Kernels> Ensemble<D> {
    pub(super) fn new(
        dev: D,
        model: &Model,
        plan: &Plan,
        params: &Tensors,
        chains: usize,
        seed: u64,
    ) -> Result<Self, String> {
        let first = ChainSet::new(dev.clone(), model, plan, params, chains, seed)?;
        Ok(match &plan.temperature {
            None => Ensemble::One(first),
            Some(Temperature::Anneal { beta0, geometric, sweeps }) => Ensemble::Annealed(Annealed {
                set: first,
                beta0: *beta0,
                geometric: *geometric,
                ramp: *sweeps,
                done: 0,
            }),
            Some(Temperature::Ladder { temperatures }) => {
                let mut replicas = vec![first];
                for (r, temperature) in temperatures.iter().enumerate().skip(1) {
                    let replica_seed = seed ^ (r as u64).wrapping_mul(0xa076_1d64_78bd_642f);
                    let mut set = ChainSet::new(dev.clone(), model, plan, params, chains, replica_seed)?;
                    set.beta = (1.0 / temperature) as f32;
                    replicas.push(set);
                }
                Ensemble::Tempered(Tempered {
                    replicas,
                    temperatures: temperatures.clone(),
                    offered: vec![0; temperatures.len() - 1],
                    swapped: vec![0; temperatures.len() - 1],
                    sweeps: 0,
                    rng: rand::rngs::StdRng::seed_from_u64(seed ^ 0x7377_6170),
                })
            }
        })
    }

    fn get(&self) -> &dyn Chains {
        match self {
            Ensemble::One(set) => set,
            Ensemble::Tempered(t) => t,
            Ensemble::Annealed(a) => a,
        }
    }

    fn get_mut(&mut self) -> &mut dyn Chains {
        match self {
            Ensemble::One(set) => set,
            Ensemble::Tempered(t) => t,
            Ensemble::Annealed(a) => a,
        }
    }
}

impl<D: Kernels> Chains for Ensemble<D> {
    fn sweep(&mut self) {
        self.get_mut().sweep();
    }
    fn sweep_clamped(&mut self, clamped: &[String]) {
        self.get_mut().sweep_clamped(clamped);
    }
    fn state(&self) -> Tensors {
        self.get().state()
    }
    fn set_state(&mut self, state: &Tensors) -> Result<(), String> {
        self.get_mut().set_state(state)
    }
    fn set_clamps(&mut self, clamps: &[Clamp]) -> Result<(), String> {
        self.get_mut().set_clamps(clamps)
    }
    fn acceptance(&self) -> Option<f64> {
        self.get().acceptance()
    }
    fn evaluate(&self, what: Quantity, rows: &Tensors) -> Result<HostTensor, String> {
        self.get().evaluate(what, rows)
    }
    fn tempering(&self) -> Option<Tempering> {
        self.get().tempering()
    }
}

/// One chain set per temperature; `replicas[0]` is at T = 1.
pub(super) struct Tempered<D: Kernels> {
    replicas: Vec<ChainSet<D>>,
    temperatures: Vec<f64>,
    offered: Vec<u64>,
    swapped: Vec<u64>,
    sweeps: usize,
    rng: rand::rngs::StdRng,
}

impl<D: Kernels> Tempered<D> {
    /// Offers a swap of every chain between replicas `i` and `i + 1`.
    fn exchange(&mut self, i: usize) {
        let (lo, hi) = self.replicas.split_at_mut(i + 1);
        let (a, b) = (&mut lo[i], &mut hi[0]);
        let (ea, eb) = (a.energies(&a.state).as_vec(), b.energies(&b.state).as_vec());
        let (ba, bb) = (f64::from(a.beta), f64::from(b.beta));
        let chains = a.chains;
        let take: Vec<bool> = (0..chains)
            .map(|c| {
                let log_r = (ba - bb) * (f64::from(ea[c]) - f64::from(eb[c]));
                // A non-finite energy (log r NaN) is never swapped in.
                self.rng.r#gen::<f64>().ln() < log_r
            })
            .collect();
        self.offered[i] += chains as u64;
        let count = take.iter().filter(|t| **t).count();
        self.swapped[i] += count as u64;
        if count == 0 {
            return;
        }
        for k in 0..a.vars.len() {
            let name = a.vars[k].name.clone();
            let shape = a.shape(k);
            let (mut xa, mut xb) = (a.dev.to_host(&a.state[&name]), b.dev.to_host(&b.state[&name]));
            let per = xa.len() / chains;
            for (c, _) in take.iter().enumerate().filter(|(_, t)| **t) {
                xa[c * per..][..per].swap_with_slice(&mut xb[c * per..][..per]);
            }
            a.state.insert(name.clone(), a.dev.tensor_from_vec(xa, shape));
            b.state.insert(name, b.dev.tensor_from_vec(xb, shape));
        }
    }
}

impl<D: Kernels> Chains for Tempered<D> {
    fn sweep(&mut self) {
        self.sweep_clamped(&[]);
    }

    fn sweep_clamped(&mut self, clamped: &[String]) {
        for set in &mut self.replicas {
            set.sweep_clamped(clamped);
        }
        // Disjoint pairs, so each offer's energies are current.
        for i in (self.sweeps % 2..self.replicas.len() - 1).step_by(2) {
            self.exchange(i);
        }
        self.sweeps += 1;
    }

    fn state(&self) -> Tensors {
        Chains::state(&self.replicas[0])
    }

    /// Every replica starts from the given state.
    fn set_state(&mut self, state: &Tensors) -> Result<(), String> {
        self.replicas.iter_mut().try_for_each(|set| Chains::set_state(set, state))
    }

    /// Every replica holds the same parts at the same values, so swaps leave them held.
    fn set_clamps(&mut self, clamps: &[Clamp]) -> Result<(), String> {
        self.replicas.iter_mut().try_for_each(|set| Chains::set_clamps(set, clamps))
    }

    fn acceptance(&self) -> Option<f64> {
        Chains::acceptance(&self.replicas[0])
    }

    fn evaluate(&self, what: Quantity, rows: &Tensors) -> Result<HostTensor, String> {
        Chains::evaluate(&self.replicas[0], what, rows)
    }

    fn tempering(&self) -> Option<Tempering> {
        let rate = |(s, o): (&u64, &u64)| if *o == 0 { 0.0 } else { *s as f64 / *o as f64 };
        Some(Tempering {
            temperatures: self.temperatures.clone(),
            swap_rates: self.swapped.iter().zip(&self.offered).map(rate).collect(),
            acceptance: self.replicas.iter().map(Chains::acceptance).collect(),
            diverged: self
                .replicas
                .iter()
                .map(|set| set.energies(&set.state).as_vec().iter().filter(|e| !e.is_finite()).count())
                .collect(),
        })
    }
}

/// One chain set whose β follows the ramp; after it, the set runs at β = 1.
pub(super) struct Annealed<D: Kernels> {
    set: ChainSet<D>,
    beta0: f64,
    geometric: bool,
    ramp: usize,
    done: usize,
}

impl<D: Kernels> Chains for Annealed<D> {
    fn sweep(&mut self) {
        self.sweep_clamped(&[]);
    }

    fn sweep_clamped(&mut self, clamped: &[String]) {
        self.done += 1;
        self.set.beta = Temperature::anneal_beta(self.beta0, self.geometric, self.ramp, self.done) as f32;
        if self.done == self.ramp + 1 {
            // The acceptance rate reported is that at β = 1, not the ramp's.
            (self.set.accepted, self.set.proposed) = (0.0, 0);
        }
        self.set.sweep_clamped(clamped);
    }

    fn state(&self) -> Tensors {
        Chains::state(&self.set)
    }

    fn set_state(&mut self, state: &Tensors) -> Result<(), String> {
        Chains::set_state(&mut self.set, state)
    }

    fn set_clamps(&mut self, clamps: &[Clamp]) -> Result<(), String> {
        Chains::set_clamps(&mut self.set, clamps)
    }

    fn acceptance(&self) -> Option<f64> {
        Chains::acceptance(&self.set)
    }

    fn evaluate(&self, what: Quantity, rows: &Tensors) -> Result<HostTensor, String> {
        Chains::evaluate(&self.set, what, rows)
    }
}
