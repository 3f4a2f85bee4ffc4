"""The pipeline's Export → Evaluate → Push wiring, config task handling and report, as units."""

import json
import os

import pytest

from pipeline import report, stages
from pipeline.config import PipelineConfig, PipelineConfigError


def test_every_task_family_is_accepted_with_its_files():
    from keras_bert.tasks import TASKS
    for task in TASKS:
        config = PipelineConfig(task=task, train="train", dev="dev", test="test")
        assert config.task == task
    with pytest.raises(PipelineConfigError, match="--task squad2 needs --train and --dev"):
        PipelineConfig(task="squad2")
    with pytest.raises(PipelineConfigError, match="--test needs --train"):
        PipelineConfig(test="test.jsonl")
    with pytest.raises(PipelineConfigError, match="expected one of"):
        PipelineConfig(task="sentiment", train="a", dev="b")


def test_plan_runs_export_then_evaluate_then_push():
    plan = {s.name: s for s in stages.plan(PipelineConfig(init_checkpoint="ckpt", task="ner",
                                                          train="a", dev="b"))}
    names = list(plan)
    assert names[-3:] == ["Export", "Evaluate", "Push"]
    assert "Pretrain" not in names  # --init_checkpoint skips pre-training
    assert "Export" in plan["Evaluate"].deps and "Finetune" not in plan["Evaluate"].deps
    assert "TaskData" in plan["Evaluate"].deps  # the baseline's label counts
    assert set(plan["Push"].deps) == {"Export", "Evaluate"}


def test_push_stage_reads_blessing_and_export_from_their_records(tmp_path):
    export_dir = tmp_path / "somewhere" / "model" / "1"
    export_dir.mkdir(parents=True)
    (export_dir / "saved_model.pb").write_bytes(b"")
    blessing = tmp_path / "elsewhere" / "blessing.json"
    blessing.parent.mkdir()
    config = PipelineConfig(pipeline_root=str(tmp_path / "root"), task="ner", train="a", dev="b",
                            model_name="m")
    upstream = {"Export": {"outputs": {"export_dir": str(export_dir)}},
                "Evaluate": {"outputs": {"blessing": str(blessing)}}}
    blessing.write_text(json.dumps({"blessed": False, "model": str(export_dir)}))
    outputs, metrics = stages._push(config, [], upstream, str(tmp_path / "out"))
    assert outputs["pushed"] is False and metrics["pushed"] is False
    blessing.write_text(json.dumps({"blessed": True, "model": str(export_dir)}))
    outputs, _ = stages._push(config, [], upstream, str(tmp_path / "out"))
    assert outputs["pushed"] and outputs["path"] == os.path.join(
        config.serving_base_path, "m", "1")
    assert os.path.exists(os.path.join(outputs["path"], "saved_model.pb"))


def _records(tmp_path, evaluation):
    path = tmp_path / "evaluation.json"
    path.write_text(json.dumps(evaluation))
    flat = {k: v for k, v in evaluation["metrics"].items() if isinstance(v, (int, float))}
    return {"Evaluate": {"outcome": "succeeded", "fingerprint": "f",
                         "outputs": {"evaluation": str(path)}, "metrics": dict(flat, seconds=1.0)}}


def test_report_shows_confusion_matrix_and_entity_f1(tmp_path):
    config = PipelineConfig(pipeline_root=str(tmp_path))
    blessing = {"blessed": True, "metric": "accuracy", "value": 0.75, "baseline": "majority class",
                "baseline_value": 0.5, "higher_is_better": True,
                "bless_margin": 0.0}
    evaluation = {"task": "classification", "labels": ["neg", "pos"], "blessing": blessing,
                  "metrics": {"accuracy": 0.75, "macro_f1": 0.7333,
                              "per_class": {"neg": {"precision": 1.0, "recall": 0.5, "f1": 0.6667,
                                                    "support": 2},
                                            "pos": {"precision": 0.6667, "recall": 1.0,
                                                    "f1": 0.8, "support": 2}},
                              "confusion_matrix": [[1, 1], [0, 2]]},
                  "baseline": {"accuracy": 0.5, "macro_f1": 0.3333}}
    text = open(report.write_report(config, _records(tmp_path, evaluation))).read()
    assert "| accuracy | 0.7500 | 0.5000 |" in text
    assert "| neg | 1.0000 | 0.5000 | 0.6667 | 2 |" in text
    assert "![Confusion matrix](confusion_matrix.png)" in text
    assert (tmp_path / "confusion_matrix.png").stat().st_size > 1000
    assert "Blessing: **blessed**: accuracy 0.7500 vs the majority class baseline 0.5000" in text

    blessing.update(metric="f1", baseline="no entities", value=0.9, baseline_value=0.0)
    evaluation = {"task": "ner", "blessing": blessing, "labels": ["O", "B-PER", "I-PER"],
                  "metrics": {"f1": 0.9, "per_type": {
                      "PER": {"precision": 0.9, "recall": 0.9, "f1": 0.9, "support": 10}}},
                  "baseline": {"f1": 0.0}}
    text = open(report.write_report(config, _records(tmp_path, evaluation))).read()
    assert "| PER | 0.9000 | 0.9000 | 0.9000 | 10 |" in text
    assert "![Entity F1 per type](entity_f1.png)" in text
    assert (tmp_path / "entity_f1.png").stat().st_size > 1000
