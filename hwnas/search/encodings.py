"""Architectures as feature vectors for performance predictors (BANANAS' neural predictor).

On a cell space (a DAG whose edges are the decisions, `cell_edges` on the space) the encoding is
BANANAS' path encoding (White et al., AAAI 2021): one feature per sequence of ops along a path
from the cell's input to its output, counting the paths that carry it; an edge whose op is the
space's `zero_op` cuts every path through it. On a chain space (one decision per layer or stage)
it is the one-hot encoding of each decision, which is the path encoding of a chain.
"""

from __future__ import annotations

import itertools

import numpy as np

from ..core.arch import Arch
from ..core.spaces import SearchSpace


def _cell_paths(edges) -> list[tuple[str, ...]]:
    """Every input-to-output path of a cell as the tuple of its edge names (node 0 is the input,
    the highest node the output)."""
    into: dict[int, list[tuple[str, int]]] = {}
    for name, to, source in edges:
        into.setdefault(to, []).append((name, source))
    output = max(into)

    def paths_to(node: int) -> list[tuple[str, ...]]:
        if node == 0:
            return [()]
        return [path + (name,) for name, source in into.get(node, []) for path in paths_to(source)]

    return paths_to(output)


class Encoder:
    """Turns architectures of one space into fixed-length float vectors."""

    def __init__(self, space: SearchSpace):
        self.space = space
        edges = getattr(space, "cell_edges", None)
        if edges:
            self.kind = "path"
            self.paths = _cell_paths(edges)
            ops = tuple(c for c in space.decision(edges[0][0]).choices if c != space.zero_op)
            self.zero_op = space.zero_op
            lengths = sorted({len(p) for p in self.paths})
            self.features = {seq: i for i, seq in enumerate(
                seq for n in lengths for seq in itertools.product(ops, repeat=n))}
        else:
            self.kind = "onehot"
            self.offsets, self.index, n = {}, {}, 0
            for d in space.decisions:
                self.offsets[d.name] = n
                self.index[d.name] = {c: i for i, c in enumerate(d.choices)}
                n += len(d.choices)
            self.size = n

    @property
    def dim(self) -> int:
        return len(self.features) if self.kind == "path" else self.size

    def encode(self, arch: Arch) -> np.ndarray:
        vector = np.zeros(self.dim, dtype=np.float32)
        choices = arch.choice_map
        if self.kind == "path":
            for path in self.paths:
                ops = tuple(choices[edge] for edge in path)
                if self.zero_op not in ops:
                    vector[self.features[ops]] += 1.0
        else:
            for name, choice in choices.items():
                vector[self.offsets[name] + self.index[name][choice]] = 1.0
        return vector

    def encode_many(self, archs) -> np.ndarray:
        return np.stack([self.encode(a) for a in archs]) if archs else np.zeros((0, self.dim), np.float32)


def canonical(arch: Arch, space: SearchSpace) -> Arch:
    """The architecture with every dead edge of its cell set to the space's zero op: an edge that
    lies on no input-to-output path of non-zero edges computes nothing that reaches the output, so
    the two are the same network. (A chain space's architecture is returned as it is.)"""
    edges = getattr(space, "cell_edges", None)
    if not edges:
        return arch
    choices = arch.choice_map
    live = [(name, to, source) for name, to, source in edges if choices[name] != space.zero_op]
    output = max(to for _, to, _ in edges)
    reached, changed = {0}, True
    while changed:  # nodes reachable from the input
        changed = False
        for _, to, source in live:
            if source in reached and to not in reached:
                reached.add(to)
                changed = True
    reaches, changed = {output}, True
    while changed:  # nodes from which the output is reachable
        changed = False
        for _, to, source in live:
            if to in reaches and source not in reaches:
                reaches.add(source)
                changed = True
    alive = {name for name, to, source in live if source in reached and to in reaches}
    if len(alive) == len(live):
        return arch
    return Arch.create(space, {name: (c if name in alive else space.zero_op) for name, c in choices.items()})
