"""Models built from ``minigen.nn``, one readable file each.

Transformers: ``GPT`` (decoder-only LM), ``BERT`` (encoder-only, masked LM, ``mlm_mask``),
``ViT`` (vision transformer with ``PatchEmbedding``).
"""

from minigen.models.bert import BERT, mlm_mask
from minigen.models.gpt import GPT
from minigen.models.vit import PatchEmbedding, ViT
