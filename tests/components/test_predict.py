"""Predict: Beam RunInference over the exported SavedModel answers as the model server does.

A tiny classifier for the default task ("which standard-library package does this
docstring paragraph come from") is exported once; `components.predict` runs on the
default task's test file (two bad lines added). Its lines must equal the answers of
the project's gRPC model server, serving the same SavedModel, for the same texts in
the same batches; the DaskRunner must write the same bytes as the DirectRunner; the
bad lines must be counted.
"""

import json
import os

import numpy as np
import pytest

from components import default_data, evaluate, predict, task_files
from keras_bert import tasks

BATCH = 3
DIRECT = ["--runner=DirectRunner"]


def _files(directory):
    """{file name: bytes} of every file in `directory`."""
    return {name: open(os.path.join(directory, name), "rb").read()
            for name in sorted(os.listdir(directory))}


# --------------------------------------------------------------------------------------
# Plain functions: unlabelled input, signature rows.


def _read(data, source, task, **options):
    return list(task_files.parse_file(data, source, task, task_files.ReadOptions(**options),
                                      labelled=False))


def test_unlabelled_input_is_read_with_the_task_data_parsers():
    lines = _read(b"First text.\n\n  \nSecond text.\n\xff\n", "in.txt", "classification")
    assert [(e.guid, e.text) for e in lines[1:]] == [("in.txt:1", "First text."),
                                                     ("in.txt:4", "Second text.")]
    assert lines[0].kind == "invalid_utf8" and lines[0].location == "in.txt:5"
    tsv = _read(b"id\tsentence\n1\tHello there.\n2\t\n", "x.tsv", "classification",
                text_column="sentence")
    assert tsv[0] == tasks.TextExample(guid="x.tsv:2", text="Hello there.")
    assert tsv[1].kind == "missing_text"
    conll = _read(b"-DOCSTART- O\n\nAlice B-PER\nin\nParis\n\nHi\n", "s.conll", "ner")
    assert [e.words for e in conll] == [("Alice", "in", "Paris"), ("Hi",)]
    assert all(e.tags is None for e in conll)
    ner = _read(b'{"text": "Bob  visits Rome"}\n{"words": ["A", "B"]}\n{"words": []}\n',
                "n.jsonl", "ner")
    assert ner[0] == tasks.TextExample(guid="n.jsonl:1", text="Bob  visits Rome")
    assert ner[1].words == ("A", "B") and ner[2].kind == "missing_text"
    squad = {"data": [{"paragraphs": [{"context": "Paris is in France.", "qas": [
        {"id": "q1", "question": "Where is Paris?"}, {"id": "q2", "question": " "}]}]}]}
    records = _read(json.dumps(squad).encode(), "dev.json", "squad2")
    assert records[0].example.qas_id == "q1" and records[1].kind == "missing_text"
    pairs = _read(b'{"text": "Where?", "text_b": "Here."}\n', "q.jsonl", "squad1")
    assert predict.request_of(pairs[0]) == {"id": "q.jsonl:1", "text": "Where?", "text_b": "Here."}
    assert predict.request_of(conll[0]) == {"id": "s.conll:3", "text": "Alice in Paris"}
    # Labelled data keeps its checks: one text per line has no labels to train on.
    with pytest.raises(task_files.TaskDataError, match="unlabelled"):
        list(task_files.parse_file(b"x\n", "in.txt", "classification", task_files.ReadOptions(
            input_format="lines")))


def test_reading_task_follows_the_signature():
    assert predict.reading_task({"text"}, {"label", "probabilities", "label_id"}) == "classification"
    assert predict.reading_task({"text", "text_b"}, {"score"}) == "pair"
    assert predict.reading_task({"text"}, {"entity_type", "num_entities"}) == "ner"
    assert predict.reading_task({"text", "text_b"}, {"answer_text"}, "squad2") == "squad2"
    with pytest.raises(predict.PredictError, match="does not fit"):
        predict.reading_task({"text"}, {"entity_type"}, "classification")
    with pytest.raises(predict.PredictError, match="not raw text"):
        predict.reading_task({"input_ids", "segment_ids", "input_mask"}, {"label"})


def test_command_line_flags_and_beam_options():
    spec, beam_args = predict.parse_args([
        "--export_dir", "models/bert/1", "--input", "in/*.tsv", "--output", "out",
        "--text_column", "sentence", "--header", "--batch_size=8", "--runner=DaskRunner",
        "--dask_npartitions=4"])
    assert (spec.export_dir, spec.input_pattern, spec.output_dir) == ("models/bert/1", "in/*.tsv", "out")
    assert spec.batch_size == 8 and spec.read.text_column == "sentence" and spec.read.header
    assert beam_args == ["--runner=DaskRunner", "--dask_npartitions=4"]
    # A misspelt flag of its own is a usage error, not a Beam option.
    with pytest.raises(SystemExit) as exit_info:
        predict.parse_args(["--export_dir", "e", "--input", "i", "--output", "o", "--batch_sise=8"])
    assert exit_info.value.code == 2
    with pytest.raises(predict.PredictError, match="batch_size"):
        predict.PredictSpec(export_dir="e", input_pattern="i", output_dir="o", batch_size=0)
    with pytest.raises(predict.PredictError, match="no saved_model.pb"):
        predict.run(predict.PredictSpec(export_dir="nowhere", input_pattern="i", output_dir="o"))


def test_signature_rows_cut_entity_padding():
    outputs = {"entity_type": np.array([[b"PER", b""], [b"LOC", b"ORG"]], object),
               "entity_start": np.array([[0, -1], [3, 9]], np.int32),
               "entity_score": np.array([[0.5, 0.0], [0.25, 0.75]], np.float32),
               "num_entities": np.array([1, 2], np.int32)}
    assert evaluate.signature_rows(outputs) == [
        {"entity_type": ["PER"], "entity_start": [0], "entity_score": [0.5], "num_entities": 1},
        {"entity_type": ["LOC", "ORG"], "entity_start": [3, 9], "entity_score": [0.25, 0.75],
         "num_entities": 2}]


# --------------------------------------------------------------------------------------
# The default task's test file through RunInference.


@pytest.fixture(scope="module")
def default_test_run(tmp_path_factory):
    """A tiny classifier's SavedModel for the default task, and the pipeline's Predict
    stage (DirectRunner) on the default test file with one malformed JSON line and one
    empty text added."""
    import keras

    from keras_bert import checkpoints, export
    from pipeline import stages
    from pipeline.config import PipelineConfig
    from tests.components.test_finetune import tiny_config, vocab_tokens

    root = tmp_path_factory.mktemp("predict")
    data = default_data.build(default_data.DefaultDataSpec(str(root / "default"), fraction=0.02))
    test_file = root / "test.jsonl"
    with open(data["test"], encoding="utf-8") as f:
        test_lines = f.read().splitlines()
    assert len(test_lines) >= 2 * BATCH
    test_file.write_text("\n".join(test_lines[:3] + ["{not json", '{"text": "  "}'] + test_lines[3:])
                         + "\n", encoding="utf-8")
    tokens = vocab_tokens()
    (root / "vocab.txt").write_text("\n".join(tokens) + "\n")
    keras.utils.set_random_seed(3)
    model = checkpoints.build_model(tiny_config(len(tokens)), "classifier",
                                    num_classes=len(default_data.TASK_PACKAGES))
    exported = export.export_saved_model(model, str(root / "serving"), "bert",
                                         str(root / "vocab.txt"), max_seq_length=32,
                                         labels=list(default_data.TASK_PACKAGES), version=1)
    config = PipelineConfig(pipeline_root=str(root / "run"), predict=str(test_file),
                            predict_batch_size=BATCH)
    upstream = {"Push": {"outputs": {"pushed": True, "path": exported.path}}}
    outputs, metrics = stages._predict(config, DIRECT, upstream, str(root / "direct"))
    spec = predict.PredictSpec(export_dir=exported.path, input_pattern=str(test_file),
                               output_dir=str(root / "direct"), task="classification",
                               batch_size=BATCH)
    texts = [json.loads(line)["text"] for line in test_lines]
    return {"spec": spec, "counts": json.loads(open(spec.counts_path).read()), "texts": texts,
            "root": root, "config": config, "record": {"outputs": outputs, "metrics": metrics},
            "serving_base": str(root / "serving"), "test_file": str(test_file)}


def test_bad_lines_are_counted_and_reported(default_test_run):
    counts = default_test_run["counts"]
    test_file = default_test_run["test_file"]
    assert counts["examples"] == counts["predictions"] == len(default_test_run["texts"])
    assert counts["batches"] == -(-len(default_test_run["texts"]) // BATCH)
    assert counts["bad_records_total"] == 2
    assert counts["bad_records"]["malformed_json"] == counts["bad_records"]["missing_text"] == 1
    assert counts["bad_record_locations"] == sorted([
        f"{test_file}:4: malformed_json: not valid JSON (Expecting property name enclosed in "
        f"double quotes at column 2)",
        f"{test_file}:5: missing_text: the text is missing or empty"])


@pytest.mark.slow
def test_predictions_equal_the_servers_answers(default_test_run):
    from serving import client, server

    predictions = predict.read_predictions(default_test_run["spec"].output_dir)
    texts = default_test_run["texts"]
    # File order, the input's line numbers as ids (the two bad lines, 4 and 5, skipped).
    numbers = [1, 2, 3] + list(range(6, len(texts) + 3))
    assert [p["id"] for p in predictions] == [f"{default_test_run['test_file']}:{n}"
                                              for n in numbers]
    assert [p["text"] for p in predictions] == texts
    # The project's model server, in this process, answering over gRPC.
    model_server = server.ModelServer(server.parse_options([
        "--port=0", "--rest_api_port=0", "--model_name=bert",
        f"--model_base_path={default_test_run['serving_base']}/bert"]))
    model_server.start()
    try:
        answers = []
        for start in range(0, len(texts), BATCH):  # the batches Predict ran
            answers += evaluate.signature_rows(client.predict_text(
                f"localhost:{model_server.grpc_port}", "bert", texts[start:start + BATCH]))
    finally:
        model_server.stop(grace_s=5)
    assert set(answers[0]) == {"label", "label_id", "probabilities"}
    assert all(p["label"] in default_data.TASK_PACKAGES for p in predictions)
    assert [{k: v for k, v in p.items() if k not in ("id", "text")} for p in predictions] == answers


@pytest.mark.slow
def test_dask_runner_writes_the_same_bytes(default_test_run, dask_args):
    direct = default_test_run["spec"]
    spec = predict.PredictSpec(export_dir=direct.export_dir, input_pattern=direct.input_pattern,
                               output_dir=str(default_test_run["root"] / "dask"),
                               batch_size=BATCH)
    counts = predict.run(spec, dask_args)
    assert counts == dict(default_test_run["counts"], outputs=spec.prediction_files())
    assert _files(spec.output_dir)[os.path.basename(spec.prediction_files()[0])] == \
        _files(direct.output_dir)[os.path.basename(direct.prediction_files()[0])]


def test_pipeline_stage_runs_after_push_and_is_reported(default_test_run, tmp_path):
    from pipeline import report, stages
    from pipeline.config import PipelineConfig

    config = default_test_run["config"]
    assert [s.name for s in stages.plan(config)][-2:] == ["Push", "Predict"]
    assert "Predict" not in [s.name for s in stages.plan(PipelineConfig())]
    record = default_test_run["record"]
    counts = default_test_run["counts"]
    assert record["metrics"] == {"examples": counts["examples"],
                                 "predictions": counts["predictions"], "bad_records": 2}
    assert record["outputs"]["predictions"] == default_test_run["spec"].prediction_files()
    # Not blessed, not pushed: nothing to predict with, and the record says so.
    skipped, _ = stages._predict(config, DIRECT, {"Push": {"outputs": {"pushed": False}}},
                                 str(tmp_path / "skipped"))
    assert skipped["predicted"] is False
    os.makedirs(config.pipeline_root)
    text = open(report.write_report(config, {"Predict": dict(record, outcome="succeeded")})).read()
    assert (f"{counts['examples']} examples read, {counts['predictions']} predictions in "
            f"{counts['batches']} batches, 2 bad lines.") in text
    assert "| malformed_json | 1 |" in text and "| missing_text | 1 |" in text
    assert f"- {counts['bad_record_locations'][0]}" in text
