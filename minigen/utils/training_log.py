"""Training statistics that stay on the device until they are needed on the host.

Reading a GPU value (``loss.item()``, ``float(loss)``) makes Python wait until the GPU
has finished all the work queued so far: one such read in every training step keeps
the GPU idle while Python prepares the next step. ``TrainingLog`` keeps each step's
statistics as device scalars instead and copies them to the host in one transfer every
``sync_every`` steps.
"""

from __future__ import annotations

from minigen.ops.join import stack
from minigen.tensor import Tensor


class TrainingLog:
    """Per-step training statistics, with one host sync every ``sync_every`` steps.

    ``record(stats)`` keeps the step's device scalars as they are; every ``sync_every``
    steps they are stacked and copied to the host in one transfer per statistic.
    ``history[name]`` is then a list of floats, one per step, for loss curves and for
    watching a GAN's D(x) and D(G(z)): D(G(z)) stuck near 0 means G gets no signal, a
    D loss near 0 means D wins outright.
    """

    def __init__(self, sync_every: int = 50) -> None:
        self.sync_every = sync_every
        self.history: dict[str, list[float]] = {}
        self._pending: dict[str, list[Tensor]] = {}
        self._count = 0

    def record(self, stats: dict[str, Tensor]) -> bool:
        """Keep this step's statistics; True when this step synced (new values in ``history``)."""
        for name, value in stats.items():
            self._pending.setdefault(name, []).append(value.detach().reshape(()))
        self._count += 1
        if self._count % self.sync_every:
            return False
        self.flush()
        return True

    def flush(self) -> dict[str, list[float]]:
        """Copy all pending values to the host (the only sync); returns ``history``."""
        for name, values in self._pending.items():
            if values:
                self.history.setdefault(name, []).extend(stack(values).numpy().tolist())
        self._pending = {name: [] for name in self._pending}
        return self.history

    def last(self, name: str, window: int = 50) -> float:
        """The mean of the last ``window`` synced values of ``name`` (for progress bars)."""
        values = self.history.get(name, [])[-window:]
        return sum(values) / len(values) if values else float("nan")
