"""pix2pix translates paired digit pictures: outline → digit (default), grey → colour, ...

    python demos/pix2pix_digits.py [--task edges2digits|grey2colour|lowres2highres|masked2full]
                                   [--device cuda] [--quick] [--steps N] [--pretrain-steps P]
                                   [--upsample nearest|transposed] [--noise-channels K]

1. **Pre-training** (the lecture's option when pairs exist). A U-Net generator G learns
   the per-pixel L1 loss alone for P steps, so the adversarial game starts from outputs
   that already have the right content.
2. **Two models from there**, on the same batches for N more steps:
   * *pix2pix*: a copy of G and a conditional PatchGAN D, trained with
     L_G = −log D(x, G(x)) + 100·|y − G(x)| and L_D halved (``models/pix2pix.py``);
   * *L1 only*: G itself, continuing with the per-pixel loss alone.
3. **Judging**, on held-out pairs. A LeNet classifier, trained separately on real
   digits, reads each output (colour outputs through their brightest channel): how
   often it sees the input's digit is ``digit_accuracy``. ``l1`` is the mean |ŷ − y| in
   [0, 1] pixels. ``sharpness_*`` is the mean edge strength of the outputs over the
   targets' (1 = as crisp as real digits; the lecture's point is that L1 alone is
   blurry, and the adversarial term brings it back towards 1). For grey2colour,
   ``hue_accuracy`` is the fraction of stroke pixels painted in their class's hue.

Pictures (in --out):
    pairs.png          training pairs of the task: inputs above, targets below
    translations.png   held-out pairs in columns; rows: input, pix2pix, L1 only, target (labelled)
    losses.png         D's loss and G's adversarial loss per step; l1.png: the L1 term of both models
    d_outputs.png      D's mean probability on real pairs and on pix2pix's pairs
"""

from __future__ import annotations

from typing import Any

import numpy as np
from tqdm.auto import tqdm

if __package__:  # imported as demos.pix2pix_digits
    from demos.common import demo_arguments, non_negative_int, positive_int, write_metrics
else:  # run as a script, or imported with demos/ on sys.path
    from common import demo_arguments, non_negative_int, positive_int, write_metrics

import minigen as mg
from minigen.data import DataLoader, load_digits
from minigen.data.translation import PAIRED_TASKS, hue_accuracy, paired_digits, sharpness, to_grey
from minigen.models.cnn import LeNet, accuracy, fit_classifier, predict
from minigen.models.pix2pix import UPSAMPLE_MODES, PatchDiscriminator, UNetGenerator, pretrain_step, train_step
from minigen.utils import TrainingLog, line_plot, save_image_grid

SIZE = 16
DEFAULT = dict(steps=400, pretrain=200, batch=32, n_train=10_000, n_test=1000, classifier_epochs=2)
QUICK = dict(steps=4, pretrain=2, batch=8, n_train=256, n_test=64, classifier_epochs=1)
LR, BETAS = 2e-4, (0.5, 0.999)  # pix2pix's Adam settings


def extra_flags(parser: Any) -> None:
    parser.add_argument(
        "--task", default="edges2digits", choices=list(PAIRED_TASKS), help="the paired task (default edges2digits)"
    )
    parser.add_argument("--steps", type=positive_int, default=None, help="adversarial steps (default 400)")
    parser.add_argument(
        "--pretrain-steps", type=non_negative_int, default=None, help="per-pixel pre-training steps (default 200)"
    )
    parser.add_argument(
        "--upsample", default="nearest", choices=UPSAMPLE_MODES, help="decoder upsampling (default nearest)"
    )
    parser.add_argument(
        "--noise-channels", type=non_negative_int, default=0, help="channels of noise z in G(x, z) (default 0)"
    )


def to_model(images: np.ndarray) -> np.ndarray:
    """Pixels [0, 1] -> the generator's tanh range [−1, 1]."""
    return images * 2.0 - 1.0


def translate(generator: UNetGenerator, inputs: np.ndarray, device: str, batch: int = 500) -> np.ndarray:
    """G(x) for host images in [0, 1], returned as host images in [0, 1]."""
    outputs = []
    with mg.no_grad():
        for start in range(0, len(inputs), batch):
            x = mg.tensor(to_model(inputs[start : start + batch]), device=device)
            outputs.append((generator(x).numpy() + 1.0) / 2.0)
    return np.concatenate(outputs)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = demo_arguments("pix2pix_digits", "pix2pix on paired digit translation tasks", argv, extra_flags)
    cfg = dict(QUICK if args.quick else DEFAULT)
    cfg["steps"] = args.steps or cfg["steps"]
    cfg["pretrain"] = cfg["pretrain"] if args.pretrain_steps is None else args.pretrain_steps
    device, out, task = args.device, args.out, args.task

    train = paired_digits(task, cfg["n_train"], "train", SIZE, args.seed)
    test = paired_digits(task, cfg["n_test"], "test", SIZE, args.seed)
    in_channels, out_channels = train.inputs.shape[1], train.targets.shape[1]

    # The judge: a LeNet trained on real (grey) digits.
    digits = load_digits("train", n=cfg["n_train"], size=SIZE, seed=args.seed)
    classifier = LeNet(num_classes=10, image_size=SIZE)
    fit_classifier(classifier, digits.images, digits.labels, epochs=cfg["classifier_epochs"], device=device)
    judge_accuracy = accuracy(classifier, to_grey(test.targets), test.labels, device=device)

    # ----------------------------------------------------------------- the models
    shape = dict(base_channels=16, levels=3, upsample=args.upsample, noise_channels=args.noise_channels)
    l1_only = UNetGenerator(in_channels, out_channels, **shape).to(device)
    generator = UNetGenerator(in_channels, out_channels, **shape).to(device)
    discriminator = PatchDiscriminator(in_channels + out_channels, base_channels=32, num_layers=2).to(device)
    opt_l1 = mg.optim.Adam(l1_only.parameters(), lr=LR, betas=BETAS)
    loader = DataLoader(
        (to_model(train.inputs), to_model(train.targets)),
        batch_size=cfg["batch"],
        shuffle=True,
        drop_last=True,
        seed=args.seed,
        device=device,
    )

    def batches():
        while True:
            yield from loader

    stream = batches()

    # ---- 1. per-pixel pre-training (the model that stays "L1 only" is trained in place)
    for _ in tqdm(range(cfg["pretrain"]), desc="per-pixel pre-training", leave=False):
        x, y = next(stream)
        pretrain_step(l1_only, opt_l1, x, y)

    # ---- 2. pix2pix from the pre-trained weights, and L1 only alongside, on the same batches
    generator.load_state_dict(l1_only.state_dict())
    opt_g = mg.optim.Adam(generator.parameters(), lr=LR, betas=BETAS)
    opt_d = mg.optim.Adam(discriminator.parameters(), lr=LR, betas=BETAS)
    log = TrainingLog(sync_every=50)
    bar = tqdm(range(cfg["steps"]), desc=f"pix2pix {task}", leave=False)
    for _ in bar:
        x, y = next(stream)
        stats = train_step(generator, discriminator, opt_g, opt_d, x, y)
        stats["l1 (L1 only)"] = pretrain_step(l1_only, opt_l1, x, y)["l1"]
        if log.record(stats):  # one host sync per 50 steps
            bar.set_postfix(D_real=f"{log.last('D(x,y)'):.2f}", D_fake=f"{log.last('D(x,G(x))'):.2f}")
    log.flush()

    # ----------------------------------------------------------------- judging
    outputs = {"pix2pix": translate(generator, test.inputs, device), "L1 only": translate(l1_only, test.inputs, device)}
    read = {name: predict(classifier, to_grey(images), device=device) for name, images in outputs.items()}
    metrics: dict[str, Any] = {
        "task": task,
        "digit_accuracy": float((read["pix2pix"] == test.labels).mean()),
        "l1": float(np.abs(outputs["pix2pix"] - test.targets).mean()),
        "sharpness_l1_only": sharpness(outputs["L1 only"], test.targets),
        "sharpness_gan": sharpness(outputs["pix2pix"], test.targets),
    }
    if task == "grey2colour":
        metrics["hue_accuracy"] = hue_accuracy(outputs["pix2pix"], test.targets, test.labels)
        metrics["hue_accuracy_l1_only"] = hue_accuracy(outputs["L1 only"], test.targets, test.labels)
    metrics.update(
        {
            "digit_accuracy_l1_only": float((read["L1 only"] == test.labels).mean()),
            "l1_l1_only": float(np.abs(outputs["L1 only"] - test.targets).mean()),
            "classifier_accuracy_on_real_test": judge_accuracy,
            "pretrain_steps": cfg["pretrain"],
            "adversarial_steps": cfg["steps"],
            "upsample": args.upsample,
            "noise_channels": args.noise_channels,
            "discriminator_receptive_field": discriminator.receptive_field,
            "final_D(x,y)": log.last("D(x,y)"),
            "final_D(x,G(x))": log.last("D(x,G(x))"),
        }
    )

    # ----------------------------------------------------------------- pictures
    show = min(10, len(test))

    def colour(images: np.ndarray) -> np.ndarray:
        return np.repeat(images, 3, axis=1) if images.shape[1] == 1 else images

    save_image_grid(
        np.concatenate([colour(train.inputs[:show]), colour(train.targets[:show])]),
        out / "pairs.png",
        nrow=show,
        row_labels=["input x", "target y"],
        title=f"{task}: training pairs",
    )
    rows = [test.inputs[:show], outputs["pix2pix"][:show], outputs["L1 only"][:show], test.targets[:show]]
    save_image_grid(
        np.concatenate([colour(r) for r in rows]),
        out / "translations.png",
        nrow=show,
        row_labels=["input", "pix2pix", "L1 only", "target"],
        title=f"{task}: pix2pix (L1 + GAN) and L1 alone, held-out pairs",
    )
    h = log.history
    line_plot(
        {"D loss (halved)": h["d_loss"], "G adversarial": h["g_adv"]},
        out / "losses.png",
        title="pix2pix losses",
        smooth=0.9,
    )
    line_plot(
        {"pix2pix": h["l1"], "L1 only": h["l1 (L1 only)"]},
        out / "l1.png",
        title="L1 to the target",
        logy=True,
        smooth=0.9,
    )
    line_plot(
        {"D(x, y)": h["D(x,y)"], "D(x, G(x))": h["D(x,G(x))"]},
        out / "d_outputs.png",
        title="discriminator's mean probability",
        smooth=0.9,
    )
    return write_metrics(args, metrics)


if __name__ == "__main__":
    main()
