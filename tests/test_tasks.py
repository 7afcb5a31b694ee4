"""Each task's loader on shipped or generated data, checked against what it must mean."""

import datetime
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqlab.experiments import default_config, tasks
from seqlab.experiments._config import apply_overrides


def load(name, *overrides):
    config = apply_overrides(default_config(name), list(overrides))
    return tasks.get(name).load(config)


def test_adding_problem_has_two_markers_and_baseline_variance():
    inputs, targets = tasks.adding_problem(jax.random.key(0), 4096, 30)
    markers = inputs[..., 1]
    assert bool(jnp.all(jnp.sum(markers, axis=1) == 2))
    assert bool(jnp.all(jnp.sum(markers[:, :15], axis=1) == 1))
    expected = jnp.sum(inputs[..., 0] * markers, axis=1)
    assert float(jnp.max(jnp.abs(expected - targets))) < 1e-6
    assert abs(float(jnp.var(targets)) - tasks.ADDING_BASELINE_MSE) < 0.01


@pytest.mark.parametrize("variant", ["many_to_many", "many_to_one"])
def test_copy_memory_targets_repeat_the_symbols_after_the_cue(variant):
    data = load("copy_memory", "data.seq_len=12", "data.eval_size=64", f"data.variant={variant}")
    inputs, targets = data.eval["inputs"], data.eval["targets"]
    assert inputs.shape == (64, 12 + 20)
    symbols = inputs[:, :10]
    assert symbols.min() >= 1 and symbols.max() <= 8
    assert np.all(inputs[:, 10 + 11] == 9)  # the cue after delay - 1 blanks
    if variant == "many_to_many":
        np.testing.assert_array_equal(targets[:, -10:], symbols)
        assert not targets[:, :-10].any()
        assert math.isclose(data.info["baselines"]["eval/loss"], 10 * math.log(8) / 32)
    else:
        np.testing.assert_array_equal(targets, symbols[:, 0] - 1)
    batch = data.sample(jax.random.key(3), 5)
    assert batch["inputs"].shape == (5, 32) and not np.array_equal(batch["inputs"], inputs[:5])


def test_digits_rows_and_pixels_read_the_same_images():
    rows = load("digits")
    pixels = load("digits", "data.seq_len=64")
    np.testing.assert_array_equal(
        rows.eval["inputs"].reshape(len(rows.eval["inputs"]), -1),
        pixels.eval["inputs"][..., 0],
    )
    assert rows.info["input_size"] == 8 and pixels.info["input_size"] == 1
    assert 0.0 <= rows.eval["inputs"].min() and rows.eval["inputs"].max() <= 1.0
    assert len(rows.train["targets"]) + len(rows.eval["targets"]) == 1797
    with pytest.raises(ValueError, match="data.seq_len must be 8"):
        load("digits", "data.seq_len=10")


def test_kfold_splits_partition_the_data():
    eval_rows = []
    for fold in range(3):
        data = load("digits", "data.num_folds=3", f"data.fold={fold}")
        evaluation = data.eval["inputs"].reshape(len(data.eval["inputs"]), -1)
        train = data.train["inputs"].reshape(len(data.train["inputs"]), -1)
        assert len(evaluation) + len(train) == 1797
        eval_rows += [
            row.tobytes() + bytes([t])
            for row, t in zip(evaluation, data.eval["targets"], strict=True)
        ]
    everything = load("digits", "data.eval_fraction=0.5")
    all_rows = [
        row.reshape(-1).tobytes() + bytes([t])
        for part in (everything.train, everything.eval)
        for row, t in zip(part["inputs"], part["targets"], strict=True)
    ]
    assert sorted(eval_rows) == sorted(all_rows)  # each example in exactly one eval fold


@pytest.mark.parametrize("series", ["sunspots", "co2"])
def test_forecast_windows_come_from_the_series_in_time_order(series):
    data = load(
        "forecast",
        f"data.series={series}",
        "data.seq_len=10",
        "data.horizon=3",
        "data.relative=false",
    )
    raw = tasks.load_series(series)
    mean, std = data.info["series_mean"], data.info["series_std"]
    close = dict(rtol=1e-5, atol=1e-5 * std)  # float32 storage of standardized values
    first = data.train["inputs"][0, :, 0] * std + mean
    np.testing.assert_allclose(first, raw[:10], **close)
    np.testing.assert_allclose(data.train["targets"][0] * std + mean, raw[10:13], **close)
    np.testing.assert_allclose(data.eval["targets"][-1] * std + mean, raw[-3:], **close)
    naive = np.repeat(data.eval["inputs"][:, -1, :], 3, axis=1)
    expected = np.mean((naive - data.eval["targets"]) ** 2)
    assert math.isclose(data.info["baselines"]["eval/mse"], expected, rel_tol=1e-6)
    relative = load("forecast", f"data.series={series}", "data.seq_len=10", "data.horizon=3")
    assert not relative.eval["inputs"][:, -1].any()  # each window ends at 0: its own level
    np.testing.assert_allclose(  # the same changes, so the same naive-forecast error
        relative.eval["targets"], data.eval["targets"] - data.eval["inputs"][:, -1], atol=1e-5
    )
    assert math.isclose(relative.info["baselines"]["eval/mse"], expected, rel_tol=1e-4)


def test_forecast_augmentation_scales_targets_with_inputs():
    data = load("forecast", "data.augment_scale=0.5", "data.relative=false")
    batch = {k: jnp.asarray(v[:8]) for k, v in data.train.items()}
    out = data.augment(jax.random.key(0), batch)
    ratio_in = out["inputs"][:, :, 0] / batch["inputs"][:, :, 0]
    ratio_out = out["targets"][:, 0] / batch["targets"][:, 0]
    np.testing.assert_allclose(
        ratio_in, np.broadcast_to(ratio_out[:, None], ratio_in.shape), rtol=1e-4
    )
    assert float(jnp.std(ratio_out)) > 0.05


def write_aclimdb(root):
    reviews = {
        "train/pos": ["A great, great film.<br />Loved it", "wonderful acting"],
        "train/neg": ["terrible plot", "awful, just awful and boring", "boring"],
        "test/pos": ["great acting", "loved the film"],
        "test/neg": ["boring and awful"],
    }
    for folder, texts in reviews.items():
        (root / folder).mkdir(parents=True)
        for i, text in enumerate(texts):
            (root / folder / f"{i}_7.txt").write_text(text)


def test_sentiment_reads_the_aclimdb_layout(tmp_path):
    write_aclimdb(tmp_path / "aclImdb")
    data = load("sentiment", f"data.path={tmp_path / 'aclImdb'}", "data.seq_len=4")
    np.testing.assert_array_equal(data.train["targets"], [1, 1, 0, 0, 0])
    np.testing.assert_array_equal(data.eval["targets"], [1, 1, 0])
    vocab = data.info["vocab"]
    first = [vocab[i] for i in data.train["inputs"][0]]
    assert first == ["a", "great", "great", "film"]  # <br /> gone, cut to seq_len
    assert data.train["lengths"].tolist() == [4, 2, 2, 4, 1]
    assert tasks.tokenize_review("It's GREAT!<br />x") == ["it's", "great", "x"]
    with pytest.raises(ValueError, match="aclImdb"):
        load("sentiment")
    with pytest.raises(ValueError, match="missing"):
        load("sentiment", f"data.path={tmp_path}")


def test_python_tagging_reads_token_classes():
    lines = tasks.python_char_tags('if x1 >= 10:  # hi\n    s = """a\nb"""\n')
    names = ["space", "name", "keyword", "operator", "number", "string", "comment"]
    tagged = ["".join(names[t][0] for t in tags) for _, tags in lines]
    assert tagged[0] == "kksnnsoosnnossccccc"[: len("if x1 >= 10:  # hi")]
    assert lines[1][1][-5:] == [0, 5, 5, 5, 5] and lines[2][1] == [5] * 4
    data = load("tagging", "data.seq_len=40")
    assert data.info["labels"] == names
    valid = np.arange(40)[None, :] < data.eval["lengths"][:, None]
    assert not data.eval["targets"][~valid].any()


def test_conll_reader(tmp_path):
    path = tmp_path / "train.conll"
    path.write_text("-DOCSTART- O\n\nThe DT B-NP\ncat NN I-NP\n\nRuns VBZ B-VP\n")
    assert tasks.read_conll(path) == [(["The", "cat"], ["B-NP", "I-NP"]), (["Runs"], ["B-VP"])]
    data = load("tagging", "data.source=conll", f"data.path={path}", "data.eval_fraction=0.5")
    assert data.info["labels"] == ["B-NP", "B-VP", "I-NP"]
    (tmp_path / "bad.conll").write_text("lonely\n")
    with pytest.raises(ValueError, match="bad.conll:1"):
        tasks.read_conll(tmp_path / "bad.conll")


def test_dates_sources_name_the_same_day_as_their_targets():
    sources, targets = tasks.human_dates(np.random.default_rng(1), 200)
    for source, target in zip(sources, targets, strict=True):
        day = datetime.date.fromisoformat(target)
        assert str(day.year) in source
        assert str(day.day) in source.lstrip("0") or f"{day.day:02d}" in source
    data = load("dates", "data.train_size=50", "data.eval_size=20")
    target_vocab = data.info["target_vocab"]
    decoded = "".join(target_vocab[i] for i in data.eval["targets"][0] if i > 3)
    assert decoded == tasks.human_dates(np.random.default_rng([0, 2]), 20)[1][0]


def test_chars_targets_continue_the_first_character():
    data = load("chars", "data.seq_len=16")
    vocab = data.info["vocab"]
    text = "".join(vocab[i] for i in data.train["targets"][0])
    first = vocab[int(np.argmax(data.train["inputs"][0]))]
    corpus = tasks._text.default_corpus()
    assert (first + text) in corpus and len(text) == 16
    assert data.info["baselines"]["eval/loss"] > 1.0
