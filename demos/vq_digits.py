"""Vector quantisation on rendered digits: a VQ-VAE with a k-means codebook and a GPT prior.

A 16×16 digit becomes a 4×4 grid of code IDs out of K = 64 (``models/vq.py`` says why
that size). The demo trains, on the same batches:

1. the VQ-VAE, its codebook initialised by k-means on the encoder's first outputs and
   its dead codes restarted from encoder outputs every 100 steps (with ``--gan-start S``
   it becomes a VQ-GAN from step S: PatchGAN hinge loss, adaptive λ, weight ``--gan-weight``.
   With ``--gan-start 600`` it measured 22.4 dB against 21.8 dB and a prior read 94.8% of
   the time against 92.4%, for 50% more CPU time, which breaks the 8-minute budget: so it
   is off by default);
2. a continuous autoencoder of the same size (the same encoder and decoder, no
   quantiser): how much quantising the code costs in reconstruction;
3. the ablation: the same VQ-VAE with a random codebook, no k-means and no restarts,
   which collapses onto a few codes;

then a class-conditional GPT prior over the 4×4 grids, [⟨digit⟩, k_1, …, k_16], whose
samples are decoded and read by a separately trained classifier.

Pictures (in --out):
    vq_reconstructions.png   test digits; the VQ-VAE's, the continuous autoencoder's and
                             the ablation's reconstructions
    vq_codebook_usage.png    how often each code is used over an epoch of training data
    vq_code_grids.png        digits drawn as their 4×4 grids of code IDs
    vq_codebook.png          every codebook entry decoded, and the mean image patch it stands for
    vq_prior_samples.png     samples of the prior, one labelled row per digit
    vq_ablation.png          the collapse: code usage with and without k-means + restarts
    vq_losses.png, vq_prior_loss.png   training curves

metrics.json: recon_psnr (beside recon_psnr_continuous), codes_used_fraction and
perplexity (over an epoch), codes_used_fraction_ablation, prior_class_accuracy,
prior_nll_per_token, and the settings.

    python demos/vq_digits.py [--device cuda] [--quick] [--steps N] [--gan-start S]

Time on the idle 2-core AMD EPYC machine (CPU, 2026-12-03): 5 min 28 s; with --quick about a
second (1.0 s in the smoke test). That run gave PSNR 22.04 dB (continuous 26.26), 64/64 codes,
perplexity 58.1, ablation 1/64 codes, prior accuracy 0.930 and 1.86 nats per code; the
README's figures (21.80 dB, perplexity 53.4, 0.924) come from a run with one BLAS thread,
whose sums run in another order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

if __package__:  # imported as demos.vq_digits
    from demos.common import demo_arguments, non_negative_float, non_negative_int, positive_int, status, write_metrics
else:  # run as a script, or imported with demos/ on sys.path
    from common import demo_arguments, non_negative_float, non_negative_int, positive_int, status, write_metrics

import minigen as mg
import minigen.nn.functional as F
from minigen.data import DataLoader, load_digits
from minigen.models.autoencoder import Autoencoder, ConvDecoder, ConvEncoder
from minigen.models.cnn import LeNet, accuracy, fit_classifier, predict
from minigen.models.pix2pix import PatchDiscriminator
from minigen.models.vq import VQVAE, CodebookUsage, CodePrior, psnr, train_step
from minigen.utils import PALETTE, TrainingLog, bar_chart, labelled_grid, line_plot, save_image_grid, save_pil
from minigen.utils.images import paste_text

SIZE = 16
NUM_CODES, CODE_DIM, HIDDEN = 64, 16, 16  # K codes of dimension D; encoder/decoder width
GRID = (4, 4)  # 16×16 digits → 4×4 code grids
DEFAULT = dict(
    steps=1000, batch=64, n_train=10_000, n_test=2000, classifier_epochs=3, kmeans_batches=4, restart_every=100,
    prior_steps=2000, prior_batch=64, samples_per_class=50,
)  # fmt: skip
QUICK = dict(
    steps=6, batch=16, n_train=256, n_test=64, classifier_epochs=1, kmeans_batches=2, restart_every=3,
    prior_steps=4, prior_batch=16, samples_per_class=2,
)  # fmt: skip
PRIOR = dict(n_layers=4, n_heads=4, d_model=64, dropout=0.1)


def extra_flags(parser: Any) -> None:
    parser.add_argument("--steps", type=positive_int, default=None, help="autoencoder training steps (default 1000)")
    parser.add_argument("--prior-steps", type=positive_int, default=None, help="GPT prior steps (default 2000)")
    parser.add_argument(
        "--gan-start", type=non_negative_int, default=None,
        help="switch the PatchGAN loss on at this step (a VQ-GAN); default: never (a VQ-VAE)",
    )  # fmt: skip
    parser.add_argument(
        "--gan-weight", type=non_negative_float, default=0.1,
        help="w in L_rec + L_VQ + w * lambda * L_GAN once the GAN is on (default 0.1)",
    )  # fmt: skip
    parser.add_argument("--temperature", type=non_negative_float, default=1.0, help="prior sampling temperature")
    parser.add_argument("--top-k", type=positive_int, default=None, help="sample among the k likeliest codes")


# ------------------------------------------------------------------------------ training
def batches(loader: DataLoader):
    """The loader's batches, epoch after epoch."""
    while True:
        yield from loader


def train_autoencoders(
    cfg: dict, loader: DataLoader, device: str, gan_start: int | None, gan_weight: float
) -> tuple[dict, dict]:
    """The VQ-VAE (k-means init, restarts, optionally the GAN), the continuous autoencoder and the
    ablation, each step on the same batch. Returns the models and the per-step history."""
    main = VQVAE(1, NUM_CODES, CODE_DIM, HIDDEN).to(device)
    ablation = VQVAE(1, NUM_CODES, CODE_DIM, HIDDEN).to(device)
    ablation.load_state_dict(main.state_dict())  # the same start: only the codebook care differs
    continuous = Autoencoder(ConvEncoder(1, CODE_DIM, HIDDEN), ConvDecoder(CODE_DIM, 1, HIDDEN)).to(device)
    continuous.encoder.load_state_dict(main.encoder.state_dict())
    continuous.decoder.load_state_dict(main.decoder.state_dict())
    stream = batches(loader)

    with status(f"k-means initialisation of the codebook from {cfg['kmeans_batches']} batches of encoder outputs"):
        first = mg.cat([next(stream)[0] for _ in range(cfg["kmeans_batches"])])
        with mg.no_grad():
            main.quantizer.kmeans_init_(main.encode(first))

    optimizers = {name: mg.optim.Adam(m.parameters(), lr=1e-3) for name, m in [("vq", main), ("ablation", ablation)]}
    optimizers["continuous"] = mg.optim.Adam(continuous.parameters(), lr=1e-3)
    disc = opt_d = None
    if gan_start is not None:
        disc = PatchDiscriminator(1, base_channels=32, num_layers=2).to(device)
        # D learns as fast as the decoder: a slower D is fooled by textures, and λ·L_GAN, whose
        # pull on the last layer λ makes as strong as the reconstruction's, then wrecks the digits.
        opt_d = mg.optim.Adam(disc.parameters(), lr=1e-3, betas=(0.5, 0.9))
    log = TrainingLog(sync_every=50)
    bar = tqdm(range(cfg["steps"]), desc="VQ-VAE, continuous AE, ablation")
    last_restart = int(0.8 * cfg["steps"])  # no restarts near the end: the last codes must settle
    for step in bar:
        x, _ = next(stream)
        restart = (step + 1) % cfg["restart_every"] == 0 and step < last_restart
        gan_active = gan_start is not None and step >= gan_start
        stats = train_step(
            main, optimizers["vq"], x, disc, opt_d, gan_active=gan_active, gan_weight=gan_weight, restart_dead=restart
        )
        ablated = train_step(ablation, optimizers["ablation"], x)
        x_hat = continuous(x)
        rec = F.mse_loss(x_hat, x)
        optimizers["continuous"].zero_grad()
        rec.backward()
        optimizers["continuous"].step()
        record = {
            "VQ-VAE": stats["reconstruction"],
            "continuous AE": rec.detach(),
            "ablation": ablated["reconstruction"],
            "commitment": stats["commitment"],
        }
        if "restarted" in stats:
            record["restarted"] = stats["restarted"]
        if log.record(record):
            bar.set_postfix(vq=f"{log.last('VQ-VAE'):.4f}", cont=f"{log.last('continuous AE'):.4f}")
    log.flush()
    for model in (main, ablation, continuous):
        model.eval()
    return {"vq": main, "ablation": ablation, "continuous": continuous}, log.history


def epoch_usage(model: VQVAE, images: np.ndarray, device: str) -> tuple[CodebookUsage, np.ndarray]:
    """Code counts over one pass of ``images`` (an epoch), and the images' code grids (host)."""
    usage = CodebookUsage(model.num_codes)
    grids = []
    for start in range(0, len(images), 500):
        indices = model.encode_indices(mg.tensor(images[start : start + 500], device=device))
        usage.update(indices)
        grids.append(indices.numpy())
    return usage, np.concatenate(grids)


def reconstruct_all(model: Any, images: np.ndarray, device: str) -> np.ndarray:
    with mg.no_grad():
        return np.concatenate(
            [
                model.reconstruct(mg.tensor(images[i : i + 500], device=device)).numpy()
                for i in range(0, len(images), 500)
            ]
        )


def train_prior(cfg: dict, codes: np.ndarray, labels: np.ndarray, device: str, seed: int) -> tuple[CodePrior, list]:
    prior = CodePrior(NUM_CODES, GRID, num_classes=10, **PRIOR).to(device)
    optimizer = mg.optim.AdamW(prior.parameters(), lr=2e-3, weight_decay=0.1)
    schedule = mg.optim.warmup_cosine(optimizer, min(100, cfg["prior_steps"] // 4), cfg["prior_steps"])
    loader = DataLoader((codes, labels), batch_size=cfg["prior_batch"], shuffle=True, drop_last=True, seed=seed)
    stream = batches(loader)
    log = TrainingLog(sync_every=100)
    prior.train()
    bar = tqdm(range(cfg["prior_steps"]), desc="GPT prior over code grids")
    for _ in bar:
        grids, y = next(stream)
        loss = prior.loss(mg.tensor(grids, device=device), mg.tensor(y, device=device))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if log.record({"loss": loss.detach()}):
            bar.set_postfix(nll=f"{log.last('loss'):.3f}")
    prior.eval()
    return prior, log.flush()["loss"]


def prior_nll(prior: CodePrior, codes: np.ndarray, labels: np.ndarray, device: str) -> float:
    """Mean −log p(k_t | c, k_<t) over every code of the held-out grids (nats per token)."""
    total = 0.0
    with mg.no_grad():
        for start in range(0, len(codes), 500):
            grids, y = codes[start : start + 500], labels[start : start + 500]
            total += prior.loss(mg.tensor(grids, device=device), mg.tensor(y, device=device)).item() * len(grids)
    return total / len(codes)


# ------------------------------------------------------------------------------ pictures
def code_grid_picture(images: np.ndarray, grids: np.ndarray, path: Path) -> None:
    """Each digit beside the same digit cut into its 4×4 cells, each cell labelled with its code ID."""
    scale = 136 // SIZE  # image enlargement
    tile = SIZE * scale
    pad, top = 14, 40
    n = len(images)
    picture = Image.new("RGB", (pad + n * (2 * tile + 3 * pad), top + tile + 2 * pad), (255, 255, 255))
    draw = ImageDraw.Draw(picture)
    for i, (image, grid) in enumerate(zip(images, grids)):
        x0 = pad + i * (2 * tile + 3 * pad)
        grey = (np.clip(image[0], 0, 1) * 255).astype(np.uint8)
        big = Image.fromarray(grey, "L").resize((tile, tile), Image.NEAREST).convert("RGB")
        picture.paste(big, (x0, top))
        dim = Image.fromarray((grey * 0.45).astype(np.uint8), "L").resize((tile, tile), Image.NEAREST).convert("RGB")
        x1 = x0 + tile + pad
        picture.paste(dim, (x1, top))
        step = tile / GRID[0]
        for r in range(GRID[0]):
            for c in range(GRID[1]):
                box = [x1 + c * step, top + r * step, x1 + (c + 1) * step, top + (r + 1) * step]
                draw.rectangle(box, outline=(200, 200, 200))
                colour = PALETTE[int(grid[r, c]) % len(PALETTE)]
                paste_text(picture, box[0] + step / 2, box[1] + step / 2, str(int(grid[r, c])), 15, colour, "cc")
    paste_text(picture, picture.width / 2, 10, "digits and their 4x4 grids of code IDs (K = 64)", 15, align="ct")
    save_pil(picture, path)


def codebook_picture(vq: VQVAE, images: np.ndarray, codes: np.ndarray, device: str, path: Path) -> None:
    """Every code twice: decoded (a 4×4 grid filled with code k), and the mean 4×4-pixel patch of
    the training images that the encoder maps to code k (what the code stands for)."""
    K, (h, w) = NUM_CODES, GRID
    with mg.no_grad():
        filled = mg.tensor(np.repeat(np.arange(K), h * w).reshape(K, h, w), device=device)
        decoded = vq.decode_indices(filled).numpy()
    side = SIZE // h  # pixels per code cell
    patches = images[:, 0].reshape(-1, h, side, w, side).transpose(0, 1, 3, 2, 4).reshape(-1, side * side)
    members = np.eye(K, dtype=np.float32)[codes.reshape(-1)]  # (N·h·w, K) one-hot
    means = (members.T @ patches) / np.maximum(members.sum(axis=0), 1.0)[:, None]
    captions = [str(k) for k in range(K)]
    top = labelled_grid(
        decoded, nrow=16, pad_value=0.3, captions=captions, title="decoded: code k repeated over the whole 4x4 grid"
    )
    enlarged = means.reshape(K, 1, side, side).repeat(h, axis=2).repeat(w, axis=3)  # the top row's tile size
    bottom = labelled_grid(
        enlarged, nrow=16, pad_value=0.3, captions=captions,
        title="the mean 4x4-pixel patch of the training digits coded as k (enlarged)",
    )  # fmt: skip
    picture = Image.new("RGB", (max(top.width, bottom.width), top.height + bottom.height), (255, 255, 255))
    picture.paste(top, (0, 0))
    picture.paste(bottom, (0, top.height))
    save_pil(picture, path)


def usage_chart(counts: list[float], path: Path, title: str) -> Image.Image:
    bar_chart(
        {str(k): c for k, c in enumerate(counts)}, path, title=title, xlabel="code ID", ylabel="uses in one epoch",
        annotate=False, size=(760, 320),
    )  # fmt: skip
    return Image.open(path).copy()


# ---------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = demo_arguments("vq_digits", "VQ-VAE with a k-means codebook and a GPT prior", argv, extra_flags)
    cfg = dict(QUICK if args.quick else DEFAULT)
    cfg["steps"] = args.steps or cfg["steps"]
    cfg["prior_steps"] = args.prior_steps or cfg["prior_steps"]
    device, out = args.device, Path(args.out)

    with status(f"rendering {cfg['n_train']} training and {cfg['n_test']} test digits"):
        train = load_digits("train", n=cfg["n_train"], size=SIZE, seed=args.seed)
        test = load_digits("test", n=cfg["n_test"], size=SIZE, seed=args.seed)
    judge = LeNet(num_classes=10, image_size=SIZE)  # reads the prior's samples; never sees a decoded image
    fit_classifier(judge, train.images, train.labels, epochs=cfg["classifier_epochs"], device=device, seed=args.seed)
    judge_accuracy = accuracy(judge, test.images, test.labels, device=device)

    loader = DataLoader(train, batch_size=cfg["batch"], shuffle=True, drop_last=True, seed=args.seed, device=device)
    models, history = train_autoencoders(cfg, loader, device, args.gan_start, args.gan_weight)
    vq, ablation = models["vq"], models["ablation"]

    with status("counting code use over an epoch, reconstructing the test digits"):
        usage, train_codes = epoch_usage(vq, train.images, device)
        usage_ablation, _ = epoch_usage(ablation, train.images, device)
        _, test_codes = epoch_usage(vq, test.images, device)
        x_test = mg.tensor(test.images, device=device)
        recon = {name: reconstruct_all(m, test.images, device) for name, m in models.items()}
        scores = {name: psnr(mg.tensor(r, device=device), x_test) for name, r in recon.items()}

    prior, prior_losses = train_prior(cfg, train_codes, train.labels, device, args.seed)
    nll = prior_nll(prior, test_codes, test.labels, device)
    per_class = cfg["samples_per_class"]
    wanted = np.repeat(np.arange(10), per_class)
    with status(f"sampling {len(wanted)} code grids from the prior and decoding them"):
        sampled = prior.sample(mg.tensor(wanted, device=device), args.temperature, args.top_k)
        with mg.no_grad():
            samples = vq.decode_indices(sampled).numpy()
        read = predict(judge, samples, device=device)

    metrics: dict[str, Any] = {
        "recon_psnr": scores["vq"],
        "recon_psnr_continuous": scores["continuous"],
        "codes_used_fraction": usage.fraction_used(),
        "perplexity": usage.perplexity(),
        "codes_used_fraction_ablation": usage_ablation.fraction_used(),
        "perplexity_ablation": usage_ablation.perplexity(),
        "recon_psnr_ablation": scores["ablation"],
        "prior_class_accuracy": float((read == wanted).mean()),
        "prior_nll_per_token": nll,
        "classifier_accuracy_on_real_test": judge_accuracy,
        "num_codes": NUM_CODES,
        "grid": list(GRID),
        "steps": cfg["steps"],
        "prior_steps": cfg["prior_steps"],
        "gan_start": args.gan_start,
        "gan_weight": args.gan_weight,
        "temperature": args.temperature,
        "top_k": args.top_k,
    }

    with status("writing the pictures"):
        show = 12
        rows = [test.images[:show], recon["vq"][:show], recon["continuous"][:show], recon["ablation"][:show]]
        save_image_grid(
            np.concatenate(rows), out / "vq_reconstructions.png", nrow=show, pad_value=0.3,
            title=f"reconstructions: VQ {scores['vq']:.1f} dB, continuous {scores['continuous']:.1f} dB, "
            f"ablation {scores['ablation']:.1f} dB (PSNR)",
            row_labels=["test digit", "VQ-VAE (K=64)", "continuous AE", "ablation"],
        )  # fmt: skip
        main_chart = usage_chart(
            usage.histogram(), out / "vq_codebook_usage.png",
            f"k-means init + restarts: {usage.codes_used()} of {NUM_CODES} codes used, "
            f"perplexity {usage.perplexity():.1f}",
        )  # fmt: skip
        ablation_chart = usage_chart(
            usage_ablation.histogram(), out / "vq_ablation_usage.png",
            f"ablation (random init, no restarts): {usage_ablation.codes_used()} of {NUM_CODES} codes used, "
            f"perplexity {usage_ablation.perplexity():.1f}",
        )  # fmt: skip
        both = Image.new("RGB", (main_chart.width, main_chart.height + ablation_chart.height), (255, 255, 255))
        both.paste(main_chart, (0, 0))
        both.paste(ablation_chart, (0, main_chart.height))
        save_pil(both, out / "vq_ablation.png")
        (out / "vq_ablation_usage.png").unlink()
        picks = [int(np.flatnonzero(test.labels == d)[0]) for d in range(0, 10, 2)]
        code_grid_picture(test.images[picks], test_codes[picks], out / "vq_code_grids.png")
        codebook_picture(vq, train.images, train_codes, device, out / "vq_codebook.png")
        shown = min(per_class, 12)
        pick = np.concatenate([np.arange(d * per_class, d * per_class + shown) for d in range(10)])
        save_image_grid(
            samples[pick], out / "vq_prior_samples.png", nrow=shown, pad_value=0.3,
            title=f"GPT prior samples, decoded (T = {args.temperature:g}): "
            f"{metrics['prior_class_accuracy']:.0%} read as the requested digit",
            row_labels=[f"digit {d}" for d in range(10)],
            captions=[str(r) for r in read[pick]],
        )  # fmt: skip
        h = history
        line_plot(
            {name: h[name] for name in ("VQ-VAE", "continuous AE", "ablation")}, out / "vq_losses.png",
            title="reconstruction error (mean squared, per pixel)", logy=True, smooth=0.9,
        )  # fmt: skip
        line_plot({"train": prior_losses}, out / "vq_prior_loss.png", title="GPT prior: nats per code", smooth=0.9)
    return write_metrics(args, metrics)


if __name__ == "__main__":
    main()
