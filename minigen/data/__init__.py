"""Data sets that need no download, local-file loaders, and the DataLoader.

Data sets return host NumPy arrays (float32 images in [0, 1] shaped (N, C, H, W),
int64 labels); ``DataLoader`` turns batches into Tensors on a device.

* toy 2-D sets and metrics: ``eight_gaussians``, ``two_moons``, ``swiss_roll``,
  ``spirals``, ``checkerboard``, ``energy_distance``, ``mode_coverage``
* pictures: ``make_shapes`` (circles, squares, triangles), ``load_digits`` /
  ``make_digits`` (rendered MNIST-like digits with stroke-thickness metadata)
* image-to-image translation: ``paired_digits(task)`` with the tasks ``edges2digits``,
  ``grey2colour``, ``lowres2highres``, ``masked2full``; ``thin_thick_digits`` (unpaired)
* captioned digits (text meets images): ``captioned_digits`` (coloured digits with
  attribute captions, held-out combinations) and its word-level ``Tokenizer``
* standard files on disk: ``load_mnist``, ``load_fashion_mnist``, ``load_cifar10``
"""

from minigen.data.captions import CaptionedDigits, captioned_digits
from minigen.data.digits import Digits, default_cache_dir, load_digits, make_digits
from minigen.data.files import (
    CIFAR10_CLASSES,
    FASHION_MNIST_CLASSES,
    load_cifar10,
    load_fashion_mnist,
    load_mnist,
    parse_idx,
    read_cifar_batch,
    read_idx,
)
from minigen.data.loader import DataLoader, TensorDataset
from minigen.data.shapes import SHAPE_NAMES, make_shapes
from minigen.data.tokenizer import Tokenizer
from minigen.data.toy2d import (
    checkerboard,
    eight_gaussian_centers,
    eight_gaussians,
    energy_distance,
    mode_coverage,
    spirals,
    swiss_roll,
    two_moons,
)
from minigen.data.translation import (
    PAIRED_TASKS,
    PairedDigits,
    UnpairedDigits,
    edges2digits,
    grey2colour,
    lowres2highres,
    masked2full,
    paired_digits,
    thin_thick_digits,
)

__all__ = [
    "CIFAR10_CLASSES",
    "FASHION_MNIST_CLASSES",
    "PAIRED_TASKS",
    "SHAPE_NAMES",
    "CaptionedDigits",
    "DataLoader",
    "Digits",
    "PairedDigits",
    "TensorDataset",
    "Tokenizer",
    "UnpairedDigits",
    "captioned_digits",
    "checkerboard",
    "default_cache_dir",
    "eight_gaussian_centers",
    "edges2digits",
    "eight_gaussians",
    "energy_distance",
    "grey2colour",
    "load_cifar10",
    "load_digits",
    "load_fashion_mnist",
    "load_mnist",
    "lowres2highres",
    "make_digits",
    "make_shapes",
    "masked2full",
    "mode_coverage",
    "paired_digits",
    "parse_idx",
    "read_cifar_batch",
    "read_idx",
    "spirals",
    "swiss_roll",
    "thin_thick_digits",
    "two_moons",
]
