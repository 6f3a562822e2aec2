"""CLIP: contrastive language-image pre-training (Radford et al., 2021), at the scale of digits.

Two encoders map an image and a caption to unit vectors of the same size:

    image x (B, 3, 32, 32) -> ImageEncoder (a small CNN) -> W_i -> L2-normalise -> u_i ∈ R^D
    caption y (B, L) tokens -> TextEncoder (transformer) -> feature at <end> -> W_t -> L2-normalise -> v_j ∈ R^D

and training makes true pairs similar and the other pairs in the batch dissimilar. With
the temperature τ = 1/s (the learned logit scale s = exp(t)), the batch's similarity
matrix is

    S_ij = s · ⟨u_i, v_j⟩          (B × B: rows images, columns captions)

and the loss is the symmetric cross-entropy (InfoNCE) over its rows and its columns:

    L = ½ [ CE(S, targets) + CE(Sᵀ, targetsᵀ) ]    (image → text, then text → image).

With one true caption per image the targets are the diagonal: image i belongs with
caption i. CLIP is not a generative model, but its text encoder gives text-to-image
generation the representation of the caption that it conditions on (``TextEncoder``'s
per-token features are τθ(y) of latent diffusion).

**The image encoder is a small CNN, not the ViT.** Both would work; the CNN is chosen
because (1) it is cheaper on a CPU: forward and backward of 128 images take 0.17 s
against 0.45 s for the ViT of ``models/vit.py`` at 32×32 (4×4 patches, d 64, 4 blocks),
measured on one core of the shared 2-core machine, and that keeps the demo within
minutes; (2) its locality prior learns stroke shape and thickness from few examples,
where a ViT needs more data or steps. Position must survive: the CNN reads its last
4×4 grid both averaged (what the digit is, wherever it stands) and by quadrant (where
it stands), see ``ImageEncoder``.

**Temperature.** s starts at 1/0.07 (t = log(1/0.07)), as in CLIP, and is learned;
``clamp_logit_scale_`` caps t at log 100 after each optimiser step, so logits stay
within ±100 and training cannot become unstable by sharpening without bound.

**Duplicate captions: soft targets from caption meaning.** Template captions repeat,
and a less specific caption ("a red 3") is true of many images. With the diagonal as the
only positive, a batch holding two red 3s asks the model to score image 1 higher with
"a red 3" than image 2, which is the same caption of the same kind of image: a false
negative, a contradiction that the model can only "solve" by memorising noise, and that
flattens the loss landscape for exactly the attributes we want it to learn. We use soft
targets instead (``soft_targets``): caption j is a positive of image i whenever it
*describes* it (every attribute the caption names equals the image's; identical
captions are a special case), and each row's target spreads evenly over its positives.
Batches without duplicates would be the other remedy, but with optional attributes even
distinct strings can describe the same image ("a red 3" and "something red" both fit a
red 3), so excluding them would need the same attribute test and would distort the
batch distribution; the soft targets use all the data and need no resampling.

**Zero-shot classification.** Embed one prompt per class ("the digit 7", "something
red"), and give each image the class whose text embedding is nearest (largest cosine).
Several prompts per class can be averaged (prompt ensembling, as in CLIP).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

import minigen as mg
import minigen.nn as nn
import minigen.nn.functional as F
from minigen.nn.transformer import TransformerBlock
from minigen.tensor import Tensor

LOGIT_SCALE_INIT = math.log(1 / 0.07)  # t₀: s = exp(t) = 1/τ starts at 1/0.07 ≈ 14.3
LOGIT_SCALE_MAX = math.log(100.0)  # t is clamped to ≤ log 100 after each step


def _as_tensor(value: Any, device: Any, name: str, kind: str) -> Tensor:
    """``value`` (a Tensor or array) as a Tensor on ``device``, checking its dtype kind ("iu" or "b")."""
    tensor = value if isinstance(value, Tensor) else Tensor(value)
    if tensor.dtype.kind not in kind:
        wanted = "integer token ids" if "i" in kind else "bool (True = padding)"
        raise TypeError(f"{name} must be {wanted}, got dtype {tensor.dtype}")
    if tensor.device != device:
        tensor = tensor.to(device)
    return tensor


def l2_normalize(x: Tensor, eps: float = 1e-12) -> Tensor:
    """x / ‖x‖ along the last dim (``F.normalize(x, dim=-1)`` in PyTorch); ε guards a zero vector."""
    return x / ((x * x).sum(dim=-1, keepdim=True) + eps).sqrt()


# ----------------------------------------------------------------------------- text encoder
class TextEncoder(nn.Module):
    """A bidirectional transformer over caption tokens: per-token features and a pooled vector.

        tokens (B, L) -> token embedding E[tokens] + position embedding P[0..L−1]    (B, L, d)
        -> ``depth`` TransformerBlocks (no causal mask; padded keys hidden)
        -> final LayerNorm                                                         (B, L, d)

    ``forward`` returns all L feature vectors: latent diffusion attends to them (τθ(y),
    M = L tokens of width d_τ = ``width``), with the same key-padding mask. ``pool`` takes
    the feature at each row's ``<end>`` token: every token attends to the whole caption,
    so ``<end>``, present in every caption at a different place, summarises it (CLIP
    pools at the end token too).

    ``key_padding_mask`` (B, L) is True at padding (PyTorch's convention): those keys are
    hidden from every query in every block, so whatever tokens stand there change
    nothing at the real positions. ``end_id`` is the ``<end>`` token's id (the shipped
    vocabulary's is 1).
    """

    def __init__(
        self,
        vocab_size: int,
        context_length: int = 16,
        width: int = 64,
        depth: int = 2,
        heads: int = 4,
        *,
        mlp_ratio: float = 4,
        end_id: int = 1,
    ) -> None:
        super().__init__()
        if not 0 <= end_id < vocab_size:
            raise ValueError(f"TextEncoder: end_id must be in 0..{vocab_size - 1}, got {end_id}")
        self.vocab_size = vocab_size
        self.context_length = context_length
        self.width = width
        self.end_id = end_id
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.position_embedding = nn.Embedding(context_length, width)
        self.blocks = nn.ModuleList(TransformerBlock(width, heads, mlp_ratio, causal=False) for _ in range(depth))
        self.ln_final = nn.LayerNorm(width)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Weights ~ N(0, 0.02), position embeddings N(0, 0.01), biases 0 (as in CLIP's text tower)."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.position_embedding.weight, std=0.01)

    def forward(self, tokens: Tensor, key_padding_mask: Tensor) -> Tensor:
        """Token ids (B, L) and padding mask (B, L, True = padding) -> per-token features (B, L, width)."""
        device = self.token_embedding.weight.device
        tokens = _as_tensor(tokens, device, "TextEncoder: tokens", "iu")
        mask = _as_tensor(key_padding_mask, device, "TextEncoder: key_padding_mask", "b")
        if tokens.ndim != 2 or tuple(mask.shape) != tuple(tokens.shape):
            raise ValueError(
                f"TextEncoder: tokens and key_padding_mask must both be (batch, length), got tokens "
                f"{tuple(tokens.shape)} and key_padding_mask {tuple(mask.shape)}"
            )
        B, L = tokens.shape
        if L > self.context_length:
            raise ValueError(f"TextEncoder: length {L} exceeds context_length {self.context_length}")
        x = self.token_embedding(tokens) + self.position_embedding(mg.arange(L, device=device))
        # The blocks' mask says which keys may be attended (True = may): the non-padding ones.
        may_attend = Tensor(~mask.data.reshape(B, 1, 1, L))
        for block in self.blocks:
            x = block(x, attn_mask=may_attend)
        return self.ln_final(x)

    def pool(self, features: Tensor, tokens: Tensor) -> Tensor:
        """The feature at each row's ``<end>`` token: (B, L, width), (B, L) -> (B, width)."""
        ids = tokens.data if isinstance(tokens, Tensor) else np.asarray(tokens)
        xp = features.xp
        ids = xp.asarray(ids)
        is_end = ids == self.end_id
        if not bool(is_end.any(axis=1).all()):
            raise ValueError(f"TextEncoder.pool: every row of tokens needs an <end> token (id {self.end_id})")
        end = xp.argmax(is_end, axis=1)  # the first <end> of each row
        return features[xp.arange(features.shape[0]), end]

    def encode(self, tokens: Tensor, key_padding_mask: Tensor) -> Tensor:
        """The pooled caption vector (B, width): ``pool(forward(tokens, mask), tokens)``."""
        return self.pool(self(tokens, key_padding_mask), tokens)


# ---------------------------------------------------------------------------- image encoder
class ImageEncoder(nn.Module):
    """A small CNN: (B, 3, 32, 32) -> (B, out_features), knowing both what and where.

        input: R, G, B and the brightness max(R, G, B)        32×32, 4
        conv 3×3 (stride 1)  -> ReLU        32×32, c₁
        conv 3×3 (stride 2)  -> ReLU        16×16, c₂
        conv 3×3 (stride 2)  -> ReLU         8×8,  c₃
        conv 3×3 (stride 2)  -> ReLU         4×4,  c₃    (each cell sees 17×17 pixels)
        conv 3×3 (stride 1)  -> ReLU         4×4,  c₃    (each cell sees the whole image)
        features = [ mean of the first layer (c₁), mean over the 4×4 grid (c₃),
                     the 2×2 quadrant means, flattened (4·c₃) ]

    Two read-outs of the last grid, because a caption names two kinds of attribute:
    *what* the digit is (its identity, colour, thickness), which should not depend on
    where it stands, and *where* it is (position, and size as the extent of the ink).
    The mean over the grid is the same wherever the digit stands, so a "7" detector
    learned at one place works at every place; the four quadrants (top-left, top-right,
    bottom-left, bottom-right) kept apart say where the ink is: "left" and "right", "top"
    and "bottom" reach the projection as different features, and a large digit fills
    more quadrants than a small one. (With only the whole 4×4 grid flattened, the 16·c₃
    "where" features outnumber the "what" ones and every place needs its own digit
    detectors in the projection; in our trial runs the digits were then learned slowly.)

    The first layer's mean is a colour read-out: its filters still see R, G and B
    separately, and averaging over the image keeps their colour statistics whatever the
    deeper layers learn. Without it, once the deep features tell the digits apart, the
    colour can fade from them: a contrastive loss asks only for what separates the pairs
    of a batch, and digit, size, position and thickness together nearly do ("feature
    suppression"). In a 1,500-step run of the demo without this read-out, zero-shot colour
    stayed at 0.17 while the digits reached 0.996; with it, both are learned.

    The brightness channel max(R, G, B) shows the glyph alike in every colour (each colour
    has a channel near 1): a red 7 and a blue 7 differ in R, G and B, but not there. The
    shape detectors can read it and so work for every colour at once, including colour
    and digit combinations never seen in training.
    """

    def __init__(self, in_channels: int = 3, channels: Sequence[int] = (16, 32, 64), image_size: int = 32) -> None:
        super().__init__()
        c1, c2, c3 = channels
        if image_size % 8 != 0:
            raise ValueError(f"ImageEncoder: image_size must be a multiple of 8, got {image_size}")
        self.conv1 = nn.Conv2d(in_channels + 1, c1, 3, padding=1)  # + the brightness channel
        self.conv2 = nn.Conv2d(c1, c2, 3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(c2, c3, 3, stride=2, padding=1)
        self.conv4 = nn.Conv2d(c3, c3, 3, stride=2, padding=1)
        self.conv5 = nn.Conv2d(c3, c3, 3, padding=1)
        self.out_features = c1 + c3 + 4 * c3

    def forward(self, images: Tensor) -> Tensor:
        brightness = images.amax(dim=1, keepdim=True)  # (B, 1, H, W): the glyph, whatever its colour
        x = F.relu(self.conv1(mg.cat([images, brightness], dim=1)))
        colour = x.mean(dim=(2, 3))  # (B, c₁): low-level colour statistics
        x = F.relu(self.conv2(x))
        x = F.relu(self.conv3(x))
        x = F.relu(self.conv4(x))
        x = F.relu(self.conv5(x))  # (B, c₃, 4, 4)
        what = x.mean(dim=(2, 3))  # (B, c₃): the same wherever the digit stands
        where = F.avg_pool2d(x, x.shape[-1] // 2).flatten(1)  # (B, 4·c₃): one block per quadrant
        return mg.cat([colour, what, where], dim=1)


# ------------------------------------------------------------------------------------ loss
def soft_targets(positives: Any) -> tuple[np.ndarray, np.ndarray]:
    """Soft targets from a positives matrix P (B_images, B_texts), P_ij = caption j describes image i.

    Returns (image → text targets, text → image targets): each row of P (resp. Pᵀ)
    divided by its count, so each image's probability mass spreads evenly over every
    caption that is true of it, and each caption's over every image it is true of.
    The diagonal must be positive (each image's own caption describes it).
    """
    p = np.asarray(positives, dtype=bool)
    if p.ndim != 2 or p.shape[0] != p.shape[1] or not p.diagonal().all():
        raise ValueError(
            f"soft_targets: positives must be a square bool matrix with a True diagonal, got {p.dtype} {p.shape}"
        )
    p = p.astype(np.float32)
    return p / p.sum(axis=1, keepdims=True), p.T / p.T.sum(axis=1, keepdims=True)


def clip_loss(
    image_embeddings: Tensor,
    text_embeddings: Tensor,
    logit_scale: Tensor | float,
    targets: tuple[Any, Any] | None = None,
) -> Tensor:
    """The symmetric contrastive loss L = ½ [CE(S, T_i→t) + CE(Sᵀ, T_t→i)], S = exp(t) · U Vᵀ.

    * ``image_embeddings`` U (B, D), ``text_embeddings`` V (B, D): L2-normalised rows;
    * ``logit_scale`` t (the log of s = 1/τ): a scalar Tensor (learned) or a float;
    * ``targets``: None for the diagonal (row i's positive is column i), or the pair of
      (B, B) probability matrices of ``soft_targets`` (image → text, text → image).

    A batch of one has no negatives (the loss would be 0 whatever the encoders do), so
    it is refused.
    """
    if image_embeddings.ndim != 2 or tuple(image_embeddings.shape) != tuple(text_embeddings.shape):
        raise ValueError(
            f"clip_loss: image_embeddings and text_embeddings must both be (batch, dim), got "
            f"{tuple(image_embeddings.shape)} and {tuple(text_embeddings.shape)}"
        )
    B = image_embeddings.shape[0]
    if B < 2:
        raise ValueError(f"clip_loss: the batch size must be at least 2 (the other pairs are the negatives), got {B}")
    scale = logit_scale.exp() if isinstance(logit_scale, Tensor) else math.exp(logit_scale)
    logits = scale * (image_embeddings @ text_embeddings.mT)  # S (B, B): rows images, columns captions
    if targets is None:
        labels = mg.arange(B, device=logits.device)
        return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.mT, labels))
    image_to_text, text_to_image = (Tensor(np.asarray(t, np.float32), device=logits.device) for t in targets)
    for name, t in (("image-to-text", image_to_text), ("text-to-image", text_to_image)):
        if tuple(t.shape) != (B, B):
            raise ValueError(f"clip_loss: the {name} targets must be (batch, batch) = {(B, B)}, got {tuple(t.shape)}")
    image_to_text, text_to_image = image_to_text.to(logits.dtype), text_to_image.to(logits.dtype)
    return 0.5 * (F.cross_entropy(logits, image_to_text) + F.cross_entropy(logits.mT, text_to_image))


# ------------------------------------------------------------------------------------ CLIP
class CLIP(nn.Module):
    """Image and text encoders with projections to a shared width D and a learned temperature.

    * ``encode_image(images)`` -> u (B, D), unit rows;
    * ``encode_text(tokens, key_padding_mask)`` -> v (B, D), unit rows;
    * ``forward(images, tokens, key_padding_mask)`` -> the similarity logits S (B, B),
      rows images, columns captions (``logits_per_image``; its transpose is per text);
    * ``loss(images, tokens, key_padding_mask, positives=None)``: ``clip_loss`` with
      soft targets when a positives matrix (``captions.describes``) is given;
    * ``clamp_logit_scale_()``: call after each optimiser step;
    * ``zero_shot_weights`` / ``zero_shot_predict``: classify images with prompts.

    ``text_encoder`` is a ``TextEncoder``: its state_dict can initialise another model's
    text encoder (latent diffusion's τθ).
    """

    def __init__(
        self,
        vocab_size: int,
        context_length: int = 16,
        embed_dim: int = 64,
        text_width: int = 64,
        text_depth: int = 2,
        text_heads: int = 4,
        image_channels: Sequence[int] = (16, 32, 64),
        image_size: int = 32,
        end_id: int = 1,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.image_encoder = ImageEncoder(3, image_channels, image_size)
        self.text_encoder = TextEncoder(vocab_size, context_length, text_width, text_depth, text_heads, end_id=end_id)
        self.image_projection = nn.Linear(self.image_encoder.out_features, embed_dim, bias=False)  # W_i
        self.text_projection = nn.Linear(text_width, embed_dim, bias=False)  # W_t
        self.logit_scale = nn.Parameter(mg.tensor(LOGIT_SCALE_INIT))  # t, with s = exp(t) = 1/τ

    def encode_image(self, images: Tensor) -> Tensor:
        """Images (B, 3, H, W) -> u = W_i f(x) / ‖W_i f(x)‖, (B, D)."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"CLIP.encode_image: images must be (batch, 3, H, W), got {tuple(images.shape)}")
        return l2_normalize(self.image_projection(self.image_encoder(images)))

    def encode_text(self, tokens: Tensor, key_padding_mask: Tensor) -> Tensor:
        """Captions (B, L) tokens and mask -> v = W_t g(y) / ‖W_t g(y)‖, (B, D), g(y) pooled at <end>."""
        return l2_normalize(self.text_projection(self.text_encoder.encode(tokens, key_padding_mask)))

    def forward(self, images: Tensor, tokens: Tensor, key_padding_mask: Tensor) -> Tensor:
        """The similarity logits S_ij = s · ⟨u_i, v_j⟩ (B_images, B_texts)."""
        return self.logit_scale.exp() * (self.encode_image(images) @ self.encode_text(tokens, key_padding_mask).mT)

    def loss(self, images: Tensor, tokens: Tensor, key_padding_mask: Tensor, positives: Any = None) -> Tensor:
        """``clip_loss`` of a batch of pairs; ``positives`` (B, B) bool: caption j describes image i."""
        u, v = self.encode_image(images), self.encode_text(tokens, key_padding_mask)
        targets = None if positives is None else soft_targets(positives)
        return clip_loss(u, v, self.logit_scale, targets)

    @mg.no_grad()
    def clamp_logit_scale_(self, max_value: float = LOGIT_SCALE_MAX) -> None:
        """t ← min(t, log 100): keeps the temperature τ = exp(−t) ≥ 0.01 (call after each step)."""
        self.logit_scale.clamp_(max=max_value)

    @mg.no_grad()
    def zero_shot_weights(self, tokens: Tensor, key_padding_mask: Tensor, prompts_per_class: int = 1) -> Tensor:
        """One unit vector per class (C, D) from C·k prompt encodings (class-major: the k prompts of
        class 0 first): the mean of each class's prompt embeddings, normalised again."""
        v = self.encode_text(tokens, key_padding_mask)
        n = v.shape[0]
        if prompts_per_class < 1 or n % prompts_per_class:
            raise ValueError(
                f"CLIP.zero_shot_weights: prompts_per_class must divide the {n} prompts, got {prompts_per_class}"
            )
        return l2_normalize(v.reshape(n // prompts_per_class, prompts_per_class, v.shape[-1]).mean(dim=1))

    @mg.no_grad()
    def zero_shot_predict(self, images: Tensor, class_weights: Tensor) -> Tensor:
        """The nearest class for each image: argmax_c ⟨u, w_c⟩, int64 (B,) (``class_weights`` (C, D))."""
        similarity = self.encode_image(images) @ class_weights.mT
        return Tensor(similarity.xp.argmax(similarity.data, axis=1))
