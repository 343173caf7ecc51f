"""thrml's chromatic Gibbs sampler on the Ising model of benches/sampling.rs:
a periodic L x L grid, coupling J, no field, CHAINS chains (vmapped), the two
checkerboard colours as thrml's blocks. Prints one line,
`thrml <spin updates per second>`, the median over REPS timed runs of SWEEPS
sweeps each, after one untimed run that compiles (JAX's jit, on the CPU).

Usage: python3 benches/thrml_ising.py L CHAINS SWEEPS REPS
"""

import sys
import time

import jax
import jax.numpy as jnp
from thrml import Block, SamplingSchedule, SpinNode, sample_states
from thrml.models import IsingEBM, IsingSamplingProgram, hinton_init


def main():
    side, chains, sweeps, reps = (int(a) for a in sys.argv[1:5])
    nodes = [SpinNode() for _ in range(side * side)]
    at = lambda r, c: nodes[(r % side) * side + (c % side)]
    edges = [(at(r, c), at(r + dr, c + dc)) for r in range(side) for c in range(side) for dr, dc in ((0, 1), (1, 0))]
    model = IsingEBM(nodes, edges, jnp.zeros(len(nodes)), jnp.full(len(edges), 0.4), jnp.array(1.0))
    colours = [Block([at(r, c) for r in range(side) for c in range(side) if (r + c) % 2 == k]) for k in (0, 1)]
    program = IsingSamplingProgram(model, colours, clamped_blocks=[])
    schedule = SamplingSchedule(n_warmup=sweeps, n_samples=1, steps_per_sample=1)

    key = jax.random.key(0)
    init = hinton_init(key, model, colours, (chains,))
    keys = jax.random.split(key, chains)
    run = jax.jit(
        jax.vmap(lambda k, s: sample_states(k, program, schedule, s, [], [Block(nodes)]), in_axes=(0, [0, 0]))
    )
    jax.block_until_ready(run(keys, init))
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        jax.block_until_ready(run(keys, init))
        times.append(time.perf_counter() - start)
    times.sort()
    print(f"thrml {side * side * chains * sweeps / times[len(times) // 2]:.1f}")


if __name__ == "__main__":
    main()
