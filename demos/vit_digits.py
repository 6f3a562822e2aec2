"""A Vision Transformer reads rendered digits, 4×4-pixel patch by patch.

    python demos/vit_digits.py [--device cuda] [--quick] [--epochs N]

Each 16×16 digit becomes 16 patch tokens plus a [CLS] token; four transformer blocks
let the tokens attend to each other, and the [CLS] vector is classified. Pictures:

* ``attention.png``: test digits (top) and, below each, where [CLS] looks in the last
  block (attention to each patch, averaged over heads, upsampled over the digit),
* ``position_similarity.png``: for each patch (one small map per patch position), the
  cosine similarity of its learned position embedding with every other patch's. The
  model was never told the patches form a 4×4 grid; nearby patches end up similar,
* ``loss.png``: training loss and test accuracy per epoch.
"""

from __future__ import annotations

import numpy as np
from common import demo_arguments, positive_int, write_metrics
from PIL import Image
from tqdm.auto import tqdm

import minigen as mg
import minigen.nn.functional as F
from minigen.data import DataLoader, load_digits
from minigen.models.vit import ViT
from minigen.optim import AdamW, warmup_cosine
from minigen.utils import TrainingLog, colormap, line_plot, save_image_grid

IMAGE, PATCH = 16, 4


def evaluate(model: ViT, images: np.ndarray, labels: np.ndarray, device: str, batch: int = 500) -> float:
    """Test accuracy, in batches, without building a graph."""
    model.eval()
    correct = 0
    with mg.no_grad():
        for i in range(0, len(labels), batch):
            logits = model(mg.tensor(images[i : i + batch], device=device))
            correct += int((logits.argmax(dim=-1).numpy() == labels[i : i + batch]).sum())
    model.train()
    return correct / len(labels)


def upsample(maps: np.ndarray, size: int) -> np.ndarray:
    """(N, g, g) attention maps -> (N, size, size), bilinear, each scaled to [0, 1]."""
    out = []
    for m in maps:
        m = (m - m.min()) / max(m.max() - m.min(), 1e-12)
        out.append(np.asarray(Image.fromarray(m.astype(np.float32), "F").resize((size, size), Image.BILINEAR)))
    return np.clip(np.stack(out), 0.0, 1.0)


def attention_overlays(digits: np.ndarray, maps: np.ndarray) -> np.ndarray:
    """Digits in grey with the attention painted over them in red (low) to yellow (high): (N, 3, H, W)."""
    heat = upsample(maps, digits.shape[-1])[:, None]  # (N, 1, H, W) in [0, 1]
    grey = np.repeat(digits, 3, axis=1)
    colour = np.concatenate([np.ones_like(heat), heat, np.zeros_like(heat)], axis=1)  # red -> yellow
    alpha = 0.8 * heat  # where [CLS] does not look, the digit shows through unchanged
    return (1 - alpha) * grey + alpha * colour


def position_similarity_tiles(similarity: np.ndarray, grid: int) -> np.ndarray:
    """(N, N) cosine similarities -> N coloured grid×grid tiles (tile i: patch i vs every patch).

    Each tile is scaled to its own range without the patch itself (always 1), so the
    pattern among the other patches is visible; the patch itself is drawn white.
    """
    tiles = []
    for i, row in enumerate(similarity):
        others = np.delete(row, i)
        scaled = (row - others.min()) / max(others.max() - others.min(), 1e-12)
        rgb = colormap(scaled.reshape(grid, grid), "viridis").astype(np.float32) / 255.0
        rgb.reshape(-1, 3)[i] = 1.0
        tiles.append(rgb.transpose(2, 0, 1))
    return np.stack(tiles)


def neighbour_similarity(similarity: np.ndarray, grid: int) -> tuple[float, float]:
    """Mean cosine similarity of position embeddings for adjacent patches and for patches ≥ 2 apart."""
    rows, cols = np.divmod(np.arange(grid * grid), grid)
    distance = np.abs(rows[:, None] - rows[None]) + np.abs(cols[:, None] - cols[None])  # city-block
    return float(similarity[distance == 1].mean()), float(similarity[distance >= 2].mean())


def main(argv: list[str] | None = None) -> dict:
    def extra(parser):
        parser.add_argument("--epochs", type=positive_int, default=None, help="training epochs (default 6, quick 1)")

    args = demo_arguments("vit_digits", "A Vision Transformer on rendered digits", argv, extra)
    quick = args.quick
    epochs = args.epochs or (1 if quick else 6)
    train = load_digits("train", n=2000 if quick else 10000, size=IMAGE)
    test = load_digits("test", n=500 if quick else 2000, size=IMAGE)

    model = ViT(IMAGE, PATCH, in_channels=1, num_classes=10, d_model=64, n_layers=2 if quick else 4, n_heads=4)
    model.to(args.device)
    loader = DataLoader(train.arrays, batch_size=128, shuffle=True, seed=args.seed, device=args.device)
    total_steps = epochs * len(loader)
    optimizer = AdamW(model.parameters(), lr=3e-3, weight_decay=0.05)
    schedule = warmup_cosine(optimizer, warmup_steps=min(100, total_steps // 5), total_steps=total_steps)

    log, accuracies = TrainingLog(sync_every=50), []  # losses reach the host every 50 steps
    progress = tqdm(total=total_steps, desc="ViT on digits", unit="step")
    for epoch in range(epochs):
        for images, labels in loader:
            loss = F.cross_entropy(model(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            if log.record({"loss": loss}):
                progress.set_postfix(loss=f"{log.history['loss'][-1]:.3f}")
            progress.update(1)
        accuracies.append(evaluate(model, test.images, test.labels, args.device))
        progress.write(f"epoch {epoch + 1}: test accuracy {accuracies[-1]:.4f}")
    progress.close()
    losses = log.flush()["loss"]

    # Pictures: where [CLS] looks, the learned position embeddings, the training curves.
    shown = test.images[:16]
    model.eval()
    maps = model.attention_maps(mg.tensor(shown, device=args.device)).numpy().mean(axis=1)  # average the heads
    overlays = attention_overlays(shown, maps)
    digits_rgb = np.repeat(shown, 3, axis=1)
    rows = [digits_rgb[:8], overlays[:8], digits_rgb[8:], overlays[8:]]  # each digit above its map
    save_image_grid(np.concatenate(rows), args.out / "attention.png", nrow=8, scale=8)
    similarity = model.position_similarity().numpy()
    grid = model.patch_embed.grid
    tiles = position_similarity_tiles(similarity, grid)
    save_image_grid(tiles, args.out / "position_similarity.png", nrow=grid, scale=16, padding=2, pad_value=1.0)
    near, far = neighbour_similarity(similarity, grid)
    steps_per_epoch = len(loader)
    line_plot(
        {"train loss": losses},
        args.out / "loss.png",
        title="ViT training loss",
        ylabel="cross-entropy",
        smooth=0.9,
        logy=True,
    )
    line_plot(
        {"test accuracy": ([steps_per_epoch * (e + 1) for e in range(epochs)], accuracies)},
        args.out / "accuracy.png",
        title="ViT test accuracy after each epoch",
        ylabel="accuracy",
    )
    return write_metrics(
        args,
        {
            "test_accuracy": accuracies[-1],
            "accuracy_per_epoch": accuracies,
            "final_train_loss": float(np.mean(losses[-20:])),
            "epochs": epochs,
            "steps": total_steps,
            "train_size": len(train),
            "test_size": len(test),
            "parameters": model.num_parameters(),
            "position_similarity_adjacent": near,
            "position_similarity_distant": far,
        },
    )


if __name__ == "__main__":
    main()
