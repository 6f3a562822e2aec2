"""Draw the backward graph of a tensor as Graphviz DOT text (and SVG/PNG if Graphviz is installed).

``loss.backward()`` walks the graph that the forward pass recorded: each op's
``Function`` node points to the nodes (or leaf tensors) that produced its inputs
(``node.parents``). ``draw_graph(loss)`` draws exactly that graph:

* an **op node** per ``Function``: its name and its output shape (optionally the norm of
  the gradient that reached it, ‖∂L/∂output‖);
* a **leaf node** per tensor with ``requires_grad=True``: its name (if given), shape
  and, optionally, the norm of its gradient;
* an **edge** from each input to the op that consumed it, i.e. the direction data flows
  in forward. Backward runs against the arrows, from the output at the bottom to the
  leaves at the top.

A value used twice (a shared subexpression) is one node with two outgoing edges, as in
the engine: its gradient is the sum of what both consumers send back.

Inputs that need no gradient (constants, integer indices) are not part of the backward
graph and are not drawn.

    dot_text = draw_graph(loss, "runs/graph.svg", names={w: "w", b: "b"})

writes ``runs/graph.dot`` always, and ``runs/graph.svg`` when the Graphviz ``dot``
program is on the PATH (install Graphviz for that; it is optional). The first line of
the returned text says what was written.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from minigen import autograd
from minigen.autograd import Function
from minigen.errors import GraphFreedError
from minigen.tensor import Tensor
from minigen.utils.images import atomic_write

log = logging.getLogger(__name__)

RENDER_FORMATS = ("svg", "png", "pdf")


def _norm(t: Tensor) -> float:
    """‖t‖₂ as a Python float (one host read: fine in a debugging tool)."""
    data = t.data
    return float(t.xp.sqrt((data * data).sum()))


def _label_lines(*lines: str) -> str:
    """A DOT label: lines joined with DOT's \\n, quotes and backslashes escaped."""
    escaped = [line.replace("\\", "\\\\").replace('"', '\\"') for line in lines if line]
    return "\\n".join(escaped)


def _shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def _leaf_names(names: Mapping[Any, Any] | None) -> dict[int, str]:
    """``{tensor: "w"}`` or ``{"w": tensor}`` (e.g. ``dict(model.named_parameters())``) -> {id: name}."""
    result: dict[int, str] = {}
    for key, value in (names or {}).items():
        if isinstance(key, Tensor):
            result[id(key)] = str(value)
        elif isinstance(value, Tensor):
            result[id(value)] = str(key)
        else:
            raise TypeError(
                f"draw_graph: names maps tensors to names, got {type(key).__name__}: {type(value).__name__}"
            )
    return result


def _collect(root: Function | Tensor) -> tuple[list[Any], list[tuple[Any, Any]]]:
    """All nodes reachable from ``root`` (each once, in discovery order) and the edges
    (producer, consumer), one per input slot. Iterative, so a 10,000-op chain is fine."""
    order: list[Any] = [root]
    seen = {id(root)}
    edges: list[tuple[Any, Any]] = []
    stack = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, Tensor):
            continue  # a leaf has no parents
        for parent in node.parents:
            if parent is None:
                continue
            edges.append((parent, node))
            if id(parent) not in seen:
                seen.add(id(parent))
                order.append(parent)
                stack.append(parent)
    return order, edges


def _gradient_norms(output: Tensor, leaves: list[Tensor]) -> tuple[dict[int, float], str]:
    """‖∂L/∂(each node's output)‖ and ‖∂L/∂leaf‖, from one extra backward pass.

    The pass runs with ``retain_graph=True`` and returns the gradients instead of
    accumulating them into ``.grad`` (``minigen.grad``); the op gradients are read by an
    observer (``autograd.observers``), which sees the gradient arriving at each node. If
    the graph was already freed by a ``backward()``, the leaves' ``.grad`` are shown instead.
    """
    norms: dict[int, float] = {}

    def observe(phase: str, name: str, node: Any, inputs: Any, output_grads: Any, seconds: float) -> None:
        if phase == "backward":
            norms[id(node)] = _norm(inputs[0])

    gradient = None if output.data.size == 1 else Tensor(output.xp.ones_like(output.data))
    autograd.observers.append(observe)
    try:
        grads = autograd.grad(output, leaves, grad_outputs=gradient, retain_graph=True, allow_unused=True)
    except GraphFreedError:
        norms = {id(leaf): _norm(leaf.grad) for leaf in leaves if leaf.grad is not None}
        return norms, "gradient norms: the graph was freed by backward(); showing the leaves' .grad only"
    finally:
        autograd.observers.remove(observe)
    for leaf, g in zip(leaves, grads):
        if g is not None:
            norms[id(leaf)] = _norm(g)
    what = "L = output" if gradient is None else "L = output.sum()"
    return norms, f"gradient norms ‖∂L/∂·‖ with {what}"


def graph_to_dot(output: Tensor, show_grad_norms: bool = False, names: Mapping[Any, Any] | None = None) -> str:
    """The DOT text of ``output``'s backward graph (see the module docstring)."""
    if not isinstance(output, Tensor):
        raise TypeError(f"draw_graph: expected a Tensor, got {type(output).__name__}")
    if not output.requires_grad:
        raise ValueError(
            f"draw_graph: the tensor of shape {_shape(output.shape)} has no backward graph: nothing it was "
            "computed from requires grad (or it was computed under no_grad)"
        )
    root: Function | Tensor = output.grad_fn if output.grad_fn is not None else output
    nodes, edges = _collect(root)
    leaf_names = _leaf_names(names)
    leaves = [n for n in nodes if isinstance(n, Tensor)]
    norms: dict[int, float] = {}
    comment = ""
    if show_grad_norms:
        norms, comment = _gradient_norms(output, leaves)

    ids = {id(node): f"n{k}" for k, node in enumerate(nodes)}
    lines = ["digraph backward {", "  rankdir=TB;", '  node [fontname="Helvetica", fontsize=11];']
    if comment:
        lines.append(f"  // {comment}")
    for node in nodes:
        grad_line = f"‖grad‖ = {norms[id(node)]:.4g}" if id(node) in norms else ""
        if isinstance(node, Tensor):
            name = leaf_names.get(id(node), "")
            device = "" if node.device == "cpu" else f"on {node.device}"
            label = _label_lines(name, _shape(node.shape), device, grad_line)
            lines.append(f'  {ids[id(node)]} [label="{label}", shape=box, style=filled, fillcolor="#d8e8ff"];')
        else:
            root_mark = "output" if node is root else ""
            label = _label_lines(node.name, _shape(node.out_shape), root_mark, grad_line)
            style = ', penwidth=2, fillcolor="#ffe0b0"' if node is root else ', fillcolor="#f2f2f2"'
            lines.append(f'  {ids[id(node)]} [label="{label}", shape=ellipse, style=filled{style}];')
    for producer, consumer in edges:
        lines.append(f"  {ids[id(producer)]} -> {ids[id(consumer)]};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def draw_graph(
    tensor: Tensor,
    path: str | Path | None = None,
    show_grad_norms: bool = False,
    names: Mapping[Any, Any] | None = None,
) -> str:
    """Return the DOT text of ``tensor``'s backward graph; with ``path``, also write it.

    * ``path``: ``runs/graph.dot`` writes the DOT file and renders ``runs/graph.svg``;
      ``runs/graph.png`` (or ``.svg``, ``.pdf``) writes ``runs/graph.dot`` and renders
      that format. Rendering needs the Graphviz ``dot`` program; without it only the
      ``.dot`` file is written (paste it into any online Graphviz viewer).
    * ``show_grad_norms``: label every node with the norm of the gradient reaching it
      (one extra backward pass, which leaves ``.grad`` untouched).
    * ``names``: ``{tensor: "w"}`` or ``{"w": tensor}`` (e.g. ``dict(model.named_parameters())``)
      to label leaves.

    The first line of the returned text is a DOT comment saying which files were written.
    """
    dot = graph_to_dot(tensor, show_grad_norms=show_grad_norms, names=names)
    if path is None:
        return dot
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower()
    fmt = fmt if fmt in RENDER_FORMATS else "svg"
    dot_path = path.with_suffix(".dot")
    picture = path.with_suffix("." + fmt)
    executable = shutil.which("dot")
    if executable is None:
        note = f"wrote {dot_path}; Graphviz 'dot' is not installed, so no {fmt.upper()} was rendered"
    else:
        note = f"wrote {dot_path} and {picture}"
    dot = f"// {note}\n" + dot
    with atomic_write(dot_path) as tmp:
        tmp.write_text(dot, encoding="utf-8")
    if executable is not None:
        with atomic_write(picture) as tmp:
            subprocess.run([executable, f"-T{fmt}", str(dot_path), "-o", str(tmp)], check=True, capture_output=True)
    log.info("draw_graph: %s", note)
    return dot
