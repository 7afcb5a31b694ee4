"""The command line: the demo's outputs, one-line errors with exit status 2, no overwrites."""

import json
import math

import pytest

from seqlab.cli import main
from seqlab.demo import ADDING_BASELINE_MSE, DemoConfig, adding_problem, run_demo


def test_adding_problem_has_two_markers_and_baseline_variance():
    import jax
    import jax.numpy as jnp

    inputs, targets = adding_problem(jax.random.key(0), 4096, 30)
    markers = inputs[..., 1]
    assert bool(jnp.all(jnp.sum(markers, axis=1) == 2))
    assert bool(jnp.all(jnp.sum(markers[:, :15], axis=1) == 1))
    expected = jnp.sum(inputs[..., 0] * markers, axis=1)
    assert float(jnp.max(jnp.abs(expected - targets))) < 1e-6
    # predicting the mean scores Var(U + U) = 1/6
    assert abs(float(jnp.var(targets)) - ADDING_BASELINE_MSE) < 0.01


def test_demo_writes_results(tmp_path, standard_promotion):
    config = DemoConfig(cells=("rnn", "gru"), steps=30, seq_len=10, hidden_size=8, log_every=10)
    payload = run_demo(tmp_path / "demo", config, echo=lambda *_: None)
    saved = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert saved == json.loads(json.dumps(payload))
    assert [r["cell"] for r in saved["results"]] == ["rnn", "gru"]
    for result in saved["results"]:
        assert [point["step"] for point in result["curve"]] == [10, 20, 30]
        assert math.isfinite(result["eval_mse"])
    assert "| gru |" in (tmp_path / "demo" / "summary.md").read_text()


def test_demo_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "old"
    out.mkdir()
    (out / "results.json").write_text("precious")
    assert main(["demo", "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "already holds results.json" in error
    assert (out / "results.json").read_text() == "precious"


@pytest.mark.parametrize("argv", [["bogus"], ["demo", "--bad"], []])
def test_usage_errors_are_one_line_with_status_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("seqlab")
