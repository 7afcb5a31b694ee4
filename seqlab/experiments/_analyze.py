"""Gradient-norm analysis of a trained (or checkpointed) model, and decoded samples.

``analyze_params`` computes ‖∂L/∂h_t‖ for every layer of the model's encoder on the
first evaluation examples, with L the task's own loss through the trained head or
decoder (``seqlab.analysis.hidden_grad_norms``), averages over examples, fits the
per-step decay factor against the distance from the end of the sequence, and writes
``analysis/gradnorms_step<N>.json`` (and a plot). ``seqlab analyze DIR --step N`` runs it
on any saved checkpoint.
"""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from seqlab.analysis import fit_decay_rate, hidden_grad_norms
from seqlab.experiments import _rundir
from seqlab.experiments._train import seed_params
from seqlab.layers import dense_apply, last_valid_outputs

ANALYSIS_EXAMPLES = 64


def _loss_on_encoder_outputs(model, params, batch):
    """outputs of the encoder -> the task's loss, through the trained head or decoder."""
    net, encoder = params["net"], model.encoder
    lengths = batch["lengths"]

    def mean_loss(outputs):
        total, count = model.per_example(outputs, batch)["loss"]
        return jnp.sum(total) / jnp.maximum(jnp.sum(count), 1.0)

    if model.kind == "many_to_one":
        return lambda outputs: mean_loss(
            dense_apply(
                net["head"],
                last_valid_outputs(outputs, lengths, bidirectional=encoder.bidirectional),
            )
        )
    if model.kind == "many_to_many":
        return lambda outputs: mean_loss(dense_apply(net["head"], outputs))
    if model.kind == "encoder_decoder":
        decoder = model.net.decoder

        def through_decoder(outputs):
            context = last_valid_outputs(outputs, lengths, bidirectional=encoder.bidirectional)
            return mean_loss(decoder.teacher_forced(net["decoder"], context, batch["targets"]))

        return through_decoder
    raise ValueError(
        "gradient-norm analysis follows an encoder over the input sequence; a one-to-many "
        "model has none"
    )


def gradient_norms(model, params, batch) -> np.ndarray:
    """(L, [2,] B, T) float64 norms of one seed's parameters on ``batch``."""
    loss_fn = _loss_on_encoder_outputs(model, params, batch)
    xs = model.encode_inputs(params, batch["inputs"])
    return hidden_grad_norms(
        model.encoder, params["net"]["encoder"], xs, loss_fn, seq_lengths=batch["lengths"]
    )


def analyze_params(experiment, params, step: int, run_dir) -> dict:
    """Gradient norms for every seed of stacked ``params``; writes the JSON and plot."""
    model = experiment.model
    count = min(ANALYSIS_EXAMPLES, len(experiment.data.eval["targets"]))
    batch = {k: jnp.asarray(v[:count]) for k, v in experiment.data.eval.items()}
    num_seeds = len(experiment.seeds)
    curves = []  # (S, L, dirs, T): mean over examples
    for index in range(num_seeds):
        norms = gradient_norms(model, seed_params(params, index), batch)
        if not model.encoder.bidirectional:
            norms = norms[:, None]
        curves.append(norms.mean(axis=-2))
    curves = np.stack(curves)
    num_steps = curves.shape[-1]
    distances = num_steps - 1 - np.arange(num_steps)
    fits = []
    for layer in range(curves.shape[1]):
        forward = curves[:, layer, 0]
        if np.all(np.isfinite(forward)) and np.all(forward > 0):
            fit = fit_decay_rate(forward, distances)
            fits.append({"layer": layer, "factor": fit.factor, "rate": fit.rate})
        else:
            fits.append({"layer": layer, "factor": None, "rate": None})
    result = {
        "step": step,
        "examples": count,
        "seeds": list(experiment.seeds),
        "directions": ["forward", "backward"][: curves.shape[2]],
        "distance_from_end": distances.tolist(),
        "mean_norm": curves.mean(axis=0).tolist(),  # (L, dirs, T) averaged over seeds
        "per_seed": curves.tolist(),
        "decay_fit_forward": fits,
    }
    run_dir = pathlib.Path(run_dir)
    (run_dir / "analysis").mkdir(exist_ok=True)
    _rundir.write_json(run_dir / "analysis" / f"gradnorms_step{step}.json", result)
    from seqlab.experiments import _report

    _report.plot_gradnorms(run_dir, result)
    return result


def samples(experiment, params, *, count: int = 4) -> list | None:
    """Decoded examples for the generative kinds (first seed): predicted dates beside the
    truth, or text sampled from the first characters of evaluation windows."""
    model, info = experiment.model, experiment.data.info
    if model.kind not in ("encoder_decoder", "one_to_many"):
        return None
    from seqlab.layers import Vocabulary

    first = seed_params(params, 0)
    batch = {k: jnp.asarray(v[:count]) for k, v in experiment.data.eval.items()}
    length = info["target_length"]
    if model.kind == "encoder_decoder":
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


def analyze_run(run_dir, step: int | None = None, *, echo=print) -> dict:
    """``seqlab analyze``: gradient norms of checkpoint ``step`` (default: the latest) on
    the task's evaluation data, written to ``analysis/`` and ``plots/``."""
    from seqlab.experiments._load import load_run
    from seqlab.experiments._train import Experiment

    run = load_run(run_dir)
    steps = run.steps
    if not steps:
        raise ValueError(f"{run_dir} has no checkpoint to analyze")
    step = steps[-1] if step is None else step
    params = run.restore(step)
    experiment = Experiment.from_config(run.config)
    result = analyze_params(experiment, params, step, run_dir)
    for fit in result["decay_fit_forward"]:
        factor = "n/a" if fit["factor"] is None else f"{fit['factor']:.4f}"
        echo(f"step {step}, layer {fit['layer']}: gradient norm decays by {factor} per step")
    first = np.asarray(result["mean_norm"])[:, 0]
    echo(
        "mean ||dL/dh_t|| at the last step / the first step: "
        + ", ".join(f"{c[-1]:.3g} / {c[0]:.3g}" for c in first)
    )
    echo(f"wrote {pathlib.Path(run_dir) / 'analysis' / f'gradnorms_step{step}.json'}")
    return result
