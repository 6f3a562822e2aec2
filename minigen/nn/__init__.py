"""``minigen.nn``: modules, layers, initialisation and the functional API.

import minigen.nn as nn
import minigen.nn.functional as F   # or nn.functional
nn.init.kaiming_normal_(layer.weight)
"""

from minigen.nn import functional, init, utils
from minigen.nn.activation import GELU, LeakyReLU, LogSoftmax, ReLU, Sigmoid, SiLU, Softmax, Softplus, Tanh
from minigen.nn.attention import CrossAttention, MultiheadAttention, RotaryEmbedding
from minigen.nn.containers import ModuleDict, ModuleList, Sequential
from minigen.nn.conv import AvgPool2d, Conv2d, ConvTranspose2d, MaxPool2d, Upsample
from minigen.nn.dropout import Dropout
from minigen.nn.embedding import Embedding
from minigen.nn.linear import Flatten, Identity, Linear, Unflatten
from minigen.nn.loss import BCEWithLogitsLoss, CrossEntropyLoss, L1Loss, MSELoss
from minigen.nn.module import Module, Parameter
from minigen.nn.normalization import BatchNorm1d, BatchNorm2d, GroupNorm, LayerNorm
from minigen.nn.transformer import TransformerBlock
