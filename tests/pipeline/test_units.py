"""Unit tests of the pipeline's own modules: config parsing and precedence, fingerprints,
the caching/resume decisions of `run_pipeline`, and the stage wiring of `plan`.

The runner is exercised with small in-test stages (plain functions writing files), so
each decision is checked in milliseconds; the end-to-end test runs the real stages.
"""

import dataclasses
import json
import os
import time

import pytest

from pipeline import run as pipeline_run
from pipeline import stages as pipeline_stages
from pipeline.config import PipelineConfig, PipelineConfigError, parse_flags
from pipeline.store import StageRun, file_fingerprint, fingerprint

# -- config -------------------------------------------------------------------------------


def test_flags_parse_with_their_types_and_unknown_flags_go_to_beam():
    config, beam_args = parse_flags(["--pipeline_root=r", "--vocab_size", "300",
                                     "--pretrain_learning_rate=1e-3", "--do_lower_case=false",
                                     "--runner=DirectRunner", "--direct_num_workers=2"])
    assert config.pipeline_root == "r"
    assert config.vocab_size == 300 and isinstance(config.vocab_size, int)
    assert config.pretrain_learning_rate == pytest.approx(1e-3)
    assert config.do_lower_case is False
    assert beam_args == ["--runner=DirectRunner", "--direct_num_workers=2"]


def test_config_file_applies_first_and_flags_win(tmp_path):
    path = tmp_path / "pipeline.yaml"
    path.write_text("vocab_size: 500\npretrain_steps: 7\nrandom_seed: 3\nserve_check: false\n")
    config, _ = parse_flags([f"--config={path}", "--random_seed=9"])
    assert (config.vocab_size, config.pretrain_steps, config.random_seed) == (500, 7, 9)
    assert config.serve_check is False  # the file's value: no boolean flag given
    config, _ = parse_flags([f"--config={path}", "--serve_check"])
    assert config.serve_check is True
    as_json = tmp_path / "pipeline.json"
    as_json.write_text(json.dumps({"vocab_size": 600}))
    config, _ = parse_flags([f"--config={as_json}"])
    assert config.vocab_size == 600
    assert config.pretrain_steps == PipelineConfig().pretrain_steps  # untouched default


@pytest.mark.parametrize("text, message", [
    ("vocab_sise: 5\n", "unknown key"),
    ("- a list\n", "mapping"),
])
def test_bad_config_file_names_the_file(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(PipelineConfigError, match=message) as info:
        parse_flags([f"--config={path}"])
    assert str(path) in str(info.value)


def test_invalid_json_config_names_the_file(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{vocab_size: 5")
    with pytest.raises(PipelineConfigError, match="not valid JSON") as info:
        parse_flags([f"--config={path}"])
    assert str(path) in str(info.value)


@pytest.mark.parametrize("values, message", [
    ({"train": "t.tsv"}, "--train and --dev go together"),
    ({"data_fraction": 0.0}, "data_fraction"),
    ({"data_fraction": 1.5}, "data_fraction"),
    ({"mixed_precision": "fp8"}, "mixed_precision"),
    ({"group_by_length": -1}, "group_by_length"),
    ({"pretrain_short_length": 8}, r"pretrain_short_length must be 0 \(one phase\) or in "
                                   r"\[16, max_seq_length 128\), got 8"),
    ({"pretrain_short_length": 128}, "pretrain_short_length must be"),
    ({"max_seq_length": 64, "pretrain_short_length": 64}, "max_seq_length 64"),
    ({"pretrain_short_fraction": 1.0}, r"pretrain_short_fraction must be in \[0, 1\), got 1.0"),
    ({"pretrain_short_fraction": -0.1}, "pretrain_short_fraction"),
])
def test_invalid_values_are_refused(values, message):
    with pytest.raises(PipelineConfigError, match=message):
        PipelineConfig(**values)


def test_bad_boolean_flag_is_a_usage_error(capsys):
    with pytest.raises(SystemExit):
        parse_flags(["--do_lower_case=maybe"])
    assert "expected true or false" in capsys.readouterr().err


def test_serving_base_defaults_under_the_root():
    assert PipelineConfig(pipeline_root="x").serving_base_path == os.path.join("x", "serving")
    assert PipelineConfig(pipeline_root="x", serving_base="/s").serving_base_path == "/s"


# -- fingerprints -------------------------------------------------------------------------


def test_file_fingerprint_follows_content_and_time(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("one")
    first = file_fingerprint(str(f))
    assert file_fingerprint(str(f)) == first
    f.write_text("two!")  # another size
    second = file_fingerprint(str(f))
    assert second != first
    os.utime(f, ns=(time.time_ns(), time.time_ns() + 10**9))  # same size, newer mtime
    assert file_fingerprint(str(f)) != second


def test_file_fingerprint_of_globs_folders_and_missing_files(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.txt").write_text("x")
    folder = file_fingerprint(str(tmp_path / "d"))
    (tmp_path / "d" / "y.txt").write_text("y")
    assert file_fingerprint(str(tmp_path / "d")) != folder
    glob_fp = file_fingerprint(str(tmp_path / "d" / "*.txt"))
    assert glob_fp == file_fingerprint(",".join(str(tmp_path / "d" / n) for n in ("x.txt", "y.txt")))
    missing = file_fingerprint(str(tmp_path / "nothing.txt"))
    assert missing != file_fingerprint(str(tmp_path / "other-nothing.txt"))


def test_fingerprint_ignores_key_order_and_sees_values():
    a = fingerprint({"x": 1, "y": 2}, {"up": {"fingerprint": "f"}})
    assert a == fingerprint({"y": 2, "x": 1}, {"up": {"fingerprint": "f"}})
    assert a != fingerprint({"x": 1, "y": 3}, {"up": {"fingerprint": "f"}})
    assert a != fingerprint({"x": 1, "y": 2}, {"up": {"fingerprint": "g"}})


def test_stage_run_keeps_a_folder_with_the_same_fingerprint_and_clears_a_changed_one(tmp_path):
    run = StageRun(str(tmp_path), "S")
    record = run.start({"p": 1}, {}, "fp1")
    (tmp_path / "S" / "output" / "partial.ckpt").write_text("half")
    assert record["outcome"] == "running" and record["resumed"] is False
    again = StageRun(str(tmp_path), "S").start({"p": 1}, {}, "fp1")
    assert again["resumed"] is True
    assert (tmp_path / "S" / "output" / "partial.ckpt").exists()  # resumes in place
    StageRun(str(tmp_path), "S").start({"p": 2}, {}, "fp2")
    assert not (tmp_path / "S" / "output" / "partial.ckpt").exists()  # new inputs: clean


# -- caching and resume decisions of run_pipeline ------------------------------------------


class _Calls:
    """Stage executors that write a file and count their calls; one can fail once."""

    def __init__(self):
        self.calls = []
        self.fail_once = set()

    def executor(self, name):
        def execute(config, beam_args, upstream, out):
            self.calls.append(name)
            if name in self.fail_once:
                self.fail_once.discard(name)
                with open(os.path.join(out, "partial"), "w") as f:
                    f.write("half")
                raise RuntimeError(f"{name} interrupted")
            seen = sorted(upstream)
            with open(os.path.join(out, "done"), "w") as f:
                f.write(json.dumps(seen))
            return {"path": os.path.join(out, "done"), "upstream": seen}, {"n": len(seen)}
        return execute


def _plan(calls):
    Stage = pipeline_stages.Stage
    return [
        Stage("A", (), ("vocab_size",), calls.executor("A")),
        Stage("B", ("A",), ("random_seed",), calls.executor("B")),
        Stage("C", ("A",), ("pretrain_steps",), calls.executor("C"), resumable=True),
        Stage("D", ("B", "C"), (), calls.executor("D")),
    ]


def _run(root, calls, **values):
    config = PipelineConfig(pipeline_root=str(root), **values)
    return pipeline_run.run_pipeline(config, [], plan=_plan(calls))


def test_second_run_is_cached_and_a_parameter_change_reruns_its_stage_and_dependents(tmp_path):
    calls = _Calls()
    records = _run(tmp_path, calls)
    assert calls.calls == ["A", "B", "C", "D"]
    assert records["D"]["outputs"]["upstream"] == ["B", "C"]
    assert all(r["outcome"] == "succeeded" for r in records.values())
    calls.calls.clear()
    _run(tmp_path, calls)
    assert calls.calls == []
    _run(tmp_path, calls, random_seed=7)  # B's parameter: B and D (below B) rerun, A and C do not
    assert calls.calls == ["B", "D"]


def test_force_reruns_the_stage_and_every_later_one(tmp_path):
    calls = _Calls()
    _run(tmp_path, calls)
    calls.calls.clear()
    _run(tmp_path, calls, force="C")
    assert calls.calls == ["C", "D"]
    with pytest.raises(PipelineConfigError, match="no such stage"):
        _run(tmp_path, calls, force="Nope")


def test_a_failed_stage_is_recorded_failed_and_the_rerun_resumes_in_its_folder(tmp_path):
    calls = _Calls()
    calls.fail_once.add("C")
    with pytest.raises(RuntimeError, match="C interrupted"):
        _run(tmp_path, calls)
    record = StageRun(str(tmp_path), "C").load()
    assert record["outcome"] == "failed" and "C interrupted" in record["error"]
    assert StageRun(str(tmp_path), "D").load() is None  # never started
    calls.calls.clear()
    records = _run(tmp_path, calls)
    assert calls.calls == ["C", "D"]  # A and B are reused
    assert records["C"]["resumed"] is True
    assert os.path.exists(os.path.join(str(tmp_path), "C", "output", "partial"))


def test_a_stage_that_does_not_resume_reruns_from_an_empty_folder(tmp_path):
    calls = _Calls()
    calls.fail_once.add("B")
    with pytest.raises(RuntimeError, match="B interrupted"):
        _run(tmp_path, calls)
    assert os.path.exists(os.path.join(str(tmp_path), "B", "output", "partial"))
    records = _run(tmp_path, calls)
    assert records["B"]["resumed"] is True and records["B"]["outcome"] == "succeeded"
    # The half output of the interrupted run is gone, not mixed into the new one.
    assert os.listdir(os.path.join(str(tmp_path), "B", "output")) == ["done"]


def test_a_stage_is_never_recorded_succeeded_before_it_returns(tmp_path):
    seen = {}

    def spy(config, beam_args, upstream, out):
        seen["outcome"] = StageRun(config.pipeline_root, "S").load()["outcome"]
        return {}, {}

    config = PipelineConfig(pipeline_root=str(tmp_path))
    pipeline_run.run_pipeline(config, [], plan=[pipeline_stages.Stage("S", (), (), spy)])
    assert seen["outcome"] == "running"
    assert StageRun(str(tmp_path), "S").load()["outcome"] == "succeeded"


# -- stage wiring ------------------------------------------------------------------------


@pytest.mark.parametrize("values", [{}, {"init_checkpoint": "some/checkpoint"}])
def test_plan_reads_only_earlier_stages_and_ends_in_push(values):
    plan = pipeline_stages.plan(PipelineConfig(**values))
    names = [s.name for s in plan]
    assert len(set(names)) == len(names)
    for i, stage in enumerate(plan):
        assert set(stage.deps) <= set(names[:i]), f"{stage.name} reads a later stage"
        assert set(stage.param_fields) <= set(PipelineConfig.__dataclass_fields__)
    assert names[0] == "ExampleGen" and names[-1] == "Push"
    finetune = next(stage for stage in plan if stage.name == "Finetune")
    assert "ExampleGen" not in finetune.deps  # trains from TaskData's records only
    pretraining = {"PretrainingData", "Pretrain"}
    assert (pretraining.isdisjoint(names) if values.get("init_checkpoint")
            else pretraining <= set(names))


def test_stage_inputs_carry_upstream_fingerprints_and_user_files(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a sentence.\n")
    config = PipelineConfig(pipeline_root=str(tmp_path / "root"), corpus=str(corpus))
    example_gen = pipeline_stages.plan(config)[0]
    inputs = example_gen.inputs(config, {})
    assert inputs["corpus"]["fingerprint"] == file_fingerprint(str(corpus))
    vocab = pipeline_stages.plan(config)[1]
    inputs = vocab.inputs(config, {"ExampleGen": {"fingerprint": "abc"}})
    assert inputs["ExampleGen"]["fingerprint"] == "abc"


def test_example_gen_stage_reports_the_bad_records_it_counted(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "good.txt").write_text("A first sentence.\nA second one.\n\nAnother document.\n")
    (corpus / "bad.txt").write_bytes(b"fine line\n\xff\xfe broken utf-8\n")
    config = PipelineConfig(pipeline_root=str(tmp_path / "root"), corpus=str(corpus / "*.txt"),
                            train="t.tsv", dev="d.tsv")
    out = tmp_path / "out"
    out.mkdir()
    outputs, metrics = pipeline_stages._example_gen(config, ["--runner=DirectRunner"], {}, str(out))
    assert metrics["bad_records"] == 1
    assert metrics["documents"] >= 2
    assert outputs["train"] == "t.tsv" and outputs["test"] == "d.tsv"


# -- closing lines ----------------------------------------------------------------------


def test_closing_lines_start_a_server_on_the_pushed_model(tmp_path):
    import shlex

    from pipeline import serve_check
    from serving.server import build_arg_parser
    config = PipelineConfig(pipeline_root=str(tmp_path), model_name="m")
    serve, grpc, rest = serve_check.how_to_serve(config, {}, grpc_port=8600, rest_port=8601)
    argv = shlex.split(serve.split(": ", 1)[1])
    assert argv[:3] == ["python", "-m", "serving.server"]
    options = build_arg_parser().parse_args(argv[3:])
    assert (options.port, options.rest_api_port, options.model_name) == (8600, 8601, "m")
    assert options.model_base_path == os.path.join(str(tmp_path), "serving", "m")
    assert shlex.split(grpc.split(": ", 1)[1])[3:7] == ["--server", "localhost:8600", "--model", "m"]
    assert "localhost:8601/v1/models/m:predict" in rest
    request = json.loads(shlex.split(rest.split(": ", 1)[1])[2])
    assert request == {"instances": [{"text": serve_check.SAMPLE}]}


def test_group_by_length_is_a_parameter_of_finetune_only():
    """`--group_by_length` changes which batches fine-tune, so Finetune (and what
    follows it) reruns when it changes, and no earlier stage does."""
    config = PipelineConfig(pipeline_root="unused")
    stages = {s.name: s for s in pipeline_stages.plan(config)}
    changed = dataclasses.replace(config, group_by_length=0)
    for name, stage in stages.items():
        assert (stage.params(config) != stage.params(changed)) == (name == "Finetune"), name


def test_two_phase_pretraining_defaults_to_half_the_length():
    assert PipelineConfig().pretrain_short_length == 64
    assert PipelineConfig().pretrain_short_fraction == 0.9
    assert PipelineConfig(max_seq_length=64).pretrain_short_length == 32
    assert PipelineConfig(max_seq_length=16).pretrain_short_length == 0  # 8 is too short
    config, _ = parse_flags(["--pretrain_short_length", "0", "--pretrain_short_fraction=0.5"])
    assert (config.pretrain_short_length, config.pretrain_short_fraction) == (0, 0.5)
    assert isinstance(config.pretrain_short_length, int)


def test_two_phase_fields_are_parameters_of_the_stages_they_change():
    """The short length changes PretrainingData's records and Pretrain; the fraction
    changes Pretrain only. Finetune and later stages follow through their inputs."""
    config = PipelineConfig(pipeline_root="unused")
    stages = {s.name: s for s in pipeline_stages.plan(config)}
    for change, affected in [({"pretrain_short_length": 32}, {"PretrainingData", "Pretrain"}),
                             ({"pretrain_short_length": 0}, {"PretrainingData", "Pretrain"}),
                             ({"pretrain_short_fraction": 0.5}, {"Pretrain"})]:
        changed = dataclasses.replace(config, **change)
        for name, stage in stages.items():
            assert (stage.params(config) != stage.params(changed)) == (name in affected), (
                change, name)


def test_pretraining_data_stage_writes_short_records_beside_the_full_ones(tmp_path):
    import tensorflow as tf

    from keras_bert import features
    words = ("the cat sat on a mat while dogs ran over green hills and birds sang in tall "
             "trees near quiet rivers").split()
    lines = []
    for doc in range(6):
        for sentence in range(12):
            lines.append(" ".join(words[(doc + sentence + k) % len(words)] for k in range(9)) + ".")
        lines.append("")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(lines) + "\n")
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(list(features.SPECIAL_TOKENS) + sorted(set(words)) + ["."]) + "\n")
    config = PipelineConfig(pipeline_root=str(tmp_path / "root"), corpus=str(corpus),
                            train="t.tsv", dev="d.tsv", max_seq_length=32, dupe_factor=1)
    assert config.pretrain_short_length == 16
    beam = ["--runner=DirectRunner"]
    (tmp_path / "eg").mkdir()
    (tmp_path / "pd").mkdir()
    docs, _ = pipeline_stages._example_gen(config, beam, {}, str(tmp_path / "eg"))
    upstream = {"ExampleGen": {"outputs": docs}, "Vocab": {"outputs": {"vocab": str(vocab)}}}
    outputs, metrics = pipeline_stages._pretraining_data(config, beam, upstream, str(tmp_path / "pd"))
    assert (outputs["short_max_seq_length"], outputs["short_max_predictions_per_seq"]) == (16, 2)
    assert metrics["train_short_instances"] > metrics["train_instances"] > 0
    for pattern, length, predictions, count in [
            (outputs["train"], 32, 20, metrics["train_instances"]),
            (outputs["train_short"], 16, 2, metrics["train_short_instances"])]:
        records = list(tf.data.TFRecordDataset(tf.io.gfile.glob(pattern)))
        assert len(records) == count
        for raw in records:
            feature = tf.train.Example.FromString(raw.numpy()).features.feature
            assert len(feature[features.INPUT_IDS].int64_list.value) == length
            assert len(feature[features.MASKED_LM_POSITIONS].int64_list.value) == predictions
    config = dataclasses.replace(config, pretrain_short_length=0)
    (tmp_path / "pd1").mkdir()
    outputs, metrics = pipeline_stages._pretraining_data(config, beam, upstream, str(tmp_path / "pd1"))
    assert "train_short" not in outputs and "train_short_instances" not in metrics
