//! GEMM candidates on the products ebmc runs, each beside numpy's (OpenBLAS)
//! time for the same product in the same run. Run with
//! `cargo bench --bench gemm`; numpy's figures come from
//! `python3 benches/numpy_gemm.py` (skipped with a note without numpy).
//! Prints; asserts nothing.
//!
//! Products: an RBM 784x500 step at batch 100 and 10 (`v @ W`, `h @ Wᵀ`,
//! the batch-summed outer product `vᵀ σ`) and the MLP 2→128→128→1 layer at
//! batch 256, and smaller ones around the split's crossover (the RBM's
//! products in shards of 25 rows, the MLP layer at batch 64 and 128).
//! Candidates: the `gemm` crate (what dfdx and ebmc call) on all of rayon's
//! threads and on one, and ebmc's host product (`ebmc::backend::gemm`,
//! threaded: from `SPLIT_GEMM` multiply-adds, up to eight single-threaded
//! pieces of the output shared by two threads).

mod common;

/// A product `(m, k) × (k, n)`, each operand read as stored or transposed.
struct Product {
    name: &'static str,
    m: usize,
    k: usize,
    n: usize,
    lhs_t: bool,
    rhs_t: bool,
}

const PRODUCTS: [Product; 12] = [
    Product { name: "v @ W      100x784x500", m: 100, k: 784, n: 500, lhs_t: false, rhs_t: false },
    Product { name: "h @ W.T    100x500x784", m: 100, k: 500, n: 784, lhs_t: false, rhs_t: true },
    Product { name: "v.T @ s    784x100x500", m: 784, k: 100, n: 500, lhs_t: true, rhs_t: false },
    Product { name: "v @ W       10x784x500", m: 10, k: 784, n: 500, lhs_t: false, rhs_t: false },
    Product { name: "h @ W.T     10x500x784", m: 10, k: 500, n: 784, lhs_t: false, rhs_t: true },
    Product { name: "v.T @ s     784x10x500", m: 784, k: 10, n: 500, lhs_t: true, rhs_t: false },
    Product { name: "x @ W      256x128x128", m: 256, k: 128, n: 128, lhs_t: false, rhs_t: false },
    Product { name: "x @ W      128x128x128", m: 128, k: 128, n: 128, lhs_t: false, rhs_t: false },
    Product { name: "x @ W       64x128x128", m: 64, k: 128, n: 128, lhs_t: false, rhs_t: false },
    Product { name: "v @ W       25x784x500", m: 25, k: 784, n: 500, lhs_t: false, rhs_t: false },
    Product { name: "v.T @ s     784x25x500", m: 784, k: 25, n: 500, lhs_t: true, rhs_t: false },
    Product { name: "x @ W     1024x512x512", m: 1024, k: 512, n: 512, lhs_t: false, rhs_t: false },
];

/// Seconds of one product by the `gemm` crate with the given parallelism.
fn gemm_crate(p: &Product, parallelism: gemm::Parallelism) -> f64 {
    common::gemm_product((p.m, p.k, p.n), (p.lhs_t, p.rhs_t), parallelism, 41)
}

fn main() {
    let threads = rayon::current_num_threads();
    let numpy = common::numpy_products(&PRODUCTS.map(|p| ((p.m, p.k, p.n), (p.lhs_t, p.rhs_t))));
    if let Err(why) = &numpy {
        println!("numpy not measured: {why}");
    }
    println!(
        "{:<24} {:>10} {:>10} {:>10} {:>10} {:>8} {:>8}",
        "product",
        format!("gemm x{threads}"),
        "gemm x1",
        "ebmc",
        "numpy",
        "ebmc/np",
        "GFLOP/s"
    );
    for (i, p) in PRODUCTS.iter().enumerate() {
        let all = gemm_crate(p, gemm::Parallelism::Rayon(threads));
        let one = gemm_crate(p, gemm::Parallelism::None);
        let ebmc = common::host_product((p.m, p.k, p.n), (p.lhs_t, p.rhs_t), true, 41);
        let flops = 2.0 * (p.m * p.k * p.n) as f64;
        let (np, ratio) = match &numpy {
            Ok(t) => (format!("{:.1} us", t[i] * 1e6), format!("{:.2}x", ebmc / t[i])),
            Err(_) => ("-".into(), "-".into()),
        };
        println!(
            "{:<24} {:>7.1} us {:>7.1} us {:>7.1} us {:>10} {:>8} {:>8.1}",
            p.name,
            all * 1e6,
            one * 1e6,
            ebmc * 1e6,
            np,
            ratio,
            flops / ebmc / 1e9
        );
    }
}
