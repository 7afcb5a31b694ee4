"""Tree models in the experiments layer: the listops task (trees or flat tokens), the tree
architecture end to end (run, load_run, the depth analysis), and the errors of mixing
tree and sequence cells and tasks."""

import json

import numpy as np
import pytest

from seqlab.experiments import apply_overrides, default_config, load_run, run
from seqlab.experiments.tasks import get, listops_value
from seqlab.experiments.tasks._trees import LISTOPS_VOCAB, listops_tokens, listops_tree
from seqlab.trees import TreeBatch

SMALL = [
    "model.hidden_size=16",
    "model.embed_size=8",
    "data.num_train=600",
    "data.eval_size=200",
    "data.max_depth=2",
    "data.max_args=3",
    "train.batch_size=32",
    "train.lr=0.01",
]


def listops(*overrides):
    return apply_overrides(default_config("listops"), [*SMALL, *overrides])


def test_listops_values_follow_the_operators():
    assert listops_value(("[MAX", [2, 9, ("[MIN", [4, 7]), 0])) == 9
    assert listops_value(("[SM", [5, 6, ("[MED", [1, 2, 3, 4])])) == 3  # median 2.5 -> 2
    assert listops_value(("[MED", [7, ("[MIN", [8, 9]), 1])) == 7
    expression = ("[MAX", [2, ("[MIN", [4, 7]), 0])
    assert " ".join(listops_tokens(expression)) == "[MAX 2 [MIN 4 7 ] 0 ]"
    tree = listops_tree(expression, LISTOPS_VOCAB)
    assert tree.children[-1] == (0, 3, 4) and tree.children[3] == (1, 2)
    assert LISTOPS_VOCAB.tokens[tree.inputs[-1]] == "[MAX"


def test_tree_and_flat_forms_hold_the_same_expressions():
    tree = get("listops").load(listops("model.cell=child_sum_tree_lstm"))
    flat = get("listops").load(listops("model.cell=lstm"))
    assert tree.info["kind"] == "tree" and flat.info["kind"] == "many_to_one"
    np.testing.assert_array_equal(tree.train["targets"], flat.train["targets"])
    np.testing.assert_array_equal(tree.eval["targets"], flat.eval["targets"])
    # the flat tokens of example 0 are its tree's inputs in prefix order, with the "]"s
    inputs = tree.eval["inputs"][0][: tree.eval["num_nodes"][0]]
    tokens = [t for t in flat.eval["inputs"][0][: flat.eval["lengths"][0]]]
    assert sorted(inputs.tolist()) == sorted(t for t in tokens if LISTOPS_VOCAB.tokens[t] != "]")


def test_a_tree_lstm_learns_listops_and_reloads(tmp_path, standard_promotion):
    config = listops("model.cell=child_sum_tree_lstm", "train.steps=150", "train.log_every=50")
    summary = run(config, tmp_path / "tree", progress=False, echo=lambda *_: None)
    assert summary["status"] == "finished"
    accuracy, baseline = summary["final"]["eval/accuracy"], summary["baselines"]["eval/accuracy"]
    assert accuracy > baseline + 0.1, (accuracy, baseline)
    loaded = load_run(tmp_path / "tree")
    assert loaded.model.kind == "tree" and loaded.steps[-1] == 150
    # apply takes a TreeBatch and reproduces the run's own evaluation
    evaluation = get("listops").load(config).eval
    logits = loaded.apply(TreeBatch.from_dict(evaluation))
    agree = np.mean(np.argmax(np.asarray(logits), -1) == evaluation["targets"])
    assert abs(agree - accuracy) < 1e-6, (agree, accuracy)
    with pytest.raises(ValueError, match="takes a seqlab.trees.TreeBatch"):
        loaded.apply(evaluation["inputs"])
    analysis = json.loads((tmp_path / "tree" / "analysis" / "gradnorms_step150.json").read_text())
    assert analysis["distance_is"] == "depth from the root"
    curve = np.asarray(analysis["mean_norm"])[0, 0]
    # the loss enters at the root: a node deeper down gets less of it at this depth
    assert curve[0] > curve[-1] > 0


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model.cell=child_sum_tree_lstm", "data.form=flat"], "is a tree cell and reads trees"),
        (["model.cell=lstm", "data.form=tree"], "is a sequence cell; this task reads trees"),
        (["model.cell=tree_gru", "model.num_layers=2"], "a tree model has one tree cell"),
        (["data.form=forest"], "data.form must be one of auto, tree, flat"),
        (["model.cell=tree_rnn"], "takes 2 children per node.*model.cell_options.arity=3"),
        (["model.cell=tree_gru", "model.dropout=0.5"], "a tree model has no model.dropout"),
        (["data.max_depth=1", "data.min_length=8"], "have 4 to 5 tokens.*excludes them all"),
    ],
)
def test_tree_and_sequence_mixes_are_refused(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        run(listops(*overrides, "train.steps=2"), tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()


def test_a_tree_cell_on_a_sequence_task_is_refused(tmp_path):
    config = apply_overrides(default_config("adding"), ["model.cell=tree_gru", "train.steps=2"])
    with pytest.raises(ValueError, match="tree_gru is a tree cell"):
        run(config, tmp_path / "x", progress=False)


POSITIVE, NEGATIVE, NEUTRAL = ("good", "great", "fine"), ("bad", "dull", "poor"), ("film", "it")


def _sentiment_tree(rng) -> str:
    """A random binary tree over 2-6 words whose every node's label follows its words:
    4 or 3 for more positive words, 0 or 1 for more negative, 2 for a tie."""

    def node(words):
        score = sum((w in POSITIVE) - (w in NEGATIVE) for w in words)
        label = 2 if score == 0 else (3 + (score > 1) if score > 0 else 1 - (score < -1))
        if len(words) == 1:
            return f"({label} {words[0]})"
        cut = int(rng.integers(1, len(words)))
        return f"({label} {node(words[:cut])} {node(words[cut:])})"

    vocabulary = POSITIVE + NEGATIVE + NEUTRAL
    return node([vocabulary[i] for i in rng.integers(len(vocabulary), size=rng.integers(2, 7))])


def write_treebank(folder, sizes=(300, 80, 80)):
    rng = np.random.default_rng(0)
    folder.mkdir()
    for split, size in zip(("train", "dev", "test"), sizes, strict=True):
        lines = [_sentiment_tree(rng) for _ in range(size)]
        (folder / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return folder


def treebank(folder, *overrides):
    return apply_overrides(
        default_config("treebank"),
        [
            f"data.path={folder}",
            "model.cell=child_sum_tree_lstm",
            "model.hidden_size=16",
            "model.embed_size=8",
            "train.batch_size=32",
            "train.lr=0.02",
            "train.steps=120",
            "train.log_every=40",
            "checkpoint.every=40",
            *overrides,
        ],
    )


@pytest.mark.parametrize("labels", ["fine", "binary"])
def test_treebank_trains_on_every_node_and_scores_roots(tmp_path, standard_promotion, labels):
    folder = write_treebank(tmp_path / "sst")
    config = treebank(folder, f"data.labels={labels}")
    data = get("treebank").load(config)
    assert data.info["per_node"] and data.info["output_size"] == (5 if labels == "fine" else 2)
    if labels == "binary":  # neutral nodes unscored, neutral roots dropped
        roots = data.eval["targets"][np.arange(len(data.eval["root"])), data.eval["root"]]
        assert set(np.unique(roots)) <= {0, 1}
        assert len(data.eval["root"]) < 80
    summary = run(config, tmp_path / labels, progress=False, echo=lambda *_: None)
    final, baselines = summary["final"], summary["baselines"]
    assert summary["main_metric"] == "eval/root_accuracy"
    for metric in ("eval/root_accuracy", "eval/accuracy"):
        assert final[metric] > baselines[metric] + 0.1, (metric, final[metric], baselines[metric])


def test_treebank_errors_name_the_file_and_line(tmp_path):
    folder = write_treebank(tmp_path / "sst")
    lines = (folder / "dev.txt").read_text().splitlines()
    lines[4] = "(3 (2 good) (4 great)"
    (folder / "dev.txt").write_text("\n".join(lines))
    with pytest.raises(ValueError, match=r"dev.txt, line 5: unbalanced brackets"):
        run(treebank(folder), tmp_path / "x", progress=False)
    with pytest.raises(ValueError, match="treebank reads trees"):
        run(treebank(folder, "model.cell=gru"), tmp_path / "x", progress=False)
    with pytest.raises(ValueError, match="test.txt is missing"):
        (folder / "test.txt").unlink()
        run(treebank(folder, "data.eval_split=test"), tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()


def test_the_registry_keeps_tree_and_sequence_cells_apart():
    """``cells.registered()`` stays the sequence cells (what ``seqlab.scan`` runs); tree
    cells are listed by kind, made by name, and refuse a trainable initial state."""
    from seqlab import cells

    assert "lstm" in cells.registered() and "tree_gru" not in cells.registered()
    assert cells.registered("tree") == [
        "child_sum_tree_lstm",
        "nary_tree_lstm",
        "tree_gru",
        "tree_rnn",
    ]
    assert set(cells.registered(None)) == set(cells.registered()) | set(cells.registered("tree"))
    assert cells.kind_of("nary_tree_lstm") == "tree" and cells.kind_of("gru") == "sequence"
    assert cells.make("nary_tree_lstm", hidden_size=4, arity=3).arity == 3
    with pytest.raises(ValueError, match="trainable_initial_state is for sequence cells"):
        cells.make("tree_gru", hidden_size=4, trainable_initial_state=True)
    with pytest.raises(ValueError, match="kind must be one of"):
        cells.register("forest_cell", lambda **_: None, kind="forest")
