"""PyTorch anchor for benches/conv.rs: the digits conv energy
convnet(1 -> 32 -> 64 -> 1, kernel: 3, stride: 2, act: swish) as ebmc expands
it (a 3x3 convolution to 32 channels at stride 1, swish, one to 64 channels at
stride 2, swish, the mean over the pixels, a linear head), from ebmc's own
initial weights, on the CPU in eager mode:

  langevin  one Langevin step of the batch: x <- x - step dE/dx + noise z
            (step 0.01, noise 0.1414: ebmc's plan), E and dE/dx by autograd
  dsm       one training step of  1/2 |sigma dE/dx(x + sigma z) - z|^2, mean over
            the batch (sigma 0.1), its parameter gradient by double backward,
            then Adam (lr 1e-3, betas 0.9/0.999, eps 1e-8)
  pcd       one PCD update as ebmc's pcd(k: K, chains: 64, step: 10, noise: 0.005,
            buffer: 5000, reinit: 0.05, alpha: 1, clip: 0.01): the chains
            restart from a replay buffer (each from a uniform state with
            probability 0.05, and all while the buffer holds fewer rows than a
            batch), take K Langevin steps with dE/dx by autograd on detached
            weights, clamped per component to +-clip, the proposal reflected
            into [0, 1] as ebmc does (x -> 1 - |(x mod 2) - 1|); the end states
            go into the buffer (appended, then replacing random rows); then one
            backward of mean E(data) - mean E(samples) + alpha (mean E(data)^2 +
            mean E(samples)^2) and Adam as above

Timed: the median over about SECONDS of calls (at least 5), after two untimed
calls. PyTorch's default intra-op threading.

Usage: python3 benches/torch_conv.py DIR SECONDS K, then lines `langevin`,
`dsm` or `pcd` on stdin. DIR holds params.f32 (f.k0, f.b0, f.k1, f.b1, f.w, f.b,
little-endian f32, row-major) and data.f32 (the batch, 64 x 1 x 8 x 8).
Prints `torch THREADS` at start, then per request
`torch NAME <ms per step> <steps timed> <check>`: for langevin the mean energy
of the batch, for dsm and pcd the first step's loss.
"""

import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

STEP, NOISE, SIGMA = 0.01, 0.1414, 0.1
PCD_STEP, PCD_NOISE, CLIP, BUFFER, REINIT, ALPHA = 10.0, 0.005, 0.01, 5000, 0.05, 1.0
SHAPES = [("f.k0", (32, 1, 3, 3)), ("f.b0", (32,)), ("f.k1", (64, 32, 3, 3)), ("f.b1", (64,)), ("f.w", (64, 1)), ("f.b", (1,))]


def load(directory):
    flat = np.fromfile(os.path.join(directory, "params.f32"), dtype="<f4")
    params, at = [], 0
    for _, shape in SHAPES:
        n = int(np.prod(shape))
        params.append(torch.tensor(flat[at : at + n].reshape(shape), requires_grad=True))
        at += n
    assert at == flat.size, "the weights file holds the net's weights"
    data = np.fromfile(os.path.join(directory, "data.f32"), dtype="<f4").reshape(-1, 1, 8, 8)
    return params, torch.tensor(data)


def energy(params, x):
    """Per-example energies, shape (batch,)."""
    k0, b0, k1, b1, w, b = params
    h = F.silu(F.conv2d(x, k0, b0, stride=1, padding=1))
    h = F.silu(F.conv2d(h, k1, b1, stride=2, padding=1))
    return (h.mean(dim=(2, 3)) @ w + b).sum(dim=1)


def timed(f, seconds):
    f()
    f()
    times = []
    while len(times) < 5 or (sum(times) < seconds and len(times) < 200):
        start = time.perf_counter()
        f()
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2], len(times)


def langevin(params, data, seconds):
    state = {"x": data.clone()}

    def step():
        x = state["x"].requires_grad_(True)
        (g,) = torch.autograd.grad(energy(params, x).sum(), x)
        state["x"] = (x - STEP * g + NOISE * torch.randn_like(x)).detach()

    check = energy(params, data).mean().item()
    t, reps = timed(step, seconds)
    return t, reps, check


def dsm(params, data, seconds):
    params = [p.detach().clone().requires_grad_(True) for p in params]
    opt = torch.optim.Adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
    losses = []

    def step():
        z = torch.randn_like(data)
        x = (data + SIGMA * z).requires_grad_(True)
        (g,) = torch.autograd.grad(energy(params, x).sum(), x, create_graph=True)
        loss = 0.5 * ((SIGMA * g - z) ** 2).sum(dim=(1, 2, 3)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())

    t, reps = timed(step, seconds)
    return t, reps, losses[0]


def pcd(params, data, seconds, k):
    params = [p.detach().clone().requires_grad_(True) for p in params]
    opt = torch.optim.Adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
    n = data.shape[0]
    buffer = torch.empty((BUFFER,) + tuple(data.shape[1:]))
    state = {"rows": 0}
    losses = []

    def step():
        x = torch.rand_like(data)
        rows = state["rows"]
        if rows >= n:
            keep = torch.rand(n) >= REINIT
            picked = buffer[torch.randint(rows, (n,))]
            x = torch.where(keep.view(n, 1, 1, 1), picked, x)
        frozen = [p.detach() for p in params]
        for _ in range(k):
            x.requires_grad_(True)
            (g,) = torch.autograd.grad(energy(frozen, x).sum(), x)
            x = x.detach() - PCD_STEP * g.clamp(-CLIP, CLIP) + PCD_NOISE * torch.randn_like(x)
            x = 1.0 - (x.remainder(2.0) - 1.0).abs()
        append = min(n, BUFFER - rows)
        buffer[rows : rows + append] = x[:append]
        if append < n:
            buffer[torch.randint(BUFFER, (n - append,))] = x[append:]
        state["rows"] = rows + append
        e_data, e_samples = energy(params, data), energy(params, x)
        loss = e_data.mean() - e_samples.mean() + ALPHA * ((e_data**2).mean() + (e_samples**2).mean())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())

    t, reps = timed(step, seconds)
    return t, reps, losses[0]


def main():
    directory, seconds, k = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    torch.manual_seed(0)
    params, data = load(directory)
    print(f"torch {torch.get_num_threads()}", flush=True)
    for line in sys.stdin:
        name = line.strip()
        if not name:
            continue
        if name == "pcd":
            t, reps, check = pcd(params, data, seconds, k)
        else:
            t, reps, check = {"langevin": langevin, "dsm": dsm}[name](params, data, seconds)
        print(f"torch {name} {t * 1e3:.4f} {reps} {check:.6f}", flush=True)


if __name__ == "__main__":
    main()
