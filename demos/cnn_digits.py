"""Train a LeNet-style CNN on rendered digits, then look at what it learned.

    python demos/cnn_digits.py                       # 12 s on the idle 2-core AMD EPYC machine (--quick 2.6 s)
    python demos/cnn_digits.py --device cuda         # the same on a GPU
    python demos/cnn_digits.py --save ckpt.npz       # keep the trained weights
    python demos/cnn_digits.py --load ckpt.npz       # evaluate saved weights, no training

Writes to runs/cnn_digits/: loss_curve.png, misclassified.png (the test digits it got
wrong, each captioned true -> predicted), confusion_matrix.png, filters.png (the first
layer's 5×5 filters: white positive, black negative, grey 0) and metrics.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from common import demo_arguments, existing_file, positive_int, status, write_metrics

import minigen as mg
from minigen.data import load_digits
from minigen.models.cnn import LeNet, fit_classifier, predict
from minigen.utils import heatmap, line_plot, save_image_grid


def extra_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--epochs", type=positive_int, default=2, help="training epochs (default 2)")
    parser.add_argument("--size", type=int, default=16, choices=[8, 16, 28], help="digit image size")
    parser.add_argument("--save", type=Path, default=None, help="write the trained weights to this .npz file")
    parser.add_argument(
        "--load", type=existing_file, default=None, help="load weights from this .npz file instead of training"
    )


def main(argv: list[str] | None = None) -> dict:
    args = demo_arguments("cnn_digits", __doc__.splitlines()[0], argv, extra_flags)
    n_train, n_test, epochs = (2000, 500, 1) if args.quick else (12000, 2000, args.epochs)
    with status(f"rendering {n_train} training and {n_test} test digits"):
        train = load_digits("train", n=n_train, size=args.size, seed=args.seed)
        test = load_digits("test", n=n_test, size=args.size, seed=args.seed)

    model = LeNet(num_classes=10, image_size=args.size)
    losses: list[float] = []
    if args.load:
        model.load_state_dict(mg.load(args.load))
        model.to(args.device)
    else:
        losses = fit_classifier(model, train.images, train.labels, epochs=epochs, device=args.device, seed=args.seed)
    if args.save:
        mg.save(model.state_dict(), args.save)

    predicted = predict(model, test.images, device=args.device)
    test_accuracy = float((predicted == test.labels).mean())
    confusion = np.zeros((10, 10), dtype=np.int64)
    np.add.at(confusion, (test.labels, predicted), 1)  # host-side bookkeeping of 10×10 counts

    out = Path(args.out)
    if losses:
        line_plot(
            {"train loss": losses},
            out / "loss_curve.png",
            title="LeNet on rendered digits",
            ylabel="cross-entropy",
            smooth=0.9,
        )
    all_wrong = np.flatnonzero(predicted != test.labels)
    wrong = all_wrong[:64]
    if len(wrong):
        captions = [f"{test.labels[i]} -> {predicted[i]}" for i in wrong]
        save_image_grid(
            test.images[wrong], out / "misclassified.png", nrow=8, captions=captions,
            title=f"{len(all_wrong)} of {len(test.labels)} test digits misclassified (true -> predicted)",
        )  # fmt: skip
        print("misclassified (true -> predicted):", ", ".join(captions[:16]))
    digits = [str(d) for d in range(10)]
    heatmap(
        confusion,
        out / "confusion_matrix.png",
        title=f"Test confusion matrix ({100 * test_accuracy:.1f}% correct)",
        row_labels=digits,
        col_labels=digits,
        xlabel="predicted",
        ylabel="true",
        cmap="blues",
    )
    first_conv = model.features[0].weight.detach().numpy()  # (filters, 1, 5, 5)
    largest = float(np.abs(first_conv).max())
    save_image_grid(
        first_conv, out / "filters.png", nrow=8, value_range=(-largest, largest), scale=8, pad_value=1.0,
        title="first-layer 5x5 filters (white +, black -, grey 0)",
    )  # fmt: skip

    return write_metrics(
        args, {"test_accuracy": test_accuracy, "train_steps": len(losses), "final_loss": losses[-1] if losses else None}
    )


if __name__ == "__main__":
    main()
