"""Differentiable primitives. Each ``Function`` keeps its forward and backward together.

Reading order: the engine's primitives (arithmetic, elementwise, reduction, matmul,
shape, indexing, join, transfer), then the neural-network ops that
``minigen.nn.functional`` gathers under PyTorch's names (linear, activation, loss,
normalization, dropout, embedding, conv, pool, resize, attention, rope).
"""
