"""End to end for the span tasks: `python -m pipeline.run --task ner|squad2` to a served model.

Each run starts from a tiny random encoder (`--init_checkpoint`, so no pre-training), fine-tunes
on a small synthetic task a tiny model learns in a few epochs, exports, evaluates
the SavedModel on the test split and pushes it; one real model server then serves
both pushed models and answers over gRPC: entities and answers must be the exact
characters at the offsets it returns, and right for the fixture.
"""

import json
import os
import random
import subprocess
import sys

import pytest

from tests.components.test_finetune import conll_text, ner_sentences, squad_data, write_random_init

STAGES = ["ExampleGen", "Vocab", "TaskData", "Finetune", "Export", "Evaluate", "Push"]
CORPUS = ("The dog walked to the city.\nThen the cat ran over the road.\n\n"
          "A man saw a big red car.\nThe old tree was near the river.\n")


def _run_pipeline(root, task, train, dev, test, epochs, model_name, init, extra=()):
    (root / "corpus.txt").write_text(CORPUS)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    args = [sys.executable, "-m", "pipeline.run", f"--pipeline_root={root / 'run'}",
            "--runner=DirectRunner", f"--corpus={root / 'corpus.txt'}",
            f"--init_checkpoint={init}", f"--task={task}", f"--train={train}",
            f"--dev={dev}",
            f"--test={test}", "--max_seq_length=64", f"--finetune_epochs={epochs}",
            "--finetune_batch_size=16", "--finetune_learning_rate=2e-3", "--random_seed=1",
            f"--model_name={model_name}", "--serve_check=false", *extra]
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    stages = STAGES + (["Predict"] if any(a.startswith("--predict=") for a in extra) else [])
    for i, stage in enumerate(stages, 1):
        assert f"[{i}/{len(stages)}] {stage}: done" in proc.stdout, proc.stdout[-3000:]
    return proc.stdout


def _record(root, stage):
    with open(root / "run" / stage / "record.json") as f:
        return json.load(f)


def _pushed_base(root):
    """The serving base path Push installed version 1 of the run's model under."""
    push = _record(root, "Push")["outputs"]
    assert push["pushed"] and push["version"] == 1, push
    return os.path.dirname(push["path"])


@pytest.fixture(scope="module")
def span_init(tmp_path_factory):
    """The tiny random encoder both runs start from."""
    return write_random_init(tmp_path_factory.mktemp("init"), "init")


@pytest.fixture(scope="module")
def ner_run(tmp_path_factory, span_init):
    """The NER pipeline on CoNLL files; returns (root, test sentences, stdout)."""
    from keras_bert import tasks
    root = tmp_path_factory.mktemp("ner")
    rng = random.Random(3)

    def write(name, n):
        sentences = [(w, tasks.iob1_to_bio(t)) for w, t in ner_sentences(n, rng, long_share=0.2)]
        (root / name).write_text(conll_text(sentences))
        return sentences

    write("train.conll", 240)
    write("dev.conll", 40)
    test = write("test.conll", 40)
    # The test file again, through the Predict stage (its tag column ignored).
    out = _run_pipeline(root, "ner", root / "train.conll", root / "dev.conll",
                        root / "test.conll", epochs=4, model_name="ner", init=span_init,
                        extra=[f"--predict={root / 'test.conll'}"])
    return root, test, out


@pytest.fixture(scope="module")
def squad2_run(tmp_path_factory, span_init):
    """The SQuAD 2.0 pipeline on synthetic files; returns (root, test paragraphs)."""
    root = tmp_path_factory.mktemp("squad2")
    rng = random.Random(5)
    files = {}
    for name, n, prefix in (("train", 300, "q"), ("dev", 40, "d"), ("test", 40, "t")):
        data = squad_data(n, rng, unanswerable_share=0.5, prefix=prefix)
        files[name] = root / f"{name}.json"
        files[name].write_text(json.dumps(data))
    test = [p for p in data["data"][0]["paragraphs"]]
    # The test file again, through the Predict stage (its answers ignored).
    _run_pipeline(root, "squad2", files["train"], files["dev"], files["test"], epochs=2,
                  model_name="qa", init=span_init, extra=[f"--predict={files['test']}"])
    return root, test


@pytest.fixture(scope="module")
def span_server(ner_run, squad2_run, tmp_path_factory):
    """One model server for both pushed models (`ner` and `qa`), as a deployment runs it."""
    from serving.launcher import ServerProcess
    folder = tmp_path_factory.mktemp("span_server")
    config = folder / "models.config"
    config.write_text("model_config_list {\n" + "".join(
        f'  config {{ name: "{name}" base_path: "{_pushed_base(root)}" '
        f'model_platform: "tensorflow" }}\n'
        for name, root in (("ner", ner_run[0]), ("qa", squad2_run[0]))) + "}\n")
    server = ServerProcess([f"--model_config_file={config}",
                            "--tensorflow_intra_op_parallelism=1",
                            "--tensorflow_inter_op_parallelism=1"],
                           rest=False, log_path=str(folder / "server.log"))
    server.start(timeout_s=300)
    yield server
    assert server.stop() == 0


@pytest.mark.slow
def test_ner_pipeline_serves_entities_at_character_offsets(ner_run, span_server):
    from serving import client
    tmp_path, test, out = ner_run
    evaluation = _record(tmp_path, "Evaluate")
    metrics = evaluation["metrics"]
    assert metrics["f1"] >= 0.8 and metrics["baseline_f1"] == 0.0, metrics
    assert metrics["offset_mismatches"] == 0 and metrics["blessed"] is True
    details = json.load(open(evaluation["outputs"]["evaluation"]))
    assert set(details["metrics"]["per_type"]) == {"PER", "LOC"}
    report = open(tmp_path / "run" / "report.md").read()
    assert "![Entity F1 per type](entity_f1.png)" in report and f"{metrics['f1']:.4f}" in report
    assert "Evaluate: done" in out

    texts = [" ".join(words) for words, _ in test[:16]] + [
        "Alice Smith walked to Paris", "near Oslo the man saw Judy"]
    result = client.predict_text(span_server.grpc_target, "ner", texts)
    served = []
    for i, text in enumerate(texts):
        entities = [(result["entity_type"][i, k].decode(), int(result["entity_start"][i, k]),
                     int(result["entity_end"][i, k]), result["entity_text"][i, k].decode())
                    for k in range(int(result["num_entities"][i]))]
        for _, start, end, entity_text in entities:
            assert text[start:end] == entity_text  # offsets index the request text
        served.append(entities)
    # The served model is the evaluated one: the same entities as Evaluate recorded.
    with open(evaluation["outputs"]["predictions"]) as f:
        recorded = [json.loads(line) for line in f][:16]
    for entities, record in zip(served, recorded):
        assert [(e[0], e[1], e[2]) for e in entities] == [
            (e["type"], e["start"], e["end"]) for e in record["entities"]]
    # Finetune scored the test split beside dev: its metric and prediction file.
    finetuned = _record(tmp_path, "Finetune")
    assert 0.0 <= finetuned["metrics"]["test_f1"] <= 1.0
    assert [os.path.basename(p) for p in finetuned["outputs"]["test_predictions"]] == [
        "test_predictions.jsonl"]
    # Batch predictions give the server's entities, at the same character offsets.
    predict = _record(tmp_path, "Predict")
    assert predict["metrics"]["predictions"] == len(test) and predict["metrics"]["bad_records"] == 0
    with open(predict["outputs"]["predictions"][0]) as f:
        predicted = [json.loads(line) for line in f][:16]
    assert [p["text"] for p in predicted] == texts[:16]
    assert [list(zip(p["entity_type"], p["entity_start"], p["entity_end"], p["entity_text"]))
            for p in predicted] == served[:16]
    assert all(len(p["entity_score"]) == p["num_entities"] for p in predicted)
    assert "## Batch predictions" in report
    assert served[-2] == [("PER", 0, 11, "Alice Smith"), ("LOC", 22, 27, "Paris")]
    assert served[-1] == [("LOC", 5, 9, "Oslo"), ("PER", 22, 26, "Judy")]


@pytest.mark.slow
def test_squad2_pipeline_serves_answers_at_character_offsets(squad2_run, span_server):
    from serving import client
    tmp_path, test = squad2_run
    export = _record(tmp_path, "Export")["outputs"]
    assert export["null_score_threshold"] is not None  # dev's tuned threshold, exported
    metrics = _record(tmp_path, "Evaluate")["metrics"]
    assert metrics["f1"] >= metrics["baseline_f1"] + 25.0, metrics
    assert metrics["baseline_HasAns_f1"] == 0.0 and metrics["baseline_NoAns_f1"] == 100.0
    assert metrics["offset_mismatches"] == 0 and metrics["blessed"] is True

    questions = [p["qas"][0]["question"] for p in test] + ["What follows code?"] * 2
    contexts = [p["context"] for p in test] + ["The man saw code: Otter, near the river.",
                                               "The man saw a dog near the river."]
    result = client.predict_text(span_server.grpc_target, "qa", questions, contexts)
    assert result["answer_text"][-2].decode() == "Otter"
    assert (int(result["answer_start"][-2]), int(result["answer_end"][-2])) == (18, 23)
    assert result["answer_text"][-1].decode() == "" and int(result["answer_start"][-1]) == -1
    right = answered = 0
    for i, paragraph in enumerate(test):
        qa, context = paragraph["qas"][0], paragraph["context"]
        start, end = int(result["answer_start"][i]), int(result["answer_end"][i])
        text = result["answer_text"][i].decode()
        if start >= 0:
            answered += 1
            assert context[start:end] == text  # character offsets into the context
        if qa["answers"]:
            gold = qa["answers"][0]
            right += (start, end, text) == (gold["answer_start"],
                                            gold["answer_start"] + len(gold["text"]), gold["text"])
        else:
            right += start == -1 and text == ""
    assert answered > 0
    assert right / len(test) >= 0.8, (right, len(test))
    # Batch predictions give the server's answers, at the same character offsets.
    with open(_record(tmp_path, "Predict")["outputs"]["predictions"][0]) as f:
        predicted = [json.loads(line) for line in f]
    assert [(p["id"], p["text"], p["text_b"]) for p in predicted] == [
        (p["qas"][0]["id"], p["qas"][0]["question"], p["context"]) for p in test]
    assert [(p["answer_text"], p["answer_start"], p["answer_end"]) for p in predicted] == [
        (result["answer_text"][i].decode(), int(result["answer_start"][i]),
         int(result["answer_end"][i])) for i in range(len(test))]
