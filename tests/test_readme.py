"""The README's Python examples run as written, in order, in one namespace."""

import importlib.util
import pathlib
import re

import jax

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_examples_run(standard_promotion):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert len(blocks) >= 4
    namespace: dict = {}
    # The examples are written for default JAX settings, not the suite's strict ones.
    with jax.numpy_rank_promotion("allow"):
        for block in blocks:
            if "import torch" in block and importlib.util.find_spec("torch") is None:
                continue
            exec(compile(block, str(README), "exec"), namespace)
    assert namespace["logits"].shape == (3, 5)
    assert namespace["outputs"].shape[0] == 3
