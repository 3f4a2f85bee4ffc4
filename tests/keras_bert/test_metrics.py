"""Metrics against reference implementations (scikit-learn, scipy, seqeval, the official
SQuAD scripts; golden values in tests/fixtures/finetune/metrics_golden.json, made by
make_metrics_golden.py) and hand-computed edge cases."""

import json
import math

import pytest

from keras_bert import metrics as M


@pytest.fixture(scope="module")
def golden(fixtures_dir):
    with open(fixtures_dir / "finetune" / "metrics_golden.json") as f:
        return json.load(f)


def _close(a, b):
    if b is None:
        return math.isnan(a)
    return a == pytest.approx(b, abs=1e-9)


def test_classification_matches_sklearn(golden):
    for name, case in golden["classification"].items():
        y, p = case["labels"], case["predictions"]
        assert _close(M.accuracy(y, p), case["accuracy"]), name
        assert _close(M.f1_macro(y, p), case["f1_macro"]), name
        assert _close(M.matthews_corrcoef(y, p), case["mcc"]), name
        if "f1_binary" in case:
            assert _close(M.f1_binary(y, p), case["f1_binary"]), name


def test_classification_hand_computed():
    y = [1, 1, 1, 0, 0, 0, 0, 1]
    p = [1, 1, 0, 0, 0, 1, 0, 1]  # tp=3 fp=1 fn=1 tn=3
    assert M.accuracy(y, p) == 6 / 8
    assert M.f1_binary(y, p) == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))
    assert M.matthews_corrcoef(y, p) == pytest.approx((3 * 3 - 1 * 1) / math.sqrt(4 * 4 * 4 * 4))
    out = M.classification_metrics(y, p)
    assert set(out) == {"accuracy", "f1_macro", "mcc", "num_examples", "f1"}
    # A class listed but absent from both lists counts 0 in the macro average.
    assert M.f1_macro([0, 1], [0, 1], classes=[0, 1, 2]) == pytest.approx(2 / 3)
    assert math.isnan(M.accuracy([], []))
    with pytest.raises(M.MetricInputError, match="3 entries but predictions has 2"):
        M.accuracy([1, 2, 3], [1, 2])


def test_regression_matches_scipy(golden):
    for name, case in golden["regression"].items():
        assert _close(M.pearson(case["x"], case["y"]), case["pearson"]), name
        assert _close(M.spearman(case["x"], case["y"]), case["spearman"]), name
    assert M.rankdata([3, 1, 3, 2]).tolist() == [3.5, 1.0, 3.5, 2.0]
    assert math.isnan(M.pearson([1.0], [2.0]))
    out = M.regression_metrics([1.0, 2.0, 3.0], [1.0, 2.0, 4.0])
    assert out["spearman"] == pytest.approx(1.0) and out["mse"] == pytest.approx(1 / 3)


def test_entities_match_seqeval(golden):
    for name, case in golden["ner"].items():
        for sentence, expected in zip(case["true"], case["true_entities"]):
            assert [list(e) for e in M.get_entities(sentence)] == expected, name
        for sentence, expected in zip(case["pred"], case["pred_entities"]):
            assert [list(e) for e in M.get_entities(sentence)] == expected, name
        out = M.entity_scores(case["true"], case["pred"])
        for key in ("precision", "recall", "f1"):
            assert _close(out[key], case[key]), (name, key)
        assert _close(M.token_accuracy(case["true"], case["pred"]), case["accuracy"]), name
        assert set(out["per_type"]) == set(case["per_type"]), name
        for type_, values in case["per_type"].items():
            for key in ("precision", "recall", "f1", "support"):
                assert _close(out["per_type"][type_][key], values[key]), (name, type_, key)


def test_entities_exact_span_and_iob1():
    # IOB1: B- only separates two adjacent entities of one type; same spans as BIO.
    assert M.get_entities(["I-PER", "I-PER", "B-PER", "O", "I-LOC"]) == [
        ("PER", 0, 1), ("PER", 2, 2), ("LOC", 4, 4)]
    assert M.get_entities(["B-PER", "I-PER", "O", "B-LOC"]) == [("PER", 0, 1), ("LOC", 3, 3)]
    # A partial span is wrong, not half right.
    out = M.entity_scores([["B-PER", "I-PER", "O"]], [["B-PER", "O", "O"]])
    assert (out["precision"], out["recall"], out["f1"]) == (0.0, 0.0, 0.0)
    empty = M.entity_scores([["O"]], [["O"]])
    assert (empty["f1"], empty["num_true"], empty["per_type"]) == (0.0, 0, {})
    with pytest.raises(M.MetricInputError, match="sentence 0: 2 gold tags but 1"):
        M.entity_scores([["O", "O"]], [["O"]])


def test_squad_pairs_match_official(golden):
    for case in golden["squad"]["pairs"]:
        assert M.normalize_answer(case["gold"]) == case["normalized"]
        assert M.squad_exact(case["gold"], case["pred"]) == case["exact"]
        assert M.squad_f1(case["gold"], case["pred"], version=2) == pytest.approx(case["f1_v2"])
        assert M.squad_f1(case["gold"], case["pred"], version=1) == pytest.approx(case["f1_v1"])


def test_squad_v1_matches_official(golden):
    for case in golden["squad"]["v1"]:
        out = M.squad_v1_scores(case["gold"], case["predictions"])
        assert out["exact_match"] == pytest.approx(case["exact_match"])
        assert out["f1"] == pytest.approx(case["f1"])
        assert out["total"] == len(case["gold"])
    assert M.squad_v1_scores({"q": ["x"]}, {})["missing"] == 1


def test_squad_v2_matches_official(golden):
    for case in golden["squad"]["v2"]:
        na_probs = None if case["na_probs"] is None else dict(case["na_probs"])
        out = M.squad_v2_scores(case["gold"], case["predictions"], na_probs,
                                case["na_prob_thresh"])
        expected = case["expected"]
        assert set(out) == set(expected)
        for key, value in expected.items():
            assert out[key] == pytest.approx(value), key


def test_squad_v2_threshold_search_by_hand():
    # Sorted by null odds: h1 (-2, right answer), n1 (-1, answered wrongly), h2 (1, right),
    # n2 (3). Running score from 2 (all unanswered): h1 -> 3, n1 -> 2, h2 -> 3 (no gain
    # over 3: first best kept), n2 (answered wrongly) -> 2. Best: 3/4 at threshold -2.
    gold = {"h1": ["cat"], "h2": ["dog"], "n1": [], "n2": []}
    best = {"h1": "cat", "h2": "dog", "n1": "bird", "n2": "fish"}
    odds = {"h1": -2.0, "n1": -1.0, "h2": 1.0, "n2": 3.0}
    threshold, final, scores = M.squad_v2_tune(gold, best, odds)
    assert threshold == -2.0
    assert final == {"h1": "cat", "h2": "", "n1": "", "n2": ""}
    assert scores["f1"] == pytest.approx(75.0) and scores["best_f1"] == pytest.approx(75.0)
    assert scores["HasAns_f1"] == 50.0 and scores["NoAns_f1"] == 100.0
    # All unanswerable, all answered "": every threshold scores 100, the first (0.0) kept.
    t, final, scores = M.squad_v2_tune({"a": [], "b": []}, {"a": "", "b": ""}, {"a": 1.0, "b": 2.0})
    assert (t, scores["f1"], scores["NoAns_total"]) == (0.0, 100.0, 2)
    assert "HasAns_total" not in scores
