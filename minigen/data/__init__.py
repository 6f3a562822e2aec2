"""Data sets that need no download, local-file loaders, and the DataLoader.

Data sets return host NumPy arrays (float32 images in [0, 1] shaped (N, C, H, W),
int64 labels); ``DataLoader`` turns batches into Tensors on a device.

* toy 2-D sets and metrics: ``eight_gaussians``, ``two_moons``, ``swiss_roll``,
  ``spirals``, ``checkerboard``, ``energy_distance``, ``mode_coverage``
* pictures: ``make_shapes`` (circles, squares, triangles), ``load_digits`` /
  ``make_digits`` (rendered MNIST-like digits with stroke-thickness metadata)
* standard files on disk: ``load_mnist``, ``load_fashion_mnist``, ``load_cifar10``
"""

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

__all__ = [
    "CIFAR10_CLASSES",
    "FASHION_MNIST_CLASSES",
    "SHAPE_NAMES",
    "DataLoader",
    "Digits",
    "TensorDataset",
    "checkerboard",
    "default_cache_dir",
    "eight_gaussian_centers",
    "eight_gaussians",
    "energy_distance",
    "load_cifar10",
    "load_digits",
    "load_fashion_mnist",
    "load_mnist",
    "make_digits",
    "make_shapes",
    "mode_coverage",
    "parse_idx",
    "read_cifar_batch",
    "read_idx",
    "spirals",
    "swiss_roll",
    "two_moons",
]
