"""Diffusion on 2-D points: noise the 8-Gaussians ring away, then learn to bring it back.

    python demos/diffusion_toy2d.py [--device cuda] [--quick] [--steps N]

Time on the idle 2-core AMD EPYC machine (CPU, 2026-12-03): 3 min 0 s; with --quick 5.9 s.

1. **Forward process.** q(x_t | x_{t−1}) = N(√(1−β_t) x_{t−1}, β_t I) shrinks the ring
   and blurs it until, at t = T, the points are N(0, I) (``forward.png``).
2. **Training.** An MLP ε_θ(x_t, t) learns to predict the noise in
   x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε (the DDPM loss), for random t and ε. The loop is below.
3. **Sampling.** DDPM runs the learned reverse chain for all T steps. DDIM reuses the
   same network on every fifth timestep (20 % of the network evaluations), with η = 0
   (deterministic) and η = 0.5 (some fresh noise at each step). ``reverse.png`` /
   ``reverse.gif`` show the DDPM reverse trajectory; ``samples.png`` the three samplers.

**How close are the samples?** The energy distance D(X, Y)² = 2E‖X−Y‖ − E‖X−X'‖ − E‖Y−Y'‖
is zero exactly when the distributions agree. ``energy_distance_*`` is the usual
(V-statistic) estimate, as ``minigen.data.energy_distance`` computes it, between 20,000
samples and 20,000 held-out data points (exactly 1/8 of them in each blob). Estimates
have a floor and noise: fresh data scores ≈ 0.01-0.02 here
(``baseline_energy_distance_data``). Each set contains its own points at distance 0,
and, with 8 blobs far apart, the random share of points each blob happens to get moves
the estimate a lot; at n = 1000 even fresh data scores 0.02-0.11, which is why n is
large here. The ``*_unbiased`` values (U-statistic, self-pairs left out) are ≈ 0 for
a perfect sampler. ``mode_imbalance_*`` is the largest relative deviation of a blob's
share of the samples from 1/8.

What to look for: DDPM matches the data. Deterministic DDIM (η = 0) draws sharp blobs,
but gets the blobs' weights wrong by 10-20 % and leaves stragglers between them: the
ODE maps each region of noise to one blob, so any error of the learned ε_θ at high noise
moves the boundaries, and nothing random corrects it later. A little noise (η = 0.5)
repairs that with the same 20 % of the steps.

Pictures (in --out): schedules.png, forward.png, reverse.png, reverse.gif, samples.png,
modes.png (each sampler's share of points per blob), loss.png, and metrics.json (plus
the samples in samples.npz).
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

if __package__:  # imported as demos.diffusion_toy2d
    from demos.common import demo_arguments, positive_int, status, steps_bar, write_metrics
else:  # run as a script, or imported with demos/ on sys.path
    from common import demo_arguments, positive_int, status, steps_bar, write_metrics

import minigen as mg
from minigen.data.toy2d import eight_gaussian_centers, eight_gaussians
from minigen.models.diffusion import (
    Trajectory,
    cosine_schedule,
    ddim_sample,
    ddpm_loss,
    ddpm_sample,
    linear_schedule,
    offset_cosine_schedule,
    plot_schedules,
    q_step,
)
from minigen.models.unet import MLPDenoiser
from minigen.optim import EMA
from minigen.utils import hstack, line_plot, save_gif, save_pil, scatter_plot

LIMITS = (-3.2, 3.2)
GREY, BLUE, RED = (170, 170, 170), (31, 119, 180), (214, 39, 40)

DEFAULT = dict(T=250, steps=6000, batch=512, hidden=256, layers=3, lr=1e-3, n_eval=20_000, ema=0.999)
QUICK = dict(T=100, steps=300, batch=256, hidden=64, layers=2, lr=2e-3, n_eval=2000, ema=0.99)
ETAS = (0.0, 0.5)  # DDIM's η: 0 is deterministic


def extra_flags(parser: Any) -> None:
    parser.add_argument(
        "--steps", type=positive_int, default=None, help="training steps (default 6000, 300 with --quick)"
    )


# ----------------------------------------------------------------------------- metrics
def _sum_of_distances(a: np.ndarray, b: np.ndarray, block: int = 1024) -> float:
    """Σ_{i,j} ‖a_i − b_j‖ over all pairs, in blocks so 10k x 10k pairs need little memory."""
    total = 0.0
    b_sq = (b * b).sum(axis=1)
    for start in range(0, len(a), block):
        chunk = a[start : start + block]
        # ‖u − v‖² = ‖u‖² + ‖v‖² − 2 u·v; clip the tiny negatives that rounding produces.
        sq = (chunk * chunk).sum(axis=1)[:, None] + b_sq[None, :] - 2.0 * chunk @ b.T
        total += float(np.sqrt(np.maximum(sq, 0.0)).sum(dtype=np.float64))
    return total


class EnergyDistance:
    """Energy distances of sample sets to one fixed reference set y (its Σ‖y − y'‖ computed once).

    V-statistic (all pairs, as ``minigen.data.energy_distance``):
        D̂² = 2 Σ‖x−y‖/(nm) − Σ‖x−x'‖/n² − Σ‖y−y'‖/m²
    U-statistic (self-pairs i = i' left out, so E[D̂²] = D² exactly):
        D̂² = 2 Σ‖x−y‖/(nm) − Σ‖x−x'‖/(n(n−1)) − Σ‖y−y'‖/(m(m−1))
    Both return √max(D̂², 0).
    """

    def __init__(self, reference: np.ndarray) -> None:
        # float32 distances (5x faster) summed in float64: plenty for differences of ~1e-4.
        self.y = np.asarray(reference, np.float32)
        self.yy = _sum_of_distances(self.y, self.y)

    def __call__(self, samples: np.ndarray) -> tuple[float, float]:
        x = np.asarray(samples, np.float32)
        n, m = len(x), len(self.y)
        xy, xx = _sum_of_distances(x, self.y) / (n * m), _sum_of_distances(x, x)
        v = 2.0 * xy - xx / n**2 - self.yy / m**2
        u = 2.0 * xy - xx / (n * (n - 1)) - self.yy / (m * (m - 1))
        return math.sqrt(max(v, 0.0)), math.sqrt(max(u, 0.0))


def stratified_reference(n: int, seed: int) -> np.ndarray:
    """n data points with exactly n/8 in each blob: a reference whose own blob weights carry
    no sampling noise (with 8 far-apart blobs, that noise dominates the energy distance)."""
    points, labels = eight_gaussians(2 * n, seed=seed, return_labels=True)
    return np.concatenate([points[labels == k][: n // 8] for k in range(8)])


def mode_shares(samples: np.ndarray) -> np.ndarray:
    """The share of the samples nearest to each of the 8 blob centres."""
    nearest = np.linalg.norm(samples[:, None, :] - eight_gaussian_centers()[None], axis=2).argmin(axis=1)
    return np.bincount(nearest, minlength=8) / len(samples)


def mode_imbalance(samples: np.ndarray) -> float:
    """max_k |share of samples nearest to mode k − 1/8| / (1/8)."""
    return float(np.abs(mode_shares(samples) - 1 / 8).max() * 8)


# ---------------------------------------------------------------------------- pictures
def _panel_row(panels: list[Path], path: Path) -> None:
    """Paste PNGs side by side into one picture."""
    save_pil(hstack([Image.open(p) for p in panels]), path)


def _scatter_panels(
    frames: list[np.ndarray], titles: list[str], data: np.ndarray, color: tuple, path: Path, workdir: Path
) -> None:
    paths = []
    for i, (points, title) in enumerate(zip(frames, titles)):
        paths.append(
            scatter_plot(
                [data, points], workdir / f"{path.stem}_{i}.png", colors=[GREY, color], limits=LIMITS,
                title=title, point_size=1.2, size=(300, 300),
            )
        )  # fmt: skip
    _panel_row(paths, path)


# -------------------------------------------------------------------------------- demo
def main(argv: list[str] | None = None) -> dict:
    args = demo_arguments("diffusion_toy2d", __doc__.split("\n")[0], argv, extra=extra_flags)
    cfg = dict(QUICK if args.quick else DEFAULT)
    if args.steps is not None:
        cfg["steps"] = args.steps
    device, out, T = args.device, Path(args.out), cfg["T"]
    workdir = Path(tempfile.mkdtemp(prefix="diffusion_toy2d_"))

    # Data: a large pool on the device; every step draws a random batch from it.
    pool_host = eight_gaussians(200_000, seed=args.seed)  # plenty: the network cannot memorise them
    pool = mg.tensor(pool_host, device=device)
    reference = stratified_reference(cfg["n_eval"], seed=args.seed + 1)  # held-out points to compare with
    shown = eight_gaussians(1000, seed=args.seed + 3)  # the data drawn in the pictures

    # The cosine schedule: compared with the linear one (see schedules.png), it spends far
    # fewer steps on x_t that are already pure noise, and more on the noise levels at which
    # the 8 blobs separate, which is where this data set is hard.
    schedule = cosine_schedule(T)
    plot_schedules(
        {"linear": linear_schedule(T), "cosine": schedule, "offset-cosine": offset_cosine_schedule(T)},
        out / "schedules.png",
    )

    # The forward process, one step at a time: x_t = √(1−β_t) x_{t−1} + √β_t ε.
    # Moments to draw, multiples of the reverse trajectory's recording interval.
    every = max(1, T // 50)
    moments = sorted({every * round(T * f / every) for f in (0.0, 0.04, 0.1, 0.2, 0.5, 1.0)})
    x = mg.tensor(shown, device=device)
    forward_frames = {0: shown}
    for t in range(T):
        x = q_step(schedule, x, mg.full((x.shape[0],), t, dtype=mg.int64, device=device), mg.randn_like(x))
        if t + 1 in moments:
            forward_frames[t + 1] = x.numpy()
    _scatter_panels(
        [forward_frames[m] for m in moments], [f"q(x_t | x_0), t = {m}" for m in moments], shown, BLUE,
        out / "forward.png", workdir,
    )  # fmt: skip

    # ----------------------------------------------------------------- training
    model = MLPDenoiser(data_dim=2, hidden=cfg["hidden"], num_layers=cfg["layers"], time_dim=64).to(device)
    optimizer = mg.optim.Adam(model.parameters(), lr=cfg["lr"])
    lr_schedule = mg.optim.warmup_cosine(
        optimizer, warmup_steps=min(100, cfg["steps"] // 4), total_steps=cfg["steps"], eta_min=cfg["lr"] / 20
    )
    ema = EMA(model, decay=cfg["ema"], warmup=True)
    log_every = 50
    logged_steps, losses, pending = [], [], []
    for step in tqdm(range(cfg["steps"]), desc="train ε_θ", leave=False):
        x0 = pool[mg.randint(0, len(pool_host), (cfg["batch"],), device=device)]
        loss = ddpm_loss(model, schedule, x0)  # t ~ U{1..T}, ε ~ N(0, I) drawn inside
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        lr_schedule.step()
        ema.update(model)
        pending.append(loss.detach())
        if (step + 1) % log_every == 0:  # one host read per log_every steps
            logged_steps.append(step + 1)
            losses.append(float(mg.stack(pending).mean().item()))
            pending = []
    line_plot({"DDPM loss": (logged_steps, losses)}, out / "loss.png", title="training loss (mean of 50 steps)")

    # ----------------------------------------------------------------- sampling
    n = cfg["n_eval"]
    ddim_steps = max(1, T // 5)
    trajectory = Trajectory(every=every)
    # x̂_0 = (x_t − √(1−ᾱ_t) ε̂)/√ᾱ_t divides by √ᾱ_T ≈ 1e-4 on the first step, so a tiny
    # error in ε̂ can throw a point far away; clipping x̂_0 to the data's range (|x| < 2.1
    # here) prevents that, as clipping to [−1, 1] does for images.
    clip = 2.5
    with ema.average_parameters(model):
        x_T = mg.randn(n, 2, device=device)
        x_ddpm = ddpm_sample(
            model, schedule, x_T, clip_x0=clip, trajectory=trajectory,
            progress=steps_bar(f"DDPM sampling, {n} points, {T} steps"),
        )  # fmt: skip
        ddim = {
            eta: ddim_sample(
                model, schedule, x_T, num_steps=ddim_steps, eta=eta, clip_x0=clip,
                progress=steps_bar(f"DDIM sampling, eta = {eta:g}, {ddim_steps} steps"),
            ).numpy()
            for eta in ETAS
        }  # fmt: skip
    ddpm_points = x_ddpm.numpy()
    np.savez(out / "samples.npz", ddpm=ddpm_points, **{f"ddim_eta{eta:g}": x for eta, x in ddim.items()})

    # The reverse trajectory at the same moments as the forward one (timestep t = index + 1).
    by_t = {t + 1: x.numpy()[:1000] for t, x in zip(trajectory.timesteps, trajectory.xs)}
    by_t[0] = ddpm_points[:1000]
    back = [m for m in reversed(moments) if m in by_t]
    gif_moments = sorted(by_t, reverse=True)[::2] + [0]
    with status(f"drawing the reverse process ({len(gif_moments)} GIF frames) and the samples"):
        _scatter_panels(
            [by_t[m] for m in back], [f"p_theta reverse, t = {m}" for m in back], shown, RED, out / "reverse.png",
            workdir,
        )  # fmt: skip
        gif_frames = []
        for t in gif_moments:
            frame = scatter_plot(
                [shown, by_t[t]], workdir / "frame.png", colors=[GREY, RED], limits=LIMITS,
                title=f"DDPM reverse process, t = {t}", point_size=1.2, size=(360, 360),
            )  # fmt: skip
            gif_frames.append(Image.open(frame).convert("RGB"))
        save_gif(gif_frames, out / "reverse.gif", duration=80, final_pause=1500)
        _scatter_panels(
            [ddpm_points[:1000]] + [x[:1000] for x in ddim.values()],
            [f"DDPM, {T} steps"] + [f"DDIM eta = {eta:g}, {ddim_steps} steps" for eta in ddim],
            shown,
            RED,
            out / "samples.png",
            workdir,
        )

    # ----------------------------------------------------------------- metrics
    with status(f"energy distance: the {len(reference)} held-out points among themselves"):
        distance = EnergyDistance(reference)
    metrics: dict[str, Any] = {
        "T": T,
        "train_steps": cfg["steps"],
        "ddim_steps": ddim_steps,
        "n_eval": cfg["n_eval"],
        "final_loss": losses[-1] if losses else None,
    }
    fresh = eight_gaussians(cfg["n_eval"], seed=args.seed + 2)  # data vs data: the estimator's floor
    runs = {"data": fresh, "ddpm": ddpm_points, **{f"ddim_eta{eta:g}": x for eta, x in ddim.items()}}
    for name, points in tqdm(runs.items(), desc="energy distance of each sample set", unit="set"):
        prefix = "baseline_energy_distance" if name == "data" else "energy_distance"
        suffix = "_data" if name == "data" else f"_{name}"
        metrics[prefix + suffix], metrics[prefix + suffix + "_unbiased"] = distance(points)
        metrics["mode_imbalance" + suffix] = mode_imbalance(points)
    blobs = np.arange(8)
    line_plot(
        {name: (blobs, mode_shares(points)) for name, points in runs.items()} | {"1/8": (blobs, np.full(8, 1 / 8))},
        out / "modes.png", title="share of the samples in each blob", xlabel="blob", ylabel="share",
    )  # fmt: skip
    for eta in ETAS:
        metrics[f"ddim_eta{eta:g}_to_ddpm_ratio"] = metrics[f"energy_distance_ddim_eta{eta:g}"] / max(
            metrics["energy_distance_ddpm"], 1e-12
        )
    return write_metrics(args, metrics)


if __name__ == "__main__":
    main()
