"""The README's Python examples run as written, in order, in one namespace, and say what
they compute: every value or shape a README comment states is asserted after its block."""

import importlib.util
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _scan_block(ns):
    # "(B, T, D)" inputs of lengths [20, 7, 12]; my_cell's 32 hidden units; outputs zero
    # past each length; the reverse LSTM's state.h, state.c: (3, 64)
    assert ns["h_last"].shape == (3, 32)
    padded = np.arange(20)[None, :] >= np.asarray(ns["lengths"])[:, None]
    assert np.all(np.asarray(ns["outputs"])[padded] == 0.0)
    assert np.any(np.asarray(ns["outputs"])[~padded] != 0.0)
    assert ns["state"].h.shape == ns["state"].c.shape == (3, 64)
    assert all(np.all(np.isfinite(g)) and np.any(g != 0) for g in jax.tree.leaves(ns["grads"]))


def _layer_block(ns):
    # outputs: (3, 20, 64) = [forward, backward]; final_state[l]["backward"]: (3, 32);
    # logits (3, 5)
    assert ns["outputs"].shape == (3, 20, 64)
    assert ns["final_state"][1]["backward"].shape == (3, 32)
    assert ns["logits"].shape == (3, 5) and np.all(np.isfinite(ns["logits"]))


def _analysis_block(ns):
    # norms: float64, (num_layers, B, T) = (2, 3, 20); spans (B, T); a per-step factor
    assert ns["norms"].dtype == np.float64 and ns["norms"].shape == (2, 3, 20)
    assert ns["spans"].shape == (3, 20)
    assert 0.0 < ns["fit"].factor < 1.0  # a 2-layer LSTM at init: gradients decay


def _kernel_block(ns):
    assert ns["fused_outputs"].shape == (3, 20, 64)
    assert ns["fused_layer"].implementation == "pallas"


def _parallel_block(ns):
    # record.iterations == 4, .converged; ys the sequential answer
    record = ns["record"]
    assert record.iterations == 4 and record.converged
    assert ns["ys"].shape == (8, 4096, 64)


def _experiment_block(ns):
    # run.config.model.cell, run.steps: 'lstm', [50, 100]; predictions (1024, 1)
    run = ns["run"]
    assert run.config.model.cell == "lstm" and list(run.steps) == [50, 100]
    assert ns["predictions"].shape == (1024, 1)
    steps, values = ns["steps"], ns["eval_mse"]
    assert list(steps) == [50, 100] and np.all(np.isfinite(values))
    assert not np.allclose(ns["first_seed"], ns["predictions"])  # one seed, not the ensemble


# A block is recognized by a line it holds; its assertions run right after it.
CHECKS = {
    "outputs, h_last = seqlab.scan(": _scan_block,
    "classifier = ManyToOne(": _layer_block,
    "spans = jacobian_norms(": _analysis_block,
    "fused_layer = RNNLayer(": _kernel_block,
    "record = convergence(": _parallel_block,
    "first_seed = run.apply(": _experiment_block,
}


def test_readme_examples_run(standard_promotion):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert len(blocks) >= 4
    namespace: dict = {}
    checked = set()
    # The examples are written for default JAX settings, not the suite's strict ones.
    with jax.numpy_rank_promotion("allow"):
        for block in blocks:
            if "import torch" in block and importlib.util.find_spec("torch") is None:
                continue
            exec(compile(block, str(README), "exec"), namespace)
            for marker, check in CHECKS.items():
                if marker in block:
                    check(namespace)
                    checked.add(marker)
    assert checked == set(CHECKS), f"README blocks not found: {set(CHECKS) - checked}"
    assert jnp.asarray(namespace["xs"]).ndim == 3


def test_the_layout_section_names_every_module_and_only_what_exists():
    """Every module and package of seqlab/ and every script of benchmarks/ is named in the
    README's Layout block (a module by its file name or its stem, a package as name/), and
    every file name the block gives exists there."""
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[1]
    text = (root / "README.md").read_text()
    block = re.search(r"^## Layout\n\n```\n(.*?)```", text, re.S | re.M)
    assert block, "README.md has no Layout block"
    layout = block.group(1)
    words = set(re.findall(r"[\w.]+/?", layout))
    missing = []
    for path in sorted((root / "seqlab").rglob("*.py")) + sorted(
        (root / "benchmarks").glob("*.py")
    ):
        if path.name == "__init__.py" and path.parent.name != "seqlab":
            continue
        if not ({path.name, path.stem} & words):
            missing.append(str(path.relative_to(root)))
    for package in sorted((root / "seqlab").rglob("__init__.py")):
        if package.parent.name != "seqlab" and f"{package.parent.name}/" not in words:
            missing.append(str(package.parent.relative_to(root)) + "/")
    assert not missing, f"the README's Layout does not name {missing}"
    names = {word for word in words if word.endswith((".py", ".md"))}
    everywhere = {
        path.name
        for folder in ("seqlab", "benchmarks", "tests")
        for path in (root / folder).rglob("*")
    }
    assert names - everywhere == set(), f"the Layout names no such file: {names - everywhere}"
