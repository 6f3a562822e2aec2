"""Latent diffusion draws the coloured digit a caption describes: text to image, guidance, attention, inpainting.

    python demos/text_to_image.py [--device cuda] [--quick] [--steps N] [--guidance W]
                                  [--clip-init clip.npz] [--save ldm.npz] [--load ldm.npz]

Time: 13 min 5 s on the idle 2-core AMD EPYC machine (CPU, 2026-12-03; that run scored
inpainting on 40 images, the default now scores 100, a few seconds more); --steps 1500
(CI's check) 5 to 10 minutes (297 s in CI's slow set, 583 s as a script, the same day);
with --quick 5.6 s.

The lecture's Stable Diffusion, small (``minigen/models/latent_diffusion.py`` has the maths):

1. **Data.** Captioned digits (``minigen.data.captions``): 32×32 coloured digits with a
   size, a position and a stroke thickness, and template captions that name all five
   attributes or some ("a small red 3 on the left", "left: a red three, small").
   Training never shows the held-out combinations (blue 7s, red 3s, green 5s, yellow 9s).
   The training captions name all five attributes, as the evaluation prompts do: with the
   dataset's mix of full and partial captions (a quarter never name the digit) the U-Net
   must also learn what an unnamed attribute looks like on average, and learns the digit's
   shape far more slowly (measured, 1500 steps: digit accuracy 0.27 against 0.51).
2. **Judges.** Three small classifiers, trained on real images only, read the samples:
   the digit (a LeNet on the brightest channel, so colour does not matter), size,
   position and thickness (a small CNN), and the colour (a per-pixel MLP, max over pixels).
3. **Autoencoder.** A KL-regularised conv autoencoder (β = 1e-3) compresses 32×32×3 to
   8×8×4. The latent scale s = 1/std is computed on the first batch, and the whole
   training set is encoded once, z_0 = s·E(x).
4. **Diffusion in latent space.** A U-Net with spatial transformers (self-attention,
   cross-attention to the caption, feed-forward) at 4×4 and in the middle, and a 2-block
   transformer text encoder τ_θ, trained jointly (3000 steps of 32) on the v-prediction
   loss ‖v − v_θ(z_t, t, τ_θ(y))‖², v = √ᾱ_t ε − √(1−ᾱ_t) z_0; 10% of the captions are
   replaced by the empty caption ∅. ``--clip-init`` starts τ_θ from
   the text encoder of a CLIP checkpoint (``demos/clip_digits.py --save``). It does not
   help here (measured, 1500 steps, from the default CLIP run's checkpoint: digit accuracy
   0.385 against 0.57 from scratch, held-out combinations 0.13 against 0.29).
5. **Sampling.** DDIM (25 steps, η = 0) with classifier-free guidance
   ε̃ = ε_θ(z_t, t, ∅) + w (ε_θ(z_t, t, y) − ε_θ(z_t, t, ∅)), w = 3, decoded by D
   (ε̂ = √ᾱ_t v̂ + √(1−ᾱ_t) z_t).
6. **Inpainting.** The digit's half of a test image is regenerated under a new caption;
   at every step the other half's latent is replaced by the original's, noised to the step.

``metrics.json``: the judges' accuracies on samples for 200 test captions that name all
five attributes (``digit_accuracy``, ``colour_accuracy``, ``position_accuracy``,
``size_accuracy``); ``heldout_combo_accuracy``, the share of samples for 100 captions
of held-out combinations with all five attributes right; ``unguided_digit_accuracy``
(w = 0: the caption ignored); ``inpaint_digit_accuracy`` (the judge reads the new
caption's digit in the inpainted image) and ``inpaint_known_region_error`` (mean
absolute change of the kept pixels, in [0, 1] units); ``autoencoder_psnr`` (dB, on test
images) and ``latent_scale``.

Pictures (in --out; every grid says what it shows):
    prompts.png            four samples for each of 8 test captions and 4 held-out-combination captions
    guidance_scales.png    the same noise at w = 0, 1, 2, 3, 5, 8 for six captions
    attention_maps.png     where each word of a caption is read: cross-attention maps over the sample
    reconstructions.png    test images and their autoencoder reconstructions D(E(x))
    inpainting.png         original, the kept region, and the result under two captions
    autoencoder_loss.png, diffusion_loss.png   the two training losses
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

if __package__:  # imported as demos.text_to_image
    from demos.common import (
        demo_arguments,
        existing_file,
        non_negative_float,
        positive_int,
        status,
        steps_bar,
        write_metrics,
    )
else:  # run as a script, or imported with demos/ on sys.path
    from common import demo_arguments, existing_file, non_negative_float, positive_int, status, steps_bar, write_metrics

import minigen as mg
import minigen.nn as nn
import minigen.nn.functional as F
from minigen.data import DataLoader
from minigen.data.captions import (
    ATTRIBUTES,
    COLOURS,
    DIGIT_WORDS,
    POSITIONS,
    SIZES,
    THICKNESSES,
    VOCABULARIES,
    CaptionedDigits,
    captioned_digits,
)
from minigen.data.tokenizer import Tokenizer
from minigen.models.clip import TextEncoder
from minigen.models.cnn import LeNet
from minigen.models.diffusion import offset_cosine_schedule
from minigen.models.latent_diffusion import (
    CrossAttentionUNet,
    KLAutoencoder,
    LatentDiffusion,
    autoencoder_loss,
    encode_captions,
    psnr,
)
from minigen.optim import EMA
from minigen.utils import TrainingLog, colormap, line_plot, save_image_grid

DEFAULT = dict(
    n_train=20_000, n_test=2000, judge_epochs=2, ae_steps=600, ae_batch=64, ae_lr=2e-3, ae_beta=1e-3,
    steps=3000, batch=32, lr=2e-3, warmup=100, base=32, mults=(1, 2), heads=4, text_depth=2,
    T=1000, ddim_steps=25, n_eval=200, n_heldout=100, n_inpaint=100, samples_per_prompt=4,
)  # fmt: skip
QUICK = dict(
    n_train=512, n_test=128, judge_epochs=1, ae_steps=6, ae_batch=32, ae_lr=2e-3, ae_beta=1e-3,
    steps=6, batch=16, lr=2e-3, warmup=2, base=8, mults=(1, 2), heads=2, text_depth=1,
    T=100, ddim_steps=3, n_eval=12, n_heldout=8, n_inpaint=4, samples_per_prompt=2,
)  # fmt: skip
CONTEXT = 16  # tokens per caption, <end> and padding included
TEXT_WIDTH = 64  # d_τ, the width of τ_θ(y) (and of the CLIP text encoder it can start from)
P_UNCOND = 0.1  # caption dropout: the share of training captions replaced by ∅
CHUNK = 100  # captions sampled at once
GUIDANCE_SWEEP = (0.0, 1.0, 2.0, 3.0, 5.0, 8.0)


def extra_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=positive_int, default=None, help="diffusion training steps (default 3000)")
    parser.add_argument(
        "--guidance", type=non_negative_float, default=3.0, help="classifier-free guidance scale w (default 3)"
    )
    parser.add_argument(
        "--clip-init", type=existing_file, default=None, help="start τ_θ from this CLIP checkpoint's text encoder"
    )
    parser.add_argument("--save", type=Path, default=None, help="write the trained model to this .npz file")
    parser.add_argument(
        "--load", type=existing_file, default=None, help="load a model saved with --save instead of training"
    )


# ======================================================================== the judges
class DigitJudge(nn.Module):
    """Which digit: a LeNet on the brightest channel (max over R, G, B), blind to the colour."""

    attributes = ("digit",)

    def __init__(self) -> None:
        super().__init__()
        self.lenet = LeNet(10, in_channels=1, image_size=32, widths=(16, 32))

    def forward(self, x: mg.Tensor) -> list[mg.Tensor]:
        return [self.lenet(x.amax(dim=1, keepdim=True))]


class LayoutJudge(nn.Module):
    """Size, position and thickness from the brightest channel: a small CNN with three heads."""

    attributes = ("size", "position", "thickness")

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(32 * 16, 64), nn.ReLU(),
        )  # fmt: skip
        self.heads = nn.ModuleList([nn.Linear(64, len(VOCABULARIES[name])) for name in self.attributes])

    def forward(self, x: mg.Tensor) -> list[mg.Tensor]:
        h = self.features(x.amax(dim=1, keepdim=True))
        return [head(h) for head in self.heads]


class ColourJudge(nn.Module):
    """The colour: an MLP on each pixel's RGB, then the max over pixels (the strokes win)."""

    attributes = ("colour",)

    def __init__(self) -> None:
        super().__init__()
        self.pixel = nn.Linear(3, 16)
        self.out = nn.Linear(16, len(COLOURS))

    def forward(self, x: mg.Tensor) -> list[mg.Tensor]:
        h = F.relu(self.pixel(x.permute(0, 2, 3, 1)))  # (B, H, W, 16)
        return [self.out(h.amax(dim=(1, 2)))]


JUDGE_SETTINGS = ((DigitJudge, 1.0, 2e-3), (LayoutJudge, 0.5, 2e-3), (ColourJudge, 1.0, 1e-2))  # epochs factor, lr


def train_judges(data: CaptionedDigits, epochs: int, device: str, seed: int) -> list[nn.Module]:
    """Each judge trained on real images with cross-entropy on its attributes (summed over its heads)."""
    judges = []
    for make, factor, lr in JUDGE_SETTINGS:
        judge = make().to(device)
        columns = [ATTRIBUTES.index(name) for name in judge.attributes]
        optimizer = mg.optim.Adam(judge.parameters(), lr=lr)
        loader = DataLoader(
            (data.images, data.codes[:, columns]),
            batch_size=128,
            shuffle=True,
            drop_last=True,
            seed=seed,
            device=device,
        )
        rounds = max(1, round(epochs * factor))
        bar = tqdm(total=rounds * len(loader), desc=f"train judge: {', '.join(judge.attributes)}", leave=False)
        for _ in range(rounds):
            for x, y in loader:
                loss = sum(F.cross_entropy(logits, y[:, k]) for k, logits in enumerate(judge(x)))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                bar.update(1)
        bar.close()
        judges.append(judge.eval())
    return judges


def read_attributes(judges: Sequence[nn.Module], images: np.ndarray, device: str) -> np.ndarray:
    """The judges' attribute codes (N, 5) for images (N, 3, 32, 32) in [0, 1], columns as ``ATTRIBUTES``."""
    codes = np.zeros((len(images), len(ATTRIBUTES)), np.int64)
    with mg.no_grad():
        for judge in judges:
            columns = [ATTRIBUTES.index(name) for name in judge.attributes]
            for start in range(0, len(images), 500):
                logits = judge(mg.tensor(images[start : start + 500], device=device))
                codes[start : start + 500, columns] = np.stack([lg.argmax(dim=1).numpy() for lg in logits], axis=1)
    return codes


# ====================================================================== the model
def build_model(cfg: dict, tokenizer: Tokenizer) -> LatentDiffusion:
    """The KL autoencoder (32×32×3 → 8×8×4), τ_θ (CLIP's text encoder class) and the U-Net.

    Three choices, each measured (see the README): the U-Net also adds the mean of τ_θ(y)
    to its time embedding (``pooled_context``); τ_θ's token embeddings start at N(0, 1)
    instead of CLIP's N(0, 0.02) (with CLIP's tiny embeddings the transformer blocks'
    outputs swamp the word identities, every token's feature looks alike, and in 1500
    steps the diffusion loss never teaches it "left" from "right" or "3" from "7"); and
    the U-Net predicts v, not ε. The digit is the attribute learned last: colour, place and
    size are right after a few hundred steps, the digit's shape takes thousands (3000 steps
    of 32 beat 1500 of 64 at about the same CPU time).
    """
    autoencoder = KLAutoencoder(3, latent_channels=4, widths=(32, 64))
    text_encoder = TextEncoder(
        tokenizer.vocab_size, CONTEXT, width=TEXT_WIDTH, depth=cfg["text_depth"], heads=4, end_id=tokenizer.end_id
    )
    nn.init.normal_(text_encoder.token_embedding.weight, std=1.0)
    unet = CrossAttentionUNet(
        4,
        base_channels=cfg["base"],
        channel_mults=cfg["mults"],
        context_dim=TEXT_WIDTH,
        num_heads=cfg["heads"],
        pooled_context=True,
    )
    null_tokens, null_mask = tokenizer.encode("", CONTEXT)
    # The offset-cosine schedule ends at ᾱ_T = 4e-4. With the plain cosine one (ᾱ_T ≈ 1e-8)
    # DDIM's first of 25 steps multiplies the error of ε̂ by √(ᾱ_prev/ᾱ_T) ≈ 600, and the
    # samples were noise; here the factor is about 3.
    schedule = offset_cosine_schedule(cfg["T"])
    # v-prediction: its loss (1 + SNR_t)‖z_0 − ẑ_0‖² does not neglect the high noise levels,
    # where the digit's identity is decided (measured, 1500 steps of 64: digit accuracy 0.48, ε 0.40).
    return LatentDiffusion(autoencoder, text_encoder, unet, schedule, null_tokens, null_mask, prediction="v")


def train_autoencoder(model: LatentDiffusion, images: np.ndarray, cfg: dict, device: str, seed: int) -> list[float]:
    """Stage 1: the autoencoder alone, on −log p(x|z) + β·KL."""
    autoencoder = model.autoencoder
    optimizer = mg.optim.Adam(autoencoder.parameters(), lr=cfg["ae_lr"])
    loader = DataLoader((images,), batch_size=cfg["ae_batch"], shuffle=True, drop_last=True, seed=seed, device=device)
    log = TrainingLog(sync_every=50)
    bar = tqdm(total=cfg["ae_steps"], desc="train autoencoder", leave=False)
    step = 0
    while step < cfg["ae_steps"]:
        for (x,) in loader:
            loss = autoencoder_loss(autoencoder(x), x, beta=cfg["ae_beta"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            log.record({"loss": loss})
            step += 1
            bar.update(1)
            if step == cfg["ae_steps"]:
                break
    bar.close()
    return log.flush()["loss"]


def load_clip_text_encoder(model: LatentDiffusion, path: Path) -> None:
    """τ_θ ← the text encoder of a CLIP checkpoint (its ``text_encoder.*`` entries)."""
    state = mg.load(path)
    text = {name.removeprefix("text_encoder."): v for name, v in state.items() if name.startswith("text_encoder.")}
    if not text:
        raise SystemExit(
            f"--clip-init: {path} has no text_encoder.* weights; save one with demos/clip_digits.py --save"
        )
    model.text_encoder.load_state_dict(text)


def train_diffusion(
    model: LatentDiffusion, latents: mg.Tensor, tokens: np.ndarray, masks: np.ndarray, cfg: dict, device: str, seed: int
) -> tuple[list[float], EMA]:
    """Stage 2: τ_θ and ε_θ on the latent DDPM loss with caption dropout; returns the losses and the EMA."""
    optimizer = mg.optim.Adam(model.diffusion_parameters(), lr=cfg["lr"])
    schedule = mg.optim.warmup_cosine(
        optimizer, warmup_steps=cfg["warmup"], total_steps=cfg["steps"], eta_min=cfg["lr"] / 10
    )
    ema = EMA(model, decay=0.995, warmup=True)
    loader = DataLoader(
        (latents.numpy(), tokens, masks),
        batch_size=cfg["batch"],
        shuffle=True,
        drop_last=True,
        seed=seed,
        device=device,
    )
    log = TrainingLog(sync_every=50)
    bar = tqdm(total=cfg["steps"], desc="train U-Net and text encoder", leave=False)
    step = 0
    while step < cfg["steps"]:
        for z0, y, pad in loader:
            loss = model.loss(z0, y, pad, p_uncond=P_UNCOND)  # ∅ for ~10%: learn ε_θ(z_t, t, ∅) too
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            ema.update(model)
            if log.record({"loss": loss}):
                bar.set_postfix(loss=f"{np.mean(log.history['loss'][-50:]):.4f}")
            step += 1
            bar.update(1)
            if step == cfg["steps"]:
                break
    bar.close()
    return log.flush()["loss"], ema


# ===================================================================== sampling
def sample(
    model: LatentDiffusion, captions: Sequence[str], w: float, cfg: dict, device: str, what: str, noise: Any = None
) -> np.ndarray:
    """Images (N, 3, 32, 32) on the host for the captions, CHUNK at a time, each with its progress bar."""
    tokenizer = Tokenizer.default()
    out = []
    for start in range(0, len(captions), CHUNK):
        tokens, mask = encode_captions(tokenizer, captions[start : start + CHUNK], CONTEXT, device)
        z_T = None if noise is None else noise[start : start + CHUNK]
        images = model.sample(
            tokens, mask, w, cfg["ddim_steps"], z_T=z_T, progress=steps_bar(f"{what} {start + 1}-{start + len(tokens)}")
        )
        out.append(images.numpy())
    return np.concatenate(out)


def prompt_for(codes: Sequence[int], rng: np.random.Generator) -> str:
    """A caption naming all five attributes, in a fixed easy-to-read template."""
    digit, colour, size, position, thickness = (int(c) for c in codes)
    words = VOCABULARIES
    return (
        f"a {words['size'][size]} {words['thickness'][thickness]} {COLOURS[colour]} "
        f"{digit if rng.random() < 0.5 else DIGIT_WORDS[digit]} {'on' if position < 2 else 'at'} "
        f"the {POSITIONS[position]}"
    )


# ===================================================================== pictures
def overlay(image: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """A (32, 32) attention map in [0, 1] as a colour map over the greyed image (3, 32, 32)."""
    coloured = colormap(heat, "viridis").astype(np.float32).transpose(2, 0, 1) / 255.0
    return 0.65 * coloured + 0.35 * image.mean(axis=0, keepdims=True)


def attention_picture(
    model: LatentDiffusion, prompts: Sequence[str], w: float, cfg: dict, device: str, path: Path
) -> None:
    """For each prompt: the sample, then for every word (and <end>) the cross-attention it receives,
    averaged over the heads, the transformers at 4×4 and the sampling steps, scaled to its max."""
    tokenizer = Tokenizer.default()
    tiles, captions = [], []
    width = max(len(tokenizer.split(p)) + 2 for p in prompts)
    for prompt in prompts:
        tokens, mask = encode_captions(tokenizer, [prompt], CONTEXT, device)
        recorded: list[list[mg.Tensor]] = []
        image = model.sample(
            tokens, mask, w, cfg["ddim_steps"], attention_maps=recorded, progress=steps_bar(f"attention: {prompt!r}")
        ).numpy()[0]
        # the conditional half of each (doubled) batch, mean over heads, transformers and steps
        per_step = [np.mean([m.numpy()[0].mean(axis=0) for m in maps], axis=0) for maps in recorded]
        reads = np.mean(per_step, axis=0)  # (h·w, M)
        side = int(round(np.sqrt(reads.shape[0])))
        words = tokenizer.split(prompt) + ["<end>"]
        tiles.append(image)
        captions.append("sample")
        for j, word in enumerate(words):
            heat = reads[:, j].reshape(side, side)
            heat = np.kron(heat / max(heat.max(), 1e-12), np.ones((32 // side, 32 // side)))
            tiles.append(overlay(image, heat))
            captions.append(word)
        for _ in range(width - 1 - len(words)):
            tiles.append(np.ones_like(image))
            captions.append("")
    save_image_grid(
        np.stack(tiles), path, nrow=width, scale=3, captions=captions,
        title=f"where each word is read: cross-attention maps (4x4), averaged over steps and heads, w = {w:g}",
    )  # fmt: skip


def inpaint_setup(
    data: CaptionedDigits, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Test images with the digit on the left or right; masks keeping the other side (12 pixels,
    3 latent columns, background only); and for each a new digit and colour to ask for (never the
    image's own digit). Returns (images, known, new digits, new colours)."""
    side = np.flatnonzero(data.position < 2)[:n]
    known = np.zeros((len(side), 1, 32, 32), bool)
    known[data.position[side] == 0, :, :, 20:] = True  # the digit on the left: keep columns 20-31
    known[data.position[side] == 1, :, :, :12] = True
    digits = (data.digit[side] + 1 + rng.integers(0, 9, len(side))) % 10
    return data.images[side], known, digits, rng.integers(0, len(COLOURS), len(side))


def inpaint_captions(data: CaptionedDigits, n: int, digits: np.ndarray, colours: np.ndarray) -> list[str]:
    """ "a small thin green 5 on the left": the image's size, thickness and side, the new digit and colour."""
    side = np.flatnonzero(data.position < 2)[:n]
    return [
        f"a {SIZES[data.size[k]]} {THICKNESSES[data.thickness[k]]} {COLOURS[c]} {d} "
        f"on the {POSITIONS[data.position[k]]}"
        for k, d, c in zip(side, digits, colours)
    ]


def inpaint(model: LatentDiffusion, images, known, captions, w, cfg, device, what) -> np.ndarray:
    tokenizer = Tokenizer.default()
    out = []
    for start in range(0, len(images), CHUNK):
        tokens, mask = encode_captions(tokenizer, captions[start : start + CHUNK], CONTEXT, device)
        result = model.inpaint(
            mg.tensor(images[start : start + CHUNK], device=device),
            mg.tensor(known[start : start + CHUNK], device=device),
            tokens,
            mask,
            w,
            cfg["ddim_steps"],
            progress=steps_bar(f"{what} {start + 1}-{start + len(tokens)}"),
        )
        out.append(result.numpy())
    return np.concatenate(out)


# ============================================================================ main
def main(argv: list[str] | None = None) -> dict:
    args = demo_arguments("text_to_image", __doc__.split("\n")[0], argv, extra=extra_flags)
    cfg = dict(QUICK if args.quick else DEFAULT)
    if args.steps is not None:
        cfg["steps"] = args.steps
    cfg["warmup"] = min(cfg["warmup"], max(1, cfg["steps"] // 4))
    device, out, w = args.device, Path(args.out), args.guidance
    rng = np.random.default_rng(args.seed)
    tokenizer = Tokenizer.default()

    with status(f"rendering {cfg['n_train']} training and {cfg['n_test']} test captioned digits, and the prompts"):
        train = captioned_digits(cfg["n_train"], seed=args.seed, split="train", mention_all=True)
        test = captioned_digits(cfg["n_test"], seed=args.seed, split="test")
        prompts = captioned_digits(cfg["n_eval"], seed=args.seed + 1, split="test", mention_all=True)
        heldout = captioned_digits(cfg["n_heldout"], seed=args.seed + 1, split="heldout", mention_all=True)

    with status("training the judges (digit, layout, colour classifiers) on real images"):
        judges = train_judges(train, cfg["judge_epochs"], device, args.seed)
        real = (read_attributes(judges, test.images, device) == test.codes).mean(axis=0)
        print("  judges on real test images: " + ", ".join(f"{a} {r:.3f}" for a, r in zip(ATTRIBUTES, real)))

    model = build_model(cfg, tokenizer).to(device)
    ae_losses: list[float] = []
    ldm_losses: list[float] = []
    if args.load:
        with status(f"loading {args.load}"):
            model.load_state_dict(mg.load(args.load))
            model.to(device)
    else:
        ae_losses = train_autoencoder(model, train.images, cfg, device, args.seed)
        first = mg.tensor(train.images[: cfg["batch"]], device=device)
        with status("latent scale s = 1/std on the first batch; encoding the training set once"):
            model.fit_latent_scale(first)
            latents = mg.cat(
                [model.encode(mg.tensor(train.images[i : i + 1000], device=device)) for i in range(0, len(train), 1000)]
            )
            tokens, masks = tokenizer.encode(train.captions, CONTEXT)
        if args.clip_init is not None:
            with status(f"τ_θ starts from the CLIP text encoder in {args.clip_init}"):
                load_clip_text_encoder(model, args.clip_init)
        ldm_losses, ema = train_diffusion(model, latents, tokens, masks, cfg, device, args.seed)
        ema.copy_to(model)  # sample with the averaged weights θ̄
    if args.save:
        mg.save(model.state_dict(), args.save)

    with status("autoencoder reconstructions of the test images"):
        with mg.no_grad():
            recon = np.concatenate(
                [
                    model.autoencoder.reconstruct(mg.tensor(test.images[i : i + 500], device=device)).numpy()
                    for i in range(0, len(test), 500)
                ]
            )
        save_image_grid(
            np.concatenate([test.images[:12], recon[:12]]), out / "reconstructions.png", nrow=12,
            title=f"autoencoder: 32x32x3 -> 8x8x4 -> 32x32x3, PSNR {psnr(recon, test.images):.1f} dB",
            row_labels=["original", "D(E(x))"],
        )  # fmt: skip

    # ------------------------------------------------------------------ evaluation
    mg.manual_seed(args.seed)
    metrics: dict[str, Any] = {}
    guided = sample(model, prompts.captions, w, cfg, device, f"samples, w = {w:g}")
    codes = read_attributes(judges, guided, device)
    right = codes == prompts.codes
    for name in ("digit", "colour", "position", "size"):
        metrics[f"{name}_accuracy"] = float(right[:, ATTRIBUTES.index(name)].mean())
    print("  thickness accuracy (not a target): " + f"{right[:, ATTRIBUTES.index('thickness')].mean():.3f}")
    held = sample(model, heldout.captions, w, cfg, device, f"held-out combinations, w = {w:g}")
    held_right = read_attributes(judges, held, device) == heldout.codes
    metrics["heldout_combo_accuracy"] = float(held_right.all(axis=1).mean())
    print(
        "  held-out combinations per attribute: "
        + ", ".join(f"{a} {r:.3f}" for a, r in zip(ATTRIBUTES, held_right.mean(axis=0)))
    )
    unguided = sample(model, prompts.captions, 0.0, cfg, device, "samples, w = 0 (caption ignored)")
    metrics["unguided_digit_accuracy"] = float(
        (read_attributes(judges, unguided, device)[:, 0] == prompts.digit).mean()
    )

    images, known, digits, colours = inpaint_setup(test, cfg["n_inpaint"], rng)
    captions = inpaint_captions(test, cfg["n_inpaint"], digits, colours)
    painted = inpaint(model, images, known, captions, w, cfg, device, "inpainting")
    metrics["inpaint_digit_accuracy"] = float((read_attributes(judges, painted, device)[:, 0] == digits).mean())
    kept = np.broadcast_to(known, painted.shape)
    metrics["inpaint_known_region_error"] = float(np.abs(painted - images)[kept].mean())
    metrics["autoencoder_psnr"] = psnr(recon, test.images)
    metrics["latent_scale"] = float(model.latent_scale.item())

    # -------------------------------------------------------------------- pictures
    shown = list(prompts.captions[:8]) + list(heldout.captions[:4])
    per = cfg["samples_per_prompt"]
    grid = sample(model, [c for c in shown for _ in range(per)], w, cfg, device, "picture: prompts")
    save_image_grid(
        grid, out / "prompts.png", nrow=per, scale=2,
        title=f"captions -> samples (DDIM {cfg['ddim_steps']} steps, w = {w:g}); last 4: held-out combinations",
        row_labels=[c if i < 8 else f"[held out] {c}" for i, c in enumerate(shown)],
    )  # fmt: skip

    sweep_prompts = [prompt_for(c, rng) for c in prompts.codes[:6]]
    noise = mg.randn(len(sweep_prompts), 4, 8, 8, device=device)
    rows = [sample(model, sweep_prompts, s, cfg, device, f"picture: w = {s:g}", noise) for s in GUIDANCE_SWEEP]
    save_image_grid(
        np.stack(rows, axis=1).reshape(-1, 3, 32, 32), out / "guidance_scales.png", nrow=len(GUIDANCE_SWEEP), scale=2,
        title="the same noise at each guidance scale w (w = 0 ignores the caption)",
        row_labels=sweep_prompts, col_labels=[f"w = {s:g}" for s in GUIDANCE_SWEEP],
    )  # fmt: skip

    attention_prompts = [
        "a large thin red 3 on the left",
        "a small thick blue 7 at the bottom",
        "right: a green 5, big, bold",
    ]
    attention_picture(model, attention_prompts, w, cfg, device, out / "attention_maps.png")

    images, known, digits, colours = inpaint_setup(test, 4, np.random.default_rng(args.seed + 2))
    caption_a = inpaint_captions(test, 4, digits, colours)
    caption_b = inpaint_captions(test, 4, (digits + 3) % 10, (colours + 2) % len(COLOURS))
    first = inpaint(model, images, known, caption_a, w, cfg, device, "picture: inpainting, caption A")
    second = inpaint(model, images, known, caption_b, w, cfg, device, "picture: inpainting, caption B")
    shown_mask = np.where(known, images, 0.3)  # the regenerated region greyed out
    tiles = np.stack([images, shown_mask, first, second], axis=1).reshape(-1, 3, 32, 32)
    save_image_grid(
        tiles, out / "inpainting.png", nrow=4, scale=3,
        title="inpainting in latent space: the grey region is regenerated under each caption",
        col_labels=["original", "kept region", "caption A", "caption B"],
        row_labels=[f"A: {a}  /  B: {b}" for a, b in zip(caption_a, caption_b)],
    )  # fmt: skip

    if ae_losses:
        line_plot(
            {"-log p(x|z) + beta KL": ae_losses}, out / "autoencoder_loss.png",
            title="autoencoder training loss (nats per image)", smooth=0.9,
        )  # fmt: skip
    if ldm_losses:
        line_plot(
            {"||v - v_theta(z_t, t, tau(y))||^2": ldm_losses}, out / "diffusion_loss.png",
            title="latent diffusion training loss", smooth=0.9,
        )  # fmt: skip
    return write_metrics(args, metrics)


if __name__ == "__main__":
    main()
