"""RoPE: scores that depend only on relative position, and what that buys.

    python demos/rope.py [--device cuda] [--quick] [--steps N]

Part 1, the maths. RoPE rotates a query at position m by R_m and a key at position n by
R_n, so the score is ⟨R_m q, R_n k⟩ = qᵀ R_{n−m} k: it depends on n − m only.
``scores.png`` shows it for one random q and k over all (m, n): every diagonal (fixed
n − m) has a single colour. ``relative_decay.png`` shows ⟨R_m q, R_n q⟩ for q = (1, …, 1)
against the distance n − m: the slowly rotating pairs keep it large for nearby
tokens and it falls off with distance (the "long-term decay" of the RoFormer paper).

Part 2, the consequence. Two small GPTs learn the same task: sequences made of a random
pattern of 2-8 distinct tokens repeated, e.g. ``5 9 2 5 9 2 5 9 2 …``. Predicting the
next token means finding the previous occurrence of the current one and copying what
followed (an "induction head"). One model adds learned absolute position embeddings,
the other rotates q and k with RoPE. Both train on sequences of 32 tokens only and are
then tested on longer ones. ``extrapolation.png``: the learned-position model has never
trained the embeddings of positions ≥ 32 and fails there; RoPE only ever saw relative
offsets, which stay the same, and keeps working.
"""

from __future__ import annotations

import numpy as np
from common import demo_arguments, write_metrics
from tqdm.auto import tqdm

import minigen as mg
from minigen.models.gpt import GPT
from minigen.ops.rope import rope
from minigen.optim import AdamW, warmup_cosine
from minigen.utils import heatmap, line_plot

VOCAB, TRAIN_LEN, MAX_PERIOD = 16, 32, 8
EVAL_LENGTHS = (16, 32, 48, 64, 96, 128)


def rotated_scores(q: np.ndarray, k: np.ndarray, length: int) -> np.ndarray:
    """S[m, n] = ⟨R_m q, R_n k⟩ for m, n = 0 .. length−1 (float64)."""
    qs = rope(mg.tensor(np.tile(q, (length, 1)), dtype=mg.float64)).numpy()  # row m: R_m q
    ks = rope(mg.tensor(np.tile(k, (length, 1)), dtype=mg.float64)).numpy()  # row n: R_n k
    return qs @ ks.T


def periodic_batch(batch: int, length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Repeated random patterns: inputs x, next-token targets y, and which targets are predictable.

    A target at position t is predictable once the pattern has been seen, i.e. t + 1 ≥ period.
    """
    x = np.empty((batch, length + 1), dtype=np.int64)
    periods = rng.integers(2, MAX_PERIOD + 1, size=batch)
    for i, p in enumerate(periods):
        pattern = rng.permutation(VOCAB)[:p]
        x[i] = np.resize(pattern, length + 1)
    positions = np.arange(1, length + 1)[None, :]  # index of each target in the full sequence
    predictable = positions >= periods[:, None]
    return x[:, :-1], x[:, 1:], predictable


def train(model: GPT, steps: int, device: str, seed: int, desc: str) -> list[float]:
    rng = np.random.default_rng(seed)
    optimizer = AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    schedule = warmup_cosine(optimizer, warmup_steps=steps // 10, total_steps=steps)
    losses = []
    for _ in tqdm(range(steps), desc=desc, unit="step"):
        x, y, predictable = periodic_batch(32, TRAIN_LEN, rng)
        y = np.where(predictable, y, -100)  # the first period is random: nothing to learn there
        loss = model.loss(mg.tensor(x, device=device), mg.tensor(y, device=device))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    return losses


def accuracy(model: GPT, length: int, device: str, seed: int, batch: int = 64) -> float:
    """Next-token accuracy on the predictable positions of sequences of ``length`` tokens."""
    x, y, predictable = periodic_batch(batch, length, np.random.default_rng(seed))
    model.eval()
    with mg.no_grad():
        predicted = model(mg.tensor(x, device=device)).argmax(dim=-1).numpy()
    model.train()
    return float((predicted == y)[predictable].mean())


def main(argv: list[str] | None = None) -> dict:
    def extra(parser):
        parser.add_argument("--steps", type=int, default=None, help="training steps per model (default 800, quick 20)")

    args = demo_arguments("rope", "RoPE: relative scores and length extrapolation", argv, extra)
    steps = args.steps or (20 if args.quick else 800)

    # Part 1: ⟨R_m q, R_n k⟩ depends on n − m only.
    rng = np.random.default_rng(args.seed)
    d, length = 64, 48
    q, k = rng.standard_normal(d), rng.standard_normal(d)
    scores = rotated_scores(q, k, length)
    shift_error = float(np.abs(scores[1:, 1:] - scores[:-1, :-1]).max())  # S[m+1, n+1] − S[m, n]
    heatmap(
        scores,
        args.out / "scores.png",
        title="<R_m q, R_n k>: constant along each diagonal",
        xlabel="key position n",
        ylabel="query position m",
    )
    ones = np.ones(d)
    decay = rotated_scores(ones, ones, 256)[0] / d  # ⟨R_0 1, R_n 1⟩ / d for n = 0 .. 255
    line_plot(
        {"<R_m q, R_n q> / d,  q = (1, ..., 1)": decay},
        args.out / "relative_decay.png",
        title="RoPE score against relative distance",
        xlabel="relative distance n - m",
        ylabel="normalised score",
    )

    # Part 2: learned absolute positions vs RoPE, trained on 32 tokens, tested on more.
    results = {}
    curves = {}
    for positions in ("learned", "rope"):
        mg.manual_seed(args.seed)
        model = GPT(VOCAB, block_size=max(EVAL_LENGTHS), n_layers=2, n_heads=4, d_model=64, positions=positions)
        model.to(args.device)
        curves[positions] = train(model, steps, args.device, args.seed, f"GPT with {positions} positions")
        results[positions] = [accuracy(model, n, args.device, seed=args.seed + n) for n in EVAL_LENGTHS]
        print(positions, dict(zip(EVAL_LENGTHS, np.round(results[positions], 3))))

    line_plot(
        {
            "learned positions": (list(EVAL_LENGTHS), results["learned"]),
            "RoPE": (list(EVAL_LENGTHS), results["rope"]),
            f"training length ({TRAIN_LEN})": ([TRAIN_LEN, TRAIN_LEN], [0.0, 1.0]),
        },
        args.out / "extrapolation.png",
        title="next-token accuracy on longer sequences than trained on",
        xlabel="sequence length",
        ylabel="accuracy (predictable positions)",
        ylim=(0.0, 1.05),
    )
    line_plot(
        {"learned positions": curves["learned"], "RoPE": curves["rope"]},
        args.out / "loss.png",
        title="training loss (sequences of 32 tokens)",
        logy=True,
        smooth=0.9,
    )
    at = dict(zip(EVAL_LENGTHS, range(len(EVAL_LENGTHS))))
    return write_metrics(
        args,
        {
            "score_shift_invariance_error": shift_error,
            "accuracy_learned": dict(zip(map(str, EVAL_LENGTHS), results["learned"])),
            "accuracy_rope": dict(zip(map(str, EVAL_LENGTHS), results["rope"])),
            "train_length_accuracy_learned": results["learned"][at[TRAIN_LEN]],
            "train_length_accuracy_rope": results["rope"][at[TRAIN_LEN]],
            "long_accuracy_learned": results["learned"][at[max(EVAL_LENGTHS)]],
            "long_accuracy_rope": results["rope"][at[max(EVAL_LENGTHS)]],
            "steps_per_model": steps,
        },
    )


if __name__ == "__main__":
    main()
