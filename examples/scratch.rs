use dfdx::prelude::*;
use rand::{RngCore, SeedableRng};
use std::time::Instant;
fn main() {
    let dev = Cpu::seed_from_u64(0);
    let a: Tensor<(usize, usize, usize), f32, _> = dev.sample_normal_like(&(100, 1, 784));
    let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
    for _ in 0..3 {
        let t = Instant::now();
        let mut data = Vec::new();
        for _ in 0..100 { data = a.as_vec(); }
        let t_asvec = t.elapsed().as_secs_f64() / 100.0;
        let t = Instant::now();
        for _ in 0..100 { for x in data.iter_mut() { *x = 1.0 / (1.0 + (-*x).exp()); } }
        let t_exp = t.elapsed().as_secs_f64() / 100.0;
        let t = Instant::now();
        for _ in 0..100 { for x in data.iter_mut() { let u = (rng.next_u32() >> 8) as f32 * (1.0 / 16_777_216.0); *x = if u < *x { 1.0 } else { 0.0 }; } }
        let t_rng = t.elapsed().as_secs_f64() / 100.0;
        let t = Instant::now();
        for _ in 0..100 { let _t = dev.tensor_from_vec(data.clone(), (100usize, 1usize, 784usize)); }
        let t_from = t.elapsed().as_secs_f64() / 100.0;
        println!("as_vec {:.3}ms exp {:.3}ms rng {:.3}ms from_vec(+clone) {:.3}ms", t_asvec*1e3, t_exp*1e3, t_rng*1e3, t_from*1e3);
    }
}
