"""Models built from ``minigen.nn``, one readable file each.

* ``cnn``: ``LeNet`` and the training loop the demos share (``fit_classifier``, ``predict``).
* Transformers: ``GPT`` (decoder-only LM), ``BERT`` (encoder-only, masked LM, ``mlm_mask``),
  ``ViT`` (vision transformer with ``PatchEmbedding``).
* Generative models: ``gan`` (losses, Algorithm 1, MLP/DCGAN/conditional, WGAN-GP), ``vae``
  (reparameterisation, KL, ELBO), ``diffusion`` (schedules, DDPM, DDIM, guidance) and
  ``unet`` (the denoiser). Import them as modules: ``from minigen.models import gan``.
* Image-to-image translation: ``pix2pix`` (paired: U-Net generator, conditional PatchGAN,
  adversarial + λ·L1) and ``cyclegan`` (unpaired: G, F, D_A, D_B, cycle and identity
  losses, the image pool).
* Latent spaces: ``autoencoder`` (the plain autoencoder against the VAE; spatial encoder and
  decoder) and ``vq`` (vector quantisation: VQ-VAE, k-means codebooks, VQ-GAN, a GPT prior).
* Text meets images: ``clip`` (``CLIP``: image and text encoders trained contrastively;
  its ``TextEncoder`` gives text-to-image models their caption features).
"""

from minigen.models import autoencoder, cnn, cyclegan, diffusion, gan, pix2pix, unet, vae, vq
from minigen.models.bert import BERT, mlm_mask
from minigen.models.clip import CLIP, TextEncoder
from minigen.models.cnn import LeNet
from minigen.models.gpt import GPT
from minigen.models.vit import PatchEmbedding, ViT
