"""Vector quantisation: VQ-VAE (van den Oord et al., 2017), VQ-GAN (Esser et al., 2021) and a GPT prior.

A VQ-VAE's code is discrete. The encoder turns an image into a grid of vectors z_e, and
each vector is replaced by the nearest of K learned vectors, the codebook {e_1, …, e_K}:

    k(i) = argmin_k ‖z_i − e_k‖²,        z_q,i = e_{k(i)}

so an image becomes a small grid of integers, the code IDs k(i) (here 16×16 digits become
4×4 grids of IDs out of K = 64). The lecture builds it from k-means: cluster the encoder's
vectors, use the centroids as the codebook, and replace every vector by its centroid's ID.
A transformer then models the sequence of IDs, which is how ViT-VQGAN and DALL-E generate
images: predict one code at a time, then decode the grid.

Training needs three things the argmin does not give:

* **a gradient through the quantiser.** argmin is piecewise constant, so ∂z_q/∂z_e = 0 and
  the encoder would learn nothing from the reconstruction loss. The *straight-through*
  estimator copies the decoder's gradient past the quantiser:
  z_q = z_e + sg(e − z_e) has the value e and the gradient of z_e (sg: stop-gradient,
  ``detach``).
* **a loss that moves the codebook** towards the encoder's outputs, and the encoder
  towards the codes it chose (``vq_loss``):

      L_VQ = ‖sg(z_e) − e‖²  +  β ‖z_e − sg(e)‖²,        β = 0.25
              codebook term      commitment term

* **codebook care**, because a code that is never chosen never gets a gradient and stays
  dead: k-means initialisation, an EMA codebook, dead-code restarts, and measuring
  perplexity and codes used over a whole epoch.

Contents (reading order): the maths (``squared_distances``, ``nearest_code``,
``codebook_loss``, ``commitment_loss``, ``straight_through``, ``quantize``); codebook
statistics (``code_counts``, ``perplexity``, ``CodebookUsage``); ``kmeans`` and
``distortion``; the module ``VectorQuantizer`` (EMA, restarts, k-means init); the
``VQVAE``; the VQ-GAN's losses and ``adaptive_weight``; ``train_step``; the prior ``CodePrior``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any, NamedTuple

import minigen as mg
import minigen.nn as nn
import minigen.nn.functional as F
from minigen import backend
from minigen.models.autoencoder import ConvDecoder, ConvEncoder
from minigen.models.gpt import GPT, sample_next
from minigen.models.pix2pix import frozen
from minigen.tensor import Tensor

BETA = 0.25  # the commitment weight β of the VQ-VAE paper
EMA_DECAY = 0.99  # γ of the EMA codebook
MAX_ADAPTIVE_WEIGHT = 1e4  # VQ-GAN clamps λ to [0, 1e4]


# =========================================================================== the maths
def squared_distances(z: Tensor, codebook: Tensor) -> Tensor:
    """All squared distances between M vectors and K codes, with one matmul:

        d_ik = ‖z_i − e_k‖² = ‖z_i‖² − 2 z_i·e_k + ‖e_k‖²          z (M, D), codebook (K, D) → (M, K)

    Expanding the square turns M·K vector differences into one (M, D) × (D, K) matrix
    product plus two vectors of norms, which is what makes quantising thousands of
    vectors against hundreds of codes cheap.
    """
    return z.square().sum(dim=1, keepdim=True) - 2.0 * (z @ codebook.t()) + codebook.square().sum(dim=1)


def nearest_code(z: Tensor, codebook: Tensor) -> Tensor:
    """k(i) = argmin_k ‖z_i − e_k‖² for each row of ``z`` (M, D): int64 (M,).

    Ties go to the lowest index (argmin returns the first minimum). No gradient: the
    index is piecewise constant in z.
    """
    if z.ndim != 2 or codebook.ndim != 2 or z.shape[1] != codebook.shape[1]:
        raise ValueError(
            f"nearest_code: expected vectors (M, D) and a codebook (K, D) with the same D, got "
            f"{tuple(z.shape)} and {tuple(codebook.shape)}"
        )
    with mg.no_grad():
        return squared_distances(z.detach(), codebook.detach()).argmin(dim=1)


def codebook_loss(z_e: Tensor, e: Tensor) -> Tensor:
    """‖sg(z_e) − e‖², the mean over all elements: moves the chosen codes towards the encoder's
    outputs, and sends no gradient to the encoder (∂/∂e = 2(e − z_e)/n, ∂/∂z_e = 0)."""
    return F.mse_loss(e, z_e.detach())


def commitment_loss(z_e: Tensor, e: Tensor) -> Tensor:
    """‖z_e − sg(e)‖², the mean over all elements: keeps the encoder's outputs close to the codes
    they chose ("commits" the encoder), and leaves the codebook alone (∂/∂z_e = 2(z_e − e)/n)."""
    return F.mse_loss(z_e, e.detach())


def straight_through(z_e: Tensor, e: Tensor) -> Tensor:
    """z_q = z_e + sg(e − z_e): the value of e, the gradient of z_e (∂z_q/∂z_e = I, ∂z_q/∂e = 0).

    The decoder's gradient ∂L/∂z_q is copied to the encoder unchanged, as if quantisation
    were the identity: the straight-through estimator (Bengio et al., 2013).
    """
    return z_e + (e - z_e).detach()


class VQOutput(NamedTuple):
    z_q: Tensor  # quantised vectors with the straight-through gradient, shaped like the input
    loss: Tensor  # L_VQ = codebook term + β · commitment term
    indices: Tensor  # the code IDs k(i), int64, the input's shape without the code dimension
    codebook_loss: Tensor
    commitment_loss: Tensor


def quantize(z_e: Tensor, codebook: Tensor, beta: float = BETA, codebook_term: bool = True) -> VQOutput:
    """Quantise vectors z_e (M, D) with ``codebook`` (K, D): codes, z_q and the VQ loss.

        k(i) = argmin_k ‖z_i − e_k‖²,   e = codebook[k],
        L_VQ = ‖sg(z_e) − e‖² + β ‖z_e − sg(e)‖²,     z_q = z_e + sg(e − z_e)

    **The loss is computed from z_e and e, before the straight-through substitution.**
    Two bugs of widely copied reference implementations come from getting this wrong:

    * *The loss computed after the substitution*, from z_q = z_e + sg(e − z_e) instead of
      e. Its value is the same (z_q equals e), but z_q's gradient goes to z_e, not to the
      codebook: ‖sg(z_e) − z_q‖² sends 2(e − z_e)/n to the *encoder* and nothing to the
      codes, so the codebook never moves (only dead or restarted codes ever change) and the
      encoder's total pull is 2(β − 1)(z_e − e)/n, *away* from its codes for β < 1.
    * *β on the wrong term*, β‖sg(z_e) − e‖² + ‖z_e − sg(e)‖² (the two terms' names
      swapped): the same value again, but the codebook learns 4× slower and the encoder is
      pinned 4× harder to codes that are not yet any good.

    Both give the right loss value, which is why they survive: only the gradients show
    them (``tests/test_vq.py`` and the ``vector_quantize`` exercise check the gradients).
    ``codebook_term=False`` leaves the codebook term out (it is zero): with an EMA codebook
    the codes are moved by the moving averages instead of by a gradient.
    """
    indices = nearest_code(z_e, codebook)
    e = F.embedding(indices, codebook)  # e_{k(i)}: the gradient goes to the chosen rows only
    commitment = commitment_loss(z_e, e)
    if codebook_term:
        book = codebook_loss(z_e, e)
    else:
        book = mg.zeros((), dtype=z_e.dtype, device=z_e.device)
    loss = book + beta * commitment  # from z_e and e: before the straight-through substitution
    return VQOutput(straight_through(z_e, e), loss, indices, book, commitment)


# ================================================================= codebook statistics
def code_counts(indices: Tensor, num_codes: int) -> Tensor:
    """n_k = #{i : k(i) = k}, how often each code was chosen: float (K,), on the indices' device.

    A scatter-add of ones, not ``bincount``: CuPy's bincount reads the largest index back to
    the host to size its output, a host sync in every training step.
    """
    xp = indices.xp
    flat = indices.data.reshape(-1)
    counts = xp.zeros(num_codes, dtype="float32")
    backend.scatter_add(counts, flat, xp.ones(flat.shape, dtype="float32"))
    return Tensor(counts)


def perplexity(counts: Tensor) -> Tensor:
    """exp(H(p)) of the usage distribution p_k = n_k / Σ_j n_j, with H(p) = −Σ_k p_k log p_k.

    The "effective number of codes": K when every code is used equally often, 1 when one
    code takes everything. Codes with n_k = 0 contribute 0 (p log p → 0).
    """
    p = counts / counts.sum()
    xp = p.xp
    safe = Tensor(xp.where(p.data > 0, p.data, 1.0))  # log 1 = 0 where p = 0
    return (-(p * safe.log()).sum()).exp()


class CodebookUsage:
    """Code counts accumulated over many batches, e.g. a whole epoch.

    Per-batch figures flatter a codebook: a batch of 64 images cannot show that half the
    codes are used by nobody in the whole data set, or that a few codes are used by
    everybody. Count over the epoch, then read ``perplexity`` and ``codes_used``::

        usage = CodebookUsage(K)
        for x in loader:
            usage.update(model.encode_indices(x))
        usage.perplexity(), usage.fraction_used()
    """

    def __init__(self, num_codes: int) -> None:
        if num_codes < 1:
            raise ValueError(f"CodebookUsage: num_codes must be at least 1, got {num_codes}")
        self.num_codes = num_codes
        self.counts: Tensor | None = None  # on the device of the first indices

    def update(self, indices: Tensor) -> None:
        counts = code_counts(indices, self.num_codes)
        self.counts = counts if self.counts is None else self.counts + counts

    def _counts(self) -> Tensor:
        if self.counts is None:
            raise ValueError("CodebookUsage: no indices counted yet; call update() first")
        return self.counts

    def perplexity(self) -> float:
        return perplexity(self._counts()).item()

    def codes_used(self) -> int:
        return int((self._counts() > 0).sum().item())

    def fraction_used(self) -> float:
        return self.codes_used() / self.num_codes

    def histogram(self) -> list[float]:
        """n_k for every code (host numbers, for a picture)."""
        return self._counts().numpy().tolist()


# ================================================================================ k-means
def one_hot(indices: Tensor, num_classes: int, dtype: Any = None) -> Tensor:
    """R (M, K) with R_ik = 1 if k(i) = k, else 0: the assignments as a matrix, so that
    Rᵀ 1 counts the members of each cluster and Rᵀ Z sums them."""
    classes = mg.arange(num_classes, device=indices.device)
    return (indices.reshape(-1, 1) == classes).to(dtype or mg.float32)


def distortion(z: Tensor, codebook: Tensor) -> Tensor:
    """J = (1/M) Σ_i min_k ‖z_i − e_k‖²: the k-means objective, the mean squared distance of
    each vector to its nearest code (what quantisation throws away)."""
    with mg.no_grad():
        return squared_distances(z, codebook).min(dim=1).values.clamp(min=0.0).mean()


class KMeansResult(NamedTuple):
    centroids: Tensor  # (K, D)
    assignments: Tensor  # (M,) the nearest centroid of each vector
    distortions: Tensor  # (iters + 1,) J before the first and after each iteration


@mg.no_grad()
def kmeans(z: Tensor, k: int, iters: int = 20) -> KMeansResult:
    """The lecture's k-means (Lloyd's algorithm) on the rows of ``z`` (M, D):

    1. initialise the k centroids as k distinct vectors of z picked at random;
    2. assignment: each vector goes to its nearest centroid, k(i) = argmin_k ‖z_i − c_k‖²;
    3. update: each centroid moves to the mean of its vectors, c_k = Σ_{k(i)=k} z_i / n_k
       (a centroid that lost all its vectors stays where it is);
    4. repeat 2-3 ``iters`` times.

    Each step can only lower the distortion J = (1/M) Σ_i ‖z_i − c_{k(i)}‖². The random
    picks use minigen's generator (``mg.manual_seed``).
    """
    if k < 1:
        raise ValueError(f"kmeans: k must be at least 1, got {k}")
    if z.ndim != 2 or z.shape[0] < k:
        raise ValueError(f"kmeans: need at least k = {k} vectors as rows of a 2-D tensor, got shape {tuple(z.shape)}")
    z = z.detach()
    picks = backend.random_permutation(z.shape[0], z.device)[:k]
    centroids = Tensor(z.data[picks])
    history = [distortion(z, centroids)]
    for _ in range(iters):
        assignments = nearest_code(z, centroids)
        members = one_hot(assignments, k, z.dtype)  # (M, K)
        counts = members.sum(dim=0).reshape(k, 1)  # n_k
        means = (members.t() @ z) / counts.clamp(min=1.0)  # Σ z_i / n_k
        centroids = mg.where(counts > 0, means, centroids)
        history.append(distortion(z, centroids))
    return KMeansResult(centroids, nearest_code(z, centroids), mg.stack(history))


# ==================================================================== the quantiser module
class VectorQuantizer(nn.Module):
    """The VQ layer: K codes of dimension D, and everything that keeps them alive.

    ``forward(z_e)`` quantises a grid (N, D, H, W) (the encoder's output, D = ``code_dim``
    channels) or vectors (M, D) and returns a ``VQOutput`` shaped like the input (see
    ``quantize`` for the maths and the loss).

    Codebook care, each optional:

    * ``kmeans_init_(z)``: replace the codebook by the k-means centroids of encoder outputs
      (from the first batch or batches). A random codebook starts far from where the
      encoder's vectors are, and the few codes that happen to be nearest win everything.
    * ``ema=True``: the codes are moving averages of the vectors assigned to them instead
      of parameters trained by the codebook term (van den Oord et al., appendix):

          N_k ← γ N_k + (1 − γ) n_k,        m_k ← γ m_k + (1 − γ) Σ_{i: k(i)=k} z_i
          Ñ_k = (N_k + ε) / (Σ_j N_j + K ε) · Σ_j N_j          (Laplace smoothing)
          e_k = m_k / Ñ_k

      with γ = ``decay`` (0.99) and ε = ``epsilon``. The smoothing keeps a code with
      N_k → 0 from dividing by zero. The update runs in ``forward`` in training mode.
    * ``restart_dead_codes_(z)``: a code chosen fewer than ``dead_threshold`` times per
      training step on average since the last restart is *dead*; it is replaced by an
      encoder output drawn from the batch, so it lands where the data is and starts being
      chosen (Dhariwal et al., Jukebox, 2020).

    The codebook starts as N(0, I), ``nn.Embedding``'s default, which many reference
    implementations keep: the "random initialisation" k-means is compared with. Those
    codes lie far from a fresh encoder's small outputs, so the one or two nearest codes
    win every vector, only they get gradients, and the rest stay dead: codebook collapse,
    which k-means initialisation and restarts prevent (``demos/vq_digits.py`` shows both).
    """

    def __init__(
        self,
        num_codes: int,
        code_dim: int,
        beta: float = BETA,
        ema: bool = False,
        decay: float = EMA_DECAY,
        epsilon: float = 1e-5,
        dead_threshold: float = 1.0,
    ) -> None:
        super().__init__()
        if not isinstance(num_codes, numbers.Integral) or num_codes < 1:
            raise ValueError(f"VectorQuantizer: num_codes (K) must be an integer ≥ 1, got {num_codes!r}")
        if not isinstance(code_dim, numbers.Integral) or code_dim < 1:
            raise ValueError(f"VectorQuantizer: code_dim (D) must be an integer ≥ 1, got {code_dim!r}")
        if beta < 0:
            raise ValueError(f"VectorQuantizer: beta must be ≥ 0, got {beta}")
        if not 0.0 < decay < 1.0:
            raise ValueError(f"VectorQuantizer: decay must lie in (0, 1), got {decay}")
        if dead_threshold < 0:
            raise ValueError(f"VectorQuantizer: dead_threshold must be ≥ 0, got {dead_threshold}")
        self.num_codes, self.code_dim, self.beta = int(num_codes), int(code_dim), beta
        self.ema, self.decay, self.epsilon, self.dead_threshold = ema, decay, epsilon, dead_threshold
        initial = mg.randn(num_codes, code_dim)  # N(0, I), as nn.Embedding
        if ema:  # moved by the moving averages, not by gradients
            self.register_buffer("codebook", initial)
            self.register_buffer("cluster_size", mg.ones(num_codes))  # N_k
            self.register_buffer("embed_sum", initial.clone())  # m_k (= e_k N_k)
        else:
            self.codebook = nn.Parameter(initial.data)
        # Uses of each code since the last restart (training forwards only), and how many steps that was.
        self.register_buffer("window_counts", mg.zeros(num_codes), persistent=False)
        self.steps_since_restart = 0

    def extra_repr(self) -> str:
        return f"num_codes={self.num_codes}, code_dim={self.code_dim}, beta={self.beta}, ema={self.ema}"

    # ------------------------------------------------------------------------- forward
    def _flatten(self, z_e: Tensor) -> Tensor:
        """(N, D, H, W) → (N·H·W, D) in raster order (or (M, D) unchanged), checking D."""
        if z_e.ndim not in (2, 4):
            raise ValueError(
                f"VectorQuantizer: expected a grid of code vectors (N, D, H, W) or vectors (M, D), got shape "
                f"{tuple(z_e.shape)}"
            )
        if z_e.shape[1] != self.code_dim:
            raise ValueError(
                f"VectorQuantizer: the encoder's output has D = {z_e.shape[1]} channels per code vector (shape "
                f"{tuple(z_e.shape)}), but the codebook's code_dim is {self.code_dim}; the encoder's latent_channels "
                f"and the quantizer's code_dim must be equal"
            )
        if z_e.ndim == 2:
            return z_e
        return z_e.permute(0, 2, 3, 1).reshape(-1, self.code_dim)

    def forward(self, z_e: Tensor) -> VQOutput:
        flat = self._flatten(z_e)
        out = quantize(flat, self.codebook, self.beta, codebook_term=not self.ema)
        if self.training:
            with mg.no_grad():
                counts = code_counts(out.indices, self.num_codes)
                self.window_counts.data += counts.data
                self.steps_since_restart += 1
                if self.ema:
                    self.ema_update_(flat.detach(), out.indices)
        if z_e.ndim == 2:
            return out
        n, _, h, w = z_e.shape
        z_q = out.z_q.reshape(n, h, w, self.code_dim).permute(0, 3, 1, 2)
        return out._replace(z_q=z_q, indices=out.indices.reshape(n, h, w))

    def lookup(self, indices: Tensor) -> Tensor:
        """Code IDs (N, h, w) → the grid of their code vectors (N, D, h, w), e.g. to decode samples."""
        return F.embedding(indices, self.codebook).permute(0, 3, 1, 2)

    # ----------------------------------------------------------------------- codebook care
    @mg.no_grad()
    def ema_update_(self, z: Tensor, indices: Tensor) -> None:
        """One EMA step of the codebook from vectors z (M, D) and their codes (see the class docstring)."""
        gamma = self.decay
        members = one_hot(indices, self.num_codes, z.dtype)  # (M, K)
        n = members.sum(dim=0)  # n_k
        sums = members.t() @ z  # Σ_{k(i)=k} z_i, (K, D)
        self.cluster_size.data[...] = gamma * self.cluster_size.data + (1.0 - gamma) * n.data
        self.embed_sum.data[...] = gamma * self.embed_sum.data + (1.0 - gamma) * sums.data
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.epsilon) / (total + self.num_codes * self.epsilon) * total
        self.codebook.data[...] = (self.embed_sum / smoothed.reshape(-1, 1)).data
        self.codebook.bump_version()

    @mg.no_grad()
    def kmeans_init_(self, z: Tensor, iters: int = 20) -> KMeansResult:
        """Set the codebook to the k-means centroids of the vectors z (M, D) or grid (N, D, H, W)."""
        flat = self._flatten(z.detach())
        result = kmeans(flat, self.num_codes, iters)
        self.codebook.data[...] = result.centroids.data
        self.codebook.bump_version()
        if self.ema:  # N_k = 1 and m_k = e_k: consistent with the new codes
            self.cluster_size.data[...] = 1.0
            self.embed_sum.data[...] = result.centroids.data
        return result

    @mg.no_grad()
    def restart_dead_codes_(self, z: Tensor) -> Tensor:
        """Replace every dead code by an encoder output drawn from ``z`` (M, D) or (N, D, H, W).

        Dead: used fewer than ``dead_threshold`` times per step, on average, over the
        ``steps_since_restart`` training steps since the last call. Returns the (K,) bool
        mask of the codes replaced (on the device, no host sync), and starts a new window.
        """
        flat = self._flatten(z.detach())
        steps = max(self.steps_since_restart, 1)
        dead = self.window_counts < self.dead_threshold * steps  # (K,) bool
        picks = backend.random_integers(0, flat.shape[0], (self.num_codes,), flat.device)
        candidates = Tensor(flat.data[picks])  # one random encoder output per code
        column = dead.reshape(-1, 1)
        self.codebook.data[...] = mg.where(column, candidates, self.codebook.detach()).data
        self.codebook.bump_version()
        if self.ema:  # the restarted code's averages start from its new vector
            self.cluster_size.data[...] = mg.where(dead, mg.ones_like(self.cluster_size), self.cluster_size).data
            self.embed_sum.data[...] = mg.where(column, candidates, self.embed_sum).data
        self.window_counts.data[...] = 0.0
        self.steps_since_restart = 0
        return dead


# ================================================================================ VQ-VAE
class VQVAEOutput(NamedTuple):
    x_hat: Tensor  # the decoder's pixels (linear); .clamp(0, 1) is the picture
    z_e: Tensor  # the encoder's grid (N, D, h, w)
    vq: VQOutput


class VQVAE(nn.Module):
    """Encoder → vector quantiser → decoder.

        x (N, C, 16, 16) ─ConvEncoder→ z_e (N, D, 4, 4) ─VectorQuantizer→ z_q, k (N, 4, 4)
          ─ConvDecoder→ x̂ (N, C, 16, 16)

    **Why a 4×4 grid and K = 64 for 16×16 digits.** Each code stands for a 4×4 patch
    (its receptive field is larger), a stroke segment or a bend, of which a digit has a
    few dozen kinds: 64 codes cover them with room for thickness and position, and every
    one of them is needed often enough to stay alive. The whole image is then 16 IDs of
    6 bits (96 bits), plenty for which digit and its style, and a sequence of 16 tokens
    is short enough for a small GPT prior to learn in minutes on a CPU. An 8×8 grid
    would reconstruct finer detail but makes the prior's sequences 4× longer; a 2×2
    grid would need codes for whole quarter-digits.

    Training minimises L = ‖x − x̂‖² (mean over pixels) + L_VQ (``train_step``).
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_codes: int = 64,
        code_dim: int = 16,
        hidden_channels: int = 32,
        downsamples: int = 2,
        beta: float = BETA,
        ema: bool = False,
        decay: float = EMA_DECAY,
        dead_threshold: float = 1.0,
    ) -> None:
        super().__init__()
        self.encoder = ConvEncoder(in_channels, code_dim, hidden_channels, downsamples)
        self.quantizer = VectorQuantizer(num_codes, code_dim, beta, ema, decay, dead_threshold=dead_threshold)
        self.decoder = ConvDecoder(code_dim, in_channels, hidden_channels, downsamples)

    @property
    def num_codes(self) -> int:
        return self.quantizer.num_codes

    def encode(self, x: Tensor) -> Tensor:
        """z_e = encoder(x): (N, D, h, w), continuous."""
        return self.encoder(x)

    def forward(self, x: Tensor) -> VQVAEOutput:
        z_e = self.encoder(x)
        vq = self.quantizer(z_e)
        return VQVAEOutput(self.decoder(vq.z_q), z_e, vq)

    @mg.no_grad()
    def encode_indices(self, x: Tensor) -> Tensor:
        """The image as its grid of code IDs (N, h, w), int64."""
        z_e = self.encoder(x)
        flat = self.quantizer._flatten(z_e)
        n, _, h, w = z_e.shape
        return nearest_code(flat, self.quantizer.codebook).reshape(n, h, w)

    def decode_indices(self, indices: Tensor) -> Tensor:
        """A grid of code IDs (N, h, w) → images decoder(e_k), clamped to [0, 1]."""
        return self.decoder(self.quantizer.lookup(indices)).clamp(0.0, 1.0)

    def reconstruct(self, x: Tensor) -> Tensor:
        """x̂ = decoder(quantise(encoder(x))) as a picture in [0, 1]."""
        return self.decode_indices(self.encode_indices(x))


def psnr(x_hat: Tensor, x: Tensor) -> float:
    """Peak signal-to-noise ratio of images in [0, 1]: 10 log₁₀(1 / MSE), in dB (host number)."""
    mse = (x_hat - x).square().mean().item()
    return 10.0 * math.log10(1.0 / max(mse, 1e-12))


# ================================================================================ VQ-GAN
def hinge_discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """L_D = ½ (E[max(0, 1 − D(x))] + E[max(0, 1 + D(x̂))]): the hinge loss of VQ-GAN's PatchGAN,
    averaged over every patch logit. D stops being pushed once a patch is classified with margin 1."""
    return 0.5 * ((1.0 - real_logits).relu().mean() + (1.0 + fake_logits).relu().mean())


def hinge_generator_loss(fake_logits: Tensor) -> Tensor:
    """L_GAN = −E[D(x̂)]: the decoder raises D's score of its reconstructions."""
    return -fake_logits.mean()


def adaptive_weight(
    rec_loss: Tensor, gan_loss: Tensor, last_layer: Tensor, max_weight: float = MAX_ADAPTIVE_WEIGHT
) -> Tensor:
    """VQ-GAN's balance of the two losses (Esser et al., eq. 7):

        λ = ‖∇_{G_L} L_rec‖ / (‖∇_{G_L} L_GAN‖ + 10⁻⁴),   clamped to [0, 10⁴], no gradient

    where G_L is the weight of the decoder's last layer. The adversarial term λ·L_GAN then
    pulls on the last layer as hard as the reconstruction term does, whatever the scales
    of the two losses (and however they drift during training). Both gradients are taken
    with ``mg.grad``, keeping the graph for the backward pass that follows.
    """
    (g_rec,) = mg.grad(rec_loss, last_layer, retain_graph=True)
    (g_gan,) = mg.grad(gan_loss, last_layer, retain_graph=True)
    weight = g_rec.square().sum().sqrt() / (g_gan.square().sum().sqrt() + 1e-4)
    return weight.clamp(0.0, max_weight).detach()


# ============================================================================== training
def train_step(
    model: VQVAE,
    optimizer: Any,
    x: Tensor,
    discriminator: nn.Module | None = None,
    opt_d: Any = None,
    gan_active: bool = False,
    gan_weight: float = 1.0,
    restart_dead: bool = False,
) -> dict[str, Tensor]:
    """One VQ-VAE (or, with a discriminator, VQ-GAN) step on a batch of images x in [0, 1].

        L = ‖x − x̂‖² + L_VQ                                   (VQ-VAE)
        L = ‖x − x̂‖² + L_VQ + w · λ · L_GAN,   λ = adaptive_weight   (VQ-GAN, once ``gan_active``)

    then, when the GAN is active, one discriminator step on the hinge loss with x̂
    detached. The GAN is switched on after a start step by the caller (``gan_active``):
    the discriminator only helps once the reconstructions are roughly right. With
    ``restart_dead`` the dead codes are restarted from this batch's encoder outputs after
    the update. Returns detached device scalars (no host sync).
    """
    out = model(x)
    x_hat = out.x_hat
    rec = F.mse_loss(x_hat, x)
    loss = rec + out.vq.loss
    stats = {"reconstruction": rec.detach(), "vq": out.vq.loss.detach(), "commitment": out.vq.commitment_loss.detach()}
    use_gan = discriminator is not None and gan_active
    if use_gan:
        with frozen(discriminator):  # the gradient goes through D to x̂, D's weights keep none
            g_adv = hinge_generator_loss(discriminator(x_hat))
            weight = adaptive_weight(rec, g_adv, model.decoder.last_layer.weight)
            loss = loss + gan_weight * weight * g_adv
        stats.update({"g_adv": g_adv.detach(), "adaptive_weight": weight})
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    if use_gan:
        d_loss = hinge_discriminator_loss(discriminator(x), discriminator(x_hat.detach()))
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()
        stats["d_loss"] = d_loss.detach()
    if restart_dead:
        stats["restarted"] = model.quantizer.restart_dead_codes_(out.z_e).sum()
    stats["loss"] = loss.detach()
    return stats


# ================================================================================= prior
class CodePrior(nn.Module):
    """p(k | c) = Π_t p(k_t | c, k_<t): the existing ``GPT`` over a grid of code IDs in raster order.

    The sequence of a 4×4 grid with class c is [⟨c⟩, k_1, …, k_16]: a class token first
    (token K + c, after the K code tokens), then the codes row by row. The GPT reads the
    first 16 tokens and predicts the next one at every position, so its context is the
    16 positions of h·w codes, and its cross-entropy is taken over the codes only (the
    class is given, never predicted). Sampling feeds ⟨c⟩ and draws one code at a time
    with temperature and top-k, restricted to the K code tokens; decoding the grid gives
    an image of digit c.
    """

    def __init__(
        self,
        num_codes: int,
        grid_shape: tuple[int, int] = (4, 4),
        num_classes: int = 10,
        n_layers: int = 4,
        n_heads: int = 4,
        d_model: int = 128,
        dropout: float = 0.0,
        block_size: int | None = None,
    ) -> None:
        super().__init__()
        if num_codes < 1:
            raise ValueError(f"CodePrior: num_codes (K) must be at least 1, got {num_codes}")
        if num_classes < 1:
            raise ValueError(f"CodePrior: num_classes must be at least 1, got {num_classes}")
        self.num_codes, self.num_classes = num_codes, num_classes
        self.grid_shape = tuple(grid_shape)
        self.length = self.grid_shape[0] * self.grid_shape[1]  # codes per image
        block_size = self.length if block_size is None else block_size
        if block_size < self.length:
            raise ValueError(
                f"CodePrior: a {self.grid_shape[0]}×{self.grid_shape[1]} grid is a sequence of {self.length} codes "
                f"after its class token, which needs a GPT context of at least {self.length} positions, but "
                f"block_size={block_size}; choose block_size ≥ {self.length} or a smaller grid"
            )
        self.gpt = GPT(num_codes + num_classes, block_size, n_layers, n_heads, d_model, dropout=dropout)

    def class_tokens(self, labels: Tensor | Sequence[int], device: Any = None) -> Tensor:
        """⟨c⟩ = K + c for each label c in 0..num_classes−1, as an (N, 1) int64 tensor."""
        if not isinstance(labels, Tensor):
            labels = mg.tensor(list(labels), dtype=mg.int64, device=device)
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise ValueError(
                f"CodePrior: labels must be a 1-D integer tensor, got {labels.dtype} {tuple(labels.shape)}"
            )
        if backend.is_host_array(labels.data) and labels.numel():  # on a GPU this check would be a host sync
            low, high = int(labels.data.min()), int(labels.data.max())
            if low < 0 or high >= self.num_classes:
                bad = low if low < 0 else high
                raise ValueError(
                    f"CodePrior: class label {bad} is out of range; valid labels are 0..{self.num_classes - 1} "
                    f"(num_classes={self.num_classes})"
                )
        return (labels + self.num_codes).reshape(-1, 1)

    def sequences(self, indices: Tensor, labels: Tensor) -> Tensor:
        """[⟨c⟩, k_1, …, k_T] for code grids (N, h, w) and labels (N,): (N, 1 + T) int64."""
        if tuple(indices.shape[1:]) != self.grid_shape:
            raise ValueError(
                f"CodePrior: expected code grids (N, {self.grid_shape[0]}, {self.grid_shape[1]}), "
                f"got {tuple(indices.shape)}"
            )
        codes = indices.reshape(indices.shape[0], self.length)
        return mg.cat([self.class_tokens(labels, indices.device), codes], dim=1)

    def loss(self, indices: Tensor, labels: Tensor) -> Tensor:
        """Mean −log p(k_t | c, k_<t) over every code of every grid (nats per token)."""
        seq = self.sequences(indices, labels)
        return self.gpt.loss(seq[:, :-1], seq[:, 1:])

    @mg.no_grad()
    def generate(
        self, labels: Tensor | Sequence[int], temperature: float = 1.0, top_k: int | None = None, device: Any = None
    ) -> Tensor:
        """Sample [⟨c⟩, k_1, …, k_T] for each label: (N, 1 + T). ``temperature`` 0 is greedy.

        Only the K code tokens can be drawn (the class tokens' logits are dropped), so the
        first token stays the requested class and the rest are valid code IDs.
        """
        if temperature < 0:
            raise ValueError(f"CodePrior: temperature must be ≥ 0, got {temperature}")
        if device is None:
            device = labels.device if isinstance(labels, Tensor) else next(iter(self.parameters())).device
        seq = self.class_tokens(labels, device)
        for _ in range(self.length):
            logits = self.gpt(seq)[:, -1, : self.num_codes]  # the next code's logits, codes only
            if temperature == 0:
                token = logits.argmax(dim=-1, keepdim=True)
            else:
                token = sample_next(logits / temperature, top_k)
            seq = mg.cat([seq, token], dim=1)
        return seq

    def sample(
        self, labels: Tensor | Sequence[int], temperature: float = 1.0, top_k: int | None = None, device: Any = None
    ) -> Tensor:
        """Code grids (N, h, w) of the requested classes, ready for ``VQVAE.decode_indices``."""
        seq = self.generate(labels, temperature, top_k, device)
        return seq[:, 1:].reshape(seq.shape[0], *self.grid_shape)
