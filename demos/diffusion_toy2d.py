"""Diffusion on 2-D points: noise the 8-Gaussians ring away, then learn to bring it back.

    python demos/diffusion_toy2d.py [--device cuda] [--quick] [--steps N]

1. **Forward process.** q(x_t | x_{t−1}) = N(√(1−β_t) x_{t−1}, β_t I) shrinks the ring
   and blurs it until, at t = T, the points are N(0, I) (``forward.png``).
2. **Training.** An MLP ε_θ(x_t, t) learns to predict the noise in
   x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε (the DDPM loss), for random t and ε. The loop is below.
3. **Sampling.** DDPM runs the learned reverse chain for all T steps; DDIM reuses the
   same network with a deterministic update on every fifth step (20 % of the network
   evaluations). ``reverse.png`` / ``reverse.gif`` show the reverse trajectory.

**How close are the samples?** The energy distance D(X, Y)² = 2E‖X−Y‖ − E‖X−X'‖ − E‖Y−Y'‖
is zero exactly when the distributions agree. Estimated from samples it has a floor:
with the plain (V-statistic) estimator, two independent sets of 1000 points of the *same*
distribution are already ≈ 0.05 apart here, because every set contains its own points
at distance 0 and the 8 modes never get exactly 1/8 of the points each. So the target
(< 0.03) is checked with the unbiased U-statistic, which excludes those self-pairs, on
5000 samples against 10,000 data points; ``*_vstat_n1000`` and the data-vs-data
``baseline_*`` values show the floor for comparison.

Pictures (in --out): schedules.png, forward.png, reverse.png, reverse.gif, samples.png,
loss.png, and metrics.json.
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
    from demos.common import demo_arguments, write_metrics
else:  # run as a script, or imported with demos/ on sys.path
    from common import demo_arguments, write_metrics

import minigen as mg
import minigen.optim  # noqa: F401  (mg.optim)
from minigen.data.toy2d import eight_gaussians, energy_distance
from minigen.models.diffusion import (
    EMA,
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
from minigen.utils import line_plot, save_gif, save_pil, scatter_plot

LIMITS = (-3.2, 3.2)
GREY, BLUE, RED = (170, 170, 170), (31, 119, 180), (214, 39, 40)

DEFAULT = dict(T=500, steps=6000, batch=512, hidden=256, layers=3, lr=1e-3, n_eval=5000)
QUICK = dict(T=100, steps=300, batch=256, hidden=64, layers=2, lr=2e-3, n_eval=500)


def extra_flags(parser: Any) -> None:
    parser.add_argument("--steps", type=int, default=None, help="training steps (default 6000, 300 with --quick)")


# ----------------------------------------------------------------------------- metrics
def _mean_distance(a: np.ndarray, b: np.ndarray, exclude_diagonal: bool = False, block: int = 2048) -> float:
    """E‖a_i − b_j‖ over all pairs (or over i ≠ j when a is b)."""
    total = 0.0
    b_sq = (b * b).sum(axis=1)
    for start in range(0, len(a), block):
        chunk = a[start : start + block]
        sq = (chunk * chunk).sum(axis=1)[:, None] + b_sq[None, :] - 2.0 * chunk @ b.T
        total += float(np.sqrt(np.maximum(sq, 0.0)).sum())  # the diagonal adds (about) 0
    pairs = len(a) * (len(b) - 1) if exclude_diagonal else len(a) * len(b)
    return total / pairs


def energy_distance_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """√max(0, D̂²) with the U-statistic D̂² = 2·mean‖x_i − y_j‖ − mean_{i≠i'}‖x_i − x_i'‖ − mean_{j≠j'}‖y_j − y_j'‖.

    Unlike the V-statistic (``minigen.data.energy_distance``), its expectation is exactly
    D² for any sample sizes, so a perfect sampler scores ≈ 0 instead of ≈ √(2E‖X−X'‖/n).
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    d2 = 2.0 * _mean_distance(x, y) - _mean_distance(x, x, True) - _mean_distance(y, y, True)
    return math.sqrt(max(d2, 0.0))


# ---------------------------------------------------------------------------- pictures
def _panel_row(panels: list[Path], path: Path) -> None:
    """Paste equally sized PNGs side by side into one picture."""
    images = [Image.open(p).convert("RGB") for p in panels]
    row = Image.new("RGB", (sum(im.width for im in images), max(im.height for im in images)), "white")
    x = 0
    for im in images:
        row.paste(im, (x, 0))
        x += im.width
    save_pil(row, path)


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
    pool_host = eight_gaussians(20_000, seed=args.seed)
    pool = mg.tensor(pool_host, device=device)
    reference = eight_gaussians(10_000, seed=args.seed + 1)  # held-out points to compare samples with
    shown = reference[:1000]

    # The schedule: the linear one, scaled for T steps. Compare it with the alternatives.
    schedule = linear_schedule(T)
    plot_schedules(
        {"linear": schedule, "cosine": cosine_schedule(T), "offset-cosine": offset_cosine_schedule(T)},
        out / "schedules.png",
    )

    # The forward process, one step at a time: x_t = √(1−β_t) x_{t−1} + √β_t ε.
    moments = sorted({0, T // 20, T // 10, T // 5, T // 2, T})
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
    lr_schedule = mg.optim.warmup_cosine(optimizer, warmup_steps=100, total_steps=cfg["steps"], eta_min=cfg["lr"] / 20)
    ema = EMA(model, decay=0.995, warmup=True)
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
    trajectory = Trajectory(every=max(1, T // 100))
    with ema.average_parameters(model):
        x_T = mg.randn(n, 2, device=device)
        bar = tqdm(total=T, desc="DDPM sampling", leave=False)
        x_ddpm = ddpm_sample(model, schedule, x_T, trajectory=trajectory, progress=lambda r: _ticking(r, bar))
        bar.close()
        x_ddim = ddim_sample(model, schedule, x_T, num_steps=ddim_steps, eta=0.0)
    ddpm_points, ddim_points = x_ddpm.numpy(), x_ddim.numpy()

    # The reverse trajectory at the same moments as the forward one (timestep t = index + 1).
    by_t = {t + 1: x.numpy()[:1000] for t, x in zip(trajectory.timesteps, trajectory.xs)}
    by_t[0] = ddpm_points[:1000]
    back = [m for m in reversed(moments) if m in by_t]
    _scatter_panels(
        [by_t[m] for m in back], [f"p_θ reverse, t = {m}" for m in back], shown, RED, out / "reverse.png", workdir
    )
    gif_frames = []
    for t in sorted(by_t, reverse=True)[::2] + [0]:
        frame = scatter_plot(
            [shown, by_t[t]], workdir / "frame.png", colors=[GREY, RED], limits=LIMITS,
            title=f"DDPM reverse process, t = {t}", point_size=1.2, size=(360, 360),
        )  # fmt: skip
        gif_frames.append(Image.open(frame).convert("RGB"))
    save_gif(gif_frames, out / "reverse.gif", duration=80, final_pause=1500)
    _scatter_panels(
        [ddpm_points[:1000], ddim_points[:1000]],
        [f"DDPM, {T} steps", f"DDIM (eta = 0), {ddim_steps} steps"],
        shown,
        RED,
        out / "samples.png",
        workdir,
    )

    # ----------------------------------------------------------------- metrics
    fresh = eight_gaussians(n, seed=args.seed + 2)  # data vs data: the estimator's noise floor
    m = min(n, 1000)
    metrics = {
        "T": T,
        "train_steps": cfg["steps"],
        "ddim_steps": ddim_steps,
        "n_eval": n,
        "final_loss": losses[-1] if losses else None,
        "energy_distance_ddpm": energy_distance_unbiased(ddpm_points, reference),
        "energy_distance_ddim": energy_distance_unbiased(ddim_points, reference),
        "baseline_energy_distance_data": energy_distance_unbiased(fresh, reference),
        "energy_distance_ddpm_vstat_n1000": energy_distance(ddpm_points[:m], reference[:m]),
        "energy_distance_ddim_vstat_n1000": energy_distance(ddim_points[:m], reference[:m]),
        "baseline_energy_distance_data_vstat_n1000": energy_distance(fresh[:m], reference[:m]),
    }
    metrics["ddim_to_ddpm_ratio"] = metrics["energy_distance_ddim"] / max(metrics["energy_distance_ddpm"], 1e-12)
    return write_metrics(args, metrics)


def _ticking(steps: Any, bar: Any) -> Any:
    for t in steps:
        yield t
        bar.update(1)


if __name__ == "__main__":
    main()
