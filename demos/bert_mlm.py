"""BERT: pre-train by filling in masked words, then fine-tune the [CLS] vector to classify.

    python demos/bert_mlm.py [--device cuda] [--quick] [--steps N]

Time on the idle 2-core AMD EPYC machine (CPU, 2026-12-03): 1 min 38 s; with --quick 5.1 s.

The language is a small synthetic grammar, so that every rule the model can learn is
known. A sentence looks like

    [CLS] two red cats chase a blue dog . the cats are red [SEP]

* the verb agrees with the subject (cat chases / cats chase), and so does "is"/"are",
* the last clause repeats the subject and its colour, so a masked subject word can be
  recovered from the other half of the sentence: attention has to fetch it,
* colours, animals and verbs are otherwise random: those positions can only be
  guessed, and a masked colour with no copy has a 1-in-4 chance at best.

1. **Pre-training (MLM).** ``mlm_mask`` selects 15 % of the tokens (80 % → [MASK], 10 %
   random, 10 % kept); the loss is the cross-entropy on the selected positions. The
   baseline is a unigram model that always answers the most frequent word.
2. **Fine-tuning.** A new task: do the subject and the object have the same colour?
   The classifier reads the [CLS] vector. With only a few hundred labelled sentences,
   the pre-trained encoder is compared with the same network trained from scratch.

Pictures: ``loss.png`` (MLM and fine-tuning losses), ``attention.png`` (who attends to
whom in the last block, for one sentence) and metrics.json.
"""

from __future__ import annotations

import numpy as np
from common import demo_arguments, positive_int, status, write_metrics
from tqdm.auto import tqdm

import minigen as mg
import minigen.nn.functional as F
from minigen.models.bert import BERT, mlm_mask
from minigen.optim import AdamW, warmup_cosine
from minigen.utils import TrainingLog, heatmap, line_plot

SPECIALS = ["[PAD]", "[CLS]", "[SEP]", "[MASK]"]
COLOURS = ["red", "blue", "green", "yellow"]
ANIMALS = [
    ("cat", "cats"),
    ("dog", "dogs"),
    ("bird", "birds"),
    ("fox", "foxes"),
    ("mouse", "mice"),
    ("horse", "horses"),
]
VERBS = [("sees", "see"), ("chases", "chase"), ("likes", "like"), ("follows", "follow")]
DETERMINERS = {False: ["a", "one", "the"], True: ["two", "some", "the"]}  # by plural?
WORDS = sorted(
    {w for pair in ANIMALS + VERBS for w in pair}
    | set(COLOURS)
    | {w for dets in DETERMINERS.values() for w in dets}
    | {".", "is", "are"}
)
VOCAB = SPECIALS + WORDS
ID = {w: i for i, w in enumerate(VOCAB)}
PAD, CLS, SEP, MASK = (ID[s] for s in SPECIALS)


def sentences(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` token sequences of the grammar and their labels (1 if subject colour = object colour)."""
    rows, labels = [], []
    for _ in range(n):
        plural_s, plural_o = rng.random() < 0.5, rng.random() < 0.5
        animal_s, animal_o = ANIMALS[rng.integers(len(ANIMALS))], ANIMALS[rng.integers(len(ANIMALS))]
        colour_s = COLOURS[rng.integers(len(COLOURS))]
        same = rng.random() < 0.5
        colour_o = colour_s if same else rng.choice([c for c in COLOURS if c != colour_s])
        verb = VERBS[rng.integers(len(VERBS))][1 if plural_s else 0]
        subject = animal_s[1 if plural_s else 0]
        words = [
            rng.choice(DETERMINERS[plural_s]), colour_s, subject, verb,
            rng.choice(DETERMINERS[plural_o]), colour_o, animal_o[1 if plural_o else 0], ".",
            "the", subject, "are" if plural_s else "is", colour_s,
        ]  # fmt: skip
        rows.append([CLS] + [ID[w] for w in words] + [SEP])
        labels.append(int(same))
    return np.array(rows, dtype=np.int64), np.array(labels, dtype=np.int64)


def masked_accuracy(model: BERT, tokens: np.ndarray, device: str, seed: int) -> tuple[float, np.ndarray, np.ndarray]:
    """Accuracy of the MLM predictions at the positions replaced by [MASK] (a fixed masking)."""
    inputs, labels = mlm_mask(mg.tensor(tokens, device=device), len(VOCAB), MASK, [PAD, CLS, SEP], seed=seed)
    model.eval()
    with mg.no_grad():
        predicted = model.mlm_logits(model(inputs)).argmax(dim=-1).numpy()
    model.train()
    masked = inputs.numpy() == MASK
    targets = labels.numpy()[masked]
    return float((predicted[masked] == targets).mean()), targets, masked


def classify_accuracy(model: BERT, tokens: np.ndarray, labels: np.ndarray, device: str) -> float:
    model.eval()
    with mg.no_grad():
        predicted = model.classify(model(mg.tensor(tokens, device=device))).argmax(dim=-1).numpy()
    model.train()
    return float((predicted == labels).mean())


def fine_tune(
    model: BERT, tokens: np.ndarray, labels: np.ndarray, steps: int, device: str, seed: int, name: str
) -> list[float]:
    """Train the [CLS] classifier (and the encoder under it) on the labelled sentences."""
    optimizer = AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    schedule = warmup_cosine(optimizer, warmup_steps=steps // 10, total_steps=steps)
    rng = np.random.default_rng(seed)
    log = TrainingLog(sync_every=50)  # losses reach the host every 50 steps, not every step
    for _ in tqdm(range(steps), desc=f"fine-tune [CLS], {name}", unit="step"):
        pick = rng.integers(0, len(tokens), size=32)
        logits = model.classify(model(mg.tensor(tokens[pick], device=device)))
        loss = F.cross_entropy(logits, mg.tensor(labels[pick], device=device))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        log.record({"loss": loss})
    return log.flush()["loss"]


def main(argv: list[str] | None = None) -> dict:
    def extra(parser):
        parser.add_argument(
            "--steps", type=positive_int, default=None, help="MLM pre-training steps (default 1500, quick 50)"
        )

    args = demo_arguments("bert_mlm", "BERT: masked language modelling, then [CLS] fine-tuning", argv, extra)
    quick = args.quick
    pretrain_steps = args.steps or (50 if quick else 1500)
    finetune_steps = 20 if quick else 300
    rng = np.random.default_rng(args.seed)
    n_corpus = 2000 if quick else 20000
    with status(f"writing {n_corpus + 2400} sentences of the grammar"):
        corpus, _ = sentences(n_corpus, rng)
        held_out, _ = sentences(1000, rng)
        labelled, labels = sentences(400, rng)  # few labels: where pre-training pays off
        test, test_labels = sentences(1000, rng)

    def new_model() -> BERT:
        return BERT(len(VOCAB), max_len=corpus.shape[1], n_layers=3, n_heads=4, d_model=64, mlp_ratio=2).to(args.device)

    scratch = new_model()  # drawn first, so the pre-trained model starts from different weights
    model = new_model()
    optimizer = AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    schedule = warmup_cosine(optimizer, warmup_steps=pretrain_steps // 10, total_steps=pretrain_steps)
    log = TrainingLog(sync_every=50)
    for _ in tqdm(range(pretrain_steps), desc="MLM pre-training", unit="step"):
        batch = corpus[rng.integers(0, len(corpus), size=32 if quick else 128)]
        inputs, targets = mlm_mask(mg.tensor(batch, device=args.device), len(VOCAB), MASK, [PAD, CLS, SEP])
        loss = model.mlm_loss(inputs, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        log.record({"loss": loss})
    mlm_losses = log.flush()["loss"]

    mlm_acc, targets, _ = masked_accuracy(model, held_out, args.device, seed=args.seed)
    # Unigram baseline: always answer the most frequent word of the training corpus.
    counts = np.bincount(corpus[(corpus != CLS) & (corpus != SEP)], minlength=len(VOCAB))
    unigram_acc = float((targets == counts.argmax()).mean())
    print(f"masked-token accuracy {mlm_acc:.3f} vs unigram baseline {unigram_acc:.3f} ('{VOCAB[counts.argmax()]}')")

    # Where does the model look? Last block, one held-out sentence with the subject masked.
    sentence = held_out[:1].copy()
    sentence[0, 3] = MASK  # the subject noun; its copy sits in the last clause
    model.eval()
    weights = model.attention_maps(mg.tensor(sentence, device=args.device))[-1].numpy()[0].mean(axis=0)
    model.train()
    words = [VOCAB[t] for t in sentence[0]]
    heatmap(
        weights,
        args.out / "attention.png",
        title="BERT last block attention (subject masked)",
        row_labels=words,
        col_labels=words,
        xlabel="key",
        ylabel="query",
        cmap="blues",
        cell_size=40,
        annotate=False,
    )

    # Fine-tune on the colour-match task: pre-trained vs from scratch, same steps and data.
    tune_losses = fine_tune(model, labelled, labels, finetune_steps, args.device, args.seed, "pre-trained")
    scratch_losses = fine_tune(scratch, labelled, labels, finetune_steps, args.device, args.seed, "from scratch")
    acc_pretrained = classify_accuracy(model, test, test_labels, args.device)
    acc_scratch = classify_accuracy(scratch, test, test_labels, args.device)
    print(f"colour-match accuracy: pre-trained {acc_pretrained:.3f}, from scratch {acc_scratch:.3f}")

    line_plot(
        {"MLM loss": mlm_losses}, args.out / "loss.png", title="BERT masked-LM pre-training", logy=True, smooth=0.9
    )
    line_plot(
        {"pre-trained": tune_losses, "from scratch": scratch_losses},
        args.out / "finetune_loss.png",
        title=f"[CLS] fine-tuning on {len(labelled)} labelled sentences",
        ylabel="cross-entropy",
        smooth=0.9,
    )
    return write_metrics(
        args,
        {
            "masked_token_accuracy": mlm_acc,
            "unigram_baseline_accuracy": unigram_acc,
            "final_mlm_loss": float(np.mean(mlm_losses[-50:])),
            "finetune_accuracy_pretrained": acc_pretrained,
            "finetune_accuracy_scratch": acc_scratch,
            "labelled_examples": len(labelled),
            "pretrain_steps": pretrain_steps,
            "finetune_steps": finetune_steps,
            "vocab_size": len(VOCAB),
        },
    )


if __name__ == "__main__":
    main()
