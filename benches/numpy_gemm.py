"""numpy's time for each product benches/gemm.rs names: one argument
`m,k,n,lhs_t,rhs_t` a product, a transposed operand stored the other way
round (as ebmc stores it). Prints the median seconds of 41 runs of each,
after a warm-up, separated by spaces, in argument order. numpy calls the
BLAS it was built with (OpenBLAS for pip's wheels) on all cores.

Usage: python3 benches/numpy_gemm.py 100,784,500,0,0 ...
"""

import sys
import time

import numpy as np


def product_seconds(m, k, n, lhs_t, rhs_t):
    rng = np.random.default_rng(0)
    lhs = rng.standard_normal((k, m) if lhs_t else (m, k), dtype=np.float32)
    rhs = rng.standard_normal((n, k) if rhs_t else (k, n), dtype=np.float32)
    a = lhs.T if lhs_t else lhs
    b = rhs.T if rhs_t else rhs
    out = np.empty((m, n), dtype=np.float32)
    np.matmul(a, b, out=out)
    times = []
    for _ in range(41):
        start = time.perf_counter()
        np.matmul(a, b, out=out)
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2]


def main():
    specs = [tuple(int(x) for x in arg.split(",")) for arg in sys.argv[1:]]
    print(" ".join(f"{product_seconds(*s):.9f}" for s in specs))


if __name__ == "__main__":
    main()
