"""CycleGAN thickens thin digits and thins thick ones, from two unpaired collections.

    python demos/cyclegan_digits.py [--device cuda] [--quick] [--steps N] [--upsample nearest|transposed]

Domain A holds thin-stroke digits, domain B thick-stroke digits, rendered from two
independent samples: no thin digit has a thick partner. G: A → B and F: B → A are
U-Nets, D_A and D_B PatchGANs; they train with LSGAN losses, cycle consistency
(λ_cyc = 10) and identity (λ_id = 5), one Adam for the generators and one for the
discriminators, a pool of 50 earlier fakes for D, and a learning rate that falls
linearly to 0 over the second half (``models/cyclegan.py``).

Judging, on held-out digits of each domain, with two classifiers trained separately
on real images: a digit classifier (is G(x) still the digit x showed?) and a
thickness classifier, thin vs thick (did G(x) land in B, and F(y) in A?). ``cycle_l1``
is the mean |F(G(x)) − x| and |G(F(y)) − y| in [0, 1] pixels.

What the run logs to catch CycleGAN's known failures (see the docstring of
``models/cyclegan.py``): ``background_a2b`` / ``background_b2a``, the mean brightness G
and F give to background pixels (colour inversion would make it large);
``cycle_l1_noisy``, the cycle error when faint noise is added to G(x) before F (a
hidden, steganographic code would make it much worse than ``cycle_l1``); and the D and
G losses per step and D's mean scores (a D loss that collapses to 0, or real and fake
scores that split to 1 and 0, means D has won).

Pictures (in --out):
    domains.png        training digits of domain A (thin) and domain B (thick): no pairs
    translations.png   x, G(x), F(G(x)) rows for thin digits, then y, F(y), G(F(y)) for thick ones
    losses.png         the D loss and the generators' LSGAN losses per step; cycle.png: cycle and identity
    d_scores.png       D_A and D_B's mean scores on real images and on pooled fakes
"""

from __future__ import annotations

from typing import Any

import numpy as np
from tqdm.auto import tqdm

if __package__:  # imported as demos.cyclegan_digits
    from demos.common import demo_arguments, positive_int, write_metrics
else:  # run as a script, or imported with demos/ on sys.path
    from common import demo_arguments, positive_int, write_metrics

import minigen as mg
from minigen.data import DataLoader, load_digits
from minigen.data.translation import thin_thick_digits
from minigen.models.cnn import LeNet, accuracy, fit_classifier, predict
from minigen.models.cyclegan import CycleGAN, ImagePool, make_optimizers, make_schedulers, train_step
from minigen.models.pix2pix import UPSAMPLE_MODES
from minigen.utils import TrainingLog, line_plot, save_image_grid

SIZE = 16
DEFAULT = dict(steps=300, batch=16, n_train=4000, n_test=1000, n_digits=10_000, classifier_epochs=2)
QUICK = dict(steps=4, batch=4, n_train=64, n_test=32, n_digits=256, classifier_epochs=1)
NOISE = 0.05  # σ of the faint noise of the steganography check (in [−1, 1] units)
THIN, THICK = 0, 1  # the thickness classifier's labels


def extra_flags(parser: Any) -> None:
    parser.add_argument("--steps", type=positive_int, default=None, help="training steps (default 300)")
    parser.add_argument(
        "--upsample", default="nearest", choices=UPSAMPLE_MODES, help="generator upsampling (default nearest)"
    )


def to_model(images: np.ndarray) -> np.ndarray:
    return images * 2.0 - 1.0


def to_unit(x: mg.Tensor) -> np.ndarray:
    return np.clip((x.numpy() + 1.0) / 2.0, 0.0, 1.0)


def endless(loader: DataLoader):
    """The loader's batches, epoch after epoch (the two domains are drawn independently)."""
    while True:
        for (batch,) in loader:
            yield batch


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = demo_arguments("cyclegan_digits", "CycleGAN between thin and thick digits", argv, extra_flags)
    cfg = dict(QUICK if args.quick else DEFAULT)
    cfg["steps"] = args.steps or cfg["steps"]
    device, out, steps = args.device, args.out, cfg["steps"]

    train = thin_thick_digits(cfg["n_train"], "train", SIZE, args.seed)
    test = thin_thick_digits(cfg["n_test"], "test", SIZE, args.seed)

    # The judges, trained on real images: which digit, and which domain (thin or thick).
    digits = load_digits("train", n=cfg["n_digits"], size=SIZE, seed=args.seed)
    digit_classifier = LeNet(num_classes=10, image_size=SIZE)
    fit_classifier(digit_classifier, digits.images, digits.labels, epochs=cfg["classifier_epochs"], device=device)
    domain_classifier = LeNet(num_classes=2, image_size=SIZE, widths=(8, 16))
    both = np.concatenate([train.a.images, train.b.images])
    domains = np.repeat(np.array([THIN, THICK]), [len(train.a), len(train.b)])
    fit_classifier(domain_classifier, both, domains, epochs=cfg["classifier_epochs"], device=device, seed=args.seed)
    test_domains = np.repeat(np.array([THIN, THICK]), [len(test.a), len(test.b)])
    domain_judge = accuracy(domain_classifier, np.concatenate([test.a.images, test.b.images]), test_domains, device)

    # ----------------------------------------------------------------- training
    model = CycleGAN(1, base_channels=16, levels=2, upsample=args.upsample, disc_channels=32, disc_layers=2)
    model.to(device)
    opt_g, opt_d = make_optimizers(model)  # Adam(2e-4, β = (0.5, 0.999)) for G+F, and for D_A+D_B
    schedules = make_schedulers(opt_g, opt_d, steps)  # constant, then linearly to 0 over the second half
    pool_a, pool_b = ImagePool(50), ImagePool(50)
    batches_a, batches_b = (
        endless(DataLoader((to_model(images),), cfg["batch"], shuffle=True, drop_last=True, seed=seed, device=device))
        for images, seed in ((train.a.images, args.seed), (train.b.images, args.seed + 1))
    )  # two independent streams: each step pairs a random thin batch with a random thick one
    log = TrainingLog(sync_every=50)
    bar = tqdm(range(steps), desc="CycleGAN thin ↔ thick", leave=False)
    for _ in bar:
        stats = train_step(model, opt_g, opt_d, next(batches_a), next(batches_b), pool_a, pool_b)
        for schedule in schedules:
            schedule.step()
        if log.record(stats):  # one host sync per 50 steps
            bar.set_postfix(cycle=f"{log.last('cycle'):.3f}", D=f"{log.last('d_loss'):.3f}")
    log.flush()

    # ----------------------------------------------------------------- judging
    with mg.no_grad():
        x, y = mg.tensor(to_model(test.a.images), device=device), mg.tensor(to_model(test.b.images), device=device)
        g_x, f_y = model.G(x), model.F(y)
        x_cycled, y_cycled = model.F(g_x), model.G(f_y)
        x_cycled_noisy = model.F(g_x + NOISE * mg.randn(*g_x.shape, device=device))
    a2b, b2a = to_unit(g_x), to_unit(f_y)
    cycle_a = np.abs(to_unit(x_cycled) - test.a.images).mean()
    cycle_b = np.abs(to_unit(y_cycled) - test.b.images).mean()
    background_a, background_b = test.a.images < 0.1, test.b.images < 0.1
    metrics = {
        "a2b_digit_accuracy": float((predict(digit_classifier, a2b, device=device) == test.a.labels).mean()),
        "b2a_digit_accuracy": float((predict(digit_classifier, b2a, device=device) == test.b.labels).mean()),
        "a2b_domain_accuracy": float((predict(domain_classifier, a2b, device=device) == THICK).mean()),
        "b2a_domain_accuracy": float((predict(domain_classifier, b2a, device=device) == THIN).mean()),
        "cycle_l1": float((cycle_a + cycle_b) / 2),
        # the pitfalls' signs
        "cycle_l1_noisy": float(np.abs(to_unit(x_cycled_noisy) - test.a.images).mean()),
        "cycle_l1_a": float(cycle_a),
        "background_a2b": float(a2b[background_a].mean()),
        "background_b2a": float(b2a[background_b].mean()),
        "final_d_loss": log.last("d_loss"),
        "final_D_B(y)": log.last("D_B(y)"),
        "final_D_B(fake)": log.last("D_B(fake)"),
        # the judges themselves
        "digit_classifier_accuracy_on_real_test": accuracy(
            digit_classifier,
            np.concatenate([test.a.images, test.b.images]),
            np.r_[test.a.labels, test.b.labels],
            device,
        ),
        "domain_classifier_accuracy_on_real_test": domain_judge,
        "steps": steps,
    }

    # ----------------------------------------------------------------- pictures
    show = min(10, len(test.a))
    save_image_grid(
        np.concatenate([train.a.images[: 2 * show], train.b.images[: 2 * show]]),
        out / "domains.png",
        nrow=show,
        row_labels=["A: thin", "", "B: thick", ""],
        title="the unpaired training domains (two independent samples)",
    )
    rows = [
        test.a.images[:show], a2b[:show], to_unit(x_cycled)[:show],
        test.b.images[:show], b2a[:show], to_unit(y_cycled)[:show],
    ]  # fmt: skip
    save_image_grid(
        np.concatenate(rows),
        out / "translations.png",
        nrow=show,
        row_labels=["x (thin)", "G(x)", "F(G(x))", "y (thick)", "F(y)", "G(F(y))"],
        title="CycleGAN on held-out digits: thin to thick and back, thick to thin and back",
    )
    h = log.history
    line_plot(
        {"D_A + D_B": h["d_loss"], "L_GAN(G, D_B)": h["gan_g"], "L_GAN(F, D_A)": h["gan_f"]},
        out / "losses.png",
        title="LSGAN losses: discriminators and generators",
        smooth=0.9,
    )
    line_plot({"cycle": h["cycle"], "identity": h["identity"]}, out / "cycle.png", title="L1 terms", smooth=0.9)
    line_plot(
        {
            "D_A(x)": h["D_A(x)"],
            "D_A(F(y)) pooled": h["D_A(fake)"],
            "D_B(y)": h["D_B(y)"],
            "D_B(G(x)) pooled": h["D_B(fake)"],
        },
        out / "d_scores.png",
        title="discriminators' mean scores (real → 1, fake → 0)",
        smooth=0.9,
    )
    return write_metrics(args, metrics)


if __name__ == "__main__":
    main()
