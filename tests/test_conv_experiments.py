"""Convolutions in the experiments layer: the moving_digits video task, convolutional
cells (conv_lstm, conv_gru) on its frames and sequence cells on them flattened, the
``model.frontend=conv`` front-end (configs, refusals, training, reloading, analysis), the
masked frame MSE, and the experiment files that use them."""

import importlib.util
import json
import math
import re
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqlab.cli import main
from seqlab.experiments import (
    Experiment,
    analyze_params,
    analyze_run,
    apply_overrides,
    default_config,
    find,
    load_run,
    run,
    tasks,
)
from seqlab.experiments._lookup import REPO_EXPERIMENTS
from seqlab.experiments._model import _mse
from seqlab.experiments.tasks._base import split_indices
from seqlab.experiments.tasks._video import DIGIT_SIZE, _trajectories, moving_digits, render

FRAMES = ["data.frame_size=12", "data.seq_len=4", "data.eval_size=8"]  # 3 predicted frames
STEPS = ["train.steps=2", "train.log_every=1", "checkpoint.every=2", "train.batch_size=4",
         "train.eval_batch_size=8"]  # fmt: skip
QUIET = {"progress": False, "echo": lambda *_: None}


def video(*overrides):
    return apply_overrides(default_config("moving_digits"), [*FRAMES, *overrides])


@pytest.fixture(scope="module")
def digits():
    """The moving_digits task at 12x12 frames, 4 frames a sequence, 8 eval sequences."""
    pytest.importorskip("sklearn")
    config = video()
    return config, tasks.get("moving_digits").load(config)


def placed(image, corner, frame_size):
    """A frame holding ``image`` with its top-left pixel at ``corner``, built in NumPy."""
    frame = np.zeros((frame_size, frame_size), np.float32)
    row, col = corner
    frame[row : row + image.shape[0], col : col + image.shape[1]] = image
    return frame


def bounce(start, velocity, room, num_frames):
    """Positions of a point moving at ``velocity`` from ``start`` and reflected at 0 and
    ``room``, simulated step by step (the velocity flips at each wall)."""
    position, positions = float(start), [float(start)]
    for _ in range(num_frames - 1):
        position += velocity
        while not 0 <= position <= room:
            if position > room:
                position, velocity = 2 * room - position, -velocity
            else:
                position, velocity = -position, -velocity
        positions.append(position)
    return positions


# --------------------------------------------------------------------------- the data


def test_render_places_each_digit_at_its_corner_and_overlaps_take_the_maximum(rng):
    images = rng.uniform(0.0, 1.0, size=(2, 2, DIGIT_SIZE, DIGIT_SIZE)).astype(np.float32)
    corners = np.array(
        [
            [[[0, 0], [4, 4]], [[3, 2], [0, 4]]],  # sequence 0: the digits overlap
            [[[4, 4], [4, 4]], [[1, 3], [2, 0]]],  # sequence 1: the same corner, then apart
        ],
        np.int32,
    )  # (B, T, K, 2)
    frames = np.asarray(render(jnp.asarray(images), jnp.asarray(corners), 12))
    assert frames.shape == (2, 2, 12, 12)
    for b in range(2):
        for t in range(2):
            first = placed(images[b, 0], corners[b, t, 0], 12)
            second = placed(images[b, 1], corners[b, t, 1], 12)
            np.testing.assert_array_equal(frames[b, t], np.maximum(first, second))
    # where they overlap, neither the sum nor the later digit: the brighter pixel
    overlap = frames[0, 0, 4:8, 4:8]
    np.testing.assert_array_equal(overlap, np.maximum(images[0, 0, 4:, 4:], images[0, 1, :4, :4]))


def test_trajectories_bounce_off_both_walls(monkeypatch):
    """Known starts and directions (the uniform draws replaced): every corner follows a
    point simulated step by step, reflected at 0 and at room."""
    room, speed, num_frames = 4, 3.0, 9
    starts = np.array([[[[2.0, 3.0], [1.0, 2.0]]]], np.float32)  # (B=1, 1, K=2, 2)
    angles = np.array([[[[0.0], [np.pi]]]], np.float32)  # down the rows; up the rows
    real = jax.random.uniform

    def draws(key, shape, *args, **kwargs):
        if tuple(shape) == starts.shape:
            return jnp.asarray(starts)
        if tuple(shape) == angles.shape:
            return jnp.asarray(angles)
        return real(key, shape, *args, **kwargs)

    monkeypatch.setattr(jax.random, "uniform", draws)
    corners = np.asarray(_trajectories(jax.random.key(0), 1, num_frames, 2, room, speed))
    assert corners.shape == (1, num_frames, 2, 2) and corners.dtype == np.int32
    rows_0 = bounce(2.0, speed, room, num_frames)
    rows_1 = bounce(1.0, -speed, room, num_frames)
    assert rows_0 == [2, 3, 0, 3, 2, 1, 4, 1, 2]  # the walls are hit from both sides
    np.testing.assert_array_equal(corners[0, :, 0, 0], rows_0)
    np.testing.assert_array_equal(corners[0, :, 1, 0], rows_1)
    np.testing.assert_array_equal(corners[0, :, 0, 1], 3)  # no column motion
    np.testing.assert_array_equal(corners[0, :, 1, 1], 2)


def test_random_trajectories_stay_in_the_room_and_move_at_their_speed():
    room, speed = 4, 2.5
    corners = np.asarray(_trajectories(jax.random.key(3), 32, 20, 2, room, speed))
    assert corners.min() == 0 and corners.max() == room  # bounded, and the walls reached
    steps = np.abs(np.diff(corners.astype(np.float64), axis=1))  # (B, T-1, K, 2)
    assert steps.max() <= speed + 1  # a reflection never lengthens a step; +1 rounding
    distance = np.sqrt((steps**2).sum(-1))
    assert np.median(distance) > 0.5 * speed  # they do move
    still = np.asarray(_trajectories(jax.random.key(3), 4, 5, 1, room, 0.0))
    np.testing.assert_array_equal(still, np.broadcast_to(still[:, :1], still.shape))


def test_each_sequence_shows_one_digit_moving_and_targets_are_the_next_frames(rng):
    """Frames made from three all-positive 8x8 images: every frame is exactly one image
    at one corner inside the frame, the same image through the sequence; the targets are
    the inputs one frame on."""
    images = rng.uniform(0.1, 1.0, size=(3, DIGIT_SIZE, DIGIT_SIZE)).astype(np.float32)
    data = types.SimpleNamespace(seq_len=6, frame_size=12, num_digits=1, speed=2.0)
    batch = {k: np.asarray(v) for k, v in moving_digits(jax.random.key(5), images, 4, data).items()}
    inputs, targets = batch["inputs"], batch["targets"]
    assert inputs.shape == targets.shape == (4, 5, 12, 12, 1)
    np.testing.assert_array_equal(batch["lengths"], [5, 5, 5, 5])
    np.testing.assert_array_equal(inputs[:, 1:], targets[:, :-1])
    frames = np.concatenate([inputs, targets[:, -1:]], axis=1)[..., 0]  # (B, 6, 12, 12)
    room = 12 - DIGIT_SIZE
    for b in range(4):
        found = []
        for t in range(6):
            matches = [
                (i, (r, c))
                for i in range(3)
                for r in range(room + 1)
                for c in range(room + 1)
                if np.array_equal(frames[b, t], placed(images[i], (r, c), 12))
            ]
            assert len(matches) == 1, (b, t, matches)
            found.append(matches[0])
        assert len({i for i, _ in found}) == 1  # one digit per sequence
        corners = np.array([corner for _, corner in found])
        assert np.abs(np.diff(corners, axis=0)).max() <= data.speed + 1


def test_evaluation_digits_are_held_out_and_the_baseline_copies_the_last_frame(digits):
    """Each eval frame's digit is one of the held-out images and each training frame's
    one of the training images; the baseline is copy-the-last-frame in the unit of
    eval/mse (per pixel, as the model's metric counts it)."""
    config, data = digits
    from sklearn.datasets import load_digits

    images = (load_digits().images / 16.0).astype(np.float32)
    train_idx, eval_idx = split_indices(len(images), config.data, eval_fraction=0.2)
    assert set(train_idx).isdisjoint(eval_idx)
    room = config.data.frame_size - DIGIT_SIZE

    def digit_indices(frames):
        """For each first frame (B, S, S): the indices of the images that fill it."""
        found = []
        for frame in frames:
            hits = set()
            for r in range(room + 1):
                for c in range(room + 1):
                    crop = frame[r : r + DIGIT_SIZE, c : c + DIGIT_SIZE]
                    if np.count_nonzero(crop) != np.count_nonzero(frame):
                        continue  # lit pixels outside this window: the digit is elsewhere
                    same = np.all(images == crop[None], axis=(1, 2))
                    hits |= set(np.flatnonzero(same).tolist())
            assert hits, "a frame that holds no digit image"
            found.append(hits)
        return found

    for hits in digit_indices(data.eval["inputs"][:, 0, :, :, 0]):
        assert hits & set(eval_idx), hits
    train = data.sample(jax.random.key(11), 16)
    for hits in digit_indices(np.asarray(train["inputs"])[:, 0, :, :, 0]):
        assert hits & set(train_idx), hits

    inputs, targets = data.eval["inputs"], data.eval["targets"]
    mask = jnp.ones(inputs.shape[:2], jnp.float32)
    total, count = _mse(jnp.asarray(inputs), jnp.asarray(targets), mask)["mse"]
    copy_last = float(jnp.sum(total) / jnp.sum(count))
    per_pixel = np.mean([(inputs[b, t] - targets[b, t]) ** 2 for b in range(8) for t in range(3)])
    assert np.isclose(data.info["baselines"]["eval/mse"], copy_last, rtol=1e-6)
    assert np.isclose(copy_last, per_pixel, rtol=1e-6) and copy_last > 0
    assert data.info["frame_shape"] == [12, 12] and data.info["kind"] == "many_to_many"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.seq_len=1", "data.seq_len must be >= 2"),
        ("data.frame_size=7", "data.frame_size must be >= 8"),
        ("data.num_digits=3", "data.num_digits must be 1 or 2"),
        ("data.speed=-1", "data.speed must be >= 0"),
    ],
)
def test_bad_data_settings_name_the_key(override, message):
    with pytest.raises(ValueError, match=message) as error:
        tasks.get("moving_digits").load(video(override))
    assert "\n" not in str(error.value)


# --------------------------------------------------------------------------- the frame MSE


def test_frame_mse_counts_the_valid_steps_of_each_example_only(rng):
    outputs = rng.normal(size=(3, 5, 2, 3)).astype(np.float32)  # (B, T, values...)
    targets = rng.normal(size=(3, 5, 2, 3)).astype(np.float32)
    lengths = np.array([5, 2, 0])
    mask = (np.arange(5)[None, :] < lengths[:, None]).astype(np.float32)
    outputs[mask == 0] = np.nan  # padded steps: whatever is there must not count
    targets[mask == 0] = np.nan
    metrics = _mse(jnp.asarray(outputs), jnp.asarray(targets), jnp.asarray(mask))
    total, count = metrics["loss"]
    squared = np.where(mask[..., None, None] > 0, (outputs - targets) ** 2, 0.0)
    np.testing.assert_allclose(total, squared.sum(axis=(1, 2, 3)), rtol=1e-5)
    np.testing.assert_array_equal(count, lengths * 6)  # valid steps x values per step
    assert float(total[2]) == 0.0
    grads = jax.grad(lambda o: jnp.sum(_mse(o, jnp.asarray(targets), jnp.asarray(mask))["loss"][0]))
    assert np.all(np.isfinite(np.asarray(grads(jnp.asarray(outputs)))[mask > 0]))
    # one output per example (a (B,) mask): every value counts
    total, count = _mse(jnp.asarray(outputs[:, 0]), jnp.asarray(targets[:, 0]), jnp.ones(3))["mse"]
    np.testing.assert_array_equal(count, [6, 6, 6])


# --------------------------------------------------------------------------- training


def _experiment_module(name):
    spec = importlib.util.spec_from_file_location(
        f"experiment_{name}", REPO_EXPERIMENTS / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    """experiments/moving_digits.py's comparison at 12x12 frames and two steps: three
    runs (conv_lstm, lstm_matched, lstm_64) that the training tests read as well."""
    pytest.importorskip("sklearn")
    out = tmp_path_factory.mktemp("moving_digits")
    module = _experiment_module("moving_digits")
    with jax.numpy_dtype_promotion("standard"):
        table = module.compare(out, [*FRAMES, *STEPS])
    return out, table, module


def test_conv_lstm_and_flattened_lstm_train_on_frames(compared, digits):
    out, _, _ = compared
    for name in ("conv_lstm", "lstm_matched", "lstm_64"):
        summary = json.loads((out / name / "summary.json").read_text())
        assert summary["status"] == "finished" and summary["step"] == 2, name
        assert math.isfinite(summary["final"]["eval/mse"]), name
        assert summary["baselines"]["eval/mse"] == digits[1].info["baselines"]["eval/mse"]
    assert load_run(out / "conv_lstm").model.frames == ()  # the cell reads the frames
    assert load_run(out / "lstm_matched").model.frames == (12, 12)  # flattened


def test_flattened_predictions_are_folded_back_into_frames(compared, digits, standard_promotion):
    """load_run(...).apply gives frames (B, T, S, S, 1), equal to the network applied by
    hand to the frames flattened row by row, each output vector folded back the same
    way; and they reproduce the run's own eval/mse."""
    out, _, _ = compared
    config, data = digits
    loaded = load_run(out / "lstm_matched")
    assert loaded.config.data == config.data  # the same evaluation set
    inputs, lengths, targets = (data.eval[k] for k in ("inputs", "lengths", "targets"))
    predicted = np.asarray(loaded.apply(inputs, lengths))
    assert predicted.shape == (8, 3, 12, 12, 1)
    params = loaded.params_of_seed(loaded.params)["net"]
    flat = np.asarray(
        loaded.model.net.apply(params, jnp.asarray(inputs.reshape(8, 3, 144)),
                               seq_lengths=jnp.asarray(lengths))
    )  # fmt: skip
    assert flat.shape == (8, 3, 144)
    by_hand = np.empty_like(predicted)
    for row in range(12):
        for col in range(12):
            by_hand[:, :, row, col, 0] = flat[:, :, row * 12 + col]
    np.testing.assert_allclose(predicted, by_hand, rtol=1e-6, atol=1e-7)
    summary = json.loads((out / "lstm_matched" / "summary.json").read_text())
    mse = float(np.mean((predicted - targets) ** 2))
    assert np.isclose(mse, summary["final"]["eval/mse"], rtol=1e-4)


def test_conv_lstm_predictions_reproduce_its_evaluation(compared, digits, standard_promotion):
    out, _, _ = compared
    _, data = digits
    loaded = load_run(out / "conv_lstm")
    assert loaded.model.encoder.cell.spatial_shape == (12, 12)
    predicted = np.asarray(loaded.apply(data.eval["inputs"], data.eval["lengths"]))
    assert predicted.shape == (8, 3, 12, 12, 1)
    summary = json.loads((out / "conv_lstm" / "summary.json").read_text())
    mse = float(np.mean((predicted - data.eval["targets"]) ** 2))
    assert np.isclose(mse, summary["final"]["eval/mse"], rtol=1e-4)


def test_conv_lstm_run_analysis_has_finite_norms(compared):
    out, _, _ = compared
    summary = json.loads((out / "conv_lstm" / "summary.json").read_text())
    assert "analysis" not in summary  # not skipped
    analysis = json.loads((out / "conv_lstm" / "analysis" / "gradnorms_step2.json").read_text())
    norms = np.asarray(analysis["mean_norm"])
    assert norms.shape == (1, 1, 3) and np.all(np.isfinite(norms)) and np.all(norms > 0)
    assert analysis["examples_at_distance"] == [8, 8, 8]
    assert "distance_is" not in analysis  # no front-end: distance in input steps


def test_analysis_of_a_flattened_frame_model(compared, standard_promotion):
    out, _, _ = compared
    result = analyze_run(out / "lstm_matched", echo=lambda *_: None)
    assert np.all(np.isfinite(np.asarray(result["mean_norm"])))


def test_conv_gru_trains_on_frames(digits, tmp_path, standard_promotion):
    config, data = digits
    config = apply_overrides(config, [*STEPS, "model.cell=conv_gru", "model.hidden_size=4",
                                      "model.cell_options.kernel_size=3"])  # fmt: skip
    summary = run(config, tmp_path / "gru", data=data, **QUIET)
    assert summary["status"] == "finished"
    assert math.isfinite(summary["final"]["eval/mse"])
    assert load_run(tmp_path / "gru").model.encoder.cell.spatial_shape == (12, 12)


@pytest.mark.parametrize(
    ("task", "overrides", "message"),
    [
        ("adding", ["model.cell=conv_lstm"], "model.cell=conv_lstm reads frames"),
        ("adding", ["model.cell=conv_gru", "model.frontend=conv"], "use model.frontend=conv"),
        ("moving_digits", ["model.cell=conv_lstm", "model.cell_options.spatial_shape=[6,6]"],
         r"spatial_shape=\[6, 6\] does not match this task's frames \[12, 12\]"),
    ],
)  # fmt: skip
def test_conv_cells_need_the_tasks_frames(task, overrides, message, request, tmp_path):
    """Refused when the model is built, before anything is written."""
    frames = task == "moving_digits"
    sizes = FRAMES if frames else ["data.seq_len=4", "data.eval_size=8"]
    config = apply_overrides(default_config(task), [*sizes, *STEPS, *overrides])
    data = request.getfixturevalue("digits")[1] if frames else None
    with pytest.raises(ValueError, match=message) as error:
        run(config, tmp_path / "run", data=data, **QUIET)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "run").exists()


def test_a_matching_spatial_shape_is_accepted(digits):
    config = video("model.cell=conv_lstm", "model.cell_options.spatial_shape=[12,12]")
    experiment = Experiment.from_config(config, data=digits[1])
    assert experiment.model.encoder.cell.spatial_shape == (12, 12)


# --------------------------------------------------------------------------- the front-end

ADDING = ["model.hidden_size=4", "data.seq_len=7", "data.eval_size=8", *STEPS,
          "model.frontend=conv", "model.conv.channels=[3]", "model.conv.kernel_size=3",
          "model.conv.stride=2"]  # fmt: skip


def test_a_strided_front_end_trains_reloads_and_is_analyzed(tmp_path, capsys, standard_promotion):
    """adding (many-to-one) through a stride-2 Conv1D with 'same' padding: 7 input steps
    are 4 encoder steps. The run reloads and reproduces its evaluation; ``seqlab
    analyze`` lines its norms up over the 4 encoder steps and says so."""
    out = tmp_path / "adding"
    assert main(["run", "adding", *ADDING, "--out", str(out)]) == 0
    loaded = load_run(out)
    assert loaded.model.net.frontend.stride == 2
    data = tasks.get("adding").load(loaded.config).eval
    outputs = np.asarray(loaded.apply(data["inputs"], data["lengths"]))
    assert outputs.shape == (8, 1)
    summary = json.loads((out / "summary.json").read_text())
    mse = float(np.mean((outputs - data["targets"]) ** 2))
    assert np.isclose(mse, summary["final"]["eval/mse"], rtol=1e-4)
    np.testing.assert_array_equal(loaded.model.net.encoded_lengths(data["lengths"]), 4)

    capsys.readouterr()
    assert main(["analyze", str(out)]) == 0
    assert "gradient norm decays by" in capsys.readouterr().out
    analysis = json.loads((out / "analysis" / "gradnorms_step2.json").read_text())
    assert analysis["distance"] == [0, 1, 2, 3]  # ceil(7 / 2) encoder steps, not 7
    assert analysis["examples_at_distance"] == [8, 8, 8, 8]
    assert "front-end" in analysis["distance_is"]
    assert "one per 2 input steps" in analysis["distance_is"]
    norms = np.asarray(analysis["mean_norm"])
    assert norms.shape == (1, 1, 4) and np.all(np.isfinite(norms)) and np.all(norms > 0)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.frontend=conv", "model.conv.padding=foo"], r"model\.conv(\.|: )padding"),
        (["model.frontend=conv", "model.conv.channels=[]"], "model.conv.channels must be a non"),
        (["model.frontend=conv", "model.conv.channels=[4,0]"], "model.conv.channels"),
        (["model.frontend=maybe"], "model.frontend must be one of 'none', 'conv'"),
        (["model.frontend=conv", "model.conv.stride=0"], r"model\.conv(\.|: )stride"),
        (["model.frontend=conv", "model.conv.activation=sigh"], r"model\.conv(\.|: )activation"),
        (["model.frontend=conv", "model.conv.channels=[4]", "model.conv.groups=3"],
         r"model\.conv.*groups"),
    ],
)  # fmt: skip
def test_bad_front_end_settings_are_one_line_with_status_2(overrides, message, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "adding", *overrides, "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1, error
    assert error.startswith("seqlab run: error: ")
    assert re.search(message, error), error
    assert not out.exists()


@pytest.mark.parametrize(
    ("task", "overrides", "message"),
    [
        ("copy_memory", ["data.seq_len=5", "model.conv.stride=2"],
         r"front-end must keep every length .* got stride 2"),
        ("copy_memory", ["data.seq_len=5", "model.conv.padding=valid"],
         r"front-end must keep every length .* got padding 'valid'"),
        ("copy_memory", ["data.seq_len=5", "model.conv.pool=max"],
         r"front-end must keep every length .* got pool_size 2"),
        ("chars", ["data.seq_len=12"], "a one-to-many model reads no input sequence"),
        ("listops", ["model.cell=child_sum_tree_lstm", "data.num_train=40", "data.eval_size=8",
                     "data.max_depth=2"], "a tree model has no model.frontend"),
    ],
)  # fmt: skip
def test_a_front_end_where_it_cannot_go_is_refused(task, overrides, message, tmp_path):
    config = apply_overrides(
        default_config(task), [*overrides, *STEPS, "model.frontend=conv", "model.conv.channels=[4]"]
    )
    with pytest.raises(ValueError, match=message) as error:
        run(config, tmp_path / "run", **QUIET)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "run").exists()


def test_a_length_keeping_front_end_is_accepted_on_many_to_many():
    config = apply_overrides(
        default_config("copy_memory"),
        ["data.seq_len=5", "model.frontend=conv", "model.conv.padding=causal",
         "model.conv.channels=[4,4]"],
    )  # fmt: skip
    net = Experiment.from_config(config).model.net
    np.testing.assert_array_equal(net.encoded_lengths(jnp.array([3, 7])), [3, 7])


# --------------------------------------------------------------------------- experiment files


def test_conv_experiment_files_load_by_name_and_validate():
    pytest.importorskip("statsmodels")
    sunspots = apply_overrides(find("sunspots_conv"), [])  # apply_overrides validates
    assert (sunspots.task, sunspots.model.frontend, sunspots.model.conv.stride) == (
        "forecast",
        "conv",
        2,
    )
    experiment = Experiment.from_config(sunspots)
    assert experiment.model.kind == "many_to_one" and experiment.model.net.frontend.stride == 2
    dates = apply_overrides(find("dates_conv"), [])
    assert (dates.task, dates.model.frontend, dates.model.conv.stride) == ("dates", "conv", 2)
    md = find("moving_digits")  # the experiment file, not the task's default config
    assert (md.task, md.model.cell) == ("moving_digits", "conv_lstm")


def test_dates_conv_analysis_follows_the_shortened_variable_lengths(tmp_path):
    """An encoder-decoder behind a stride-2 front-end, sources of 8 to 30 characters:
    distance d has the examples whose encoded length ceil(L / 2) exceeds d."""
    config = apply_overrides(
        find("dates_conv"),
        ["data.train_size=64", "data.eval_size=16", "model.hidden_size=8",
         "model.embed_size=4", "model.conv.channels=[4]"],
    )  # fmt: skip
    experiment = Experiment.from_config(config)
    lengths = experiment.data.eval["lengths"]
    assert lengths.min() < lengths.max()
    encoded = -(-lengths // 2)
    np.testing.assert_array_equal(
        experiment.model.net.encoded_lengths(jnp.asarray(lengths)), encoded
    )
    result = analyze_params(experiment, experiment.init_state()["params"], 0, tmp_path)
    assert len(result["distance"]) == encoded.max()
    want = [int(np.sum(encoded > d)) for d in range(encoded.max())]
    assert result["examples_at_distance"] == want
    assert "one per 2 input steps" in result["distance_is"]
    assert np.all(np.isfinite(np.asarray(result["mean_norm"])))


def test_moving_digits_comparison_matches_parameters_and_reports_every_frame(compared, digits):
    out, table, module = compared
    assert list(table) == ["copy_last_frame", "conv_lstm", "lstm_matched", "lstm_64"]
    assert json.loads((out / "compare.json").read_text()) == table
    for name, row in table.items():
        assert len(row["per_frame_mse"]) == 3, name  # seq_len - 1 predicted frames
        assert np.all(np.isfinite(row["per_frame_mse"])), name
        assert np.isclose(row["mse"], np.mean(row["per_frame_mse"])), name
    conv, matched, big = (table[n]["parameters"] for n in ("conv_lstm", "lstm_matched", "lstm_64"))
    assert conv == module.conv_lstm_parameters(module.CONV_HIDDEN, module.KERNEL)  # the formula
    hidden = load_run(out / "lstm_matched").config.model.hidden_size
    assert matched == module.lstm_parameters(hidden, 144)
    assert abs(matched - conv) <= 0.25 * conv
    assert big > 4 * conv
    baseline = digits[1].info["baselines"]["eval/mse"]
    assert np.isclose(table["copy_last_frame"]["mse"], baseline, rtol=1e-6)


def test_data_shorter_than_the_front_end_reads_is_refused_before_a_run(tmp_path, capsys):
    from seqlab import cli

    out = tmp_path / "short"
    status = cli.main(
        [
            "run",
            "adding",
            "model.frontend=conv",
            "model.conv.padding=valid",
            "model.conv.kernel_size=9",
            "model.conv.channels=[4,4]",
            "data.seq_len=12",
            "--out",
            str(out),
        ]
    )
    assert status == 2
    message = capsys.readouterr().err.strip()
    assert "at least 17 steps" in message and "sequences of 12" in message
    assert not (out / "config.yaml").exists()


def test_the_comparison_refuses_overrides_of_its_models(tmp_path):
    with pytest.raises(ValueError, match="model.hidden_size=3 would change them"):
        _experiment_module("moving_digits").compare(tmp_path, ["model.hidden_size=3"])
