"""RoPE: scores that depend only on relative position, and what that buys.

    python demos/rope.py [--device cuda] [--quick] [--steps N]

Time on the idle 2-core AMD EPYC machine (CPU, 2026-12-03): 50 s; with --quick 2.6 s.

Part 1, the maths. RoPE rotates a query at position m by R_m and a key at position n by
R_n, so the score is ⟨R_m q, R_n k⟩ = qᵀ R_{n−m} k: it depends on n − m only.
``scores.png`` shows it for one random q and k over all (m, n): every diagonal (fixed
n − m) has a single colour. ``relative_decay.png`` shows ⟨R_m q, R_n q⟩ for q = (1, …, 1)
against the distance n − m: the slowly rotating pairs keep it large for nearby
tokens and it falls off with distance (the "long-term decay" of the RoFormer paper).

Part 2, the consequence. Two small GPTs learn the same task: read random tokens and, at
every position t, output the token from 3 places back, x_{t−3}. The content is random,
so only position tells where to look: it is a task about relative position. One model
adds learned absolute position embeddings, the other rotates q and k with RoPE. Both
train on sequences of 32 tokens only and are then tested on longer ones.
``extrapolation.png`` (accuracy at each position of 128-token sequences) and
``extrapolation_by_length.png``: the learned-position model had to learn "attend to i − 3"
separately for every position i, and the embeddings of positions ≥ 32 were never
trained, so it fails beyond them. With RoPE the score for offset 3 is the same at every
position, and it keeps working much further (not forever: distances it never saw during
training still produce some stray attention as the sequence grows).
"""

from __future__ import annotations

import numpy as np
from common import demo_arguments, positive_int, write_metrics
from tqdm.auto import tqdm

import minigen as mg
from minigen.models.gpt import GPT
from minigen.ops.rope import rope
from minigen.optim import AdamW, warmup_cosine
from minigen.utils import TrainingLog, heatmap, line_plot

VOCAB, TRAIN_LEN, OFFSET = 16, 32, 3
EVAL_LENGTHS = (16, 32, 48, 64, 96, 128)
LONG = 64  # the headline test length: twice the training length


def rotated_scores(q: np.ndarray, k: np.ndarray, length: int) -> np.ndarray:
    """S[m, n] = ⟨R_m q, R_n k⟩ for m, n = 0 .. length−1 (float64)."""
    qs = rope(mg.tensor(np.tile(q, (length, 1)), dtype=mg.float64)).numpy()  # row m: R_m q
    ks = rope(mg.tensor(np.tile(k, (length, 1)), dtype=mg.float64)).numpy()  # row n: R_n k
    return qs @ ks.T


def copy_back_batch(batch: int, length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random tokens x and targets y_t = x_{t−3} (−100, i.e. ignored, for the first 3 positions)."""
    x = rng.integers(0, VOCAB, size=(batch, length))
    y = np.full((batch, length), -100, dtype=np.int64)
    y[:, OFFSET:] = x[:, :-OFFSET]
    return x, y


def train(model: GPT, steps: int, device: str, seed: int, desc: str) -> list[float]:
    rng = np.random.default_rng(seed)
    optimizer = AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    schedule = warmup_cosine(optimizer, warmup_steps=steps // 10, total_steps=steps)
    log = TrainingLog(sync_every=50)  # losses reach the host every 50 steps, not every step
    for _ in tqdm(range(steps), desc=desc, unit="step"):
        x, y = copy_back_batch(32, TRAIN_LEN, rng)
        loss = model.loss(mg.tensor(x, device=device), mg.tensor(y, device=device))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        log.record({"loss": loss})
    return log.flush()["loss"]


def accuracy_by_position(model: GPT, length: int, device: str, seed: int, batch: int = 64) -> np.ndarray:
    """For sequences of ``length`` tokens: how often position t outputs x_{t−3} correctly (NaN for t < 3)."""
    x, y = copy_back_batch(batch, length, np.random.default_rng(seed))
    model.eval()
    with mg.no_grad():
        predicted = model(mg.tensor(x, device=device)).argmax(dim=-1).numpy()
    model.train()
    correct = (predicted == y).mean(axis=0)
    correct[:OFFSET] = np.nan
    return correct


def accuracy(model: GPT, length: int, device: str, seed: int, batch: int = 64) -> float:
    """Accuracy over all scored positions of sequences of ``length`` tokens."""
    return float(np.nanmean(accuracy_by_position(model, length, device, seed, batch)))


def main(argv: list[str] | None = None) -> dict:
    def extra(parser):
        parser.add_argument(
            "--steps", type=positive_int, default=None, help="training steps per model (default 600, quick 10)"
        )

    args = demo_arguments("rope", "RoPE: relative scores and length extrapolation", argv, extra)
    steps = args.steps or (10 if args.quick else 600)

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
    results, curves, by_position = {}, {}, {}
    for positions in ("learned", "rope"):
        mg.manual_seed(args.seed)
        model = GPT(VOCAB, block_size=max(EVAL_LENGTHS), n_layers=2, n_heads=4, d_model=64, positions=positions)
        model.to(args.device)
        curves[positions] = train(model, steps, args.device, args.seed, f"GPT with {positions} positions")
        results[positions] = [
            accuracy(model, n, args.device, args.seed + n, 8 if args.quick else 64) for n in EVAL_LENGTHS
        ]
        sequences = 16 if args.quick else 256
        by_position[positions] = accuracy_by_position(model, max(EVAL_LENGTHS), args.device, args.seed, sequences)
        print(positions, dict(zip(EVAL_LENGTHS, np.round(results[positions], 3))))

    positions_axis = list(range(max(EVAL_LENGTHS)))
    line_plot(
        {
            "RoPE": (positions_axis, by_position["rope"]),
            "learned positions": (positions_axis, by_position["learned"]),  # drawn on top of RoPE where equal
            f"trained positions end ({TRAIN_LEN})": ([TRAIN_LEN, TRAIN_LEN], [0.0, 1.0]),
            f"chance (1/{VOCAB})": ([0, max(EVAL_LENGTHS)], [1 / VOCAB, 1 / VOCAB]),
        },
        args.out / "extrapolation.png",
        title="output x[t-3] at position t, trained on 32 positions",
        xlabel="position t",
        ylabel="accuracy",
        ylim=(0.0, 1.05),
    )
    line_plot(
        {
            "learned positions": (list(EVAL_LENGTHS), results["learned"]),
            "RoPE": (list(EVAL_LENGTHS), results["rope"]),
            f"training length ({TRAIN_LEN})": ([TRAIN_LEN, TRAIN_LEN], [0.0, 1.0]),
        },
        args.out / "extrapolation_by_length.png",
        title="output x[t-3]: accuracy on whole sequences longer than trained on",
        xlabel="sequence length",
        ylabel="accuracy",
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
            "long_length": LONG,
            "long_accuracy_learned": results["learned"][at[LONG]],
            "long_accuracy_rope": results["rope"][at[LONG]],
            "steps_per_model": steps,
        },
    )


if __name__ == "__main__":
    main()
