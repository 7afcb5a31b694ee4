"""Trees as fixed-shape arrays: ``Tree`` (one tree, host side) and ``TreeBatch``.

A ``Tree`` lists its nodes children first (post-order: every child before its parent, the
root last). Each node has a tuple of child indices, an input (a token id, a vector, or
None for an inner node that reads nothing) and an optional label. The builders
``from_nested`` and ``parse_brackets`` make one; the constructor takes nodes in any order
and puts them children first, refusing a node that is its own descendant, a node with two
parents, more than one root, and an empty tree.

``TreeBatch.from_trees`` lays a list of trees out as arrays with a leading batch axis B,
padded to N nodes, K children per node and L levels, so that one compiled program serves
every batch of the same shape (``bucket`` rounds the shape up to a small set):

    inputs     (B, N) int32 token ids (0 where a node reads nothing, and on padding)
               or (B, N, D) float vectors (0 where a node reads nothing)
    children   (B, N, K) int32 child indices, -1 where absent
    level      (B, N) int32 height above the node's deepest leaf (leaves 0), -1 on padding
    depth      (B, N) int32 distance from the root (root 0), -1 on padding
    order      (B, L - 1, W) int32: the inner nodes of level 1 .. L - 1, -1 padded; what
               ``tree_scan`` runs one vectorized step per level over
    root       (B,) int32 the root's index (the last real node)
    num_nodes  (B,) int32
    labels     (B, N) int32 node labels, -1 where a node has none and on padding

Padding nodes are inert: ``tree_scan`` never reads them, so neither their inputs (NaN
included) nor their rows change an output or receive a gradient.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from seqlab._checks import require

# Pad every dimension of a bucketed batch up to a power of two, from this floor.
BUCKET_FLOOR = 4


@dataclasses.dataclass(frozen=True)
class Tree:
    """One tree on the host, nodes children first (see the module docstring).

    Args:
      children: per node, the indices of its children (a sequence of ints).
      inputs: per node, a token id (int), a vector, or None.
      labels: per node, an int label or None; or None for no labels at all.

    The constructor reorders the nodes children first when they are not, keeping each
    node's children in their given order.
    """

    children: tuple[tuple[int, ...], ...]
    inputs: tuple[Any, ...]
    labels: tuple[int | None, ...] | None = None

    def __post_init__(self):
        children = tuple(tuple(_index(c, "a child index") for c in kids) for kids in self.children)
        count = len(children)
        require(count > 0, "an empty tree: a tree needs at least one node")
        require(
            len(self.inputs) == count,
            f"a tree of {count} nodes needs {count} inputs, got {len(self.inputs)}",
        )
        if self.labels is not None:
            require(
                len(self.labels) == count,
                f"a tree of {count} nodes needs {count} labels, got {len(self.labels)}",
            )
        parent = [-1] * count
        for node, kids in enumerate(children):
            for child in kids:
                require(
                    0 <= child < count,
                    f"node {node} lists child {child}, not a node of this {count}-node tree",
                )
                require(child != node, f"node {node} lists itself as a child")
                require(
                    parent[child] == -1,
                    f"node {child} has two parents ({parent[child]} and {node})",
                )
                parent[child] = node
        roots = [node for node in range(count) if parent[node] == -1]
        if not roots:
            # every node has a parent: following parents from node 0 must come back round
            raise ValueError(
                f"node {_on_cycle(parent)} is its own descendant: the children form a cycle"
            )
        require(len(roots) == 1, f"a tree has one root; nodes {roots} have no parent")
        order = _post_order(children, roots[0])
        if len(order) != count:
            missing = sorted(set(range(count)) - set(order))
            raise ValueError(
                f"node {_on_cycle(parent, missing[0])} is its own descendant: "
                "the children form a cycle"
            )
        if order != list(range(count)):
            position = {node: i for i, node in enumerate(order)}
            children = tuple(tuple(position[c] for c in children[node]) for node in order)
            object.__setattr__(self, "inputs", tuple(self.inputs[node] for node in order))
            if self.labels is not None:
                object.__setattr__(self, "labels", tuple(self.labels[node] for node in order))
        object.__setattr__(self, "children", children)
        if self.labels is not None:
            object.__setattr__(self, "labels", tuple(self.labels))
        object.__setattr__(self, "inputs", tuple(self.inputs))

    def __len__(self) -> int:
        return len(self.children)

    @property
    def arity(self) -> int:
        """The largest number of children of a node."""
        return max(len(kids) for kids in self.children)

    def levels(self) -> np.ndarray:
        """(N,) height of each node above its deepest leaf (leaves 0)."""
        level = np.zeros(len(self), np.int32)
        for node, kids in enumerate(self.children):  # children first: theirs are known
            if kids:
                level[node] = 1 + max(level[c] for c in kids)
        return level

    def depths(self) -> np.ndarray:
        """(N,) distance of each node from the root (root 0)."""
        depth = np.zeros(len(self), np.int32)
        for node in range(len(self) - 1, -1, -1):  # parents first
            for child in self.children[node]:
                depth[child] = depth[node] + 1
        return depth

    @property
    def height(self) -> int:
        """The root's level: 0 for a single leaf."""
        return int(self.levels()[-1])


def _post_order(children, root: int) -> list[int]:
    """Nodes reachable from ``root``, each child before its parent (no recursion: deep
    chains stay within Python's stack)."""
    order, seen, stack = [], set(), [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if node in seen:
            continue
        seen.add(node)
        stack.append((node, True))
        stack.extend((child, False) for child in reversed(children[node]))
    return order


def _on_cycle(parent: list[int], start: int = 0) -> int:
    """A node on the cycle that following parents from ``start`` enters."""
    seen, node = set(), start
    while node not in seen and node != -1:
        seen.add(node)
        node = parent[node]
    return node if node != -1 else start


def from_nested(nested, *, labels=None) -> Tree:
    """A tree from nested tuples/lists: a list or tuple is an inner node of its items,
    anything else a leaf whose value is its input (a token id >= 1, a word, or a vector).
    Inner nodes read no input. ``labels``: per-node labels in the tree's children-first
    order (post-order: every node after its children, the root last), or None.

    Example: ``from_nested(((1, 2), 3))`` is a root over (an inner node over leaves 1 and
    2) and leaf 3: 5 nodes, in the order 1, 2, (1 2), 3, root.
    """
    children, inputs = [], []
    # iterative, so that deep nesting builds (a recursion would stop near 1000 levels)
    open_nodes: list[list[int]] = [[]]  # per inner node being read: its children so far
    stack = [("visit", nested)]
    while stack:
        action, item = stack.pop()
        if action == "close":
            children.append(tuple(open_nodes.pop()))
            inputs.append(None)
        elif isinstance(item, list | tuple):
            require(len(item) > 0, "an empty tree: an inner node needs at least one child")
            open_nodes.append([])
            stack.append(("close", None))
            stack.extend(("visit", child) for child in reversed(item))
            continue
        else:
            children.append(())
            inputs.append(item)
        open_nodes[-1].append(len(children) - 1)
    return Tree(tuple(children), tuple(inputs), None if labels is None else tuple(labels))


def parse_brackets(text: str, *, num_labels: int | None = None) -> Tree:
    """A tree from the Penn/SST bracket format, a label on every node::

        (3 (2 It) (4 (2 's) (4 good)))

    Leaves' inputs are their words (str); inner nodes read nothing. Labels must be
    integers in [0, num_labels) when ``num_labels`` is given. Unbalanced brackets, a node
    without a label, and an empty tree are ValueErrors naming the position.
    """
    require(isinstance(text, str), f"parse_brackets takes a str, got {type(text).__name__}")
    tokens = _bracket_tokens(text)
    require(tokens, "an empty tree: no brackets in the text")
    children, inputs, labels = [], [], []
    stack: list[tuple[int, list[int], int | None, str | None]] = []  # (pos, kids, label, word)
    root = None
    for position, token in tokens:
        if token == "(":
            require(root is None, f"text after the tree's end at position {position}")
            stack.append((position, [], None, None))
        elif token == ")":
            require(stack, f"unbalanced brackets: ')' at position {position} closes nothing")
            start, kids, label, word = stack.pop()
            require(label is not None, f"a node without a label at position {start}")
            require(
                bool(kids) != (word is not None),
                f"the node at position {start} has both a word and subtrees"
                if kids
                else f"the node at position {start} has neither a word nor subtrees",
            )
            children.append(tuple(kids))
            inputs.append(word)
            labels.append(label)
            node = len(children) - 1
            if stack:
                stack[-1][1].append(node)
            else:
                root = node
        else:
            require(stack, f"text outside brackets at position {position}: {token!r}")
            start, kids, label, word = stack[-1]
            if label is None:
                if not (token.isascii() and token.isdigit()):
                    raise ValueError(
                        f"the node at position {start} starts with {token!r}, not a label "
                        "(digits 0-9, >= 0)"
                    )
                label = int(token)
                if num_labels is not None:
                    require(
                        0 <= label < num_labels,
                        f"label {label} at position {position} is out of range [0, {num_labels})",
                    )
                stack[-1] = (start, kids, label, word)
            else:
                require(
                    word is None and not kids,
                    f"the node at position {start} has more than one word ({token!r} at "
                    f"position {position})",
                )
                stack[-1] = (start, kids, label, token)
    if stack:
        raise ValueError(f"unbalanced brackets: the '(' at position {stack[-1][0]} is never closed")
    return Tree(tuple(children), tuple(inputs), tuple(labels))


def _bracket_tokens(text: str) -> list[tuple[int, str]]:
    """(position, token) of '(' , ')' and the words between them."""
    tokens, word, start = [], [], 0
    for position, char in enumerate(text):
        if char in "()" or char.isspace():
            if word:
                tokens.append((start, "".join(word)))
                word = []
            if char in "()":
                tokens.append((position, char))
        else:
            if not word:
                start = position
            word.append(char)
    if word:
        tokens.append((start, "".join(word)))
    return tokens


def bucket(size: int, floor: int = BUCKET_FLOOR) -> int:
    """``size`` rounded up to a power of two, at least ``floor``."""
    size = max(int(size), floor)
    return 1 << (size - 1).bit_length()


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TreeBatch:
    """A batch of trees as arrays (see the module docstring for every field's shape)."""

    inputs: Any
    children: Any
    level: Any
    depth: Any
    order: Any
    root: Any
    num_nodes: Any
    labels: Any

    @property
    def batch_size(self) -> int:
        return self.children.shape[0]

    @property
    def max_nodes(self) -> int:
        return self.children.shape[1]

    @property
    def arity(self) -> int:
        return self.children.shape[2]

    @property
    def num_levels(self) -> int:
        """L: the levels a scan over this batch runs (the tallest tree's height + 1)."""
        return self.order.shape[1] + 1

    @classmethod
    def from_trees(
        cls,
        trees: Sequence[Tree],
        *,
        vocab: dict | None = None,
        input_size: int | None = None,
        num_labels: int | None = None,
        arity: int | None = None,
        max_nodes: int | None = None,
        num_levels: int | None = None,
        width: int | None = None,
        bucketed: bool = False,
    ) -> TreeBatch:
        """Lay ``trees`` out as one padded batch (NumPy arrays).

        Args:
          trees: ``Tree``s (or nested tuples, given to ``from_nested``).
          vocab: maps str inputs (words) to token ids >= 1; a word not in it is an error
            unless the vocabulary has ``"<unk>"``.
          input_size: D when inputs are vectors (floats); None for token ids.
          num_labels: labels must lie in [0, num_labels).
          arity, max_nodes, num_levels, width: pad K, N, L and W to these (a tree that
            needs more is a ValueError); by default the batch's own sizes, or with
            ``bucketed`` those rounded up by ``bucket``.
        """
        trees = [t if isinstance(t, Tree) else from_nested(t) for t in trees]
        require(trees, "TreeBatch.from_trees needs at least one tree")
        levels = [t.levels() for t in trees]
        round_up = bucket if bucketed else (lambda n: n)
        need = {
            "arity": max(t.arity for t in trees) if any(len(t) > 1 for t in trees) else 1,
            "max_nodes": max(len(t) for t in trees),
            "num_levels": max(int(lv[-1]) for lv in levels) + 1,
            "width": max([int(np.max(np.bincount(lv)[1:])) for lv in levels if lv[-1] > 0] or [1]),
        }
        given = {"arity": arity, "max_nodes": max_nodes, "num_levels": num_levels, "width": width}
        size = {}
        for name, needed in need.items():
            if given[name] is None:  # K is not rounded: positional cells need it exact
                size[name] = round_up(needed) if name not in ("num_levels", "arity") else needed
            else:
                require(
                    given[name] >= needed,
                    f"{name}={given[name]} is too small: a tree in the batch needs {needed}",
                )
                size[name] = given[name]
        if bucketed and num_levels is None:
            size["num_levels"] = bucket(need["num_levels"], 1)
        batch, n, k = len(trees), size["max_nodes"], size["arity"]
        inputs = (
            np.zeros((batch, n), np.int32)
            if input_size is None
            else np.zeros((batch, n, input_size), np.float32)
        )
        children = np.full((batch, n, k), -1, np.int32)
        level = np.full((batch, n), -1, np.int32)
        depth = np.full((batch, n), -1, np.int32)
        order = np.full((batch, size["num_levels"] - 1, size["width"]), -1, np.int32)
        labels = np.full((batch, n), -1, np.int32)
        for b, (tree, lv) in enumerate(zip(trees, levels, strict=True)):
            count = len(tree)
            for node, kids in enumerate(tree.children):
                require(
                    len(kids) <= k,
                    f"node {node} of tree {b} has {len(kids)} children, above the arity {k}",
                )
                children[b, node, : len(kids)] = kids
                inputs[b, node] = _input_value(tree.inputs[node], vocab, input_size, b, node)
                if tree.labels is not None and tree.labels[node] is not None:
                    label = _index(tree.labels[node], f"the label of node {node} in tree {b}")
                    require(label >= 0, f"label {label} of node {node} in tree {b} is negative")
                    if num_labels is not None:
                        require(
                            0 <= label < num_labels,
                            f"label {label} of node {node} in tree {b} is out of range "
                            f"[0, {num_labels})",
                        )
                    labels[b, node] = label
            level[b, :count] = lv
            depth[b, :count] = tree.depths()
            for height in range(1, int(lv[-1]) + 1):
                nodes = np.flatnonzero(lv == height)
                order[b, height - 1, : len(nodes)] = nodes
        return cls(
            inputs=inputs,
            children=children,
            level=level,
            depth=depth,
            order=order,
            root=np.asarray([len(t) - 1 for t in trees], np.int32),
            num_nodes=np.asarray([len(t) for t in trees], np.int32),
            labels=labels,
        )

    def pad(
        self,
        *,
        batch_size: int | None = None,
        max_nodes: int | None = None,
        arity: int | None = None,
        num_levels: int | None = None,
        width: int | None = None,
    ) -> TreeBatch:
        """The same trees padded to larger sizes (host arrays). Extra batch rows are real
        single-leaf trees with input 0 (token id 0 reads nothing; float inputs are
        zeros) and no label: a loss should mask them out, and their inputs must stay
        finite (unlike padding nodes, they are computed)."""
        b, n, k = self.children.shape
        levels, w = self.order.shape[1] + 1, self.order.shape[2]
        new = {
            "batch_size": (batch_size, b),
            "max_nodes": (max_nodes, n),
            "arity": (arity, k),
            "num_levels": (num_levels, levels),
            "width": (width, w),
        }
        for name, (want, have) in new.items():
            require(
                want is None or want >= have,
                f"pad: {name}={want} is smaller than the batch's {have}",
            )
        nb, nn, nk, nl, nw = (want if want is not None else have for want, have in new.values())

        def grow(array, shape, fill):
            array = np.asarray(array)
            out = np.full(shape, fill, array.dtype)
            out[tuple(slice(0, s) for s in array.shape)] = array
            return out

        inputs = np.asarray(self.inputs)
        padded = TreeBatch(
            inputs=grow(inputs, (nb, nn, *inputs.shape[2:]), 0),
            children=grow(self.children, (nb, nn, nk), -1),
            level=grow(self.level, (nb, nn), -1),
            depth=grow(self.depth, (nb, nn), -1),
            order=grow(self.order, (nb, nl - 1, nw), -1),
            root=grow(self.root, (nb,), 0),
            num_nodes=grow(self.num_nodes, (nb,), 1),
            labels=grow(self.labels, (nb, nn), -1),
        )
        padded.level[b:, 0] = 0  # the filler rows: one leaf each
        padded.depth[b:, 0] = 0
        return padded

    def validate(self) -> TreeBatch:
        """Check a batch built by hand (``from_dict``, or arrays edited after
        ``from_trees``): every child of a real node is an earlier node of the same tree
        with one parent, levels follow the children, ``order`` lists exactly the inner
        nodes of each level, the root is the last real node, padding nodes have no
        children and level -1. Returns the batch; a ValueError names the first tree and
        node that break a rule. Host-side (NumPy); ``tree_scan`` calls it on concrete
        batches."""
        children = np.asarray(self.children)
        level, order = np.asarray(self.level), np.asarray(self.order)
        root, counts = np.asarray(self.root), np.asarray(self.num_nodes)
        b, n, _ = children.shape
        require(
            level.shape == (b, n) and root.shape == counts.shape == (b,) and order.shape[0] == b,
            f"TreeBatch fields disagree: children {children.shape}, level {level.shape}, "
            f"order {order.shape}, root {root.shape}, num_nodes {counts.shape}",
        )
        for tree in range(b):
            count = int(counts[tree])
            require(1 <= count <= n, f"tree {tree}: num_nodes {count} outside [1, {n}]")
            require(
                int(root[tree]) == count - 1,
                f"tree {tree}: root {int(root[tree])} is not its last real node {count - 1}",
            )
            kids = children[tree, :count]
            present = kids >= 0
            bad = present & (kids >= np.arange(count)[:, None])
            if bad.any():
                node, slot = (int(i) for i in np.argwhere(bad)[0])
                raise ValueError(
                    f"tree {tree}: node {node} lists child {int(kids[node, slot])}, not an "
                    "earlier node of the tree (children come before their parents)"
                )
            require(
                bool(np.all(children[tree, count:] < 0) and np.all(level[tree, count:] < 0)),
                f"tree {tree}: padding nodes {count}.. have children or a level",
            )
            flat = kids[present]
            require(
                len(np.unique(flat)) == len(flat) == count - 1,
                f"tree {tree}: its {count} nodes are not one tree (a node with two parents, "
                "or one besides the root without a parent)",
            )
            expected = np.zeros(count, np.int64)
            for node in range(count):
                below = kids[node][present[node]]
                if below.size:
                    expected[node] = 1 + expected[below].max()
            if not np.array_equal(expected, level[tree, :count]):
                node = int(np.flatnonzero(expected != level[tree, :count])[0])
                raise ValueError(
                    f"tree {tree}: node {node} has level {int(level[tree, node])}, its children "
                    f"give {int(expected[node])}"
                )
            require(
                int(expected.max(initial=0)) <= order.shape[1],
                f"tree {tree} is {int(expected.max())} levels tall; order has "
                f"{order.shape[1]} inner levels",
            )
            for height in range(1, order.shape[1] + 1):
                listed = order[tree, height - 1]
                listed = np.sort(listed[listed >= 0])
                inner = np.flatnonzero(expected == height)
                require(
                    np.array_equal(listed, inner),
                    f"tree {tree}: order lists nodes {listed.tolist()} at level {height}, the "
                    f"tree has {inner.tolist()} there",
                )
        return self

    def as_dict(self) -> dict:
        """The fields as a dict of arrays (a task's batch); ``from_dict`` inverts it."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, arrays: dict) -> TreeBatch:
        return cls(**{field.name: arrays[field.name] for field in dataclasses.fields(cls)})


def _input_value(value, vocab, input_size, tree: int, node: int):
    if value is None:
        return 0
    if input_size is not None:
        vector = np.asarray(value, np.float32)
        require(
            vector.shape == (input_size,),
            f"node {node} of tree {tree}: expected an input vector of shape ({input_size},), "
            f"got {vector.shape}",
        )
        return vector
    if isinstance(value, str):
        require(vocab is not None, f"node {node} of tree {tree} reads a word: give a vocab")
        if value in vocab:
            token = _index(vocab[value], f"the vocab's id of {value!r}")
        else:
            require(
                "<unk>" in vocab, f"word {value!r} (node {node} of tree {tree}) not in the vocab"
            )
            token = _index(vocab["<unk>"], "the vocab's id of '<unk>'")
        require(
            token >= 1, f"the vocab maps {value!r} to {token}: ids start at 1 (0 reads nothing)"
        )
        return token
    require(
        np.ndim(value) == 0,
        f"node {node} of tree {tree} reads a vector of shape {np.shape(value)}: give "
        "input_size= to from_trees",
    )
    token = _index(value, f"the input of node {node} in tree {tree}")
    require(token >= 1, f"node {node} of tree {tree}: token ids start at 1 (0 reads nothing)")
    return token


def _index(value, what: str) -> int:
    """``value`` as an int, refusing floats, bools and text (2.9 is not label 2)."""
    if isinstance(value, bool | float | np.floating):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{what} must be an integer, got {value!r}") from None
