"""Tree tasks: ListOps (generated), as trees or as flat token sequences.

- ``listops``: Nangia & Bowman (2018): prefix expressions of MAX, MIN, MED (median, rounded
  down) and SM (sum mod 10) over digits, e.g. ``[MAX 2 9 [MIN 4 7 ] 0 ]`` = 9; a 10-way
  classification of the value. ``data.form="tree"`` gives the true parse to a tree cell
  (each operator a node whose input is the operator token and whose children are its
  arguments; digits are leaves), ``"flat"`` the token sequence to a sequence cell
  (many-to-one), and ``"auto"`` (the default) picks by ``model.cell``, so that one sweep
  over ``model.cell`` compares tree and sequence cells on the same expressions.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from seqlab.experiments._config import DataConfig
from seqlab.experiments.tasks._base import Task, TaskData, register
from seqlab.layers import SPECIAL_TOKENS, Vocabulary
from seqlab.trees import TREE_CELLS, Tree, TreeBatch

LISTOPS_OPERATORS = ("[MAX", "[MIN", "[MED", "[SM")
LISTOPS_FORMS = ("auto", "tree", "flat")


def _apply(operator: str, values: list[int]) -> int:
    if operator == "[MAX":
        return max(values)
    if operator == "[MIN":
        return min(values)
    if operator == "[MED":
        return int(np.median(values))  # rounded down, as the original generator
    return sum(values) % 10


def listops_expression(rng: np.random.Generator, max_depth: int, max_args: int, leaf_prob):
    """One random expression as nested (operator, [arguments]) with digits at the leaves;
    the root is always an operator."""

    def node(depth: int):
        if depth > 0 and (depth >= max_depth or rng.random() < leaf_prob):
            return int(rng.integers(10))
        arguments = [node(depth + 1) for _ in range(int(rng.integers(2, max_args + 1)))]
        return (LISTOPS_OPERATORS[int(rng.integers(len(LISTOPS_OPERATORS)))], arguments)

    return node(0)


def listops_value(expression) -> int:
    if isinstance(expression, int):
        return expression
    operator, arguments = expression
    return _apply(operator, [listops_value(a) for a in arguments])


def listops_tokens(expression) -> list[str]:
    """The flat prefix form: ``[MAX 2 9 [MIN 4 7 ] 0 ]``."""
    if isinstance(expression, int):
        return [str(expression)]
    operator, arguments = expression
    return [operator, *(t for a in arguments for t in listops_tokens(a)), "]"]


def listops_tree(expression, vocab: Vocabulary) -> Tree:
    """The true parse: an operator node reads its operator token, digits are leaves."""
    children, inputs = [], []

    def visit(item) -> int:
        if isinstance(item, int):
            children.append(())
            inputs.append(int(vocab.encode([str(item)])[0]))
        else:
            operator, arguments = item
            kids = tuple(visit(a) for a in arguments)
            children.append(kids)
            inputs.append(int(vocab.encode([operator])[0]))
        return len(children) - 1

    visit(expression)
    return Tree(tuple(children), tuple(inputs))


LISTOPS_VOCAB = Vocabulary([*SPECIAL_TOKENS, *LISTOPS_OPERATORS, "]", *map(str, range(10))])


@dataclasses.dataclass
class ListOpsData(DataConfig):
    form: str = "auto"  # auto | tree | flat (auto: tree for a tree cell, else flat)
    max_depth: int = 4  # operator nesting below the root
    max_args: int = 4  # arguments of an operator (at least 2)
    leaf_prob: float = 0.5  # chance an argument below the root is a digit
    min_length: int = 8  # tokens of the flat form, inclusive
    max_length: int = 60
    num_train: int = 8000
    eval_size: int = 1000


def _expressions(rng, count: int, data) -> list:
    found = []
    while len(found) < count:
        expression = listops_expression(rng, data.max_depth, data.max_args, data.leaf_prob)
        if data.min_length <= len(listops_tokens(expression)) <= data.max_length:
            found.append(expression)
    return found


def load_listops(config) -> TaskData:
    data = config.data
    if data.form not in LISTOPS_FORMS:
        raise ValueError(f"data.form must be one of {', '.join(LISTOPS_FORMS)}, got {data.form!r}")
    if data.max_args < 2 or data.max_depth < 1 or not 0 <= data.leaf_prob <= 1:
        raise ValueError(
            "listops needs data.max_args >= 2, data.max_depth >= 1 and 0 <= data.leaf_prob <= 1, "
            f"got {data.max_args}, {data.max_depth} and {data.leaf_prob}"
        )
    if data.min_length > data.max_length or data.max_length < 5:
        raise ValueError(
            f"data.min_length ({data.min_length}) must be <= data.max_length ({data.max_length}), "
            "and an expression has at least 5 tokens"
        )
    form = data.form
    if form == "auto":
        form = "tree" if config.model.cell in TREE_CELLS else "flat"
    # the same expressions for every form, seed and cell: data.split_seed alone picks them
    rng = np.random.default_rng(data.split_seed)
    expressions = _expressions(rng, data.num_train + data.eval_size, data)
    targets = np.asarray([listops_value(e) for e in expressions], np.int32)
    vocab = LISTOPS_VOCAB
    if form == "tree":
        trees = [listops_tree(e, vocab) for e in expressions]
        arrays = TreeBatch.from_trees(trees, arity=data.max_args).as_dict()
        kind = "tree"
    else:
        ids, lengths = vocab.encode_batch([listops_tokens(e) for e in expressions])
        arrays = {"inputs": ids, "lengths": lengths}
        kind = "many_to_one"
    arrays["targets"] = targets
    split = data.num_train
    train = {k: v[:split] for k, v in arrays.items()}
    evaluation = {k: v[split:] for k, v in arrays.items()}
    counts = np.bincount(train["targets"], minlength=10)
    majority = int(np.argmax(counts))
    return TaskData(
        info={
            "kind": kind,
            "form": form,
            "objective": "xent",
            "input_vocab": len(vocab),
            "input_encoding": "embedding",
            "output_size": 10,
            "labels": [str(d) for d in range(10)],
            "vocab": vocab.tokens,
            "baselines": {"eval/accuracy": float(np.mean(evaluation["targets"] == majority))},
            "num_train": split,
            "max_nodes": int(arrays["inputs"].shape[1]),
        },
        train=train,
        eval=evaluation,
    )


register(
    Task(
        "listops",
        "ListOps (Nangia & Bowman 2018): nested MAX/MIN/MED/SM over digits, as trees for a "
        "tree cell or flat tokens for a sequence cell",
        ListOpsData,
        load_listops,
        main_metric="eval/accuracy",
        mode="max",
    )
)
