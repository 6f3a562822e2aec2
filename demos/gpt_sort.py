"""A tiny GPT learns to sort (minGPT's first demo).

    python demos/gpt_sort.py [--device cuda] [--quick] [--steps N]

A training sequence is six symbols from {0, 1, 2} followed by the same six sorted:

    2 0 1 1 0 2 | 0 0 1 1 2 2

The model is trained on next-token prediction, but only the sorted half is scored
(the first half is random, so predicting it is impossible and would only add noise):
the targets of the first five positions are −100, which ``cross_entropy`` ignores.
At test time the model reads an unsorted sequence it has never seen and writes the
sorted one itself, greedily (the most likely token at each step).

There are only 3⁶ = 729 sequences; a fixed fifth of them is held out, so a perfect test
score means the model sorts, not that it memorised. Pictures: ``loss.png`` and
``attention.png`` (where each output position looks, last block, averaged over heads).
"""

from __future__ import annotations

import itertools

import numpy as np
from common import demo_arguments, positive_int, write_metrics
from tqdm.auto import tqdm

import minigen as mg
from minigen.models.gpt import GPT
from minigen.optim import AdamW, warmup_cosine
from minigen.utils import TrainingLog, heatmap, line_plot

LENGTH, SYMBOLS = 6, 3


def make_split(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """All 729 sequences, shuffled with ``seed``: 80 % for training, 20 % held out."""
    every = np.array(list(itertools.product(range(SYMBOLS), repeat=LENGTH)), dtype=np.int64)
    order = np.random.default_rng(seed).permutation(len(every))
    n_test = len(every) // 5
    return every[order[n_test:]], every[order[:n_test]]


def with_sorted(unsorted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Model input x and targets y for sequences (N, 6): x = s[:-1], y = s[1:] with s = unsorted ‖ sorted."""
    full = np.concatenate([unsorted, np.sort(unsorted, axis=1)], axis=1)  # (N, 12)
    x, y = full[:, :-1].copy(), full[:, 1:].copy()
    y[:, : LENGTH - 1] = -100  # only predictions of the sorted half count
    return x, y


def exact_match(model: GPT, sequences: np.ndarray, device: str) -> float:
    """Fraction of sequences whose greedily generated sorted half is exactly right."""
    model.eval()
    generated = model.generate(mg.tensor(sequences, device=device), LENGTH, temperature=0).numpy()
    model.train()
    return float(np.mean(np.all(generated[:, LENGTH:] == np.sort(sequences, axis=1), axis=1)))


def main(argv: list[str] | None = None) -> dict:
    def extra(parser):
        parser.add_argument("--steps", type=positive_int, default=None, help="training steps (default 800, quick 30)")

    args = demo_arguments("gpt_sort", "A tiny GPT learns to sort", argv, extra)
    steps = args.steps or (30 if args.quick else 800)
    train, test = make_split(args.seed)
    rng = np.random.default_rng(args.seed)

    model = GPT(vocab_size=SYMBOLS, block_size=2 * LENGTH - 1, n_layers=3, n_heads=4, d_model=48).to(args.device)
    optimizer = AdamW(model.parameters(), lr=5e-3, weight_decay=0.01)
    schedule = warmup_cosine(optimizer, warmup_steps=steps // 10, total_steps=steps)
    log = TrainingLog(sync_every=50)  # losses reach the host every 50 steps, not every step
    for _ in tqdm(range(steps), desc="GPT sorting", unit="step"):
        batch = train[rng.integers(0, len(train), size=64)]
        x, y = with_sorted(batch)
        loss = model.loss(mg.tensor(x, device=args.device), mg.tensor(y, device=args.device))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        log.record({"loss": loss})
    losses = log.flush()["loss"]

    train_acc = exact_match(model, train, args.device)
    test_acc = exact_match(model, test, args.device)
    examples = test[:5]
    generated = model.eval().generate(mg.tensor(examples, device=args.device), LENGTH, temperature=0).numpy()
    for row in generated:
        print(" ".join(map(str, row[:LENGTH])), "->", " ".join(map(str, row[LENGTH:])))

    # Where does each sorted output look? The last block's attention for one held-out example.
    varied = next(s for s in test if len(set(s.tolist())) == SYMBOLS)  # an example using all three symbols
    example = with_sorted(varied[None])[0]
    weights = model.attention_maps(mg.tensor(example, device=args.device))[-1].numpy()[0].mean(axis=0)
    labels = [f"{t}" + ("'" if i >= LENGTH else "") for i, t in enumerate(example[0])]
    heatmap(
        weights,
        args.out / "attention.png",
        title="last block attention (rows: query, ' = sorted half)",
        row_labels=labels,
        col_labels=labels,
        xlabel="key position (token)",
        ylabel="query position",
        cmap="blues",
        cell_size=40,
    )
    line_plot(
        {"train loss": losses}, args.out / "loss.png", title="sorting: loss on the sorted half", logy=True, smooth=0.9
    )
    return write_metrics(
        args,
        {
            "test_exact_match": test_acc,
            "train_exact_match": train_acc,
            "test_sequences": len(test),
            "train_sequences": len(train),
            "steps": steps,
            "final_loss": float(np.mean(losses[-20:])),
        },
    )


if __name__ == "__main__":
    main()
