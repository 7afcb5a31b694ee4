"""Token tasks: sentiment (IMDB), sequence tagging, date translation, character generation.

- ``sentiment``: the IMDB reviews (Maas et al. 2011) in their ``aclImdb`` folder layout,
  read from ``data.path`` (this machine fetches nothing): many-to-one over word tokens,
  one-hot or embedding inputs.
- ``tagging``: many-to-many, synced. By default the characters of lines of the Python
  standard library's own source, each tagged with its token class by ``tokenize`` (a
  lexer, learned); or any CoNLL-style file (``data.path``: one token per line, the tag in
  the last column, blank lines between sentences).
- ``dates``: an encoder-decoder from human-written dates ("Tuesday 24 November 2026",
  "nov 24, 2026", "24.11.2026", ...) to ISO ("2026-11-24"): inputs and outputs differ in
  length.
- ``chars``: one-to-many: from one character, generate the next ``seq_len`` characters of
  a text (``data.path``, or by default the docstrings of some standard-library modules).
"""

from __future__ import annotations

import ast
import codecs
import dataclasses
import datetime
import importlib
import importlib.util
import io
import keyword
import math
import pathlib
import re
import tokenize

import numpy as np

from seqlab.experiments._config import DataConfig
from seqlab.experiments.tasks._base import Task, TaskData, register, split_indices, take
from seqlab.layers import SPECIAL_TOKENS, Vocabulary

# --------------------------------------------------------------------------- sentiment

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def tokenize_review(text: str) -> list[str]:
    """Lower-cased words of a review, with IMDB's ``<br />`` line breaks removed."""
    return _WORD.findall(text.replace("<br />", " ").lower())


def read_aclimdb(path: str | pathlib.Path, split: str) -> tuple[list[str], np.ndarray]:
    """Texts and labels (1 positive, 0 negative) of ``aclImdb/<split>/{pos,neg}/*.txt``,
    in sorted file order."""
    root = pathlib.Path(path)
    texts, labels = [], []
    for label, folder in ((1, "pos"), (0, "neg")):
        directory = root / split / folder
        if not directory.is_dir():
            raise ValueError(
                f"data.path must be an aclImdb folder holding {split}/pos and {split}/neg "
                f"(https://ai.stanford.edu/~amaas/data/sentiment/); {directory} is missing"
            )
        for file in sorted(directory.glob("*.txt")):
            texts.append(file.read_text(encoding="utf-8", errors="replace"))
            labels.append(label)
    if not texts:
        raise ValueError(f"{root / split} holds no reviews (*.txt under pos/ and neg/)")
    return texts, np.array(labels, np.int32)


@dataclasses.dataclass
class SentimentData(DataConfig):
    path: str = ""  # the aclImdb folder
    seq_len: int = 200  # tokens kept per review
    keep: str = "head"  # head | tail: which end of a long review is kept
    vocab_size: int = 10000  # the four special tokens included
    input_encoding: str = "embedding"  # embedding | one_hot
    eval_size: int = 5000  # reviews of the test split (all: 25000)
    max_train: int = 0  # cap on training reviews; 0 keeps all


def _encode_reviews(vocab, token_lists, seq_len, keep):
    cut = [t[:seq_len] if keep == "head" else t[-seq_len:] for t in token_lists]
    ids, lengths = vocab.encode_batch(cut, max_length=seq_len)
    return ids, np.maximum(lengths, 1)  # an empty review reads one <pad>


def load_sentiment(config) -> TaskData:
    data = config.data
    if not data.path:
        raise ValueError(
            "data.path must name an aclImdb folder (download and unpack "
            "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz), got ''"
        )
    if data.keep not in ("head", "tail") or data.input_encoding not in ("embedding", "one_hot"):
        raise ValueError(
            "data.keep must be head or tail and data.input_encoding embedding or one_hot, got "
            f"{data.keep!r} and {data.input_encoding!r}"
        )
    texts, labels = read_aclimdb(data.path, "train")
    rng = np.random.default_rng(data.split_seed)
    if data.max_train and data.max_train < len(texts):
        chosen = np.sort(rng.choice(len(texts), data.max_train, replace=False))
        texts, labels = [texts[i] for i in chosen], labels[chosen]
    tokens = [tokenize_review(t) for t in texts]
    if data.num_folds:
        train_idx, eval_idx = split_indices(len(texts), data, eval_fraction=0.0)
        eval_tokens, eval_labels = [tokens[i] for i in eval_idx], labels[eval_idx]
        tokens, labels = [tokens[i] for i in train_idx], labels[train_idx]
    else:
        test_texts, eval_labels = read_aclimdb(data.path, "test")
        if data.eval_size < len(test_texts):
            chosen = np.sort(rng.choice(len(test_texts), data.eval_size, replace=False))
            test_texts, eval_labels = [test_texts[i] for i in chosen], eval_labels[chosen]
        eval_tokens = [tokenize_review(t) for t in test_texts]
    vocab = Vocabulary.build(tokens, max_size=data.vocab_size)
    train_ids, train_lengths = _encode_reviews(vocab, tokens, data.seq_len, data.keep)
    eval_ids, eval_lengths = _encode_reviews(vocab, eval_tokens, data.seq_len, data.keep)
    majority = int(np.mean(labels) >= 0.5)
    return TaskData(
        info={
            "kind": "many_to_one",
            "objective": "xent",
            "input_vocab": len(vocab),
            "input_encoding": data.input_encoding,
            "output_size": 2,
            "labels": ["negative", "positive"],
            "vocab": vocab.tokens,
            "baselines": {"eval/accuracy": float(np.mean(eval_labels == majority))},
            "num_train": len(labels),
        },
        train={"inputs": train_ids, "lengths": train_lengths, "targets": labels},
        eval={"inputs": eval_ids, "lengths": eval_lengths, "targets": eval_labels},
    )


register(
    Task(
        "sentiment",
        "IMDB review sentiment from a local aclImdb folder (many-to-one over tokens)",
        SentimentData,
        load_sentiment,
        main_metric="eval/accuracy",
        mode="max",
    )
)

# --------------------------------------------------------------------------- tagging

PYTHON_TAGS = ("space", "name", "keyword", "operator", "number", "string", "comment")
_PYTHON_SOURCES = ("textwrap", "string", "json.decoder", "json.encoder", "fractions", "heapq")


def python_char_tags(source: str) -> list[tuple[str, list[int]]]:
    """(line, per-character tag ids into PYTHON_TAGS) for every line of Python source,
    the tags read off ``tokenize``'s token spans (strings spanning lines included)."""
    lines = source.splitlines()
    tags = [[0] * len(line) for line in lines]
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.NAME:
            tag = 2 if keyword.iskeyword(token.string) else 1
        elif token.type == tokenize.OP:
            tag = 3
        elif token.type == tokenize.NUMBER:
            tag = 4
        elif token.type in (tokenize.STRING, getattr(tokenize, "FSTRING_START", -1)):
            tag = 5
        elif token.type in (
            getattr(tokenize, "FSTRING_MIDDLE", -1),
            getattr(tokenize, "FSTRING_END", -1),
        ):
            tag = 5
        elif token.type == tokenize.COMMENT:
            tag = 6
        else:
            continue
        (row, col), (end_row, end_col) = token.start, token.end
        for r in range(row, end_row + 1):
            line = tags[r - 1]
            start = col if r == row else 0
            stop = end_col if r == end_row else len(line)
            for c in range(start, min(stop, len(line))):
                line[c] = tag
    return [(line, tag) for line, tag in zip(lines, tags, strict=True) if line.strip()]


def read_conll(path: str | pathlib.Path) -> list[tuple[list[str], list[str]]]:
    """Sentences of a CoNLL-style file: one token per line (first column), its tag in the
    last column, a blank line between sentences; ``-DOCSTART-`` lines are skipped."""
    sentences, words, tags = [], [], []
    file = pathlib.Path(path)
    if not file.is_file():
        raise ValueError(f"data.path must be a CoNLL-style file, {file} does not exist")
    for number, raw in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
        fields = raw.split()
        if not fields or fields[0] == "-DOCSTART-":
            if words:
                sentences.append((words, tags))
                words, tags = [], []
            continue
        if len(fields) < 2:
            raise ValueError(f"{file}:{number}: expected 'token ... tag', got {raw!r}")
        words.append(fields[0])
        tags.append(fields[-1])
    if words:
        sentences.append((words, tags))
    if not sentences:
        raise ValueError(f"{file} holds no sentences")
    return sentences


@dataclasses.dataclass
class TaggingData(DataConfig):
    source: str = "python"  # python (stdlib source, character level) | conll (data.path)
    path: str = ""
    seq_len: int = 80  # longer sequences are cut
    eval_fraction: float = 0.2


def load_tagging(config) -> TaskData:
    data = config.data
    if data.source == "python":
        pairs = []
        for module in _PYTHON_SOURCES:
            file = importlib.import_module(module).__file__
            pairs += python_char_tags(pathlib.Path(file).read_text(encoding="utf-8"))
        sequences = [list(line) for line, _ in pairs]
        tag_ids = [tags for _, tags in pairs]
        tag_names = list(PYTHON_TAGS)
    elif data.source == "conll":
        sentences = read_conll(data.path)
        sequences = [words for words, _ in sentences]
        tag_names = sorted({t for _, tags in sentences for t in tags})
        index = {t: i for i, t in enumerate(tag_names)}
        tag_ids = [[index[t] for t in tags] for _, tags in sentences]
    else:
        raise ValueError(f"data.source must be python or conll, got {data.source!r}")
    train_idx, eval_idx = split_indices(len(sequences), data, eval_fraction=data.eval_fraction)
    vocab = Vocabulary.build([sequences[i] for i in train_idx])
    ids, lengths = vocab.encode_batch(sequences, max_length=data.seq_len)
    targets = np.zeros_like(ids)
    for row, tags in enumerate(tag_ids):
        tags = tags[: data.seq_len]
        targets[row, : len(tags)] = tags
    arrays = {"inputs": ids, "lengths": lengths, "targets": targets}
    train, evaluation = take(arrays, train_idx), take(arrays, eval_idx)
    valid = np.arange(data.seq_len)[None, :] < evaluation["lengths"][:, None]
    train_valid = np.arange(data.seq_len)[None, :] < train["lengths"][:, None]
    majority = np.bincount(train["targets"][train_valid], minlength=len(tag_names)).argmax()
    return TaskData(
        info={
            "kind": "many_to_many",
            "objective": "xent",
            "input_vocab": len(vocab),
            "input_encoding": "embedding",
            "output_size": len(tag_names),
            "labels": tag_names,
            "vocab": vocab.tokens,
            "baselines": {
                "eval/accuracy": float(np.mean(evaluation["targets"][valid] == majority))
            },
            "num_train": len(train_idx),
        },
        train=train,
        eval=evaluation,
    )


register(
    Task(
        "tagging",
        "sequence tagging: Python source characters by token class, or a CoNLL file",
        TaggingData,
        load_tagging,
        main_metric="eval/accuracy",
        mode="max",
    )
)

# --------------------------------------------------------------------------- dates

_DATE_FORMATS = (
    "%d %B %Y",
    "%B %d, %Y",
    "%A %d %B %Y",
    "%d.%m.%Y",
    "%b %d %Y",
    "%d %b %Y",
    "%Y/%m/%d",
    "%a, %d %b %Y",
)


def human_dates(rng: np.random.Generator, count: int) -> tuple[list[str], list[str]]:
    """``count`` random dates in 1950-2049 written in one of several human formats (half
    of them lower-cased), and the same dates in ISO format. English month and day names
    are spelled out here rather than taken from the locale."""
    months = [
        "January", "February", "March", "April", "May", "June", "July",
        "August", "September", "October", "November", "December",
    ]  # fmt: skip
    days = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
    start = datetime.date(1950, 1, 1).toordinal()
    span = datetime.date(2049, 12, 31).toordinal() - start
    sources, targets = [], []
    for offset, fmt, lower in zip(
        rng.integers(0, span + 1, count),
        rng.integers(0, len(_DATE_FORMATS), count),
        rng.integers(0, 2, count),
        strict=True,
    ):
        date = datetime.date.fromordinal(start + int(offset))
        text = (
            _DATE_FORMATS[fmt]
            .replace("%A", days[date.weekday()])
            .replace("%a", days[date.weekday()][:3])
            .replace("%B", months[date.month - 1])
            .replace("%b", months[date.month - 1][:3])
        )
        text = date.strftime(text)
        sources.append(text.lower() if lower else text)
        targets.append(date.isoformat())
    return sources, targets


@dataclasses.dataclass
class DatesData(DataConfig):
    seq_len: int = 32  # longest source (characters)
    train_size: int = 20000
    eval_size: int = 1000


def load_dates(config) -> TaskData:
    data = config.data
    train_src, train_tgt = human_dates(np.random.default_rng([data.split_seed, 1]), data.train_size)
    eval_src, eval_tgt = human_dates(np.random.default_rng([data.split_seed, 2]), data.eval_size)
    longest = max(map(len, train_src + eval_src))
    if longest > data.seq_len:
        raise ValueError(
            f"data.seq_len must be >= {longest} (the longest date), got {data.seq_len}"
        )
    source_vocab = Vocabulary.build([list(s) for s in train_src + eval_src])
    target_vocab = Vocabulary.build([list("0123456789-")])

    def arrays(sources, targets):
        ids, lengths = source_vocab.encode_batch(
            [list(s) for s in sources], max_length=data.seq_len
        )
        target_ids, _ = target_vocab.encode_batch([list(t) for t in targets], add_eos=True)
        return {"inputs": ids, "lengths": lengths, "targets": target_ids}

    train = arrays(train_src, train_tgt)
    evaluation = arrays(eval_src, eval_tgt)
    loss, accuracy = _position_baseline(train["targets"], evaluation["targets"], len(target_vocab))
    return TaskData(
        info={
            "kind": "encoder_decoder",
            "objective": "xent",
            "input_vocab": len(source_vocab),
            "input_encoding": "embedding",
            "output_size": len(target_vocab),
            "target_length": train["targets"].shape[1],
            "vocab": source_vocab.tokens,
            "target_vocab": target_vocab.tokens,
            "baselines": {"eval/exact_match": 0.0, "eval/loss": loss, "eval/accuracy": accuracy},
            "baseline_name": "per-position character frequencies of the training targets "
            "(ignores the source)",
            "num_train": data.train_size,
        },
        train=train,
        eval=evaluation,
    )


def _position_baseline(train_targets, eval_targets, vocab_size: int) -> tuple[float, float]:
    """The cross-entropy and token accuracy, on the eval targets, of a model that ignores
    the source and predicts each output position's character frequencies in the training
    targets (add-one smoothed over the target vocabulary; accuracy from the most frequent
    character). Counted over the tokens the loss counts: up to and including ``<eos>``."""
    pad = SPECIAL_TOKENS.index("<pad>")  # Vocabulary's reserved padding id
    log_probs, best = [], []
    for position in range(eval_targets.shape[1]):
        column = train_targets[:, position : position + 1].ravel()  # empty past its end
        counts = np.bincount(column, minlength=vocab_size).astype(np.float64)[:vocab_size]
        counts[pad] = 0.0  # never a target the loss counts
        best.append(int(counts.argmax()))
        smoothed = counts + 1.0
        smoothed[pad] = 0.0
        probs = smoothed / smoothed.sum()
        log_probs.append(np.log(probs, where=probs > 0, out=np.full_like(probs, -np.inf)))
    mask = eval_targets != pad
    positions = np.broadcast_to(np.arange(eval_targets.shape[1]), eval_targets.shape)
    nll = -np.stack(log_probs)[positions, eval_targets]
    correct = np.asarray(best)[positions] == eval_targets
    return float(nll[mask].mean()), float(correct[mask].mean())


register(
    Task(
        "dates",
        "encoder-decoder: human-written dates to ISO format (different lengths)",
        DatesData,
        load_dates,
        main_metric="eval/exact_match",
        mode="max",
    )
)

# --------------------------------------------------------------------------- chars

_DOCSTRING_SOURCES = (
    "textwrap", "string", "json", "fractions", "heapq", "bisect", "functools",
    "itertools", "collections", "contextlib", "dataclasses", "pathlib", "argparse",
)  # fmt: skip


def default_corpus() -> str:
    """English text that every Python ships: the Zen of Python and the docstrings of some
    standard-library modules and their public functions and classes."""
    parts = []
    zen = ast.parse(pathlib.Path(importlib.util.find_spec("this").origin).read_text())
    for node in zen.body:  # `this` stores the Zen rot13-encoded (and prints it on import)
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "s":
            parts.append(codecs.decode(ast.literal_eval(node.value), "rot13"))
    for name in _DOCSTRING_SOURCES:
        module = importlib.import_module(name)
        for obj in [module, *(getattr(module, a) for a in sorted(dir(module)) if a[0] != "_")]:
            doc = getattr(obj, "__doc__", None)
            if isinstance(doc, str) and getattr(obj, "__module__", name) in (name, None):
                parts.append(doc)
    text = "\n".join(dict.fromkeys(parts))  # drop repeats, keep order
    return re.sub(r"[ \t]+", " ", text)


@dataclasses.dataclass
class CharsData(DataConfig):
    path: str = ""  # a UTF-8 text file; empty: standard-library docstrings
    seq_len: int = 64  # characters generated from the first one
    max_vocab: int = 100  # characters kept (the rest read <unk>)
    eval_fraction: float = 0.1  # the last windows of the text


def load_chars(config) -> TaskData:
    data = config.data
    if data.path:
        file = pathlib.Path(data.path)
        if not file.is_file():
            raise ValueError(f"data.path must be a UTF-8 text file, {file} does not exist")
        text = file.read_text(encoding="utf-8")
    else:
        text = default_corpus()
    stride = max(1, data.seq_len // 2)
    starts = np.arange(0, len(text) - data.seq_len - 1, stride)
    if len(starts) < 10:
        raise ValueError(
            f"the text has {len(text)} characters: too few for windows of {data.seq_len + 1}"
        )
    train_idx, eval_idx = split_indices(
        len(starts), data, eval_fraction=data.eval_fraction, shuffle=False
    )
    cut = int(starts[train_idx].max()) + data.seq_len + 1
    vocab = Vocabulary.build([list(text[:cut])], max_size=data.max_vocab)
    ids = vocab.encode(text)
    windows = ids[starts[:, None] + np.arange(data.seq_len + 1)[None, :]]
    first = np.eye(len(vocab), dtype=np.float32)[windows[:, 0]]
    arrays = {
        "inputs": first,
        "lengths": np.ones(len(starts), np.int32),
        "targets": windows[:, 1:].astype(np.int32),
    }
    train, evaluation = take(arrays, train_idx), take(arrays, eval_idx)
    counts = np.bincount(train["targets"].ravel(), minlength=len(vocab)) + 1.0
    probabilities = counts / counts.sum()
    unigram = float(-np.mean(np.log(probabilities[evaluation["targets"]])))
    return TaskData(
        info={
            "kind": "one_to_many",
            "objective": "xent",
            "input_size": len(vocab),
            "output_size": len(vocab),
            "target_length": data.seq_len,
            "vocab": vocab.tokens,
            "baselines": {"eval/loss": unigram},
            "baseline_name": "unigram character frequencies",
            "bits_per_char_baseline": unigram / math.log(2),
            "num_train": len(train_idx),
        },
        train=train,
        eval=evaluation,
    )


register(
    Task(
        "chars",
        "one-to-many character generation from a first character (samples text)",
        CharsData,
        load_chars,
    )
)
