"""Every Beam job of the project on Beam's DaskRunner (a two-worker dask.distributed
cluster) gives the DirectRunner's output byte for byte, bad records counted alike."""

import gzip
import json
import os

import pydoc_data.topics
import pytest

from components import example_gen as eg
from components import runners
from components import task_data as td
from components import vocab

DIRECT = ["--runner=DirectRunner"]


def _files(directory):
    """{relative path: bytes} of every file under `directory`."""
    found = {}
    for root, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, directory)] = f.read()
    return found


def _corpus(directory, num_text_files=4):
    """A few real-text files (pydoc topics) and one of each kind of bad input."""
    directory.mkdir()
    names = sorted(pydoc_data.topics.topics)
    for i in range(num_text_files):
        text = "\n\n".join(pydoc_data.topics.topics[n].strip() for n in names[i * 6:(i + 1) * 6])
        (directory / f"topics-{i}.txt").write_text(text + "\n")
    (directory / "topics-4.txt.gz").write_bytes(gzip.compress(pydoc_data.topics.topics[names[30]].encode()))
    (directory / "docs.jsonl").write_text('{"text": "Json doc. Two sentences."}\n{broken\n{"body": 1}\n')
    (directory / "garbage.bin").write_bytes(bytes(range(256)) * 20)
    (directory / "empty.txt").write_bytes(b"")
    (directory / "bad.txt").write_bytes(b"\xff\xfe\xfd\n\nok line.\n" + b"x" * 300 + b"\n")
    (directory / "cut.txt.gz").write_bytes(gzip.compress(b"Cut doc line.\n" * 2000)[:-40])
    return directory


def test_short_runner_name_is_expanded():
    assert runners.expand_runner(["--runner=DaskRunner", "--x=1"]) == [f"--runner={runners.DASK_RUNNER}", "--x=1"]
    assert runners.expand_runner(["--runner", "daskrunner"]) == ["--runner", runners.DASK_RUNNER]
    assert runners.expand_runner(["--runner=DirectRunner"]) == ["--runner=DirectRunner"]
    assert runners.pipeline_options(["--runner=DaskRunner"]).get_all_options()["runner"] == runners.DASK_RUNNER


def test_example_gen_on_dask_is_byte_identical(tmp_path, dask_args):
    corpus = _corpus(tmp_path / "corpus")
    outputs = {}
    for name, args in (("direct", DIRECT), ("dask", dask_args)):
        spec = eg.ExampleGenSpec(input_pattern=str(corpus / "*"), output_dir=str(tmp_path / name),
                                 read=eg.ReadOptions(max_line_bytes=200), num_shards=3)
        stats = eg.run(spec, args)
        outputs[name] = _files(tmp_path / name)
        bad = stats["bad_records"]
        # The corrupt inputs are counted, the same on both runners (files compared below).
        assert (bad["binary_files"], bad["empty_files"], bad["unreadable_files"]) == (1, 1, 1)
        assert (bad["invalid_utf8_lines"], bad["overlong_lines"], bad["malformed_json"]) == (1, 1, 1)
        assert bad["missing_text_field"] == 1
    assert sorted(outputs["direct"]) == [f"documents-0000{i}-of-00003.jsonl.gz" for i in range(3)] + [
        "example_gen_stats.json"]
    assert outputs["dask"] == outputs["direct"]
    lines = [line for name, data in sorted(outputs["dask"].items()) if name.startswith("documents")
             for line in gzip.decompress(data).decode().splitlines()]
    counters = json.loads(outputs["dask"]["example_gen_stats.json"])["counters"]
    assert len(lines) == counters["documents"] > 30
    # Within a shard, documents are in corpus order.
    for name, data in outputs["dask"].items():
        if name.startswith("documents"):
            order = [eg.document_order(json.loads(l)) for l in gzip.decompress(data).decode().splitlines()]
            assert order == sorted(order)


def test_vocab_on_dask_is_byte_identical(tmp_path, dask_args):
    corpus = _corpus(tmp_path / "corpus", num_text_files=1)
    paths = {}
    for name, args in (("direct", DIRECT), ("dask", dask_args)):
        spec = vocab.VocabSpec(output_dir=str(tmp_path / name), input_pattern=str(corpus / "*"),
                               vocab_size=200, lower_thresh=2)
        paths[name] = vocab.run(spec, args)
    with open(paths["direct"], "rb") as direct, open(paths["dask"], "rb") as dask:
        tokens = direct.read()
        assert dask.read() == tokens
    assert len(tokens.splitlines()) > 150


def test_vocab_of_an_empty_corpus_is_an_error_on_both_runners(tmp_path, dask_args):
    (tmp_path / "empty.txt").write_bytes(b"")
    for name, args in (("direct", DIRECT), ("dask", dask_args)):
        spec = vocab.VocabSpec(output_dir=str(tmp_path / name), input_pattern=str(tmp_path / "empty.txt"),
                               vocab_size=100)
        with pytest.raises(vocab.VocabError, match="no words"):
            vocab.run(spec, args)


def _task_files(directory):
    directory.mkdir()
    rows = [f"{text}\t{label}" for text, label in (
        ("the class object", "pos"), ("", "neg"), ("is here", "neg"), ("no label", ""),
        ("return value", "pos"), ("a loop of lines", "mid"), ("the value of it", "neg"))]
    train = "sentence\tlabel\n" + "\n".join(rows * 5) + "\n"
    (directory / "train-a.tsv").write_bytes(train.encode() + b"\xfe\tpos\n")
    (directory / "train-b.tsv").write_text(train)
    (directory / "dev.tsv").write_text("sentence\tlabel\nthe value\tneg\nodd\tmeh\n")
    return directory


@pytest.mark.parametrize("labels", [None, ("neg", "pos", "mid")], ids=["inferred", "given"])
def test_task_data_on_dask_is_byte_identical(tmp_path, dask_args, fixtures_dir, labels):
    files = _task_files(tmp_path / "task")
    outputs = {}
    for name, args in (("direct", DIRECT), ("dask", dask_args)):
        spec = td.TaskDataSpec(task="classification", train=str(files / "train-*.tsv"),
                               dev=str(files / "dev.tsv"),
                               vocab_path=str(fixtures_dir / "tokenizer" / "vocab_uncased.txt"),
                               output_dir=str(tmp_path / name), max_seq_length=8, labels=labels,
                               read=td.ReadOptions(text_column="sentence"))
        stats = td.run(spec, args)
        assert stats["splits"]["train"]["records"] == 2 * 5 * 5
        assert stats["bad_records"]["missing_text"] == 10 and stats["bad_records"]["invalid_utf8"] == 1
        assert stats["bad_records"]["unknown_label"] == 1
        found = _files(tmp_path / name)
        # The statistics name the output folder; the rest must be the same bytes.
        found[td.STATS_FILE] = found[td.STATS_FILE].replace(str(tmp_path / name).encode(), b"OUT")
        outputs[name] = found
    assert {"dev.tfrecord", "labels.txt", td.STATS_FILE, "train.tfrecord"} <= set(outputs["direct"])
    assert outputs["dask"] == outputs["direct"]
    expected = "mid\nneg\npos\n" if labels is None else "neg\npos\nmid\n"
    assert outputs["dask"]["labels.txt"].decode() == expected


def test_in_process_clusters_are_refused_and_given_clusters_kept():
    # Threads of the client's process share the DaskRunner's output buffers: refused.
    with pytest.raises(ValueError, match="inproc://"):
        runners.pipeline_options(["--runner=DaskRunner", "--dask_client_address=inproc://10.0.0.1/1/1"])
    given = ["--runner", "DaskRunner", "--dask_client_address", "tcp://scheduler:8786"]
    with runners.shared_dask_cluster(given) as args:
        assert args == ["--runner", runners.DASK_RUNNER, "--dask_client_address", "tcp://scheduler:8786"]
    with runners.shared_dask_cluster(DIRECT) as args:
        assert args == DIRECT
