"""Convolutional front-ends over time: ``Conv1D`` and ``ConvStack``, with exact lengths.

A front-end shortens and filters a sequence before a recurrent layer reads it (the
DeepSpeech 2 idea: a stride-s convolution cuts the recurrent steps by s). Every layer
follows each sequence's own length: inputs past a length are replaced by zeros before the
convolution (``where``: NaN or inf there reaches no output and no gradient), the output
lengths follow the convolution exactly, and outputs past them are zero. So a padded batch
gives every sequence the outputs and gradients it gets when run alone.

Output length of one layer, for a sequence of length L (kernel k, stride s, dilation d):

    "same"    p = d(k-1) zeros, the smaller half first   ⌊(L - 1)/s⌋ + 1 = ⌈L/s⌉
    "causal"  p = d(k-1) zeros, all first                ⌈L/s⌉; output t reads inputs ≤ t·s
    "valid"   no padding                                 ⌊(L - d(k-1) - 1)/s⌋ + 1 (0 if < 1)

the general rule being ⌊(L + p - d(k-1) - 1)/s⌋ + 1. The padding is fixed (it does not
depend on L), which is what makes a sequence's outputs independent of how much padding
its batch adds. Pooling (``ConvStack(pool=...)``) over windows of ``pool_size`` steps
gives ⌈L/pool_size⌉ outputs, the last window pooling only its valid steps.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from seqlab._checks import check_one_of, check_rank, check_seq_lengths, is_concrete, require
from seqlab._convolution import convolve
from seqlab.layers._heads import valid_mask
from seqlab.typing import Array, Params, PRNGKey

PADDINGS = ("same", "causal", "valid")
ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "gelu": jax.nn.gelu,
    "silu": jax.nn.silu,
    "none": lambda x: x,
}
POOLS = ("none", "max", "avg")


def _positive_int(name: str, value) -> None:
    require(
        isinstance(value, int) and not isinstance(value, bool) and value > 0,
        f"{name} must be a positive int, got {value!r}",
    )


def _checked_lengths(front_end, seq_lengths, batch_size: int, num_steps: int):
    """``seq_lengths`` as int32 within [0, T] (``check_seq_lengths``: values outside are
    refused when concrete, clamped when traced); a concrete length that the front-end
    would turn into no steps at all is refused too, since everything after it would read
    nothing from that sequence."""
    if seq_lengths is None:
        return None
    lengths = check_seq_lengths(seq_lengths, batch_size, num_steps)
    if is_concrete(lengths):
        values = np.asarray(lengths)
        emptied = (values > 0) & (np.asarray(front_end.output_lengths(values)) < 1)
        if emptied.any():
            index = int(np.argmax(emptied))
            raise ValueError(
                f"seq_lengths[{index}] = {int(values[index])} is shorter than this front-end "
                f"reads ({front_end.min_length()} steps at least): it would leave no steps"
            )
    return lengths


def _zero_past(xs: Array, lengths: Array | None) -> Array:
    if lengths is None:
        return xs
    valid = valid_mask(lengths, *xs.shape[:2])[..., None]
    return jnp.where(valid, xs, jnp.zeros_like(xs))


@dataclasses.dataclass(frozen=True)
class Conv1D:
    """One convolution over time (channels last, ``jax.lax.conv_general_dilated``).

    Args:
      features: output channels F.
      kernel_size: k, in steps.
      stride: s; the output has about L/s steps.
      dilation: d; the kernel's taps are d steps apart (receptive field d(k-1) + 1).
      padding: "same", "causal" or "valid" (module docstring).
      groups: channel groups (``feature_group_count``): input and output channels must
        both divide by it; ``groups == input channels`` is a depthwise convolution.
      activation: a key of ``ACTIVATIONS`` (relu, tanh, gelu, silu, none).
      use_bias: add a bias per output channel.

    Parameters: ``w`` (k, C_in / groups, F) and ``b`` (F,), initialized like PyTorch's
    ``nn.Conv1d`` (uniform in ±1/sqrt(fan_in)).
    """

    features: int
    kernel_size: int = 3
    stride: int = 1
    dilation: int = 1
    padding: str = "same"
    groups: int = 1
    activation: str = "relu"
    use_bias: bool = True

    def __post_init__(self):
        for name in ("features", "kernel_size", "stride", "dilation", "groups"):
            value = getattr(self, name)
            if isinstance(value, numbers.Integral) and not isinstance(value, bool):
                object.__setattr__(self, name, int(value))  # a NumPy integer as a Python int
            _positive_int(name, getattr(self, name))
        check_one_of("padding", self.padding, PADDINGS)
        check_one_of("activation", self.activation, ACTIVATIONS)
        require(
            self.features % self.groups == 0,
            f"features ({self.features}) must divide by groups ({self.groups})",
        )

    @property
    def span(self) -> int:
        """The receptive field of one output: d(k-1) + 1 steps."""
        return self.dilation * (self.kernel_size - 1) + 1

    @property
    def pads(self) -> tuple[int, int]:
        """Zeros before and after each sequence."""
        total = self.span - 1
        match self.padding:
            case "same":
                return total // 2, total - total // 2
            case "causal":
                return total, 0
        return 0, 0

    def output_lengths(self, lengths):
        """The output length for each input length (ints or an int array), ≥ 0."""
        low, high = self.pads
        if isinstance(lengths, int):
            return max(0, (lengths + low + high - self.span) // self.stride + 1)
        lengths = jnp.asarray(lengths).astype(jnp.int32)
        return jnp.maximum(0, (lengths + low + high - self.span) // self.stride + 1)

    def output_size(self, input_size: int) -> int:
        return self.features

    def min_length(self) -> int:
        """The shortest input that gives at least one output step."""
        return self.span if self.padding == "valid" else 1

    def init(self, key: PRNGKey, input_size: int) -> Params:
        _positive_int("input_size", input_size)
        require(
            input_size % self.groups == 0,
            f"input channels ({input_size}) must divide by groups ({self.groups})",
        )
        fan_in = self.kernel_size * input_size // self.groups
        bound = 1.0 / math.sqrt(fan_in)
        k_w, k_b = jax.random.split(key)
        shape = (self.kernel_size, input_size // self.groups, self.features)
        params = {"w": jax.random.uniform(k_w, shape, jnp.float32, -bound, bound)}
        if self.use_bias:
            params["b"] = jax.random.uniform(k_b, (self.features,), jnp.float32, -bound, bound)
        return params

    def apply(
        self,
        params: Params,
        xs: Array,
        *,
        seq_lengths: Array | None = None,
        key: PRNGKey | None = None,
        train: bool = False,
    ) -> tuple[Array, Array | None]:
        """``(outputs (B, T', F), output lengths (B,) or None)`` for xs (B, T, C_in).

        ``seq_lengths`` (B,) gives each sequence's length, within [0, T] (checked like
        ``seqlab.scan``'s when concrete; clamped when traced). A concrete length > 0 that
        would give no output step (shorter than ``min_length()``) is a ValueError; inside
        ``jit`` it gives length 0. Outputs past each output length are exactly zero.
        T' = ``output_lengths(T)``.
        ``key`` and ``train`` are accepted for the front-end interface (no dropout here).
        """
        check_rank("xs", xs, 3, "(B, T, C)")
        num_steps = xs.shape[1]
        require(
            self.output_lengths(num_steps) > 0,
            f"a Conv1D with padding={self.padding!r} and receptive field {self.span} needs "
            f"sequences of at least {self.span if self.padding == 'valid' else 1} steps, got "
            f"T = {num_steps}",
        )
        lengths = _checked_lengths(self, seq_lengths, xs.shape[0], num_steps)
        ys = convolve(
            _zero_past(xs, lengths),
            params["w"],
            strides=(self.stride,),
            dilation=(self.dilation,),
            padding=[self.pads],
            groups=self.groups,
        )
        if self.use_bias:
            ys = ys + params["b"].astype(ys.dtype).reshape(1, 1, -1)
        ys = ACTIVATIONS[self.activation](ys)
        if lengths is None:
            return ys, None
        out_lengths = self.output_lengths(lengths)
        return _zero_past(ys, out_lengths), out_lengths


def _pool(xs: Array, lengths: Array | None, size: int, kind: str) -> tuple[Array, Array | None]:
    """Max or mean over windows of ``size`` steps (the last may be partial), counting
    only valid steps; (B, ⌈T/size⌉, C) and the pooled lengths ⌈L/size⌉."""
    batch, num_steps, channels = xs.shape
    pooled_steps = -(-num_steps // size)
    valid = valid_mask(lengths, batch, num_steps)
    extra = pooled_steps * size - num_steps
    xs = jnp.pad(xs, ((0, 0), (0, extra), (0, 0)))
    valid = jnp.pad(valid, ((0, 0), (0, extra)))
    windows = xs.reshape(batch, pooled_steps, size, channels)
    valid = valid.reshape(batch, pooled_steps, size, 1)
    if kind == "max":
        lowest = jnp.full_like(windows, -jnp.inf)
        pooled = jnp.max(jnp.where(valid, windows, lowest), axis=2)
        any_valid = jnp.any(valid, axis=2)
        pooled = jnp.where(any_valid, pooled, jnp.zeros_like(pooled))
    else:
        total = jnp.sum(jnp.where(valid, windows, jnp.zeros_like(windows)), axis=2)
        count = jnp.sum(valid, axis=2).astype(xs.dtype)
        pooled = total / jnp.maximum(count, jnp.ones_like(count))
    if lengths is None:
        return pooled, None
    return pooled, -(-lengths // size)


@dataclasses.dataclass(frozen=True)
class ConvStack:
    """``Conv1D`` layers in a row, each optionally followed by pooling and dropout: the
    front-end the architectures of ``seqlab.layers`` take (``frontend=``).

    Args:
      layers: the Conv1D layers, first to last (a list is turned into a tuple).
      pool: "none", "max" or "avg": pooling after every layer over ``pool_size`` steps
        (stride ``pool_size``; lengths ⌈L/pool_size⌉).
      pool_size: the pooling window.
      dropout: rate of inverted dropout after every layer, only with ``train=True``.

    Parameters: a tuple with each layer's. ``apply`` returns ``(outputs, lengths)`` like
    ``Conv1D.apply``; ``output_lengths`` gives the lengths alone (no parameters needed),
    so a head or decoder can follow the shortened sequences.
    """

    layers: tuple[Conv1D, ...]
    pool: str = "none"
    pool_size: int = 2
    dropout: float = 0.0

    def __post_init__(self):
        layers = tuple(self.layers) if isinstance(self.layers, list | tuple) else None
        require(
            layers and all(isinstance(layer, Conv1D) for layer in layers),
            f"layers must be a non-empty sequence of Conv1D, got {self.layers!r}",
        )
        object.__setattr__(self, "layers", layers)
        check_one_of("pool", self.pool, POOLS)
        _positive_int("pool_size", self.pool_size)
        require(
            isinstance(self.dropout, int | float) and 0.0 <= self.dropout < 1.0,
            f"dropout must be a rate in [0, 1), got {self.dropout!r}",
        )

    @property
    def pooling(self) -> bool:
        return self.pool != "none" and self.pool_size > 1

    @property
    def stride(self) -> int:
        """How many input steps one output step stands for (strides and pools)."""
        pooled = self.pool_size if self.pooling else 1
        return math.prod(layer.stride * pooled for layer in self.layers)

    def output_lengths(self, lengths):
        """Each input length through every layer (ints or an int array)."""
        for layer in self.layers:
            lengths = layer.output_lengths(lengths)
            if self.pooling:
                lengths = -(-lengths // self.pool_size)
        return lengths

    def min_length(self) -> int:
        """The shortest input that gives at least one output step."""
        length = 1
        while self.output_lengths(length) < 1:
            length += 1
        return length

    def output_size(self, input_size: int) -> int:
        return self.layers[-1].features

    def init(self, key: PRNGKey, input_size: int) -> Params:
        params, size = [], input_size
        for layer, layer_key in zip(
            self.layers, jax.random.split(key, len(self.layers)), strict=True
        ):
            params.append(layer.init(layer_key, size))
            size = layer.features
        return tuple(params)

    def apply(
        self,
        params: Params,
        xs: Array,
        *,
        seq_lengths: Array | None = None,
        key: PRNGKey | None = None,
        train: bool = False,
    ) -> tuple[Array, Array | None]:
        """``(outputs (B, T', F), output lengths (B,) or None)`` for xs (B, T, C_in), with
        ``seq_lengths`` checked as in ``Conv1D.apply``; ``key`` is needed for dropout when
        ``train``."""
        require(
            isinstance(params, tuple | list) and len(params) == len(self.layers),
            f"params must be a sequence of {len(self.layers)} per-layer dicts",
        )
        use_dropout = train and self.dropout > 0.0
        require(
            not use_dropout or key is not None,
            f"apply(train=True) with dropout={self.dropout} needs a PRNG key, got key=None",
        )
        keys = jax.random.split(key, len(self.layers)) if use_dropout else None
        check_rank("xs", xs, 3, "(B, T, C)")
        require(
            self.output_lengths(xs.shape[1]) > 0,
            f"this front-end needs sequences of at least {self.min_length()} steps, got "
            f"T = {xs.shape[1]}",
        )
        lengths = _checked_lengths(self, seq_lengths, xs.shape[0], xs.shape[1])
        for index, (layer, layer_params) in enumerate(zip(self.layers, params, strict=True)):
            xs, lengths = layer.apply(layer_params, xs, seq_lengths=lengths)
            if self.pooling:
                xs, lengths = _pool(xs, lengths, self.pool_size, self.pool)
            if use_dropout:
                keep = jax.random.bernoulli(keys[index], 1.0 - self.dropout, xs.shape)
                xs = jnp.where(keep, xs / (1.0 - self.dropout), jnp.zeros_like(xs))
        return xs, lengths


def conv_stack(
    channels: Sequence[int],
    *,
    kernel_size: int = 3,
    stride: int | Sequence[int] = 1,
    dilation: int = 1,
    padding: str = "same",
    groups: int = 1,
    activation: str = "relu",
    pool: str = "none",
    pool_size: int = 2,
    dropout: float = 0.0,
) -> ConvStack:
    """A ``ConvStack`` of ``len(channels)`` layers with ``channels[i]`` features each and
    the same settings; ``stride`` may be one per layer (e.g. ``(2, 1)``)."""
    channels = list(channels)
    strides = [stride] * len(channels) if isinstance(stride, int) else list(stride)
    require(
        len(strides) == len(channels),
        f"stride must be one int or one per layer ({len(channels)}), got {stride!r}",
    )
    layers = [
        Conv1D(
            features,
            kernel_size=kernel_size,
            stride=layer_stride,
            dilation=dilation,
            padding=padding,
            groups=groups,
            activation=activation,
        )
        for features, layer_stride in zip(channels, strides, strict=True)
    ]
    return ConvStack(tuple(layers), pool=pool, pool_size=pool_size, dropout=dropout)
