"""Recursive (tree-structured) networks: tree cells, trees as arrays, the level scan.

    batch = seqlab.trees.TreeBatch.from_trees([seqlab.trees.parse_brackets(line), ...],
                                              vocab=vocab)
    cell = seqlab.trees.ChildSumTreeLSTM(64)
    node_states, root_states = seqlab.trees.tree_scan(cell, params, batch, inputs=xs)

The cells are registered for ``model.cell=`` (``tree_rnn``, ``child_sum_tree_lstm``,
``nary_tree_lstm``, ``tree_gru``); tree tasks train them with the ``tree`` architecture.
"""

from seqlab.cells import register as _register
from seqlab.cells import registered as _registered
from seqlab.trees._batch import BUCKET_FLOOR as BUCKET_FLOOR
from seqlab.trees._batch import Tree as Tree
from seqlab.trees._batch import TreeBatch as TreeBatch
from seqlab.trees._batch import bucket as bucket
from seqlab.trees._batch import from_nested as from_nested
from seqlab.trees._batch import parse_brackets as parse_brackets
from seqlab.trees._cells import TREE_CELLS as TREE_CELLS
from seqlab.trees._cells import ChildSumTreeLSTM as ChildSumTreeLSTM
from seqlab.trees._cells import NaryTreeLSTM as NaryTreeLSTM
from seqlab.trees._cells import TreeCell as TreeCell
from seqlab.trees._cells import TreeGRU as TreeGRU
from seqlab.trees._cells import TreeRNN as TreeRNN
from seqlab.trees._cells import is_tree_cell as is_tree_cell
from seqlab.trees._scan import tree_scan as tree_scan

for _name, _factory in TREE_CELLS.items():
    if _name not in _registered(None):
        _register(_name, _factory, kind="tree")

__all__ = [
    "BUCKET_FLOOR",
    "ChildSumTreeLSTM",
    "NaryTreeLSTM",
    "TREE_CELLS",
    "Tree",
    "TreeBatch",
    "TreeCell",
    "TreeGRU",
    "TreeRNN",
    "bucket",
    "from_nested",
    "is_tree_cell",
    "parse_brackets",
    "tree_scan",
]
