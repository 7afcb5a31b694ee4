"""Tree tasks: ListOps (generated), as trees or as flat token sequences; treebank
sentiment from bracketed trees.

- ``listops``: Nangia & Bowman (2018): prefix expressions of MAX, MIN, MED (median, rounded
  down) and SM (sum mod 10) over digits, e.g. ``[MAX 2 9 [MIN 4 7 ] 0 ]`` = 9; a 10-way
  classification of the value. ``data.form="tree"`` gives the true parse to a tree cell
  (each operator a node whose input is the operator token and whose children are its
  arguments; digits are leaves), ``"flat"`` the token sequence to a sequence cell
  (many-to-one), and ``"auto"`` (the default) picks by ``model.cell``, so that one sweep
  over ``model.cell`` compares tree and sequence cells on the same expressions.
- ``treebank``: sentiment over bracketed trees (the Stanford Sentiment Treebank's layout:
  ``train.txt``, ``dev.txt``, ``test.txt`` in ``data.path``, one tree per line, a label
  0-4 on every node; nothing is downloaded). Every node is trained and scored
  (``eval/accuracy``); ``eval/root_accuracy`` scores the roots. ``data.labels=binary``
  maps 0-1 to negative and 3-4 to positive, leaves neutral nodes unscored and drops
  trees with a neutral root, as Tai et al. (2015) do.
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np

from seqlab import cells
from seqlab.experiments._config import DataConfig
from seqlab.experiments.tasks._base import Task, TaskData, register
from seqlab.layers import SPECIAL_TOKENS, Vocabulary
from seqlab.trees import Tree, TreeBatch, parse_brackets

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


# Draws per wanted expression before the length range is declared out of reach.
LISTOPS_ATTEMPTS = 200


def _length_range(data) -> tuple[int, int]:
    """The fewest and most tokens an expression of these settings can have."""
    shortest = 2 + 2  # the root over two digits: [OP d d ]
    longest, width = 1, data.max_args
    for _ in range(data.max_depth):  # every argument an operator down to max_depth
        longest = 2 + width * longest
    if data.leaf_prob >= 1:
        longest = 2 + width  # below the root every argument is a digit
    if data.leaf_prob <= 0:  # every argument below the root is an operator down to max_depth
        shortest = 1
        for _ in range(data.max_depth):
            shortest = 2 + 2 * shortest
    return shortest, longest


def _expressions(rng, count: int, data) -> list:
    shortest, longest = _length_range(data)
    if data.max_length < shortest or data.min_length > longest:
        raise ValueError(
            f"listops expressions with data.max_depth={data.max_depth}, data.max_args="
            f"{data.max_args}, data.leaf_prob={data.leaf_prob} have {shortest} to {longest} "
            f"tokens; data.min_length..data.max_length ({data.min_length}..{data.max_length}) "
            "excludes them all"
        )
    found, attempts = [], 0
    while len(found) < count:
        attempts += 1
        if attempts > LISTOPS_ATTEMPTS * count:
            raise ValueError(
                f"only {len(found)} of {count} listops expressions within data.min_length.."
                f"data.max_length ({data.min_length}..{data.max_length}) in {attempts - 1} "
                "draws: widen the range or change data.max_depth / data.leaf_prob"
            )
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
        form = "tree" if cells.kind_of(config.model.cell) == "tree" else "flat"
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
            "arity": data.max_args,
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


# --------------------------------------------------------------------------- treebank

TREEBANK_LABELS = ("fine", "binary")
TREEBANK_SPLITS = ("train", "dev", "test")


def read_treebank(path, split: str, *, num_labels: int = 5) -> list[Tree]:
    """The bracketed trees of ``<path>/<split>.txt`` (the SST layout: one tree per line,
    a label on every node). A malformed line is a ValueError naming the file and line."""
    file = pathlib.Path(path) / f"{split}.txt"
    if not file.is_file():
        raise ValueError(
            f"data.path must be a folder holding {', '.join(s + '.txt' for s in TREEBANK_SPLITS)} "
            f"(one bracketed tree per line, the SST layout); {file} is missing"
        )
    trees = []
    for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            trees.append(parse_brackets(line, num_labels=num_labels))
        except ValueError as error:
            raise ValueError(f"{file}, line {number}: {error}") from None
    if not trees:
        raise ValueError(f"{file} holds no trees")
    return trees


def _binary(tree: Tree) -> Tree | None:
    """SST's binary version: labels 0, 1 -> 0 (negative), 3, 4 -> 1, neutral nodes
    unlabelled; None for a tree whose root is neutral (dropped, as in Tai et al.)."""
    labels = [None if label == 2 else int(label >= 3) for label in tree.labels]
    if labels[-1] is None:
        return None
    return Tree(tree.children, tree.inputs, tuple(labels))


@dataclasses.dataclass
class TreebankData(DataConfig):
    path: str = ""  # a folder with train.txt, dev.txt, test.txt (SST layout)
    labels: str = "fine"  # fine (5 classes) | binary (neutral roots dropped)
    eval_split: str = "dev"  # dev | test
    vocab_size: int = 20000  # the four special tokens included
    lowercase: bool = True
    max_train: int = 0  # cap on training trees; 0 keeps all


def load_treebank(config) -> TaskData:
    data = config.data
    if not data.path:
        raise ValueError(
            "data.path must name a folder of bracketed trees in the SST layout (train.txt, "
            "dev.txt, test.txt), got ''"
        )
    if data.labels not in TREEBANK_LABELS or data.eval_split not in ("dev", "test"):
        raise ValueError(
            f"data.labels must be one of {', '.join(TREEBANK_LABELS)} and data.eval_split dev "
            f"or test, got {data.labels!r} and {data.eval_split!r}"
        )
    if cells.kind_of(config.model.cell) != "tree":
        raise ValueError(
            f"model.cell={config.model.cell} is a sequence cell; treebank reads trees: choose "
            f"a tree cell ({', '.join(cells.registered('tree'))})"
        )
    train = read_treebank(data.path, "train")
    evaluation = read_treebank(data.path, data.eval_split)
    if data.labels == "binary":
        train = [t for t in map(_binary, train) if t is not None]
        evaluation = [t for t in map(_binary, evaluation) if t is not None]
        if not train or not evaluation:
            raise ValueError(f"{data.path}: no tree with a non-neutral root in train or eval")
    if data.max_train and data.max_train < len(train):
        rng = np.random.default_rng(data.split_seed)
        train = [train[i] for i in np.sort(rng.choice(len(train), data.max_train, replace=False))]

    def words(tree):
        return [w.lower() if data.lowercase else w for w in tree.inputs if w is not None]

    vocab = Vocabulary.build([words(t) for t in train], max_size=data.vocab_size)
    ids = {token: i for i, token in enumerate(vocab.tokens)}

    def encoded(tree):
        inputs = tuple(
            None if w is None else ids.get(w.lower() if data.lowercase else w, 1)
            for w in tree.inputs
        )
        return Tree(tree.children, inputs, tree.labels)

    num_labels = 5 if data.labels == "fine" else 2
    every = [encoded(t) for t in train + evaluation]
    arrays = TreeBatch.from_trees(every, num_labels=num_labels).as_dict()
    arrays["targets"] = arrays.pop("labels")
    arrays["labels"] = arrays["targets"]  # TreeBatch's field, the same array
    split = len(train)
    train_arrays = {k: v[:split] for k, v in arrays.items()}
    eval_arrays = {k: v[split:] for k, v in arrays.items()}
    node_counts = np.bincount(train_arrays["targets"][train_arrays["targets"] >= 0], minlength=2)
    roots = train_arrays["targets"][np.arange(split), train_arrays["root"]]
    root_majority = int(np.argmax(np.bincount(roots, minlength=num_labels)))
    eval_roots = eval_arrays["targets"][np.arange(len(evaluation)), eval_arrays["root"]]
    eval_nodes = eval_arrays["targets"][eval_arrays["targets"] >= 0]
    return TaskData(
        info={
            "kind": "tree",
            "per_node": True,
            "objective": "xent",
            "input_vocab": len(vocab),
            "input_encoding": "embedding",
            "output_size": num_labels,
            "labels": ["very negative", "negative", "neutral", "positive", "very positive"]
            if num_labels == 5
            else ["negative", "positive"],
            "vocab": vocab.tokens,
            "baselines": {
                "eval/root_accuracy": float(np.mean(eval_roots == root_majority)),
                "eval/accuracy": float(np.mean(eval_nodes == int(np.argmax(node_counts)))),
            },
            "num_train": split,
            "arity": int(arrays["children"].shape[-1]),
        },
        train=train_arrays,
        eval=eval_arrays,
    )


register(
    Task(
        "treebank",
        "sentiment over bracketed trees in the SST layout from a local folder (data.path): "
        "labels on every node, root and all-node accuracy, fine-grained or binary",
        TreebankData,
        load_treebank,
        main_metric="eval/root_accuracy",
        mode="max",
    )
)
