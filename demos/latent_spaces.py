"""The plain autoencoder against the VAE: why the VAE's KL term exists.

Both models squeeze a 16×16 digit through a 2-D code z and decode it back, with the same
convolutional layers and the same Bernoulli reconstruction loss. The VAE alone adds
KL(q(z|x) ‖ N(0, I)). Then:

* the autoencoder's codes form separate clusters with empty space between them and no
  particular scale, so decoding points of the plane *between* codes, or samples from
  N(0, I), gives garbage or copies of a few training digits;
* the VAE's codes fill the region where N(0, I) puts its mass, so every point there
  decodes to some digit.

A separately trained classifier (a LeNet) reads every decoded image; an image counts as
*readable* when the classifier's top softmax probability is ≥ 0.9. A classifier trained
on digits alone is no judge of garbage: it has never seen anything but digits, and it
reads noisy blobs as a "3" or an "8" with confidence 0.99 (on this demo's autoencoder,
about two thirds of the N(0, I) decodes, most of them noise, passed such a judge). So the
judge is also shown non-digits during its training, digits cut into 4×4 patches and
shuffled, and smooth noise blobs, with the uniform distribution as their target
("outlier exposure", Hendrycks et al., 2019): it learns to be unsure of what is not a
digit. metrics.json reports how many real test digits it still reads with confidence
(``real_readable``) and its accuracy on them.

Pictures (in --out):
    latent_embedding.png   each model's embedding space: test digits drawn at their codes,
                           coloured by class (the dashed box is the decoded grid's range)
    latent_grid_ae.png,    each model decoding a regular 15×15 grid over its embedding
    latent_grid_vae.png    space ("generations from the full embedding space")
    latent_prior.png       decodes of z ~ N(0, I), the autoencoder's rows above the VAE's
    latent_losses.png      the training losses per epoch

metrics.json: grid_readable_ae, grid_readable_vae (the share of grid decodes read with
confidence ≥ 0.9), prior_readable_ae, prior_readable_vae (the same for N(0, I) samples),
grid_readable_margin (VAE − AE), and the judge's real_readable and accuracy.

    python demos/latent_spaces.py [--device cuda] [--quick] [--epochs N]

Time on the idle 2-core AMD EPYC machine (CPU, 2026-12-03): 2 min 9 s; with --quick under
a second (0.9 s in the smoke test).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

if __package__:  # imported as demos.latent_spaces
    from demos.common import demo_arguments, positive_int, status, write_metrics
else:  # run as a script, or imported with demos/ on sys.path
    from common import demo_arguments, positive_int, status, write_metrics

import minigen as mg
import minigen.nn.functional as F
from minigen.data import DataLoader, load_digits
from minigen.models.autoencoder import ConvAutoencoder, reconstruction_loss
from minigen.models.cnn import LeNet, accuracy
from minigen.models.vae import ConvVAE, vae_loss
from minigen.utils import PALETTE, line_plot, save_image_grid, save_pil
from minigen.utils.images import paste_text

SIZE = 16
GRID = 15  # the decoded grid is GRID × GRID points
CONFIDENT = 0.9  # "readable": the judge's top probability is at least this
OUTLIER_WEIGHT = 0.3  # λ of the judge's outlier-exposure term
DEFAULT = dict(epochs=20, n_train=10_000, n_test=2000, classifier_epochs=3, prior_samples=1000)
QUICK = dict(epochs=1, n_train=512, n_test=256, classifier_epochs=1, prior_samples=100)


def extra_flags(parser: Any) -> None:
    parser.add_argument("--epochs", type=positive_int, default=None, help="training epochs per model (default 20)")


# ----------------------------------------------------------------------------- the judge
def non_digits(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Images that are not digits, as many as ``images`` (N, 1, 16, 16): half are digits cut
    into 4×4 patches put back in a random order (strokes, but no digit), half are smooth
    noise blobs (a 4×4 random pattern enlarged, plus pixel noise)."""
    n, half = len(images), len(images) // 2
    patches = images[:half].reshape(half, 4, 4, 4, 4).transpose(0, 1, 3, 2, 4).reshape(half, 16, 4, 4)
    shuffled = np.stack([p[rng.permutation(16)] for p in patches])
    shuffled = shuffled.reshape(half, 4, 4, 4, 4).transpose(0, 1, 3, 2, 4).reshape(half, 1, SIZE, SIZE)
    coarse = rng.uniform(0.0, 1.0, (n - half, 1, 4, 4)).repeat(4, axis=2).repeat(4, axis=3)
    blobs = np.clip(2.0 * (coarse - 0.5) + rng.normal(0.0, 0.1, coarse.shape), 0.0, 1.0)
    return np.concatenate([shuffled, blobs]).astype(np.float32)


def fit_judge(train: Any, epochs: int, device: str, seed: int) -> LeNet:
    """A LeNet trained on the digits (cross-entropy) and, with weight λ, towards the uniform
    distribution on non-digits: L = CE(f(x), y) + λ · (−(1/10) Σ_c log p_c(x̃))."""
    judge = LeNet(num_classes=10, image_size=SIZE).to(device)
    optimizer = mg.optim.Adam(judge.parameters(), lr=2e-3)
    loader = DataLoader(train, batch_size=128, shuffle=True, drop_last=True, seed=seed)
    rng = np.random.default_rng(seed)
    judge.train()
    for _ in tqdm(range(epochs), desc="judge epochs"):
        for x, y in loader:
            garbage = mg.tensor(non_digits(x.numpy(), rng), device=device)
            x, y = x.to(device), y.to(device)
            uniform_target = -F.log_softmax(judge(garbage), dim=1).mean()
            loss = F.cross_entropy(judge(x), y) + OUTLIER_WEIGHT * uniform_target
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    judge.eval()
    return judge


# ------------------------------------------------------------------------------- helpers
def encode_all(model: Any, images: np.ndarray, device: str) -> np.ndarray:
    """Host (N, 2) codes: the autoencoder's z, or the VAE's mean μ."""
    codes = []
    with mg.no_grad():
        for start in range(0, len(images), 500):
            x = mg.tensor(images[start : start + 500], device=device)
            code = model.encode(x)
            codes.append((code[0] if isinstance(code, tuple) else code).numpy())
    return np.concatenate(codes)


def decode_all(model: Any, codes: np.ndarray, device: str) -> np.ndarray:
    """Host images σ(decoder(z)) in [0, 1] for host codes (N, 2)."""
    with mg.no_grad():
        return np.concatenate(
            [
                model.decode(mg.tensor(codes[i : i + 500].astype(np.float32), device=device)).sigmoid().numpy()
                for i in range(0, len(codes), 500)
            ]
        )


def readable(judge: LeNet, images: np.ndarray, device: str) -> tuple[np.ndarray, np.ndarray]:
    """(N,) bool: the judge's top softmax probability is ≥ 0.9 (and its (N,) guesses)."""
    judge.eval()
    probs = []
    with mg.no_grad():
        for start in range(0, len(images), 500):
            logits = judge(mg.tensor(images[start : start + 500], device=device))
            probs.append(F.softmax(logits, dim=1).numpy())
    p = np.concatenate(probs)
    return p.max(axis=1) >= CONFIDENT, p.argmax(axis=1)


def grid_box(codes: np.ndarray) -> tuple[tuple[float, float], tuple[float, float]]:
    """The model's embedding space: per axis, from the 0.5th to the 99.5th percentile of the
    test codes (a few far outliers would otherwise stretch the grid over nothing)."""
    low, high = np.percentile(codes, 0.5, axis=0), np.percentile(codes, 99.5, axis=0)
    return (float(low[0]), float(high[0])), (float(low[1]), float(high[1]))


def grid_codes(box: tuple[tuple[float, float], tuple[float, float]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """GRID × GRID codes over ``box`` in reading order (top row: the largest z2)."""
    (x0, x1), (y0, y1) = box
    xs, ys = np.linspace(x0, x1, GRID), np.linspace(y1, y0, GRID)
    zs = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)
    return zs, xs, ys


def embedding_picture(
    codes: np.ndarray, images: np.ndarray, labels: np.ndarray, box: Any, title: str, show: int = 600
) -> Image.Image:
    """Test digits drawn at their 2-D codes, each tinted with its class colour, on a frame with
    the code range written at the corners; the dashed rectangle is the decoded grid's ``box``."""
    side, margin, top = 520, 80, 40
    picture = Image.new("RGB", (side + 2 * margin, side + margin + top + 30), (255, 255, 255))
    draw = ImageDraw.Draw(picture)
    (x0, x1), (y0, y1) = box
    pad_x, pad_y = 0.15 * (x1 - x0), 0.15 * (y1 - y0)  # show a margin of the plane around the box
    view = (x0 - pad_x, x1 + pad_x, y0 - pad_y, y1 + pad_y)

    def pixel(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        px = margin + (x - view[0]) / (view[1] - view[0]) * side
        py = top + (view[3] - y) / (view[3] - view[2]) * side
        return px, py

    draw.rectangle([margin, top, margin + side, top + side], outline=(150, 150, 150))
    bx, by = pixel(np.array([x0, x1]), np.array([y0, y1]))
    for a, b in [((bx[0], by[0]), (bx[1], by[0])), ((bx[0], by[1]), (bx[1], by[1]))]:  # dashed horizontals
        for s in np.arange(a[0], b[0], 8):
            draw.line([(s, a[1]), (min(s + 4, b[0]), a[1])], fill=(90, 90, 90))
    for xv in bx:  # dashed verticals
        for s in np.arange(by[1], by[0], 8):
            draw.line([(xv, s), (xv, min(s + 4, by[0]))], fill=(90, 90, 90))
    order = np.random.default_rng(0).permutation(len(codes))[:show]
    px, py = pixel(codes[order, 0], codes[order, 1])
    for i, x, y in zip(order, px, py):
        if not (margin <= x <= margin + side and top <= y <= top + side):
            continue
        ink = np.clip(images[i, 0], 0.0, 1.0)
        colour = np.array(PALETTE[int(labels[i]) % len(PALETTE)], dtype=np.float32)
        tile = np.concatenate([np.broadcast_to(colour, ink.shape + (3,)), (ink * 255)[..., None]], axis=-1)
        glyph = Image.fromarray(tile.astype(np.uint8), "RGBA").resize((20, 20), Image.NEAREST)
        picture.paste(glyph, (int(x) - 10, int(y) - 10), glyph)
    paste_text(picture, margin + side / 2, 8, title, 15, align="ct")
    paste_text(picture, margin, top + side + 4, f"z1 = {view[0]:.3g}", 12, align="lt")
    paste_text(picture, margin + side, top + side + 4, f"z1 = {view[1]:.3g}", 12, align="rt")
    paste_text(picture, margin - 4, top + side, f"z2 = {view[2]:.3g}", 12, align="rb")
    paste_text(picture, margin - 4, top, f"z2 = {view[3]:.3g}", 12, align="rt")
    for c in range(10):  # the legend: one coloured digit name per class
        paste_text(picture, margin + 40 + c * 44, top + side + 24, str(c), 14, PALETTE[c], align="ct")
    return picture


# ---------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = demo_arguments("latent_spaces", "the plain autoencoder against the VAE, with 2-D codes", argv, extra_flags)
    cfg = dict(QUICK if args.quick else DEFAULT)
    cfg["epochs"] = args.epochs or cfg["epochs"]
    device, out = args.device, Path(args.out)

    with status(f"rendering {cfg['n_train']} training and {cfg['n_test']} test digits"):
        train = load_digits("train", n=cfg["n_train"], size=SIZE, seed=args.seed)
        test = load_digits("test", n=cfg["n_test"], size=SIZE, seed=args.seed)

    # The judge: a LeNet trained on real digits and non-digits, never on decoded images.
    judge = fit_judge(train, cfg["classifier_epochs"], device, args.seed)
    judge_accuracy = accuracy(judge, test.images, test.labels, device=device)
    real_readable = float(readable(judge, test.images, device)[0].mean())

    # ------------------------------------------------------------ the two models
    models = {
        "ae": ConvAutoencoder(1, SIZE, latent_dim=2, base_channels=32).to(device),
        "vae": ConvVAE(1, SIZE, latent_dim=2, base_channels=32).to(device),
    }
    history: dict[str, list[float]] = {"AE: reconstruction": [], "VAE: -ELBO": [], "VAE: KL": []}
    loader = DataLoader(train, batch_size=128, shuffle=True, drop_last=True, seed=args.seed, device=device)
    for name, model in models.items():
        optimizer = mg.optim.Adam(model.parameters(), lr=1e-3)
        model.train()
        for _ in tqdm(range(cfg["epochs"]), desc=f"{name.upper()} epochs"):
            sums = []
            for x, _ in loader:
                if name == "ae":  # −log p(x|z) alone
                    loss = reconstruction_loss(model(x), x)
                    parts = [loss]
                else:  # −log p(x|z) + KL(q(z|x) ‖ N(0, I)), z = μ + σ ε
                    o = model(x)
                    elbo = vae_loss(o.x_hat, x, o.mu, o.logvar)
                    loss, parts = elbo.loss, [elbo.loss, elbo.kl]
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                sums.append(mg.stack([p.detach() for p in parts]))
            means = mg.stack(sums).mean(dim=0).numpy()  # one host sync per epoch
            if name == "ae":
                history["AE: reconstruction"].append(float(means[0]))
            else:
                history["VAE: -ELBO"].append(float(means[0]))
                history["VAE: KL"].append(float(means[1]))
        model.eval()

    # ------------------------------------------------------- embeddings, grids, prior
    metrics: dict[str, Any] = {}
    grids, priors, pictures = {}, {}, []
    rng = np.random.default_rng(args.seed)
    prior_codes = rng.standard_normal((cfg["prior_samples"], 2)).astype(np.float32)  # the same z for both
    with status("decoding the grids and the N(0, I) samples, judging them"):
        for name, model in models.items():
            codes = encode_all(model, test.images, device)
            box = grid_box(codes)
            zs, xs, ys = grid_codes(box)
            grids[name] = (decode_all(model, zs, device), xs, ys)
            priors[name] = decode_all(model, prior_codes, device)
            metrics[f"grid_readable_{name}"] = float(readable(judge, grids[name][0], device)[0].mean())
            metrics[f"prior_readable_{name}"] = float(readable(judge, priors[name], device)[0].mean())
            label = "autoencoder" if name == "ae" else "VAE (codes: mu)"
            pictures.append(
                embedding_picture(codes, test.images, test.labels, box, f"{label}: test digits at their codes")
            )
    metrics["grid_readable_margin"] = metrics["grid_readable_vae"] - metrics["grid_readable_ae"]
    metrics["real_readable"] = real_readable
    metrics["classifier_accuracy_on_real_test"] = judge_accuracy
    metrics["epochs"] = cfg["epochs"]

    with status("writing the pictures"):
        width = sum(p.width for p in pictures)
        both = Image.new("RGB", (width, max(p.height for p in pictures)), (255, 255, 255))
        both.paste(pictures[0], (0, 0))
        both.paste(pictures[1], (pictures[0].width, 0))
        save_pil(both, out / "latent_embedding.png")
        for name in models:
            images, xs, ys = grids[name]
            ok, guess = readable(judge, images, device)
            share = metrics[f"grid_readable_{name}"]
            save_image_grid(
                images, out / f"latent_grid_{name}.png", nrow=GRID, padding=1, pad_value=0.3,
                title=f"{'autoencoder' if name == 'ae' else 'VAE'}: decoding a grid over its embedding space "
                f"({share:.0%} read with confidence >= {CONFIDENT})",
                col_labels=[f"{v:.2g}" if i % 2 == 0 else "" for i, v in enumerate(xs)],
                row_labels=[f"z2 {v:.2g}" if i % 2 == 0 else "" for i, v in enumerate(ys)],
                captions=[str(g) if k else "?" for g, k in zip(guess, ok)],
            )  # fmt: skip
        show = 48
        rows = np.concatenate([priors["ae"][:show], priors["vae"][:show]])
        save_image_grid(
            rows, out / "latent_prior.png", nrow=12, pad_value=0.3,
            title=f"decoding z ~ N(0, I): readable AE {metrics['prior_readable_ae']:.0%}, "
            f"VAE {metrics['prior_readable_vae']:.0%}",
            row_labels=["AE", "AE", "AE", "AE", "VAE", "VAE", "VAE", "VAE"],
        )  # fmt: skip
        epochs = list(range(1, cfg["epochs"] + 1))
        line_plot(
            {name: (epochs, values) for name, values in history.items()},
            out / "latent_losses.png",
            title="training loss (nats per image)",
            xlabel="epoch",
        )
    return write_metrics(args, metrics)


if __name__ == "__main__":
    main()
