"""Turning symbols into arrays: one-hot and label encoding, a vocabulary, an embedding.

Nothing here pickles: a ``Vocabulary`` and a ``LabelEncoder`` save as JSON-ready dicts.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Hashable, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from seqlab._checks import check_integer, is_concrete, require
from seqlab.typing import Array, Params, PRNGKey

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIAL_TOKENS = (PAD, UNK, BOS, EOS)
PAD_ID, UNK_ID, BOS_ID, EOS_ID = range(4)


def one_hot(ids: Array, num_classes: int, dtype=jnp.float32) -> Array:
    """(...,) int ids -> (..., num_classes) one-hot vectors; ids must lie in [0, num_classes)."""
    ids = jnp.asarray(ids)
    check_integer("ids", ids)
    require(
        isinstance(num_classes, int) and num_classes > 0,
        f"num_classes must be a positive int, got {num_classes!r}",
    )
    if is_concrete(ids) and ids.size:
        low, high = int(ids.min()), int(ids.max())
        require(
            low >= 0 and high < num_classes,
            f"ids must lie in [0, {num_classes}), got values in [{low}, {high}]",
        )
    return jax.nn.one_hot(ids, num_classes, dtype=dtype)


class LabelEncoder:
    """Maps class labels (any hashables) to ids 0..K-1 in sorted order, and back."""

    def __init__(self, classes: Iterable[Hashable]):
        self.classes = sorted(set(classes))
        require(self.classes, "a LabelEncoder needs at least one class")
        self._index = {label: i for i, label in enumerate(self.classes)}

    @classmethod
    def fit(cls, labels: Iterable[Hashable]) -> LabelEncoder:
        return cls(labels)

    def __len__(self) -> int:
        return len(self.classes)

    def encode(self, labels: Iterable[Hashable]) -> np.ndarray:
        labels = list(labels)
        unknown = [label for label in labels if label not in self._index]
        require(
            not unknown,
            f"unknown labels {unknown[:5]}; expected one of {self.classes[:20]}",
        )
        return np.array([self._index[label] for label in labels], np.int32)

    def decode(self, ids: Iterable[int]) -> list:
        ids = [int(i) for i in np.asarray(ids).ravel()]
        bad = [i for i in ids if not 0 <= i < len(self.classes)]
        require(not bad, f"ids must lie in [0, {len(self.classes)}), got {bad[:5]}")
        return [self.classes[i] for i in ids]

    def to_dict(self) -> dict:
        return {"classes": list(self.classes)}

    @classmethod
    def from_dict(cls, data: dict) -> LabelEncoder:
        return cls(data["classes"])


class Vocabulary:
    """Tokens <-> ids with reserved ids: 0 ``<pad>``, 1 ``<unk>``, 2 ``<bos>``, 3 ``<eos>``.

    Build one from tokenized text with ``Vocabulary.build``; unknown tokens encode to
    ``<unk>``; ``encode_batch`` pads a batch with ``<pad>`` and returns the lengths that
    ``seqlab.scan(..., seq_lengths=...)`` takes.
    """

    def __init__(self, tokens: Sequence[str]):
        tokens = list(tokens)
        require(
            tuple(tokens[:4]) == SPECIAL_TOKENS,
            f"a vocabulary must start with {list(SPECIAL_TOKENS)}, got {tokens[:4]}",
        )
        require(len(set(tokens)) == len(tokens), "vocabulary tokens must be unique")
        self.tokens = tokens
        self._index = {token: i for i, token in enumerate(tokens)}

    @classmethod
    def build(
        cls,
        corpus: Iterable[Iterable[str]],
        *,
        min_freq: int = 1,
        max_size: int | None = None,
    ) -> Vocabulary:
        """The most frequent tokens of ``corpus`` (ties broken alphabetically).

        Args:
          corpus: an iterable of token sequences.
          min_freq: drop tokens seen fewer times.
          max_size: keep at most this many tokens, the four special ones included.
        """
        counts = collections.Counter(token for sequence in corpus for token in sequence)
        for special in SPECIAL_TOKENS:
            counts.pop(special, None)
        ranked = sorted(
            (token for token, count in counts.items() if count >= min_freq),
            key=lambda token: (-counts[token], token),
        )
        if max_size is not None:
            require(max_size >= len(SPECIAL_TOKENS), f"max_size must be >= 4, got {max_size}")
            ranked = ranked[: max_size - len(SPECIAL_TOKENS)]
        return cls([*SPECIAL_TOKENS, *ranked])

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, tokens: Iterable[str], *, add_bos=False, add_eos=False) -> np.ndarray:
        ids = [self._index.get(token, UNK_ID) for token in tokens]
        return np.array([BOS_ID] * add_bos + ids + [EOS_ID] * add_eos, np.int32)

    def decode(self, ids: Iterable[int], *, stop_at_eos: bool = True) -> list[str]:
        """Tokens for ``ids``, leaving out padding (and everything from ``<eos>`` on)."""
        tokens = []
        for i in np.asarray(ids).ravel():
            i = int(i)
            require(0 <= i < len(self.tokens), f"ids must lie in [0, {len(self.tokens)}), got {i}")
            if stop_at_eos and i == EOS_ID:
                break
            if i != PAD_ID:
                tokens.append(self.tokens[i])
        return tokens

    def encode_batch(
        self,
        sequences: Iterable[Iterable[str]],
        *,
        max_length: int | None = None,
        add_bos=False,
        add_eos=False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Pad (and cut at ``max_length``) a batch: returns ids (B, T) and lengths (B,)."""
        encoded = [self.encode(s, add_bos=add_bos, add_eos=add_eos) for s in sequences]
        require(encoded, "encode_batch needs at least one sequence")
        length = max_length if max_length is not None else max(len(e) for e in encoded)
        ids = np.full((len(encoded), length), PAD_ID, np.int32)
        lengths = np.zeros(len(encoded), np.int32)
        for row, sequence in enumerate(encoded):
            sequence = sequence[:length]
            ids[row, : len(sequence)] = sequence
            lengths[row] = len(sequence)
        return ids, lengths

    def to_dict(self) -> dict:
        return {"tokens": list(self.tokens)}

    @classmethod
    def from_dict(cls, data: dict) -> Vocabulary:
        return cls(data["tokens"])


@dataclasses.dataclass(frozen=True)
class Embedding:
    """A table of ``vocab_size`` learned vectors of size ``features``.

    ``apply(params, ids)`` maps (...,) ids to (..., features); the row of ``padding_id``
    (``<pad>`` by default; None for none) always reads as zeros, as in PyTorch's
    ``padding_idx``, so padding contributes nothing and gets no gradient.
    """

    vocab_size: int
    features: int
    padding_id: int | None = PAD_ID

    def __post_init__(self):
        for name in ("vocab_size", "features"):
            value = getattr(self, name)
            require(
                isinstance(value, int) and value > 0,
                f"{name} must be a positive int, got {value!r}",
            )

    def init(self, key: PRNGKey) -> Params:
        return {"table": jax.random.normal(key, (self.vocab_size, self.features), jnp.float32)}

    def apply(self, params: Params, ids: Array) -> Array:
        ids = jnp.asarray(ids)
        check_integer("ids", ids)
        if is_concrete(ids) and ids.size:
            require(
                int(ids.min()) >= 0 and int(ids.max()) < self.vocab_size,
                f"ids must lie in [0, {self.vocab_size}), got values in "
                f"[{int(ids.min())}, {int(ids.max())}]",
            )
        vectors = jnp.take(params["table"], ids, axis=0)
        if self.padding_id is None:
            return vectors
        keep = (ids != self.padding_id)[..., None]
        return jnp.where(keep, vectors, jnp.zeros_like(vectors))
