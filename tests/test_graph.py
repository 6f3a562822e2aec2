"""draw_graph: the DOT text has one node per op and leaf, one edge per input, shared values once."""

from __future__ import annotations

import re

import numpy as np
import pytest

import minigen as mg
import minigen.nn as nn
from minigen.utils import graph as graph_module
from minigen.utils.graph import draw_graph


def nodes_and_edges(dot: str) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """{node id: label} and the (from, to) edges of a DOT text written by draw_graph."""
    nodes = dict(re.findall(r'^\s*(n\d+) \[label="([^"]*)"', dot, flags=re.M))
    edges = re.findall(r"^\s*(n\d+) -> (n\d+);", dot, flags=re.M)
    return nodes, edges


def labels_of(nodes: dict[str, str], edges: list[tuple[str, str]]) -> list[tuple[str, str]]:
    first = {k: v.split("\\n")[0] for k, v in nodes.items()}
    return sorted((first[a], first[b]) for a, b in edges)


def expression():
    a = mg.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], requires_grad=True)
    b = mg.tensor([0.5, -1.0, 2.0], requires_grad=True)
    c = a * b  # shared: used by sin and by the addition
    loss = (c + c.sin()).sum()
    return a, b, loss


def test_structure_of_a_known_expression():
    a, b, loss = expression()
    nodes, edges = nodes_and_edges(draw_graph(loss, names={a: "a", b: "b"}))
    # ops Mul, Sin, Add, Sum and the two leaves; the shared product c appears once
    assert len(nodes) == 6
    assert sorted(v.split("\\n")[0] for v in nodes.values()) == ["Add", "Mul", "Sin", "Sum", "a", "b"]
    assert labels_of(nodes, edges) == [
        ("Add", "Sum"),
        ("Mul", "Add"),
        ("Mul", "Sin"),
        ("Sin", "Add"),
        ("a", "Mul"),
        ("b", "Mul"),
    ]
    by_name = {v.split("\\n")[0]: v for v in nodes.values()}
    assert "(2, 3)" in by_name["Mul"] and "()" in by_name["Sum"] and "output" in by_name["Sum"]
    assert "(3,)" in by_name["b"]


def test_a_value_used_twice_by_one_op_gives_two_edges_to_one_node():
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    y = x.exp()
    nodes, edges = nodes_and_edges(draw_graph((y * y).sum()))
    assert len(nodes) == 4  # x, Exp, Mul, Sum
    assert labels_of(nodes, edges).count(("Exp", "Mul")) == 2


def test_constants_are_not_drawn_and_names_accept_named_parameters():
    mg.manual_seed(0)
    layer = nn.Linear(3, 2)
    x = mg.randn(4, 3)  # no gradient needed: not part of the backward graph
    dot = draw_graph(layer(x).sum(), names=dict(layer.named_parameters()))
    nodes, _ = nodes_and_edges(dot)
    leaf_labels = [v for v in nodes.values() if "\\n" in v and v.split("\\n")[0] in ("weight", "bias")]
    assert len(leaf_labels) == 2
    assert not any("(4, 3)" in v for v in nodes.values())


def test_gradient_norms_match_the_gradients_and_leave_grad_untouched():
    a, b, loss = expression()
    dot = draw_graph(loss, show_grad_norms=True, names={a: "a", b: "b"})
    assert a.grad is None and b.grad is None
    loss.backward()
    nodes, _ = nodes_and_edges(dot)
    by_name = {v.split("\\n")[0]: v for v in nodes.values()}
    for name, leaf in (("a", a), ("b", b)):
        shown = float(re.search(r"‖grad‖ = ([0-9.e+-]+)", by_name[name]).group(1))
        assert shown == pytest.approx(np.linalg.norm(leaf.grad.numpy()), rel=1e-3)
    assert "‖grad‖ = 1" in by_name["Sum"]  # ∂L/∂L = 1
    # After backward the graph is freed: the leaves' .grad are shown instead.
    dot_after = draw_graph(loss, show_grad_norms=True, names={a: "a"})
    assert "freed" in dot_after and "‖grad‖" in dot_after


def test_long_chain_is_drawn_without_recursion():
    x = mg.tensor([1.0], requires_grad=True)
    y = x
    for _ in range(3000):
        y = y * 1.0001
    nodes, edges = nodes_and_edges(draw_graph(y.sum()))
    assert len(nodes) == 3002 and len(edges) == 3001


def test_writes_dot_and_says_when_graphviz_is_missing(tmp_path, monkeypatch):
    _, _, loss = expression()
    monkeypatch.setattr(graph_module.shutil, "which", lambda name: None)
    dot = draw_graph(loss, tmp_path / "out" / "graph.svg")
    written = (tmp_path / "out" / "graph.dot").read_text()
    assert written == dot
    assert "not installed" in dot.splitlines()[0]
    assert not (tmp_path / "out" / "graph.svg").exists()


def test_renders_with_graphviz_when_installed(tmp_path, monkeypatch):
    """With a stand-in ``dot`` program that records its arguments (Graphviz is optional)."""
    fake = tmp_path / "dot"
    fake.write_text('#!/bin/sh\necho "<svg $1 $2>" > "$4"\n')
    fake.chmod(0o755)
    monkeypatch.setattr(graph_module.shutil, "which", lambda name: str(fake))
    _, _, loss = expression()
    dot = draw_graph(loss, tmp_path / "pictures" / "graph.png")
    assert (tmp_path / "pictures" / "graph.dot").read_text() == dot
    rendered = (tmp_path / "pictures" / "graph.png").read_text()
    assert rendered.startswith("<svg -Tpng") and rendered.strip().endswith("graph.dot>")
    assert "graph.png" in dot.splitlines()[0]


def test_clear_errors():
    with pytest.raises(ValueError, match="no backward graph"):
        draw_graph(mg.tensor([1.0]) * 2)
    with pytest.raises(TypeError, match="Tensor"):
        draw_graph(np.zeros(3))
