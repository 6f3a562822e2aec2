"""A class-conditional diffusion model draws the digit you ask for (classifier-free guidance).

    python demos/diffusion_digits.py [--device cuda] [--quick] [--steps N] [--guidance W]

Time on the idle 2-core AMD EPYC machine (CPU, 2026-12-03): 4 min 20 s; with --quick 12.6 s.

1. **Training.** A small U-Net ε_θ(x_t, t, y) learns the DDPM loss on 16×16 rendered
   digits (scaled to [−1, 1]). One label in ten is replaced by the null label ∅, so
   the same network also learns the unconditional ε_θ(x_t, t, ∅). The loop is below;
   the weights used for sampling are an exponential moving average (EMA) of the
   trained ones.
2. **Sampling.** DDIM (50 steps) and DDPM (all T steps), both with classifier-free
   guidance ε̃ = ε_θ(x_t, t, ∅) + w (ε_θ(x_t, t, y) − ε_θ(x_t, t, ∅)). The judged DDIM
   samples use η = 1 (fresh noise at each step); the noise-interpolation strip uses the
   deterministic η = 0, so that the sample is a function of x_T alone.
3. **Judging.** A LeNet classifier, trained separately on real digits, labels the
   samples: the score is how often it reads the class that was asked for.

Pictures (in --out; every grid says in its title and row labels what it shows):
    class_grid.png        DDIM samples (η = 1) with guidance w = 3, one row per class (0 at the top)
    ddpm_samples.png      DDPM (ancestral) samples, one column per class, two rows
    guidance_scales.png   the same noise with w = 0, 1, 3, 5, one row each: w = 0 ignores the label
    trajectory.gif        x_t (top) and the network's guess x̂_0 (bottom) along the DDIM steps
    trajectory.png        x_t at six moments of the DDIM run (top: noise); trajectory_x0.png: x̂_0
    interpolation.png     slerp between two noise tensors, each row one class
    loss.png              the training loss
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

if __package__:  # imported as demos.diffusion_digits
    from demos.common import demo_arguments, non_negative_float, positive_int, status, steps_bar, write_metrics
else:  # run as a script, or imported with demos/ on sys.path
    from common import demo_arguments, non_negative_float, positive_int, status, steps_bar, write_metrics

import minigen as mg
from minigen.data import DataLoader, load_digits
from minigen.models.cnn import LeNet, accuracy, fit_classifier, predict
from minigen.models.diffusion import (
    Trajectory,
    cosine_schedule,
    ddim_sample,
    ddpm_loss,
    ddpm_sample,
    drop_labels,
    interpolate_noise,
)
from minigen.models.unet import UNet
from minigen.optim import EMA
from minigen.utils import labelled_grid, line_plot, save_gif, save_image_grid

CLASSES = 10
DIGITS = [str(c) for c in range(CLASSES)]
DEFAULT = dict(
    size=16, T=500, steps=700, batch=64, base=16, mults=(1, 2, 2), lr=1.5e-3,
    n_train=10_000, per_class=20, ddim_steps=50, classifier_epochs=2,
)  # fmt: skip
QUICK = dict(
    size=16, T=50, steps=40, batch=32, base=8, mults=(1, 2), lr=2e-3,
    n_train=2000, per_class=2, ddim_steps=10, classifier_epochs=1,
)  # fmt: skip
P_UNCOND = 0.1  # how often a label is dropped for the null label during training


def extra_flags(parser: Any) -> None:
    parser.add_argument(
        "--steps", type=positive_int, default=None, help="training steps (default 700, 40 with --quick)"
    )
    parser.add_argument(
        "--guidance", type=non_negative_float, default=3.0, help="classifier-free guidance scale w (default 3)"
    )


def to_unit(x: mg.Tensor) -> np.ndarray:
    """Model space [−1, 1] -> host pixels [0, 1]."""
    return np.clip((x.numpy() + 1.0) / 2.0, 0.0, 1.0)


def class_labels(per_class: int, device: str) -> mg.Tensor:
    """0,0,…,0, 1,1,…,1, …: ``per_class`` of each class, so a grid has one row per class."""
    return mg.tensor(np.repeat(np.arange(CLASSES), per_class), device=device)


def main(argv: list[str] | None = None) -> dict:
    args = demo_arguments("diffusion_digits", __doc__.split("\n")[0], argv, extra=extra_flags)
    cfg = dict(QUICK if args.quick else DEFAULT)
    if args.steps is not None:
        cfg["steps"] = args.steps
    device, out, w = args.device, Path(args.out), args.guidance
    size, T = cfg["size"], cfg["T"]

    with status(f"rendering {cfg['n_train']} training and 2000 test digits"):
        train = load_digits("train", n=cfg["n_train"], size=size, seed=args.seed)
        test = load_digits("test", n=2000, size=size, seed=args.seed)

    # The judge: a LeNet trained on real digits (checked on the test split).
    with status("training the judge, a LeNet classifier, on the real digits"):
        classifier = LeNet(num_classes=CLASSES, image_size=size)
        fit_classifier(
            classifier, train.images, train.labels, epochs=cfg["classifier_epochs"], device=device, seed=args.seed
        )
        judge_accuracy = accuracy(classifier, test.images, test.labels, device=device)

    # ----------------------------------------------------------------- training
    schedule = cosine_schedule(T)
    model = UNet(in_channels=1, base_channels=cfg["base"], channel_mults=cfg["mults"], num_classes=CLASSES).to(device)
    optimizer = mg.optim.Adam(model.parameters(), lr=cfg["lr"])
    lr_schedule = mg.optim.warmup_cosine(
        optimizer, warmup_steps=min(50, cfg["steps"] // 4), total_steps=cfg["steps"], eta_min=cfg["lr"] / 10
    )
    ema = EMA(model, decay=0.995, warmup=True)
    images = 2.0 * train.images - 1.0  # pixels [0, 1] -> [−1, 1], the range of N(0, 1) noise
    loader = DataLoader(
        (images, train.labels), batch_size=cfg["batch"], shuffle=True, drop_last=True, seed=args.seed, device=device
    )
    log_every = 20
    logged_steps, losses, pending = [], [], []
    bar = tqdm(total=cfg["steps"], desc="train U-Net", leave=False)
    step = 0
    while step < cfg["steps"]:
        for x0, y in loader:
            y = drop_labels(y, P_UNCOND, model.null_label)  # ∅ for ~10 %: learn ε_θ(x_t, t, ∅) too
            loss = ddpm_loss(model, schedule, x0, y=y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            lr_schedule.step()
            ema.update(model)
            pending.append(loss.detach())
            step += 1
            bar.update(1)
            if step % log_every == 0:  # one host read per log_every steps
                logged_steps.append(step)
                losses.append(float(mg.stack(pending).mean().item()))
                pending = []
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
            if step == cfg["steps"]:
                break
    bar.close()
    line_plot(
        {"DDPM loss": (logged_steps, losses)},
        out / "loss.png",
        title=f"training loss (mean of every {log_every} steps)",
        smooth=0.6,
    )

    # ----------------------------------------------------------------- sampling
    per_class = cfg["per_class"]
    n = CLASSES * per_class
    shape = (1, size, size)

    def judge(samples: mg.Tensor, wanted: mg.Tensor) -> float:
        return float((predict(classifier, to_unit(samples), device=device) == wanted.numpy()).mean())

    metrics: dict[str, Any] = {"T": T, "train_steps": cfg["steps"], "guidance_scale": w}
    ddim = f"DDIM, {cfg['ddim_steps']} steps"
    # Each sampling run shows its own progress bar (steps_bar): together they take longer than the training.
    with ema.average_parameters(model):
        # DDIM with guidance: the class grid, the judged samples, and one trajectory per class.
        # η = 1 adds fresh noise at every step, which cleans up the speckles that the
        # deterministic η = 0 leaves on a briefly trained model (compare the two metrics).
        y = class_labels(per_class, device)
        x_T = mg.randn(n, *shape, device=device)
        trajectory = Trajectory(every=1)
        samples = ddim_sample(
            model, schedule, x_T, num_steps=cfg["ddim_steps"], eta=1.0, y=y, guidance_scale=w, clip_x0=1.0,
            trajectory=trajectory, progress=steps_bar(f"{ddim}, eta = 1, w = {w:g} ({n} samples)"),
        )  # fmt: skip
        hits = predict(classifier, to_unit(samples), device=device) == y.numpy()
        metrics["guided_accuracy"] = float(hits.mean())
        metrics["guided_accuracy_per_class"] = [float(hits[y.numpy() == c].mean()) for c in range(CLASSES)]
        save_image_grid(
            to_unit(samples[: n : max(1, per_class // 10)]), out / "class_grid.png", nrow=min(10, per_class),
            title=f"{ddim}, eta = 1, guidance w = {w:g}", row_labels=[f"digit {c}" for c in range(CLASSES)],
        )  # fmt: skip

        # The same noise without guidance (w = 1: the conditional model alone), and with η = 0.
        unguided = ddim_sample(
            model, schedule, x_T, num_steps=cfg["ddim_steps"], eta=1.0, y=y, guidance_scale=1.0, clip_x0=1.0,
            progress=steps_bar(f"{ddim}, eta = 1, w = 1 (no guidance)"),
        )  # fmt: skip
        metrics["conditional_accuracy_w1"] = judge(unguided, y)
        deterministic = ddim_sample(
            model, schedule, x_T, num_steps=cfg["ddim_steps"], eta=0.0, y=y, guidance_scale=w, clip_x0=1.0,
            progress=steps_bar(f"{ddim}, eta = 0 (deterministic), w = {w:g}"),
        )  # fmt: skip
        metrics["guided_accuracy_eta0"] = judge(deterministic, y)

        # Guidance scales side by side: one sample per class for each w, from the same x_T
        # and the same fresh noise z at every step (passed explicitly), so only w differs.
        scales = [0.0, 1.0, w, w + 2.0]
        one_each = class_labels(1, device)
        z_T = mg.randn(CLASSES, *shape, device=device)
        z_steps = [mg.randn(CLASSES, *shape, device=device) for _ in range(cfg["ddim_steps"])]
        rows = [
            ddim_sample(
                model, schedule, z_T, num_steps=cfg["ddim_steps"], eta=1.0, y=one_each, guidance_scale=s,
                clip_x0=1.0, noise=z_steps, progress=steps_bar(f"{ddim}, the same noise at w = {s:g}"),
            )
            for s in scales
        ]  # fmt: skip
        save_image_grid(
            to_unit(mg.cat(rows, dim=0)), out / "guidance_scales.png", nrow=CLASSES,
            title="the same noise at each guidance scale w", row_labels=[f"w = {s:g}" for s in scales],
            col_labels=DIGITS,
        )  # fmt: skip

        # DDPM: all T steps, fresh noise at every step but the last. Two rows: 0 … 9, twice.
        y_ddpm = mg.tensor(np.tile(np.arange(CLASSES), 2), device=device)
        ddpm = ddpm_sample(
            model, schedule, mg.randn(2 * CLASSES, *shape, device=device), y=y_ddpm, guidance_scale=w, clip_x0=1.0,
            progress=steps_bar(f"DDPM, all {T} steps, w = {w:g}"),
        )  # fmt: skip
        metrics["ddpm_guided_accuracy"] = judge(ddpm, y_ddpm)
        save_image_grid(
            to_unit(ddpm), out / "ddpm_samples.png", nrow=CLASSES, col_labels=DIGITS,
            title=f"DDPM, all {T} steps, w = {w:g}: one column per requested digit",
        )  # fmt: skip

        # Interpolation: slerp between two noise tensors, decoded deterministically (η = 0).
        strip = []
        for digit in (2, 5, 8):
            path = interpolate_noise(mg.randn(1, *shape, device=device), mg.randn(1, *shape, device=device), 10)
            labels = mg.full((10,), digit, dtype=mg.int64, device=device)
            strip.append(
                ddim_sample(
                    model, schedule, path, num_steps=cfg["ddim_steps"], y=labels, guidance_scale=w, clip_x0=1.0,
                    progress=steps_bar(f"{ddim}, eta = 0, noise interpolation for digit {digit}"),
                )
            )  # fmt: skip
        save_image_grid(
            to_unit(mg.cat(strip, dim=0)), out / "interpolation.png", nrow=10,
            title=f"slerp from noise A (left) to noise B (right), {ddim}, eta = 0",
            row_labels=["digit 2", "digit 5", "digit 8"], col_labels=[f"{i / 9:.2f}" for i in range(10)],
        )  # fmt: skip

    # The denoising trajectory of the first sample of each class: x_t above x̂_0.
    # Trajectory timesteps are 0-based (t = T−1 … 0, then −1 for the final x_0); the
    # pictures use the lecture's t = T … 1, 0.
    first = np.arange(CLASSES) * per_class
    moments = [t + 1 for t in trajectory.timesteps]
    with status("writing the trajectory pictures"):
        frames = []
        for k, (x_t, x0_hat) in enumerate(zip(trajectory.xs, trajectory.x0_preds)):
            pair = np.concatenate([to_unit(x_t)[first], to_unit(x0_hat)[first]])
            title = f"DDIM step {k} of {len(trajectory.xs) - 1}, t = {moments[k]}"
            frames.append(
                labelled_grid(pair, nrow=CLASSES, title=title, row_labels=["x_t", "x0_hat"], col_labels=DIGITS)
            )
        save_gif(frames, out / "trajectory.gif", duration=90, final_pause=1500)
        # Still pictures: six moments of the trajectory, one row each (noise at the top).
        picks = np.unique(np.linspace(0, len(trajectory.xs) - 1, 6).round().astype(int))
        for name, states, what in (
            ("trajectory.png", trajectory.xs, "x_t along the DDIM run"),
            ("trajectory_x0.png", trajectory.x0_preds, "x0_hat, the network's guess of x_0, along the DDIM run"),
        ):
            save_image_grid(
                np.concatenate([to_unit(states[i])[first] for i in picks]), out / name, nrow=CLASSES,
                title=what, row_labels=[f"t = {moments[i]}" for i in picks], col_labels=DIGITS,
            )  # fmt: skip

    metrics.update(
        {
            "classifier_accuracy_on_real_test": judge_accuracy,
            "final_loss": losses[-1] if losses else None,
            "ddim_steps": cfg["ddim_steps"],
            "n_judged": n,
        }
    )
    return write_metrics(args, metrics)


if __name__ == "__main__":
    main()
