"""A conditional DCGAN draws the digit you ask for.

Generator: noise z and a class label y → project z to a 4×4 feature map, append the
label as an extra 4×4 channel (a learned embedding of y), then upsample twice with
fractionally-strided (transposed) convolutions to a 16×16 image. Discriminator: the
image with the label appended as an extra 16×16 channel → strided convolutions → one
logit. Both see the label, so D rejects a well-drawn digit of the wrong class, and G
must learn to draw the requested one.

The pictures are drawn from an exponential moving average of G's weights
(``minigen.optim.EMA``): the GAN game never quite settles, and averaging the last few hundred
steps removes much of the step-to-step noise.

Judging the samples: a LeNet classifier is trained separately on the real digits; the
score is how often it recognises a conditional sample G(z, y) as the class y.

Pictures (in --out):
    samples.png         one row per class (0 at the top), ten noise vectors per row
    progress.gif        the same noise and labels through training (the step in the title)
    losses.png          D and G losses per step;  d_outputs.png: D(x) and D(G(z))

    python demos/dcgan_digits.py [--device cuda] [--quick] [--patch]

Time on the idle 2-core AMD EPYC machine (CPU, 2026-12-03): 2 min 41 s; with --quick 8.4 s.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from tqdm.auto import tqdm

if __package__:  # imported as demos.dcgan_digits
    from demos.common import demo_arguments, positive_int, status, write_metrics
else:  # run as a script, or imported with demos/ on sys.path
    from common import demo_arguments, positive_int, status, write_metrics

import minigen as mg
from minigen.data import DataLoader, load_digits
from minigen.models.cnn import LeNet, accuracy, fit_classifier, predict
from minigen.models.gan import (
    DCGANDiscriminator,
    DCGANGenerator,
    TrainingLog,
    discriminator_step,
    generator_step,
)
from minigen.optim import EMA
from minigen.utils import labelled_grid, line_plot, save_gif, save_image_grid

SIZE, CLASSES, LATENT = 16, 10, 32
ROW_LABELS = [f"digit {c}" for c in range(CLASSES)]  # row c of every picture asks for class c


def extra_flags(parser: Any) -> None:
    parser.add_argument(
        "--epochs", type=positive_int, default=None, help="passes over the digits (default 20, 1 with --quick)"
    )
    parser.add_argument("--patch", action="store_true", help="use a PatchGAN discriminator (a map of logits)")


def to_unit(images: mg.Tensor) -> mg.Tensor:
    """Generator pixels live in [−1, 1] (tanh); pictures and the classifier want [0, 1]."""
    return (images + 1.0) * 0.5


def draw(generator: DCGANGenerator, ema: EMA, z: mg.Tensor, y: mg.Tensor) -> mg.Tensor:
    """G(z, y) with the averaged weights θ̄, and batch norm in eval mode (its running
    statistics, not the batch's); the generator's weights and mode are restored after."""
    was_training = generator.training
    generator.eval()
    with mg.no_grad(), ema.average_parameters(generator):
        images = generator(z, y)
    generator.train(was_training)
    return images


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = demo_arguments("dcgan_digits", "conditional DCGAN on rendered digits", argv, extra_flags)
    device, out = args.device, args.out
    epochs = args.epochs or (1 if args.quick else 20)
    n_train = 2000 if args.quick else 10_000
    with status(f"rendering {n_train} training and 1000 test digits"):
        train = load_digits("train", n=n_train, size=SIZE)
        test = load_digits("test", n=1000, size=SIZE)
    images = train.images * 2.0 - 1.0  # to the generator's tanh range

    generator = DCGANGenerator(LATENT, 1, SIZE, base_channels=32, num_classes=CLASSES).to(device)
    ema = EMA(generator, decay=0.995)  # the moving average of G's weights; the pictures are drawn with it
    discriminator = DCGANDiscriminator(1, SIZE, base_channels=32, num_classes=CLASSES, patch=args.patch).to(device)
    # DCGAN's settings: Adam with lr 2e-4 and β₁ = 0.5.
    opt_g = mg.optim.Adam(generator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = mg.optim.Adam(discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    loader = DataLoader(
        (images, train.labels), batch_size=64, shuffle=True, drop_last=True, seed=args.seed, device=device
    )

    # Fixed noise and labels for the pictures: row c asks for class c, ten z per row.
    fixed_z = mg.randn(CLASSES * 10, LATENT, device=device)
    fixed_y = mg.arange(CLASSES, device=device).reshape(CLASSES, 1).expand(CLASSES, 10).reshape(-1)
    log = TrainingLog(sync_every=50)
    frames = []
    total = epochs * len(loader)
    frame_every = max(total // 24, 1)

    # ---- training: one D step, then one G step, on every batch (Algorithm 1 with k = 1)
    step = 0
    bar = tqdm(total=total, desc="conditional DCGAN")
    for _ in range(epochs):
        for x, y in loader:
            z = mg.randn(x.shape[0], LATENT, device=device)
            stats = discriminator_step(generator, discriminator, opt_d, x, z, labels=y)
            z = mg.randn(x.shape[0], LATENT, device=device)
            stats.update(generator_step(generator, discriminator, opt_g, z, labels=y))
            ema.update(generator)  # θ̄ ← 0.995 θ̄ + 0.005 θ
            log.record(stats)  # device scalars; synced every 50 steps
            step += 1
            bar.update(1)
            if step % frame_every == 0 or step == 1:
                snapshot = to_unit(draw(generator, ema, fixed_z, fixed_y))
                title = f"G(z, y) at step {step} of {total}"
                frames.append(labelled_grid(snapshot, nrow=10, pad_value=0.4, title=title, row_labels=ROW_LABELS))
            if step % 50 == 0:
                bar.set_postfix(D_x=f"{log.last('D(x)'):.2f}", D_Gz=f"{log.last('D(G(z))'):.2f}")
    bar.close()
    log.flush()
    generator.eval()

    # ---- pictures
    save_image_grid(
        to_unit(draw(generator, ema, fixed_z, fixed_y)), out / "samples.png", nrow=10, pad_value=0.4,
        title=f"conditional DCGAN after {step} steps: one row per requested digit", row_labels=ROW_LABELS,
    )  # fmt: skip
    save_gif(frames, out / "progress.gif", duration=250, final_pause=1500)
    h = log.history
    line_plot({"D loss": h["d_loss"], "G loss": h["g_loss"]}, out / "losses.png", title="losses", smooth=0.9)
    line_plot(
        {"D(x)": h["D(x)"], "D(G(z))": h["D(G(z))"]}, out / "d_outputs.png", title="discriminator outputs", smooth=0.9
    )

    # ---- judge: does a classifier trained on real digits see the requested class?
    with status("training the judge, a LeNet classifier, on the real digits"):
        classifier = LeNet(num_classes=CLASSES, image_size=SIZE)
        fit_classifier(classifier, train.images, train.labels, epochs=2, device=device, seed=args.seed)
        real_accuracy = accuracy(classifier, test.images, test.labels, device=device)
    per_class = 100
    wanted = np.repeat(np.arange(CLASSES), per_class)
    z = mg.randn(len(wanted), LATENT, device=device)
    y = mg.tensor(wanted, device=device)
    with mg.no_grad():
        fakes_of = {"average": to_unit(draw(generator, ema, z, y)), "last": to_unit(generator(z, y))}
    hits_of = {name: predict(classifier, fakes.numpy(), device=device) == wanted for name, fakes in fakes_of.items()}
    hits = hits_of["average"]
    metrics = {
        "epochs": epochs,
        "steps": step,
        "patch_discriminator": args.patch,
        "classifier_accuracy_on_real_test": real_accuracy,
        "conditional_accuracy": float(hits.mean()),
        "conditional_accuracy_per_class": [float(hits[wanted == c].mean()) for c in range(CLASSES)],
        "conditional_accuracy_last_weights": float(hits_of["last"].mean()),  # without the averaging
        "final_D(x)": log.last("D(x)"),
        "final_D(G(z))": log.last("D(G(z))"),
    }
    return write_metrics(args, metrics)


if __name__ == "__main__":
    main()
