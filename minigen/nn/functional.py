"""``minigen.nn.functional`` (``F``): the neural-network ops under PyTorch's names.

This file only gathers them; each op lives, forward and backward together, in the
``minigen/ops`` file named after its concept.
"""

from minigen.ops.activation import gelu, leaky_relu, log_softmax, relu, sigmoid, silu, softmax, softplus, tanh
from minigen.ops.attention import scaled_dot_product_attention
from minigen.ops.conv import conv2d, conv_transpose2d
from minigen.ops.cross_attention import cross_attention
from minigen.ops.dropout import dropout
from minigen.ops.embedding import embedding
from minigen.ops.join import pad
from minigen.ops.linear import linear
from minigen.ops.loss import binary_cross_entropy_with_logits, cross_entropy, l1_loss, mse_loss, nll_loss
from minigen.ops.normalization import batch_norm, group_norm, layer_norm
from minigen.ops.pool import avg_pool2d, max_pool2d
from minigen.ops.resize import interpolate
from minigen.ops.rope import rope, rope_matrix
