"""Next-frame prediction on moving digits: a ConvLSTM against LSTMs on flattened frames.

    seqlab run moving_digits                         # the ConvLSTM alone
    python experiments/moving_digits.py --out runs/moving_digits   # the comparison

One scikit-learn 8x8 digit bounces in a 32x32 frame at 2 pixels per frame; from frames
0..t each model predicts frame t + 1 (task ``moving_digits``; needs scikit-learn:
``pip install 'seqlab[tasks]'``). The comparison trains three models under one budget
(the same steps, batch size and learning rate):

- ``conv_lstm``: ConvLSTM (Shi et al. 2015), 16 state channels, 3x3 kernels, a 1x1
  readout to the predicted frame;
- ``lstm_matched``: an LSTM reading each frame as one 1,024-vector, with the hidden size
  whose parameter count is closest to the ConvLSTM's;
- ``lstm_64``: the same with 64 hidden units (many times the ConvLSTM's parameters);

then prints, for each, the parameter count, the training time and the mean squared error
per pixel at every predicted frame on the held-out digits, beside the copy-last-frame
baseline, and writes them to ``OUT/compare.json``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

from seqlab.experiments import CheckpointConfig, ExperimentConfig, ModelConfig, TrainConfig
from seqlab.experiments.tasks import MovingDigitsData

CONV_HIDDEN, KERNEL = 16, 3


def config(cell: str = "conv_lstm", hidden_size: int = CONV_HIDDEN) -> ExperimentConfig:
    # the conv cells' kernel_size defaults to 3 (KERNEL); left out of cell_options so that
    # `seqlab run moving_digits model.cell=lstm` works as it reads
    return ExperimentConfig(
        task="moving_digits",
        model=ModelConfig(cell=cell, hidden_size=hidden_size),
        data=MovingDigitsData(),
        train=TrainConfig(steps=400, batch_size=16, lr=3e-3, log_every=50, eval_batch_size=64),
        checkpoint=CheckpointConfig(every=200),
    )


def lstm_parameters(hidden: int, pixels: int) -> int:
    """An LSTM over flattened frames plus its readout back to a frame."""
    return 4 * hidden * (pixels + hidden + 1) + (hidden + 1) * pixels


def conv_lstm_parameters(hidden: int, kernel: int) -> int:
    taps = kernel * kernel
    return taps * 1 * 4 * hidden + taps * hidden * 4 * hidden + 4 * hidden + (hidden + 1)


def compare(out, overrides=()) -> dict:
    """Train the three models into ``out``/<name> and return, for each and for the
    copy-last-frame baseline, the parameters, seconds and MSE per predicted frame (also
    written to ``out``/compare.json)."""
    import jax

    import seqlab
    from seqlab.experiments import apply_overrides, run

    out = pathlib.Path(out)
    models_set = [o for o in overrides if o.split("=", 1)[0].startswith("model.")]
    if models_set:
        raise ValueError(
            f"the comparison fixes its three models; {', '.join(models_set)} would change "
            "them (and their labels): give data.*, train.* or checkpoint.* overrides only"
        )
    base = apply_overrides(config(), list(overrides))
    pixels = base.data.frame_size**2
    conv_params = conv_lstm_parameters(CONV_HIDDEN, KERNEL)
    matched = min(range(1, 65), key=lambda h: abs(lstm_parameters(h, pixels) - conv_params))
    models = {
        "conv_lstm": config(),
        "lstm_matched": config("lstm", matched),
        "lstm_64": config("lstm", 64),
    }
    rows = {}
    for name, model_config in models.items():
        started = time.perf_counter()
        run(apply_overrides(model_config, list(overrides)), out / name, progress=False)
        seconds = time.perf_counter() - started
        loaded = seqlab.load_run(out / name)
        leaves = jax.tree_util.tree_leaves(loaded.params_of_seed(loaded.params))
        rows[name] = {"parameters": sum(leaf.size for leaf in leaves), "seconds": seconds}
    return _per_frame(out, base, rows)


def _per_frame(out, base, rows) -> dict:
    import jax.numpy as jnp
    import numpy as np

    import seqlab
    from seqlab.experiments import tasks

    evaluation = tasks.get("moving_digits").load(base).eval
    inputs, targets = evaluation["inputs"], evaluation["targets"]
    copy_last = np.mean((inputs - targets) ** 2, axis=(0, 2, 3, 4))
    table = {
        "copy_last_frame": {"per_frame_mse": copy_last.tolist(), "mse": float(copy_last.mean())}
    }
    for name, row in rows.items():
        loaded = seqlab.load_run(out / name)
        predicted = np.concatenate(
            [
                np.asarray(
                    loaded.apply(
                        jnp.asarray(inputs[start : start + 64]),
                        jnp.asarray(evaluation["lengths"][start : start + 64]),
                    )
                )
                for start in range(0, len(inputs), 64)
            ]
        )
        per_frame = np.mean((predicted - targets) ** 2, axis=(0, 2, 3, 4))
        table[name] = {
            "parameters": int(row["parameters"]),
            "seconds": round(row["seconds"], 1),
            "per_frame_mse": per_frame.tolist(),
            "mse": float(per_frame.mean()),
        }
    (out / "compare.json").write_text(json.dumps(table, indent=2) + "\n")
    return table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="a new folder for the three runs")
    parser.add_argument("overrides", nargs="*", help="data.*, train.* overrides for every run")
    args = parser.parse_args(argv)
    try:
        table = compare(args.out, args.overrides)
    except ValueError as error:
        print(f"moving_digits.py: error: {error}", file=sys.stderr)
        return 2
    print(f"{'model':<16} {'params':>8} {'seconds':>8} {'mse':>8}  per predicted frame")
    for name, row in table.items():
        frames = " ".join(f"{v:.4f}" for v in row["per_frame_mse"])
        print(
            f"{name:<16} {row.get('parameters', ''):>8} {row.get('seconds', ''):>8} "
            f"{row['mse']:8.4f}  {frames}"
        )
    print(f"wrote {pathlib.Path(args.out) / 'compare.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
