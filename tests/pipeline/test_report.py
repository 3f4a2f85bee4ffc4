"""`report.md`'s pictures: one panel per unit, evaluation figures beside the tables.

The report is rendered from synthetic stage records and histories (no training);
each PNG's panels are read back from the `.axes.json` sidecar the renderer writes
from the figure's own axes.
"""

import json

import pytest

from pipeline import report
from pipeline.config import PipelineConfig


def _write(path, value):
    path.write_text(json.dumps(value))
    return str(path)


def _axes(root, png):
    sidecar = json.loads((root / png.replace(".png", report.SIDECAR_SUFFIX)).read_text())
    assert sidecar["png"] == png and (root / png).stat().st_size > 5000
    return {panel["title"]: panel for panel in sidecar["panels"]}, sidecar


def _pretrain_history(steps=10):
    xs = [10 * (i + 1) for i in range(steps)]
    return {"step": xs,
            "sequences_per_second": [180.0 + 6 * i for i in range(steps)],  # 0-240, as issue 14 saw
            "learning_rate": [1e-4 * (1 - i / steps) for i in range(steps)],
            "loss": [7.0 - 0.2 * i for i in range(steps)],
            "mlm_loss": [6.3 - 0.2 * i for i in range(steps)],
            "nsp_loss": [0.69 - 0.01 * i for i in range(steps)],
            "mlm_accuracy": [0.05 + 0.01 * i for i in range(steps)],
            "nsp_accuracy": [0.5 + 0.02 * i for i in range(steps)]}


def _classification_evaluation():
    return {"task": "classification", "labels": ["neg", "pos"],
            "blessing": {"blessed": True, "metric": "accuracy", "value": 0.75,
                         "baseline": "majority class", "baseline_value": 0.5},
            "metrics": {"accuracy": 0.75, "macro_f1": 0.7333, "num_examples": 4,
                        "per_class": {"neg": {"precision": 1.0, "recall": 0.5, "f1": 0.6667,
                                              "support": 2},
                                      "pos": {"precision": 0.6667, "recall": 1.0, "f1": 0.8,
                                              "support": 2}},
                        "confusion_matrix": [[1, 1], [0, 2]]},
            "baseline": {"accuracy": 0.5, "macro_f1": 0.3333}}


def test_pretraining_and_classification_report_draw_one_panel_per_unit(tmp_path):
    pretrain_history = _pretrain_history()
    finetune_history = {"epoch": [1, 2, 3], "loss": [1.5, 0.7, 0.3],
                        "dev_accuracy": [0.43, 0.61, 0.67], "dev_f1_macro": [0.36, 0.53, 0.62],
                        "dev_mcc": [0.3, 0.52, 0.6], "dev_num_examples": [86, 86, 86],
                        "eval_seconds": [10.2, 5.9, 5.1]}
    records = {
        "Pretrain": {"outcome": "succeeded", "fingerprint": "p",
                     "outputs": {"history": _write(tmp_path / "pre.json", pretrain_history)},
                     "metrics": {"eval_loss": 5.2, "eval_mlm_loss": 4.6, "eval_nsp_loss": 0.6,
                                 "eval_mlm_accuracy": 0.16, "eval_nsp_accuracy": 0.7,
                                 "eval_steps": 3, "eval_sequences": 96, "seconds": 12.0}},
        "Finetune": {"outcome": "succeeded", "fingerprint": "f",
                     "outputs": {"history": _write(tmp_path / "fin.json", finetune_history)},
                     "metrics": {"best_epoch": 3, "dev_accuracy": 0.67}},
        "Evaluate": {"outcome": "succeeded", "fingerprint": "e",
                     "outputs": {"evaluation": _write(tmp_path / "ev.json",
                                                      _classification_evaluation())},
                     "metrics": {"accuracy": 0.75, "seconds": 1.0}},
    }
    root = tmp_path / "root"
    root.mkdir()
    text = open(report.write_report(PipelineConfig(pipeline_root=str(root)), records)).read()
    for png in ("pretraining.png", "finetuning.png", "confusion_matrix.png", "class_f1.png"):
        assert f"]({png})" in text

    panels, sidecar = _axes(root, "pretraining.png")
    assert sidecar["title"] == "Pre-training"
    assert list(panels) == [report.LOSS, report.NSP_LOSS, report.SCORE, report.THROUGHPUT,
                            report.LEARNING_RATE]
    loss = panels[report.LOSS]
    assert loss["series"] == ["train loss", "train mlm_loss", "held-out loss (end)",
                              "held-out mlm_loss (end)"]
    assert loss["ylim"][1] < 8  # not stretched to the throughput's 240
    assert panels[report.NSP_LOSS]["series"] == ["train nsp_loss", "held-out nsp_loss (end)"]
    assert panels[report.NSP_LOSS]["ylim"][1] < 1
    assert panels[report.SCORE]["series"] == [
        "train mlm_accuracy", "train nsp_accuracy", "held-out mlm_accuracy (end)",
        "held-out nsp_accuracy (end)"]
    assert panels[report.SCORE]["ylim"] == [0.0, 1.05]
    assert panels[report.THROUGHPUT]["series"] == ["sequences_per_second"]
    assert panels[report.THROUGHPUT]["ylim"][0] == 0 and panels[report.THROUGHPUT]["ylim"][1] > 230
    assert panels[report.LEARNING_RATE]["series"] == ["learning_rate"]
    assert panels[report.LEARNING_RATE]["ylim"][1] < 1e-3
    assert all(p["xlabel"] == "step" for p in panels.values())

    panels, _ = _axes(root, "finetuning.png")
    assert list(panels) == [report.LOSS, report.SCORE]  # counts and timings are no curves
    assert panels[report.LOSS]["series"] == ["train loss"]
    assert panels[report.SCORE]["series"] == ["dev accuracy", "dev f1_macro", "dev mcc"]
    assert all(p["xlabel"] == "epoch" for p in panels.values())

    panels, _ = _axes(root, "confusion_matrix.png")
    assert list(panels) == ["Confusion matrix (test split)"]  # the colour bar is no panel
    assert panels["Confusion matrix (test split)"]["xlabel"] == "predicted"
    panels, _ = _axes(root, "class_f1.png")
    assert list(panels) == ["F1 per class (test split)"]


def test_squad2_report_draws_percent_scores_and_answerable_vs_unanswerable(tmp_path):
    history = {"epoch": [1, 2], "loss": [4.1, 2.0], "dev_exact": [40.0, 80.0],
               "dev_f1": [42.0, 81.0], "dev_total": [40, 40], "dev_HasAns_exact": [10.0, 70.0],
               "dev_HasAns_f1": [14.0, 72.0], "dev_HasAns_total": [18, 18],
               "dev_NoAns_exact": [64.0, 88.0], "dev_NoAns_f1": [64.0, 88.0],
               "dev_NoAns_total": [22, 22], "dev_best_f1_thresh": [-1.2, 0.4]}
    model = {"exact": 97.5, "f1": 97.5, "total": 40, "HasAns_exact": 94.4, "HasAns_f1": 94.4,
             "HasAns_total": 18, "NoAns_exact": 100.0, "NoAns_f1": 100.0, "NoAns_total": 22}
    baseline = {"exact": 55.0, "f1": 55.0, "total": 40, "HasAns_exact": 0.0, "HasAns_f1": 0.0,
                "HasAns_total": 18, "NoAns_exact": 100.0, "NoAns_f1": 100.0, "NoAns_total": 22,
                "name": "no answer"}
    evaluation = {"task": "squad2", "labels": None, "metrics": model, "baseline": baseline,
                  "blessing": {"blessed": True, "metric": "f1", "value": 97.5,
                               "baseline": "no answer", "baseline_value": 55.0}}
    records = {
        "Finetune": {"outcome": "succeeded", "fingerprint": "f",
                     "outputs": {"history": _write(tmp_path / "fin.json", history)}, "metrics": {}},
        "Evaluate": {"outcome": "succeeded", "fingerprint": "e",
                     "outputs": {"evaluation": _write(tmp_path / "ev.json", evaluation)},
                     "metrics": {"f1": 97.5}},
    }
    root = tmp_path / "root"
    root.mkdir()
    text = open(report.write_report(PipelineConfig(pipeline_root=str(root)), records)).read()
    assert "](squad2_by_question_type.png)" in text and "| HasAns_f1 | 94.4000 | 0.0000 |" in text

    panels, _ = _axes(root, "finetuning.png")
    assert list(panels) == [report.LOSS, report.PERCENT]
    assert panels[report.PERCENT]["series"] == [
        "dev exact", "dev f1", "dev HasAns_exact", "dev HasAns_f1", "dev NoAns_exact",
        "dev NoAns_f1"]
    assert panels[report.PERCENT]["ylim"] == [0.0, 105.0]

    panels, _ = _axes(root, "squad2_by_question_type.png")
    (panel,) = panels.values()
    assert "by question type" in panel["title"] and panel["ylabel"] == "percent"
    assert panel["series"] == ["model EM", "model F1", "baseline F1 (no answer)"]


@pytest.mark.parametrize("key, keys, panel", [
    ("mlm_loss", (), report.LOSS), ("dev_mse", (), report.LOSS),
    ("nsp_loss", (), report.NSP_LOSS), ("dev_pearson", (), report.SCORE),
    ("dev_f1", (), report.SCORE), ("dev_f1", ("dev_exact",), report.PERCENT),
    ("dev_exact_match", (), report.PERCENT), ("sequences_per_second", (), report.THROUGHPUT),
    ("learning_rate", (), report.LEARNING_RATE), ("dev_num_examples", (), None),
    ("dev_HasAns_total", (), None), ("eval_seconds", (), None), ("dev_best_f1_thresh", (), None),
    ("epoch", (), None), ("dev_num_true", (), None)])
def test_each_logged_number_has_the_panel_of_its_unit(key, keys, panel):
    assert report.panel_of(key, keys) == panel
