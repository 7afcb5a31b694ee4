"""Tree-LSTM speed: the level-batched ``seqlab.trees.tree_scan`` against per-node code.

Forward + backward of a Child-Sum Tree-LSTM (loss: the sum of the roots' h) over a batch of
ListOps trees (``seqlab.experiments.tasks.listops_expression``, 50-200 nodes each), timed
in one process after warm-up (median of ``repeats``):

- ``seqlab tree_scan``: one jitted program, one vectorized step per level;
- ``jax per-node``: the same cell's ``node_step``, jitted, called node by node in Python
  recursion, differentiated by ``jax.grad`` (what a JAX user writes without level batching);
- ``torch per-node``: a PyTorch Child-Sum Tree-LSTM module recursing over nodes, the usual
  user code (after the common open-source implementations), ``loss.backward()``;
- ``seqlab lstm flat``: the sequence LSTM (``seqlab.scan``) over the same expressions as
  flat token sequences (the tokens of the prefix form, ~1.2 per node), jitted.

The per-node implementations run tree by tree; with ``per_node_trees`` < B their time is
measured on that many trees and scaled to the batch by node count (the row says so). Ratios are
against ``seqlab tree_scan`` (> 1: tree_scan is faster).

    python benchmarks/tree_throughput.py --preset ci
    python benchmarks/tree_throughput.py --preset cpu    # B = 64, H = 128

Writes ``tree_throughput_<preset>_<date>.json`` (rows and provenance) to ``--out``.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import pathlib
import time

import _common  # (also puts the checkout on sys.path)
import jax
import jax.numpy as jnp
import numpy as np

import seqlab  # noqa: E402
from seqlab.experiments.tasks import listops_expression  # noqa: E402
from seqlab.experiments.tasks._trees import LISTOPS_VOCAB, listops_tokens, listops_tree  # noqa: E402
from seqlab.trees import ChildSumTreeLSTM, TreeBatch, tree_scan  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Preset:
    batch_size: int
    hidden_size: int
    repeats: int
    per_node_trees: int
    min_nodes: int = 50
    max_nodes: int = 200


PRESETS = {
    "ci": Preset(16, 32, 3, 2),
    "cpu": Preset(64, 128, 5, 8),
}


def expressions(count: int, preset: Preset, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    found = []
    while len(found) < count:
        e = listops_expression(rng, 6, 5, 0.4)
        nodes = sum(1 for t in listops_tokens(e) if t != "]")
        if preset.min_nodes <= nodes <= preset.max_nodes:
            found.append(e)
    return found


def timed(fn, repeats: int) -> float:
    """Median seconds of ``fn()`` (which blocks) after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def jax_per_node(cell, params, embedding, trees):
    """Per-node recursion in Python around a jitted node step; grad by jax.grad."""
    step = jax.jit(cell.node_step)

    def loss(params, embedding):
        total = 0.0
        for tree in trees:
            states = []
            for node, kids in enumerate(tree.children):
                x = embedding[tree.inputs[node]][None]
                if kids:
                    children = jax.tree.map(
                        lambda *s: jnp.stack(s)[None], *[states[k] for k in kids]
                    )
                    mask = jnp.ones((1, len(kids)), bool)
                else:
                    children = jax.tree.map(lambda a: a[None, None], cell.leaf_state(params, ()))
                    mask = jnp.zeros((1, 1), bool)
                state = step(params, x, children, mask)
                states.append(jax.tree.map(lambda a: a[0], state))
            total = total + jnp.sum(states[-1].h)
        return total

    grad = jax.grad(loss, argnums=(0, 1))
    return lambda: jax.block_until_ready(grad(params, embedding))


def torch_per_node(hidden: int, embed: int, vocab: int, trees):
    import torch

    torch.manual_seed(0)

    class ChildSum(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = torch.nn.Embedding(vocab, embed)
            self.ioux = torch.nn.Linear(embed, 3 * hidden)
            self.iouh = torch.nn.Linear(hidden, 3 * hidden, bias=False)
            self.fx = torch.nn.Linear(embed, hidden)
            self.fh = torch.nn.Linear(hidden, hidden, bias=False)

        def node(self, x, child_h, child_c):
            iou = self.ioux(x) + self.iouh(child_h.sum(0))
            i, o, u = torch.split(iou, hidden)
            i, o, u = torch.sigmoid(i), torch.sigmoid(o), torch.tanh(u)
            f = torch.sigmoid(self.fh(child_h) + self.fx(x).repeat(len(child_h), 1))
            c = i * u + (f * child_c).sum(0)
            return o * torch.tanh(c), c

        def forward(self, tree):
            states = []
            zero = torch.zeros(1, hidden)
            for node, kids in enumerate(tree.children):
                x = self.embedding(torch.tensor(tree.inputs[node]))
                if kids:
                    child_h = torch.stack([states[k][0] for k in kids])
                    child_c = torch.stack([states[k][1] for k in kids])
                else:
                    child_h, child_c = zero, zero
                states.append(self.node(x, child_h, child_c))
            return states[-1][0]

    model = ChildSum()
    torch.set_num_threads(max(1, torch.get_num_threads()))

    def run():
        model.zero_grad()
        loss = sum(model(tree).sum() for tree in trees)
        loss.backward()

    return run


def run(preset: Preset) -> list[dict]:
    exprs = expressions(preset.batch_size, preset)
    trees = [listops_tree(e, LISTOPS_VOCAB) for e in exprs]
    nodes = [len(t) for t in trees]
    batch = jax.tree.map(jnp.asarray, TreeBatch.from_trees(trees))
    h = e_size = preset.hidden_size
    vocab = len(LISTOPS_VOCAB.tokens)
    cell = ChildSumTreeLSTM(h)
    k_cell, k_embed = jax.random.split(jax.random.key(0))
    params = cell.init(k_cell, e_size)
    embedding = jax.random.normal(k_embed, (vocab, e_size)) * 0.1

    @jax.jit
    def tree_grad(params, embedding):
        def loss(params, embedding):
            xs = embedding[batch.inputs]
            _, roots = tree_scan(cell, params, batch, inputs=xs)
            return jnp.sum(roots.h)

        return jax.grad(loss, argnums=(0, 1))(params, embedding)

    ids, lengths = LISTOPS_VOCAB.encode_batch([listops_tokens(e) for e in exprs])
    ids, lengths = jnp.asarray(ids), jnp.asarray(lengths)
    lstm = seqlab.cells.LSTM(h)
    lstm_params = lstm.init(k_cell, e_size)

    @jax.jit
    def flat_grad(params, embedding):
        def loss(params, embedding):
            _, carry = seqlab.scan(lstm, params, embedding[ids], seq_lengths=lengths)
            return jnp.sum(carry.h)

        return jax.grad(loss, argnums=(0, 1))(params, embedding)

    seconds = {
        "seqlab tree_scan": timed(
            lambda: jax.block_until_ready(tree_grad(params, embedding)), preset.repeats
        ),
        "seqlab lstm flat": timed(
            lambda: jax.block_until_ready(flat_grad(lstm_params, embedding)), preset.repeats
        ),
    }
    few = trees[: preset.per_node_trees]
    scale = sum(nodes) / sum(len(t) for t in few)  # by node count: their work is per node
    per_node = {"jax per-node": jax_per_node(cell, params, embedding, few)}
    try:
        per_node["torch per-node"] = torch_per_node(h, e_size, vocab, few)
    except ImportError:
        print("torch is not installed: its row is left out")
    for name, fn in per_node.items():
        seconds[name] = timed(fn, max(1, preset.repeats // 2)) * scale
    base = seconds["seqlab tree_scan"]
    rows = []
    shape = f"B={preset.batch_size} H={h} nodes={min(nodes)}-{max(nodes)}"
    for name, value in seconds.items():
        scaled = name.endswith("per-node") and scale != 1
        case = f"{name} / {shape}" + (f" / scaled from {len(few)} trees" if scaled else "")
        rows.append(
            {
                "case": case,
                "metric": "fwd+bwd time",
                "value": value,
                "unit": "s",
                "n": preset.repeats,
                "spread": None,
            }
        )
        rows.append(
            {
                "case": case,
                "metric": "x slower than tree_scan",
                "value": value / base,
                "unit": "",
                "n": preset.repeats,
                "spread": None,
            }
        )
    return rows


def main() -> None:
    parser = _common.preset_parser(__doc__.splitlines()[0], PRESETS)
    args = parser.parse_args()
    preset = PRESETS[args.preset]
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = run(preset)
    stem = f"tree_throughput_{args.preset}_{datetime.date.today().isoformat()}"
    record = {
        "preset": args.preset,
        "settings": dataclasses.asdict(preset),
        "rows": rows,
        "provenance": _common.provenance(),
    }
    (out / f"{stem}.json").write_text(json.dumps(record, indent=1))
    print("| case | fwd+bwd s | x slower than tree_scan |")
    print("|---|---|---|")
    for time_row, ratio_row in zip(rows[::2], rows[1::2], strict=True):
        print(f"| {time_row['case']} | {time_row['value']:.4g} | {ratio_row['value']:.2f} |")
    print(f"wrote {out / stem}.json")


if __name__ == "__main__":
    main()
