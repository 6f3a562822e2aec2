"""A character-level GPT learns to write like Shakespeare's sonnets.

    python demos/gpt_chars.py [--device cuda] [--quick] [--steps N]

Time on the idle 2-core AMD EPYC machine (CPU, 2026-12-03): 2 min 30 s; with --quick 2.5 s.

The corpus (``minigen/data/corpus.txt``, 25 KB) holds sonnets by William Shakespeare
(1609), in the public domain. Each character is a token. The model reads 64 characters
and predicts, at every position, the next one; its loss is the cross-entropy in nats.

Two reference points:

* the unigram entropy H = −Σ_c p(c) log p(c): the loss of a model that knows how often
  each character occurs but ignores the context. A loss below it means the model uses
  the context; the gap is how much it learned about spelling, words and verse,
* the validation text is the last 10 % of the corpus, never trained on.

Writes ``loss.png`` (train and validation loss with the unigram entropy as a line),
``samples.txt`` (generated verse at a few temperatures) and ``metrics.json``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from common import demo_arguments, positive_int, write_metrics
from tqdm.auto import tqdm

import minigen as mg
from minigen.models.gpt import GPT
from minigen.optim import AdamW, clip_grad_norm_, warmup_cosine
from minigen.utils import TrainingLog, line_plot, moving_average

CORPUS = Path(__file__).resolve().parent.parent / "minigen" / "data" / "corpus.txt"
BLOCK = 64


def unigram_entropy(ids: np.ndarray, vocab_size: int) -> float:
    """H = −Σ_c p(c) log p(c) in nats, with p the character frequencies of ``ids``."""
    p = np.bincount(ids, minlength=vocab_size) / len(ids)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def batches(ids: np.ndarray, batch_size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random windows: x = ids[s : s + BLOCK], y = ids[s + 1 : s + BLOCK + 1] (the next characters)."""
    starts = rng.integers(0, len(ids) - BLOCK - 1, size=batch_size)
    x = np.stack([ids[s : s + BLOCK] for s in starts])
    y = np.stack([ids[s + 1 : s + BLOCK + 1] for s in starts])
    return x, y


def evaluate(model: GPT, ids: np.ndarray, device: str) -> float:
    """Mean next-character loss over consecutive windows covering ``ids`` once."""
    model.eval()
    starts = np.arange(0, len(ids) - BLOCK - 1, BLOCK)
    x = np.stack([ids[s : s + BLOCK] for s in starts])
    y = np.stack([ids[s + 1 : s + BLOCK + 1] for s in starts])
    with mg.no_grad():
        loss = model.loss(mg.tensor(x, device=device), mg.tensor(y, device=device)).item()
    model.train()
    return loss


def main(argv: list[str] | None = None) -> dict:
    def extra(parser):
        parser.add_argument("--steps", type=positive_int, default=None, help="training steps (default 1000, quick 30)")

    args = demo_arguments("gpt_chars", "A character-level GPT on Shakespeare's sonnets", argv, extra)
    steps = args.steps or (30 if args.quick else 1000)
    text = CORPUS.read_text(encoding="utf-8")
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    ids = np.array([stoi[c] for c in text], dtype=np.int64)
    split = int(0.9 * len(ids))
    train_ids, val_ids = ids[:split], ids[split:]
    entropy = unigram_entropy(train_ids, len(chars))
    print(f"{len(text)} characters, vocabulary {len(chars)}, unigram entropy {entropy:.3f} nats")

    width, depth = (64, 2) if args.quick else (96, 3)
    model = GPT(len(chars), BLOCK, n_layers=depth, n_heads=4, d_model=width, dropout=0.1)
    model.to(args.device)
    optimizer = AdamW(model.parameters(), lr=2e-3, weight_decay=0.1)
    schedule = warmup_cosine(optimizer, warmup_steps=min(100, steps // 10), total_steps=steps)
    rng = np.random.default_rng(args.seed)
    log, val_points = TrainingLog(sync_every=50), []  # train losses reach the host every 50 steps
    eval_every = max(steps // 15, 10)
    progress = tqdm(range(steps), desc="char GPT", unit="step")
    for step in progress:
        x, y = batches(train_ids, 8 if args.quick else 32, rng)
        loss = model.loss(mg.tensor(x, device=args.device), mg.tensor(y, device=args.device))
        optimizer.zero_grad()
        loss.backward()
        clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        log.record({"loss": loss})
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            val_points.append((step + 1, evaluate(model, val_ids, args.device)))
            progress.set_postfix(train=f"{np.mean(log.flush()['loss'][-20:]):.3f}", val=f"{val_points[-1][1]:.3f}")
    train_losses = log.flush()["loss"]

    # Samples: start from the opening of a sonnet and let the model continue.
    model.eval()
    prompt = "Shall I compare thee"
    samples = []
    length, chunk = (40 if args.quick else 400), 20
    for temperature in (0.0, 0.6, 1.0):
        out = mg.tensor([[stoi[c] for c in prompt]], device=args.device)
        # generate() in chunks of 20 characters only to move a progress bar: it is stateless
        # (each step reads the last BLOCK characters), so the text is the same as in one call.
        for done in tqdm(range(0, length, chunk), desc=f"writing {length} characters at temperature {temperature}"):
            out = model.generate(out, min(chunk, length - done), temperature=temperature, top_k=None)
        sample = "".join(chars[i] for i in out.numpy()[0])
        samples.append(f"--- temperature {temperature} ---\n{sample}\n")
        print(samples[-1])
    (args.out / "samples.txt").write_text("\n".join(samples), encoding="utf-8")

    val_steps, val_losses = zip(*val_points)
    line_plot(
        {
            "train (centred moving average)": moving_average(train_losses, 0.95),
            "validation": (list(val_steps), list(val_losses)),
            "unigram entropy": ([0, steps], [entropy, entropy]),
        },
        args.out / "loss.png",
        title="character-level GPT: loss in nats per character",
        ylabel="cross-entropy (nats)",
    )
    final_val = val_losses[-1]
    return write_metrics(
        args,
        {
            "val_loss": final_val,
            "best_val_loss": min(val_losses),
            "train_loss": float(np.mean(train_losses[-50:])),
            "unigram_entropy": entropy,
            "val_bits_per_char": final_val / math.log(2),
            "vocab_size": len(chars),
            "corpus_chars": len(text),
            "steps": steps,
        },
    )


if __name__ == "__main__":
    main()
