"""Pictures without matplotlib: image grids, GIFs and simple charts, all drawn with Pillow;
the computation graph (``draw_graph``); and ``TrainingLog``, for training curves
without a host sync in every step.

Every writer creates parent folders and writes atomically (temporary file, then
``os.replace``), so an interrupted run never leaves a half-written picture.
"""

from minigen.utils.graph import draw_graph
from minigen.utils.images import (
    atomic_write,
    hstack,
    labelled_grid,
    make_grid,
    save_gif,
    save_image_grid,
    save_pil,
    to_numpy,
)
from minigen.utils.plots import (
    COLORMAPS,
    PALETTE,
    bar_chart,
    colorbar,
    colormap,
    ema,
    heatmap,
    line_plot,
    moving_average,
    scatter_plot,
)
from minigen.utils.training_log import TrainingLog

__all__ = [
    "COLORMAPS",
    "PALETTE",
    "TrainingLog",
    "atomic_write",
    "bar_chart",
    "colorbar",
    "colormap",
    "draw_graph",
    "ema",
    "heatmap",
    "hstack",
    "labelled_grid",
    "line_plot",
    "make_grid",
    "moving_average",
    "save_gif",
    "save_image_grid",
    "save_pil",
    "scatter_plot",
    "to_numpy",
]
