"""JAX `jit` anchor for benches/continuous.rs: one training step of an MLP
energy 2 -> W -> W -> 1 (swish, biases; starting from ebmc's own initial
weights, which the bench writes) with a hand-written Adam (lr 1e-3, betas 0.9/0.999,
eps 1e-8, bias-corrected: ebmc's rule), on the CPU, for the same objectives
ebmc's bench trains:

  dsm  ½ |σ ∇ₓE(x + σz) − z|² summed over coordinates, mean over the batch (σ 0.1)
  ssm  (½ |∇ₓE|² − vᵀ(∇²ₓE)v) mean over the batch, one Gaussian v (variance reduced)
  pcd  mean E(data) − mean E(samples) + α (mean E(data)² + mean E(samples)²), α 0.1;
       samples from K Langevin steps x ← x − step ∇ₓE + sqrt(2 step) z (step 0.05,
       no clipping: ebmc's kernel) on B chains that restart from a replay buffer
       (capacity 10000, 5% of chains from fresh N(0, I) states; once full, new
       end states replace random rows), as ebmc's replay does.

Each step (sampling, loss, gradient, Adam update) is one jitted function, its
state threaded through. Timed: the median over REPS calls, each ended by
`block_until_ready`, after two untimed calls (the first compiles). XLA runs
with its default CPU threading (an intra-op pool the size of the machine).

Usage: python3 benches/jax_steps.py DIR SECONDS, then lines `OBJ W B` on stdin
(OBJ one of dsm, ssm, pcd), each measured for about SECONDS (at least 5 steps).
DIR holds data.f32, the rows ebmc trains on (little-endian f32 x, y pairs), and
params-W.f32, ebmc's initial weights at width W (f.w0, f.b0, f.w1, f.b1, f.w2,
f.b2, row-major). Prints one `xla ...` line describing the threading at start,
then per request `jax OBJ W B <ms per step> <steps timed> <first step's loss>`.
"""

import os
import sys
import time

import numpy as np

import jax
import jax.numpy as jnp

SIGMA, STEP, K, ALPHA, BUFFER, REINIT = 0.1, 0.05, 20, 0.1, 10000, 0.05
LR, B1, B2, EPS = 1e-3, 0.9, 0.999, 1e-8


def load_params(directory, width):
    """ebmc's initial weights: f.w0, f.b0, f.w1, f.b1, f.w2, f.b2 as little-endian f32."""
    flat = np.fromfile(os.path.join(directory, f"params-{width}.f32"), dtype="<f4")
    sizes = [2, width, width, 1]
    params, at = [], 0
    for m, n in zip(sizes, sizes[1:]):
        w, b = flat[at : at + m * n].reshape(m, n), flat[at + m * n : at + m * n + n]
        params.append((jnp.asarray(w), jnp.asarray(b)))
        at += m * n + n
    assert at == flat.size, "the weights file holds the net's weights"
    return params


def swish(a):
    return a * jax.nn.sigmoid(a)


def energy(params, x):
    """Per-row energies, shape (rows,)."""
    h = x
    for i, (w, b) in enumerate(params):
        h = h @ w + b
        if i + 1 < len(params):
            h = swish(h)
    return h[:, 0]


def grad_x(params, x):
    return jax.grad(lambda y: energy(params, y).sum())(x)


def dsm_loss(params, x, key):
    z = jax.random.normal(key, x.shape, jnp.float32)
    g = grad_x(params, x + SIGMA * z)
    return 0.5 * jnp.sum(jnp.square(SIGMA * g - z)) / x.shape[0]


def ssm_loss(params, x, key):
    v = jax.random.normal(key, x.shape, jnp.float32)
    g, hv = jax.jvp(lambda y: grad_x(params, y), (x,), (v,))
    return (0.5 * jnp.sum(jnp.square(g)) - jnp.sum(v * hv)) / x.shape[0]


def pcd_loss(params, x, samples):
    e_pos, e_neg = energy(params, x), energy(params, samples)
    penalty = jnp.mean(jnp.square(e_pos)) + jnp.mean(jnp.square(e_neg))
    return jnp.mean(e_pos) - jnp.mean(e_neg) + ALPHA * penalty


def adam(params, grads, m, v, t):
    m = jax.tree_util.tree_map(lambda a, g: B1 * a + (1 - B1) * g, m, grads)
    v = jax.tree_util.tree_map(lambda a, g: B2 * a + (1 - B2) * g * g, v, grads)
    c1, c2 = 1 - B1**t, 1 - B2**t
    params = jax.tree_util.tree_map(lambda p, a, b: p - LR * (a / c1) / (jnp.sqrt(b / c2) + EPS), params, m, v)
    return params, m, v


def make_score_step(loss):
    @jax.jit
    def step(state, x):
        params, m, v, t, key = state
        key, sub = jax.random.split(key)
        value, grads = jax.value_and_grad(loss)(params, x, sub)
        t = t + 1.0
        params, m, v = adam(params, grads, m, v, t)
        return (params, m, v, t, key), value

    return step


@jax.jit
def pcd_step(state, x):
    params, m, v, t, key, buf, size = state
    rows = x.shape[0]
    key, k_fresh, k_u, k_pick, k_noise, k_slot = jax.random.split(key, 6)
    # Replay start: a buffer row unless the buffer holds under a batch or the chain is reinitialised.
    fresh = jax.random.normal(k_fresh, x.shape, jnp.float32)
    picked = buf[jax.random.randint(k_pick, (rows,), 0, jnp.maximum(size, 1))]
    use = (size >= rows) & (jax.random.uniform(k_u, (rows,)) >= REINIT)
    start = jnp.where(use[:, None], picked, fresh)
    noise = jax.random.normal(k_noise, (K,) + x.shape, jnp.float32)

    def langevin(i, s):
        return s - STEP * grad_x(params, s) + jnp.sqrt(2 * STEP) * noise[i]

    samples = jax.lax.stop_gradient(jax.lax.fori_loop(0, K, langevin, start))
    # Keep: append while there is room, then overwrite random rows.
    slot = size + jnp.arange(rows)
    slot = jnp.where(slot < BUFFER, slot, jax.random.randint(k_slot, (rows,), 0, BUFFER))
    buf = buf.at[slot].set(samples)
    size = jnp.minimum(size + rows, BUFFER)
    value, grads = jax.value_and_grad(pcd_loss)(params, x, samples)
    t = t + 1.0
    params, m, v = adam(params, grads, m, v, t)
    return (params, m, v, t, key, buf, size), value


def time_config(obj, width, rows, data, directory, seconds):
    params = load_params(directory, width)
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    state = (params, zeros, zeros, jnp.float32(0.0), jax.random.key(2))
    if obj == "pcd":
        state += (jnp.zeros((BUFFER, 2), jnp.float32), jnp.int32(0))
        step = pcd_step
    else:
        step = make_score_step(dsm_loss if obj == "dsm" else ssm_loss)
    batches = [jnp.asarray(data[i : i + rows]) for i in range(0, len(data) - rows + 1, rows)]
    first = None
    for i in range(2):
        state, value = step(state, batches[i % len(batches)])
        jax.block_until_ready(value)
        first = float(value) if first is None else first
    times = []
    spent = 0.0
    while len(times) < 5 or (spent < seconds and len(times) < 200):
        s = time.perf_counter()
        state, value = step(state, batches[len(times) % len(batches)])
        jax.block_until_ready((state, value))
        times.append(time.perf_counter() - s)
        spent += times[-1]
    times.sort()
    return times[len(times) // 2], len(times), first


def main():
    directory, seconds = sys.argv[1], float(sys.argv[2])
    data = np.fromfile(os.path.join(directory, "data.f32"), dtype="<f4").reshape(-1, 2)
    flags = os.environ.get("XLA_FLAGS", "")
    print(
        f"xla jax {jax.__version__}, backend {jax.default_backend()}, {len(os.sched_getaffinity(0))} CPUs visible, "
        f"default intra-op threading (XLA_FLAGS={flags!r})",
        flush=True,
    )
    for request in sys.stdin:
        obj, width, rows = request.split()
        seconds_per_step, reps, first = time_config(obj, int(width), int(rows), data, directory, seconds)
        print(f"jax {obj} {width} {rows} {seconds_per_step * 1e3:.4f} {reps} {first:.6g}", flush=True)


if __name__ == "__main__":
    main()
