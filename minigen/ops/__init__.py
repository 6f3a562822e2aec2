"""Differentiable primitives. Each ``Function`` keeps its forward and backward together.

Reading order: arithmetic, elementwise, reduction, matmul, shape, indexing, join, transfer.
The neural-network ops (convolution, pooling, normalisation, attention...) live in
``minigen/nn``'s functional modules and are built the same way.
"""
