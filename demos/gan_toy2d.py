"""A GAN learns the 8-Gaussians ring: the classic picture of (avoiding) mode collapse.

The data are 8 tight Gaussian blobs on a circle of radius 2. An MLP generator turns
2-D noise into points, an MLP discriminator tells real points from generated ones,
and they are trained by alternating k discriminator steps with one generator step
(Goodfellow's Algorithm 1, written out below).

Pictures (in --out):
    progress.png / progress.gif   generated points (red) over the data (grey) during training
    samples.png                    the final samples over the data
    decision_surface.png           D(x) = P(real | x) on the plane, with data and samples
    losses.png, d_outputs.png      loss curves and D(x), D(G(z)) for every step

D's loss carries the R1 penalty (γ/2)‖∇ₓD(x)‖² on real points (``--r1 0`` turns it off):
it keeps D's bumps around the modes wide, so samples near an uncovered mode still feel
its pull. Without it, some seeds drop one or two modes for good: mode collapse.

Try ``--loss saturating`` to watch the generator stall (D(G(z)) stays near 0), or
``--loss wgan-gp`` for the Wasserstein critic with gradient penalty.

    python demos/gan_toy2d.py [--device cuda] [--quick] [--loss nonsaturating|saturating|wgan-gp]

Time on the idle 2-core AMD EPYC machine (CPU, 2026-12-03): 1 min 55 s; with --quick 8.0 s.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

if __package__:  # imported as demos.gan_toy2d
    from demos.common import demo_arguments, non_negative_float, positive_int, status, write_metrics
else:  # run as a script, or imported with demos/ on sys.path
    from common import demo_arguments, non_negative_float, positive_int, status, write_metrics

import minigen as mg
from minigen.data.toy2d import eight_gaussian_centers, eight_gaussians, energy_distance, mode_coverage
from minigen.models.gan import LOSSES, MLPDiscriminator, MLPGenerator, TrainingLog, discriminator_step, generator_step
from minigen.utils import colorbar, colormap, hstack, line_plot, save_gif, save_pil, scatter_plot
from minigen.utils.images import paste_text

LIMITS = (-2.8, 2.8)
MODE_RADIUS = 0.1  # a sample "hits" a mode within 5 standard deviations (std 0.02) of its centre
GREY, RED = (150, 150, 150), (214, 39, 40)


def extra_flags(parser: Any) -> None:
    parser.add_argument("--loss", default="nonsaturating", choices=LOSSES)
    parser.add_argument(
        "--steps", type=positive_int, default=None, help="generator steps (default 8000, 400 with --quick)"
    )
    parser.add_argument("--k", type=positive_int, default=1, help="discriminator steps per generator step")
    parser.add_argument("--r1", type=non_negative_float, default=1.0, help="R1 penalty weight γ (0 turns it off)")


def decision_surface(
    discriminator: Any, real: np.ndarray, fake: np.ndarray, device: str, title: str, probability: bool = True
) -> Image.Image:
    """Colour the plane by D(x) = σ(logit) and draw the data (white) and the samples (red) on it.

    For a WGAN critic (``probability=False``) the raw (unbounded) scores are shown.
    """
    pixels = 240
    axis = np.linspace(LIMITS[0], LIMITS[1], pixels, dtype=np.float32)
    xs, ys = np.meshgrid(axis, axis[::-1])  # row 0 is the top of the picture: largest y
    grid = mg.tensor(np.stack([xs.ravel(), ys.ravel()], axis=1), device=device)
    with mg.no_grad():
        scores = discriminator(grid)
    values = (scores.sigmoid() if probability else scores).numpy().reshape(pixels, pixels)
    # The colours span the map's own range (printed on the bar): near equilibrium D stays
    # close to 1/2 everywhere, and a fixed 0..1 scale would hide its bumps.
    low, high = float(values.min()), float(values.max())
    image = Image.fromarray(colormap((values - low) / max(high - low, 1e-12), "viridis"), "RGB")
    draw = ImageDraw.Draw(image)

    def to_pixel(points: np.ndarray) -> np.ndarray:
        return (points - LIMITS[0]) / (LIMITS[1] - LIMITS[0]) * (pixels - 1) * np.array([1, -1]) + np.array(
            [0, pixels - 1]
        )

    for (px, py), colour in [(p, (255, 255, 255)) for p in to_pixel(real[:600])] + [
        (p, RED) for p in to_pixel(fake[:600])
    ]:
        draw.ellipse([px - 1.5, py - 1.5, px + 1.5, py + 1.5], fill=colour)
    # A title, a colour bar and a legend, so the picture reads on its own.
    bar = colorbar(
        low, high if high > low else low + 1e-6, pixels, "viridis", "D(x)" if probability else "C(x)", top=30
    )
    framed = Image.new("RGB", (pixels, pixels + 52), (255, 255, 255))
    framed.paste(image, (0, 30))
    paste_text(framed, 4, 8, title, 13)
    paste_text(framed, 4, pixels + 34, "white dots: data,  red dots: G(z)", 12)
    return hstack([framed, bar])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = demo_arguments("gan_toy2d", "GAN on the 8-Gaussians ring", argv, extra_flags)
    device = args.device
    steps = args.steps or (400 if args.quick else 8000)
    batch, latent_dim, lr = 256, 2, 1e-3
    # Energy distance with 10,000 points per set: between two sets of real data it is
    # about 0.016 (finite-sample noise), so 0.04 leaves room only for a close match.
    n_eval = 2000 if args.quick else 10_000
    wgan = args.loss == "wgan-gp"

    # Data: a large pool on the device; each step draws a fresh minibatch from it.
    pool = mg.tensor(eight_gaussians(100_000, seed=args.seed), device=device)
    centers = eight_gaussian_centers()

    generator = MLPGenerator(latent_dim, 2, hidden=(128, 128, 128)).to(device)
    discriminator = MLPDiscriminator(2, hidden=(128, 128, 128)).to(device)
    # β₁ = 0.5 (DCGAN's choice): less momentum makes the two-player game oscillate less.
    betas = (0.5, 0.9) if wgan else (0.5, 0.999)
    opt_g = mg.optim.Adam(generator.parameters(), lr=lr, betas=betas)
    opt_d = mg.optim.Adam(discriminator.parameters(), lr=lr, betas=betas)
    k = 5 if wgan and args.k == 1 else args.k  # WGAN trains its critic more often
    # Full learning rate for the first half, then a linear decay to 0: the game stops
    # oscillating and the samples settle onto the modes.
    schedules = [mg.optim.LambdaLR(opt, lambda t: min(1.0, 2.0 * (1.0 - t / steps))) for opt in (opt_g, opt_d)]

    fixed_z = mg.randn(1000, latent_dim, device=device)  # the same noise in every snapshot
    real_view = eight_gaussians(1000, seed=args.seed + 1)
    log = TrainingLog(sync_every=100)
    snapshots: list[tuple[int, np.ndarray]] = []
    snapshot_every = max(steps // 8, 1)

    # ---- training: Goodfellow's Algorithm 1 (k D steps, then one G step)
    for step in tqdm(range(1, steps + 1), desc=f"GAN ({args.loss})"):
        for _ in range(k):
            real = pool[mg.randint(0, len(pool), (batch,), device=device)]
            z = mg.randn(batch, latent_dim, device=device)
            stats = discriminator_step(generator, discriminator, opt_d, real, z, loss=args.loss, r1_weight=args.r1)
        z = mg.randn(batch, latent_dim, device=device)
        stats.update(generator_step(generator, discriminator, opt_g, z, loss=args.loss))
        log.record(stats)  # device scalars; copied to the host every 100 steps
        for schedule in schedules:
            schedule.step()
        if step % snapshot_every == 0 or step == 1:
            with mg.no_grad():
                snapshots.append((step, generator(fixed_z).numpy()))
        if step == snapshot_every:  # D early on: bumps at the data that pull G's samples in
            name = "D(x) = P(real | x)" if not wgan else "critic score C(x)"
            surfaces = [
                decision_surface(discriminator, real_view, snapshots[-1][1], device, f"{name}, step {step}", not wgan)
            ]
    log.flush()

    # ---- pictures
    out = args.out
    frames = []
    with tempfile.TemporaryDirectory() as tmp:
        for step, points in snapshots:
            path = Path(tmp) / f"{step}.png"
            scatter_plot(
                [real_view, points],
                path,
                colors=[GREY, RED],
                labels=["data", "G(z)"],
                limits=LIMITS,
                title=f"step {step}",
                size=(300, 300),
            )
            frames.append(Image.open(path).convert("RGB"))
    save_gif(frames, out / "progress.gif", duration=400, final_pause=1200)
    columns = 3
    rows = -(-len(frames) // columns)
    sheet = Image.new("RGB", (columns * 300, rows * 300), (255, 255, 255))
    for i, frame in enumerate(frames):
        sheet.paste(frame, ((i % columns) * 300, (i // columns) * 300))
    save_pil(sheet, out / "progress.png")

    with mg.no_grad():
        fake = generator(mg.randn(n_eval, latent_dim, device=device)).numpy()
    real_eval = eight_gaussians(n_eval, seed=args.seed + 2)
    with status(f"energy distance between {n_eval} samples and {n_eval} data points"):
        distance = energy_distance(fake, real_eval)
    scatter_plot(
        [real_eval[:2000], fake[:2000]],
        out / "samples.png",
        colors=[GREY, RED],
        labels=["data", "G(z)"],
        limits=LIMITS,
        title=f"{args.loss} GAN after {steps} steps",
    )
    name = "D(x) = P(real | x)" if not wgan else "critic score C(x)"
    surfaces.append(decision_surface(discriminator, real_eval, fake, device, f"{name}, step {steps}", not wgan))
    # At the game's equilibrium D(x) = 1/2 everywhere: D can no longer tell the two apart.
    save_pil(hstack(surfaces, gap=12), out / "decision_surface.png")

    h = log.history
    line_plot({"D loss": h["d_loss"], "G loss": h["g_loss"]}, out / "losses.png", title="losses", smooth=0.95)
    line_plot(
        {"D(x)": h["D(x)"], "D(G(z))": h["D(G(z))"]},
        out / "d_outputs.png",
        title="discriminator outputs" if not wgan else "critic scores",
        smooth=0.95,
    )

    # ---- metrics
    counts = mode_coverage(fake, centers, radius=MODE_RADIUS)
    share = len(fake) / len(centers)
    metrics = {
        "loss": args.loss,
        "r1_weight": args.r1,
        "steps": steps,
        "energy_distance": distance,
        "modes_covered": int((counts >= share / 3).sum()),  # modes holding at least 1/3 of their share
        "mode_counts": counts.tolist(),
        "fraction_near_a_mode": float(counts.sum() / len(fake)),
        "final_D(x)": log.last("D(x)"),
        "final_D(G(z))": log.last("D(G(z))"),
    }
    return write_metrics(args, metrics)


if __name__ == "__main__":
    main()
