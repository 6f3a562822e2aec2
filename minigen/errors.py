"""The engine's own exception types, for the errors that tools react to.

Tools such as ``gradcheck``, the exercises' checker and ``draw_graph`` need to recognise
a few engine errors to explain them. They catch these types instead of matching the
message text, so a reworded message cannot silently turn a hint off. Each subclasses
the built-in type the engine raised before (``RuntimeError`` or ``ValueError``), so an
existing ``except RuntimeError`` still catches it, and each keeps the values a tool
needs as attributes.
"""

from __future__ import annotations

from typing import TypeVar


class GraphFreedError(RuntimeError):
    """``backward`` reached a node whose saved tensors were freed by an earlier backward.

    ``op`` names the node (``None`` when unknown).
    """

    def __init__(self, message: str, op: str | None = None) -> None:
        super().__init__(message)
        self.op = op


class GradientShapeError(RuntimeError):
    """A ``backward`` returned a gradient whose shape is not its input's shape.

    ``op`` is the node, ``index`` the input position, ``shape`` what backward returned and
    ``expected`` the input's shape (each ``None`` when unknown). The usual cause is a
    missing unbroadcast: the input was broadcast in forward, so its gradient must be
    summed back over the broadcast axes (``grad.sum_to(shape)``).
    """

    def __init__(
        self,
        message: str,
        op: str | None = None,
        index: int | None = None,
        shape: tuple[int, ...] | None = None,
        expected: tuple[int, ...] | None = None,
    ) -> None:
        super().__init__(message)
        self.op = op
        self.index = index
        self.shape = shape
        self.expected = expected


class SumToShapeError(ValueError):
    """``sum_to(shape)`` was asked for a shape that its tensor does not broadcast from.

    ``shape`` is the tensor's shape and ``target`` the requested one (each ``None`` when
    unknown). ``Function.apply`` re-raises forward errors with the op's name and inputs
    prefixed, as the same type: the values are on the original error, its ``__cause__``
    (``find_in_chain`` finds it).
    """

    def __init__(
        self, message: str, shape: tuple[int, ...] | None = None, target: tuple[int, ...] | None = None
    ) -> None:
        super().__init__(message)
        self.shape = shape
        self.target = target


E = TypeVar("E", bound=BaseException)


def find_in_chain(error: BaseException, kind: type[E]) -> E | None:
    """The innermost exception of type ``kind`` among ``error`` and its causes, or None.

    An error re-raised with ``raise ... from original`` keeps the original in
    ``__cause__``; the innermost one is the error as first raised, with its attributes.
    """
    found = None
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, kind):
            found = current
        current = current.__cause__ or current.__context__
    return found
