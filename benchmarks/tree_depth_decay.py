"""How gradient norms decay with depth in a tree, for TreeRNN, Child-Sum and N-ary
Tree-LSTM and TreeGRU, on balanced binary trees and on maximally skewed ones (chains).

For every cell, tree shape and seed, a loss at the root (L = h_root · v, v a random unit
vector) is differentiated with respect to every node's h: ‖∂L/∂h_node‖ from
``seqlab.analysis.tree_grad_norms``, averaged over the nodes at each depth from the root.
The decay rate is the least-squares slope of ln‖∂L/∂h‖ against depth (depths ≥ 1), per
seed, with a 95% Student-t interval over seeds (``seqlab.analysis.fit_decay_rate``). At
initialization and after training: each cell (with a token embedding and a dense head on
the root) is trained with Adam on binary ListOps trees (max_args 2, depth up to 4) for
``train_steps``; the depth curves are then taken with the trained cell's parameters on the
same synthetic trees as at initialization.

A chain is a sequence: the Child-Sum Tree-LSTM's chain curve is checked against the
sequence LSTM's ``hidden_grad_norms`` with the same parameters (and the TreeGRU's against
``GRU(variant="original")``): the largest relative difference is recorded and must stay
below ``CHAIN_TOLERANCE``.

    python benchmarks/tree_depth_decay.py --preset ci     # seconds on a 2-core CPU
    python benchmarks/tree_depth_decay.py --preset full

Writes ``tree_depth_decay_<preset>_<date>.json`` (rows and provenance) and a plot
``tree_depth_decay_<preset>_<date>.png`` to ``--out``.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import pathlib

import _common  # (also puts the checkout on sys.path)
import jax
import jax.numpy as jnp
import numpy as np
import optax

import seqlab  # noqa: E402
from seqlab.analysis import (  # noqa: E402
    fit_decay_rate,
    hidden_grad_norms,
    norms_by_depth,
    tree_grad_norms,  # noqa: E402
)
from seqlab.experiments.tasks import listops_expression, listops_value  # noqa: E402
from seqlab.experiments.tasks._trees import LISTOPS_VOCAB, listops_tree  # noqa: E402
from seqlab.layers import RNNLayer, dense_apply, dense_init  # noqa: E402
from seqlab.trees import (  # noqa: E402
    Tree,
    TreeBatch,
    tree_scan,  # noqa: E402
)

CHAIN_TOLERANCE = 1e-4  # float32, relative, chain tree against the sequence cell


@dataclasses.dataclass(frozen=True)
class Preset:
    hidden_size: int
    seeds: int
    balanced_heights: tuple[int, ...]
    chain_depths: tuple[int, ...]
    train_steps: int
    batch_size: int = 32
    learning_rate: float = 3e-3


PRESETS = {
    "ci": Preset(16, 3, (2, 4, 6), (8, 32), 100),
    "full": Preset(64, 5, (2, 4, 6, 8, 10, 12), (2, 4, 8, 16, 32, 64), 1000),
}


def trained_params(cell, params, preset: Preset, seed: int):
    """``params`` after ``preset.train_steps`` Adam steps on binary ListOps trees (a fresh
    batch each step), with an embedding and a root head trained alongside."""
    h = preset.hidden_size
    k_embed, k_head = jax.random.split(jax.random.key(1000 + seed))
    vocab = len(LISTOPS_VOCAB.tokens)
    model = {
        "cell": params,
        "embedding": jax.random.normal(k_embed, (vocab, h)) / np.sqrt(h),
        "head": dense_init(k_head, h, 10),
    }
    optimizer = optax.adam(preset.learning_rate)
    rng = np.random.default_rng(seed)
    arity = getattr(cell, "arity", None) or 2
    shape = {"arity": arity, "max_nodes": 64, "num_levels": 5, "width": 16}

    def batch():
        exprs = [listops_expression(rng, 4, 2, 0.5) for _ in range(preset.batch_size)]
        trees = [listops_tree(e, LISTOPS_VOCAB) for e in exprs]
        labels = np.asarray([listops_value(e) for e in exprs], np.int32)
        return jax.tree.map(jnp.asarray, TreeBatch.from_trees(trees, **shape)), labels

    @jax.jit
    def step(model, state, trees, labels):
        def loss(model):
            xs = model["embedding"][trees.inputs]
            _, roots = tree_scan(cell, model["cell"], trees, inputs=xs)
            logits = dense_apply(model["head"], cell.output(roots))
            log_probs = jax.nn.log_softmax(logits)
            return -jnp.mean(jnp.take_along_axis(log_probs, labels[:, None], axis=1))

        value, grads = jax.value_and_grad(loss)(model)
        updates, state = optimizer.update(grads, state, model)
        return optax.apply_updates(model, updates), state, value

    state = optimizer.init(model)
    for _ in range(preset.train_steps):
        trees, labels = batch()
        model, state, value = step(model, state, trees, jnp.asarray(labels))
    if not np.isfinite(float(value)):
        raise SystemExit(f"{type(cell).__name__}: training diverged (loss {float(value)})")
    return model["cell"]


CELLS = {
    "tree_rnn": lambda h: seqlab.trees.TreeRNN(h, arity=2),
    "child_sum_tree_lstm": lambda h: seqlab.trees.ChildSumTreeLSTM(h),
    "nary_tree_lstm": lambda h: seqlab.trees.NaryTreeLSTM(h, arity=2),
    "tree_gru": lambda h: seqlab.trees.TreeGRU(h),
}
# the sequence cell a chain of the tree cell equals, with the same parameters
CHAIN_EQUALS = {
    "child_sum_tree_lstm": lambda h: seqlab.cells.LSTM(h),
    "tree_gru": lambda h: seqlab.cells.GRU(h, variant="original"),
}


def balanced(height: int) -> Tree:
    """A full binary tree of ``height`` (2^(height+1) - 1 nodes); leaves read inputs."""
    nested = 1
    for _ in range(height):
        nested = (nested, nested)
    return seqlab.trees.from_nested(nested)


def chain(depth: int) -> Tree:
    """``depth`` + 1 nodes, each the only child of the next; every node reads an input."""
    nodes = depth + 1
    return Tree(tuple(() if i == 0 else (i - 1,) for i in range(nodes)), tuple([1] * nodes))


@functools.partial(jax.jit, static_argnums=0)
def _norms(cell, params, batch, xs, readout):
    def loss(nodes, roots):
        return jnp.sum(cell.output(roots) @ readout)

    return tree_grad_norms(cell, params, batch, loss, inputs=xs, numpy=False)


def curve(cell, params, batch, xs, readout):
    norms, depth = _norms(cell, params, batch, xs, readout)
    means, _ = norms_by_depth(np.asarray(norms, np.float64), np.asarray(depth))
    return means


def chain_check(name, cell, params, xs, readout, tree_curve) -> float:
    """Largest relative difference between the chain's depth curve and the sequence cell's
    ‖∂L/∂h_t‖ at distance T-1-t."""
    layer = RNNLayer(CHAIN_EQUALS[name](cell.hidden_size))
    norms = hidden_grad_norms(
        layer, ({"forward": params},), xs, lambda outputs: jnp.sum(outputs[:, -1] @ readout)
    )
    sequence = norms[0, 0, ::-1]  # distance from the loss
    return float(np.max(np.abs(sequence - tree_curve) / np.abs(sequence)))


def run(preset: Preset) -> tuple[list[dict], dict]:
    rows, curves = [], {}
    h = preset.hidden_size
    shapes = [("balanced", height, balanced(height)) for height in preset.balanced_heights]
    shapes += [("chain", depth, chain(depth)) for depth in preset.chain_depths]
    for name, make in CELLS.items():
        cell = make(h)
        initial = [cell.init(jax.random.key(seed), h) for seed in range(preset.seeds)]
        phases = {
            "init": initial,
            "trained": [trained_params(cell, p, preset, i) for i, p in enumerate(initial)],
        }
        for phase, seed_params in phases.items():
            for shape, size, tree in shapes:
                measure(name, cell, phase, seed_params, shape, size, tree, preset, rows, curves)
    return rows, curves


def measure(name, cell, phase, seed_params, shape, size, tree, preset, rows, curves):
    """The depth curve of ``tree`` for every seed's parameters, its decay fit, and (on a
    chain) the check against the sequence cell; appends rows, stores the curves."""
    h = preset.hidden_size
    batch = TreeBatch.from_trees([tree], arity=getattr(cell, "arity", None))
    per_seed, worst = [], 0.0
    for seed, params in enumerate(seed_params):
        _, k_x, k_v = jax.random.split(jax.random.key(seed), 3)
        reads = (np.asarray(batch.inputs) != 0)[..., None]  # inner nodes read nothing
        xs = jax.random.normal(k_x, (1, batch.max_nodes, h)) * reads
        readout = jax.random.normal(k_v, (h,))
        readout = readout / jnp.linalg.norm(readout)
        means = curve(cell, params, batch, xs, readout)
        per_seed.append(means)
        if shape == "chain" and name in CHAIN_EQUALS:
            worst = max(worst, chain_check(name, cell, params, xs, readout, means))
    per_seed = np.stack(per_seed)
    curves[(name, phase, shape, size)] = per_seed
    case = f"{_common_case(name, shape, size)} / {phase}"
    depths = np.arange(1, per_seed.shape[1])
    usable = np.all(np.isfinite(per_seed[:, 1:]) & (per_seed[:, 1:] > 0))
    if len(depths) >= 2 and usable:
        fit = fit_decay_rate(per_seed[:, 1:], depths)
        rows.append(
            {
                "case": case,
                "metric": "decay rate per level",
                "value": fit.rate,
                "unit": "ln-norm/level",
                "n": preset.seeds,
                "spread": list(fit.interval) if fit.interval else None,
            }
        )
    rows.append(
        {
            "case": case,
            "metric": "norm ratio deepest/root",
            "value": float(np.mean(per_seed[:, -1] / per_seed[:, 0])),
            "unit": "",
            "n": preset.seeds,
            "spread": None,
        }
    )
    if shape == "chain" and name in CHAIN_EQUALS:
        rows.append(
            {
                "case": case,
                "metric": "chain vs sequence max rel diff",
                "value": worst,
                "unit": "",
                "n": preset.seeds,
                "spread": None,
            }
        )
        if not worst < CHAIN_TOLERANCE:
            raise SystemExit(
                f"{name} ({phase}): the chain's depth curve differs from the sequence cell's by "
                f"{worst:.2e} (tolerance {CHAIN_TOLERANCE:g})"
            )


def _common_case(name, shape, size) -> str:
    return f"{name} / {shape} {'height' if shape == 'balanced' else 'depth'}={size}"


def plot(curves, path: pathlib.Path) -> None:
    """ln-norm against depth at the deepest tree of each shape, init (left two) and
    trained (right two), one line per cell."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(18, 4), sharey=True)
    panels = [(p, s) for p in ("init", "trained") for s in ("balanced", "chain")]
    for axis, (phase, shape) in zip(axes, panels, strict=True):
        deepest = max(size for (_, ph, s, size) in curves if s == shape and ph == phase)
        for (name, ph, s, size), per_seed in curves.items():
            if ph == phase and s == shape and size == deepest:
                mean = np.exp(np.mean(np.log(np.maximum(per_seed, 1e-300)), axis=0))
                axis.semilogy(np.arange(len(mean)), mean, label=name)
        kind = "height" if shape == "balanced" else "depth"
        axis.set_title(f"{phase}: {shape}, {kind} {deepest}")
        axis.set_xlabel("depth from the root")
    axes[0].set_ylabel("‖∂L/∂h‖ (geometric mean over seeds)")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = _common.preset_parser(__doc__.splitlines()[0], PRESETS)
    args = parser.parse_args()
    preset = PRESETS[args.preset]
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, curves = run(preset)
    stem = f"tree_depth_decay_{args.preset}_{datetime.date.today().isoformat()}"
    record = {
        "preset": args.preset,
        "settings": dataclasses.asdict(preset),
        "rows": rows,
        "curves": {f"{n} / {p} / {s} {z}": c.tolist() for (n, p, s, z), c in curves.items()},
        "provenance": _common.provenance(),
    }
    (out / f"{stem}.json").write_text(json.dumps(record, indent=1))
    plot(curves, out / f"{stem}.png")
    print("| case | metric | value | 95% interval over seeds |")
    print("|---|---|---|---|")
    for row in rows:
        spread = "" if not row["spread"] else f"[{row['spread'][0]:.3f}, {row['spread'][1]:.3f}]"
        print(f"| {row['case']} | {row['metric']} | {row['value']:.4g} | {spread} |")
    print(f"wrote {out / stem}.json")


if __name__ == "__main__":
    main()
