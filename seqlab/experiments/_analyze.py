"""Gradient-norm analysis of a trained (or checkpointed) model, and decoded samples.

``analyze_params`` computes ‖∂L/∂h_t‖ for every layer of the model's encoder on the
first evaluation examples, with L the task's own loss through the trained head or
decoder (``seqlab.analysis.hidden_grad_norms``). Each example's norms are lined up by
the distance from that example's own last valid step (for a backward direction, from its
first step, where the backward run ends), so padding never enters: at distance d the
mean is over the examples longer than d. The per-step decay factor is fitted on those
means, and the result goes to ``analysis/gradnorms_step<N>.json`` (and a plot).
``seqlab analyze DIR --step N`` runs it on any saved checkpoint.
"""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from seqlab.analysis import fit_decay_rate, hidden_grad_norms, norms_by_depth, tree_grad_norms
from seqlab.experiments import _plots, _rundir
from seqlab.experiments._load import load_run
from seqlab.experiments._seeds import seed_params
from seqlab.experiments._train import Experiment
from seqlab.layers import Vocabulary

ANALYSIS_EXAMPLES = 64
DIRECTIONS = ("forward", "backward")


def gradient_norms(model, params, batch) -> np.ndarray:
    """(L, [2,] B, T) float64 norms of one seed's parameters on ``batch``, with the
    task's loss through the trained head or decoder (``Architecture.from_encoding``). T
    counts the encoder's steps: after a convolutional front-end, its output steps."""
    net, lengths, targets = model.net, batch["lengths"], batch["targets"]
    if not net.reads_sequence:
        raise ValueError(
            f"gradient-norm analysis follows an encoder over the input sequence; a {model.kind} "
            "model has none"
        )

    def loss_fn(encoded):
        outputs = net.from_encoding(params["net"], encoded, lengths, targets)
        return model.mean_loss(model.fold_frames(outputs), batch)

    xs = model.encode_inputs(params, batch["inputs"])
    xs, encoded_lengths = net.encoder_inputs(params["net"], xs, lengths)  # after a front-end
    encoder = params["net"]["encoder"]
    return hidden_grad_norms(net.encoder, encoder, xs, loss_fn, seq_lengths=encoded_lengths)


def tree_gradient_norms(model, params, batch) -> tuple[np.ndarray, np.ndarray]:
    """(B, N) norms ‖∂L/∂h_node‖ of one seed's parameters on a tree ``batch`` with the
    task's loss through the trained head, and (B, N) each node's depth from its root."""
    net, tree = model.net, model.structure(batch)
    xs = model.encode_inputs(params, batch["inputs"])

    def loss_fn(nodes, roots):
        logits = net.from_encoding(params["net"], net.cell.output(nodes), tree)
        return model.mean_loss(logits, batch)

    return tree_grad_norms(net.cell, params["net"]["encoder"], tree, loss_fn, inputs=xs)


def by_distance(norms: np.ndarray, lengths: np.ndarray, direction: str):
    """Line up (..., B, T) norms by each sequence's own distance from where its loss
    enters: its last valid step (forward) or step 0 (backward).

    Returns (means (..., D), counts (D,)) for distances d = 0 .. D - 1, D the longest
    length: the mean over the examples longer than d, and how many there are.
    """
    num_steps = norms.shape[-1]
    lengths = np.clip(np.asarray(lengths), 0, num_steps)
    span = max(int(lengths.max(initial=0)), 1)
    distance = np.arange(span)
    valid = distance[None, :] < lengths[:, None]  # (B, D)
    if direction == "forward":
        steps = np.clip(lengths[:, None] - 1 - distance[None, :], 0, num_steps - 1)
    else:
        steps = np.broadcast_to(np.minimum(distance, num_steps - 1), valid.shape)
    lined = np.take_along_axis(norms, np.broadcast_to(steps, norms.shape[:-1] + (span,)), -1)
    counts = valid.sum(axis=0)
    total = np.sum(np.where(valid, lined, 0.0), axis=-2)
    return total / np.maximum(counts, 1), counts


def _fit(curve: np.ndarray, counts: np.ndarray) -> dict:
    """Decay factor and rate of a (seeds, D) curve over the distances some example
    reaches, where every seed's norm is finite and positive; None when fewer than two."""
    usable = (counts > 0) & np.all(np.isfinite(curve) & (curve > 0), axis=0)
    distances = np.flatnonzero(usable)
    if len(distances) < 2:
        return {"factor": None, "rate": None}
    # fitted from the farthest distance to the nearest, the order of the earlier fits
    fit = fit_decay_rate(curve[:, distances[::-1]], distances[::-1])
    return {"factor": fit.factor, "rate": fit.rate}


def analyze_params(experiment, params, step: int, run_dir, *, guard=None) -> dict:
    """Gradient norms for every seed of stacked ``params``; writes the JSON and plot
    (calling ``guard``, when given, just before: a sweep worker's claim check)."""
    model = experiment.model
    count = min(ANALYSIS_EXAMPLES, len(experiment.data.eval["targets"]))
    batch = {k: jnp.asarray(v[:count]) for k, v in experiment.data.eval.items()}
    if model.net.reads_tree:
        return _analyze_tree(experiment, params, step, run_dir, batch, guard=guard)
    lengths = np.asarray(model.net.encoded_lengths(batch["lengths"]))
    directions = DIRECTIONS[: 2 if model.encoder.bidirectional else 1]
    curves, counts = [], None  # curves: (S, L, dirs, D), mean over examples
    for index in range(len(experiment.seeds)):
        norms = gradient_norms(model, seed_params(params, index), batch)
        if len(directions) == 1:
            norms = norms[:, None]
        lined = []
        for position, direction in enumerate(directions):
            means, counts = by_distance(norms[:, position], lengths, direction)
            lined.append(means)
        curves.append(np.stack(lined, axis=1))
    curves = np.stack(curves)
    result = {
        "step": step,
        "examples": count,
        "seeds": list(experiment.seeds),
        "directions": list(directions),
        "distance": list(range(curves.shape[-1])),
        "examples_at_distance": counts.tolist(),
        "mean_norm": curves.mean(axis=0).tolist(),  # (L, dirs, D) averaged over seeds
        "per_seed": curves.tolist(),
    }
    frontend = getattr(model.net, "frontend", None)
    if frontend is not None:
        result["distance_is"] = (
            f"encoder steps after the convolutional front-end (one per {frontend.stride} "
            "input steps)"
        )
    for position, direction in enumerate(directions):
        result[f"decay_fit_{direction}"] = [
            {"layer": layer, **_fit(curves[:, layer, position], counts)}
            for layer in range(curves.shape[1])
        ]
    return _write(result, step, run_dir, guard)


def _write(result: dict, step: int, run_dir, guard) -> dict:
    """The analysis JSON and its plot (after ``guard``, when given)."""
    run_dir = pathlib.Path(run_dir)
    if guard is not None:
        guard()
    _rundir.write_json(run_dir / "analysis" / f"gradnorms_step{step}.json", result)
    _plots.plot_gradnorms(run_dir, result)
    return result


def _analyze_tree(experiment, params, step: int, run_dir, batch, *, guard=None) -> dict:
    """``analyze_params`` for a tree model: the norms lined up by depth from the root
    (distance 0 is the root; a per-node loss enters at every node as well), in the
    sequence analysis' layout (one layer, one direction; ``examples_at_distance`` counts
    nodes), so that the same plot and report read it."""
    curves, counts = [], None
    for index in range(len(experiment.seeds)):
        norms, depth = tree_gradient_norms(experiment.model, seed_params(params, index), batch)
        means, counts = norms_by_depth(norms, depth)
        curves.append(means[None, None])
    curves = np.stack(curves)  # (S, 1, 1, D)
    result = {
        "step": step,
        "examples": int(batch["targets"].shape[0]),
        "seeds": list(experiment.seeds),
        "directions": ["forward"],
        "distance_is": "depth from the root",
        "distance": list(range(curves.shape[-1])),
        "examples_at_distance": counts.tolist(),
        "mean_norm": curves.mean(axis=0).tolist(),
        "per_seed": curves.tolist(),
        "decay_fit_forward": [{"layer": 0, **_fit(curves[:, 0, 0], counts)}],
    }
    return _write(result, step, run_dir, guard)


def samples(experiment, params, *, count: int = 4) -> list | None:
    """Decoded examples for the generative kinds (first seed): predicted sequences beside
    the truth for a model that reads a sequence, else text sampled from the first
    characters of evaluation windows."""
    model, info = experiment.model, experiment.data.info
    if not model.net.generative:
        return None
    first = seed_params(params, 0)
    batch = {k: jnp.asarray(v[:count]) for k, v in experiment.data.eval.items()}
    length = info["target_length"]
    if model.net.reads_sequence:
        source, target = Vocabulary(info["vocab"]), Vocabulary(info["target_vocab"])
        tokens, _ = model.generate(first, batch, length)
        return [
            {
                "source": "".join(source.decode(batch["inputs"][i])),
                "target": "".join(target.decode(batch["targets"][i])),
                "predicted": "".join(target.decode(tokens[i])),
            }
            for i in range(len(tokens))
        ]
    vocab = Vocabulary(info["vocab"])
    tokens, _ = model.generate(first, batch, length, key=jax.random.key(0), temperature=0.8)
    starts = np.argmax(np.asarray(batch["inputs"]), axis=-1)
    return [
        vocab.tokens[int(starts[i])] + "".join(vocab.decode(tokens[i], stop_at_eos=True))
        for i in range(len(tokens))
    ]


def _summary_lines(result: dict) -> list[str]:
    lines = []
    unit = "level of depth" if result.get("distance_is") == "depth from the root" else "step"
    for direction in result["directions"]:
        label = "" if direction == "forward" else f" ({direction})"
        for fit in result[f"decay_fit_{direction}"]:
            factor = "n/a" if fit["factor"] is None else f"{fit['factor']:.4f}"
            lines.append(
                f"step {result['step']}, layer {fit['layer']}{label}: gradient norm "
                f"decays by {factor} per {unit}"
            )
    first = np.asarray(result["mean_norm"])[:, 0]
    where = (
        "mean ||dL/dh|| at the roots / at the deepest nodes: "
        if unit == "level of depth"
        else "mean ||dL/dh_t|| at each sequence's last valid step / its first step: "
    )
    lines.append(where + ", ".join(f"{c[0]:.3g} / {c[-1]:.3g}" for c in first))
    return lines


def analyze_run(run_dir, step: int | None = None, *, echo=print) -> dict:
    """``seqlab analyze``: gradient norms of checkpoint ``step`` (default: the latest) on
    the task's evaluation data, written to ``analysis/`` and ``plots/``."""
    run = load_run(run_dir)
    steps = run.steps
    if not steps:
        raise ValueError(f"{run_dir} has no checkpoint to analyze")
    step = steps[-1] if step is None else step
    params = run.restore(step)
    experiment = Experiment.from_config(run.config)
    result = analyze_params(experiment, params, step, run_dir)
    for line in _summary_lines(result):
        echo(line)
    echo(f"wrote {pathlib.Path(run_dir) / 'analysis' / f'gradnorms_step{step}.json'}")
    return result
