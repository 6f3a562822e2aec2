"""``nn.utils``: PyTorch's home for gradient clipping (the code lives in ``minigen.optim``)."""

from minigen.optim import clip_grad_norm_, clip_grad_value_

__all__ = ["clip_grad_norm_", "clip_grad_value_"]
