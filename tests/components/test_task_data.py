"""TaskData: parsers (pure) and the Beam job on small files with bad records.

Every bad record must be counted by kind and reported with its file and line (or
question id); the job must finish whatever the input.
"""

import json

import pytest
import tensorflow as tf

from components import task_data as td
from components import task_files
from keras_bert import features as F
from keras_bert import tasks
from keras_bert.tokenizer import BertTokenizer


@pytest.fixture(scope="module")
def vocab(fixtures_dir):
    return str(fixtures_dir / "tokenizer" / "vocab_uncased.txt")


@pytest.fixture(scope="module")
def tokenizer(vocab):
    return BertTokenizer.from_vocab(vocab, do_lower_case=True)


def _parse(data, source, task, **options):
    items = list(td.parse_file(data, source, task, td.ReadOptions(**options)))
    return ([i for i in items if not isinstance(i, td.BadRecord)],
            [i for i in items if isinstance(i, td.BadRecord)])


def _records(path, spec):
    return [tf.io.parse_single_example(r, spec) for r in tf.data.TFRecordDataset(path)]


# --------------------------------------------------------------------------------------
# Parsers.


def test_tsv_by_header_name_and_index():
    data = ("sentence\tlabel\n"
            "good film\t1\n"
            "\t0\n"                    # missing text
            "bad film\t\n"             # missing label
            "no label column\n"        # missing label
            "fine\t0\n").encode() + b"\xff broken\t1\n" + b"last one\t1\n"
    examples, bad = _parse(data, "sst.tsv", "classification", text_column="sentence")
    assert [(e.guid, e.text, e.label) for e in examples] == [
        ("sst.tsv:2", "good film", "1"), ("sst.tsv:6", "fine", "0"), ("sst.tsv:8", "last one", "1")]
    assert [(b.kind, b.location) for b in bad] == [
        ("invalid_utf8", "sst.tsv:7"), ("missing_text", "sst.tsv:3"),
        ("missing_label", "sst.tsv:4"), ("missing_label", "sst.tsv:5")]
    # GLUE files by column index: no header unless asked for.
    examples, bad = _parse(b"x\ty\tz\n1\ta b\tc d\n", "mrpc.tsv", "pair", text_column="1",
                           text_b_column="2", label_column="0", header=True)
    assert [(e.text, e.text_b, e.label) for e in examples] == [("a b", "c d", "1")]
    with pytest.raises(td.TaskDataError, match="header has no column 'sentence'"):
        _parse(b"text\tlabel\nx\t1\n", "a.tsv", "classification", text_column="sentence")


def test_csv_quotes_and_multiline_fields_keep_line_numbers():
    data = ('text,text_b,score\n'
            '"a, b","c",1.5\n'
            '"multi\nline","d",2\n'
            '"e","f",high\n'
            '"g","h",0\n').encode()
    examples, bad = _parse(data, "sts.csv", "regression", label_column="score")
    assert [(e.guid, e.text, e.label) for e in examples] == [
        ("sts.csv:2", "a, b", 1.5), ("sts.csv:3", "multi\nline", 2.0), ("sts.csv:6", "g", 0.0)]
    assert [(b.kind, b.location) for b in bad] == [("invalid_label", "sts.csv:5")]
    assert "'high' is not a number" in bad[0].message
    # An unquoted comma would shift the label into the text: counted, not misread.
    examples, bad = _parse(b"text,label\nan apple, a pear,fruit\n\"an apple, a pear\",fruit\n",
                           "fruit.csv", "classification")
    assert [(e.guid, e.text, e.label) for e in examples] == [("fruit.csv:3", "an apple, a pear", "fruit")]
    assert [(b.kind, b.location) for b in bad] == [("malformed_record", "fruit.csv:2")]
    assert "3 fields where the header has 2" in bad[0].message


def test_jsonl_bad_lines():
    lines = ['{"text": "a", "label": "x"}', "{oops", "[1, 2]", '{"text": "b"}',
             '{"text": "c", "label": 3}', "", '{"label": "x"}']
    examples, bad = _parse("\n".join(lines).encode(), "d.jsonl", "classification")
    assert [(e.guid, e.label) for e in examples] == [("d.jsonl:1", "x"), ("d.jsonl:5", "3")]
    assert [(b.kind, b.location) for b in bad] == [
        ("malformed_json", "d.jsonl:2"), ("malformed_json", "d.jsonl:3"),
        ("missing_label", "d.jsonl:4"), ("missing_text", "d.jsonl:7")]


CONLL = """-DOCSTART- -X- -X- O

EU NNP B-NP I-ORG
rejects VBZ B-VP O
German JJ B-NP I-MISC
call NN I-NP O

Peter NNP B-NP I-PER
Blackburn NNP I-NP I-PER

Bad NNP B-NP X-PER
sentence NN I-NP O

lonely

-DOCSTART- -X- -X- O

Rome NNP B-NP I-LOC
Paris NNP B-NP B-LOC
"""


def test_conll_iob1_and_bad_sentences():
    examples, bad = _parse(CONLL.encode(), "eng.train", "ner", tag_scheme="IOB1")
    assert [(e.guid, e.words, e.tags) for e in examples] == [
        ("eng.train:3", ("EU", "rejects", "German", "call"), ("B-ORG", "O", "B-MISC", "O")),
        ("eng.train:8", ("Peter", "Blackburn"), ("B-PER", "I-PER")),
        ("eng.train:18", ("Rome", "Paris"), ("B-LOC", "B-LOC"))]
    assert [(b.kind, b.location) for b in bad] == [
        ("invalid_tag", "eng.train:11"), ("missing_label", "eng.train:14")]


def _squad_file(qas_context_pairs):
    return json.dumps({"version": "v2.0", "data": [{"title": "t", "paragraphs": [
        {"context": c, "qas": qas} for c, qas in qas_context_pairs]}]}).encode()


def test_squad_offsets_and_unanswerable():
    context = "The cat sat on the mat in 1990."
    data = _squad_file([(context, [
        {"id": "ok", "question": "Who sat?", "answers": [{"text": "cat", "answer_start": 4},
                                                          {"text": "The cat", "answer_start": 0}]},
        {"id": "half", "question": "Where?", "answers": [{"text": "mat", "answer_start": 19},
                                                          {"text": "mat", "answer_start": 3}]},
        {"id": "bad", "question": "When?", "answers": [{"text": "1990", "answer_start": 2}]},
        {"id": "none", "question": "Why?", "answers": [], "is_impossible": True},
        {"id": "noid", "answers": []}])])
    records, bad = _parse(data, "dev.json", "squad2")
    by_id = {r.example.qas_id: r for r in records}
    assert sorted(by_id) == ["half", "none", "ok"]
    assert [a.text for a in by_id["ok"].example.answers] == ["cat", "The cat"]
    assert [a.start for a in by_id["half"].example.answers] == [19]
    assert by_id["half"].gold_texts == ("mat", "mat")  # evaluation keeps every gold text
    assert by_id["none"].example.is_impossible and by_id["none"].gold_texts == ()
    assert [(b.kind, b.location) for b in bad] == [
        ("answer_not_at_offset", "dev.json: question half answer 1"),
        ("answer_not_at_offset", "dev.json: question bad answer 0"),
        ("no_valid_answer", "dev.json: question bad"),
        ("malformed_record", "dev.json: data[0].paragraphs[0].qas[4]")]
    # SQuAD 1.1 has no unanswerable questions.
    _, bad = _parse(_squad_file([(context, [{"id": "x", "question": "?", "answers": []}])]),
                    "v1.json", "squad1")
    assert [(b.kind, b.location) for b in bad] == [("missing_label", "v1.json: question x")]
    _, bad = _parse(b'{"data": [', "broken.json", "squad1")
    assert [b.kind for b in bad] == ["malformed_json"]


# --------------------------------------------------------------------------------------
# The Beam job.


def test_job_classification_counts_bad_records_and_writes_records(tmp_path, vocab, tokenizer):
    (tmp_path / "train.tsv").write_bytes(
        b"sentence\tlabel\nthe class object\tpos\n\tneg\nis here\tneg\nno label\t\n"
        b"\xfe\tpos\nreturn value\tpos\n")
    (tmp_path / "dev.tsv").write_bytes(b"sentence\tlabel\nthe value\tneg\nodd\tmeh\n")
    spec = td.TaskDataSpec(task="classification", train=str(tmp_path / "train.tsv"),
                           dev=str(tmp_path / "dev.tsv"), vocab_path=vocab,
                           output_dir=str(tmp_path / "out"), max_seq_length=8,
                           read=td.ReadOptions(text_column="sentence"))
    stats = td.run(spec)
    assert stats["labels"] == ["neg", "pos"]
    assert task_files.read_labels(spec.labels_path) == ["neg", "pos"]
    train, dev = stats["splits"]["train"], stats["splits"]["dev"]
    assert (train["examples_read"], train["records"], dev["records"]) == (3, 3, 1)
    assert train["label_counts"] == {"neg": 1, "pos": 2}
    assert stats["bad_records"]["missing_text"] == 1
    assert stats["bad_records"]["missing_label"] == 1
    assert stats["bad_records"]["invalid_utf8"] == 1
    assert stats["bad_records"]["unknown_label"] == 1
    assert stats["bad_records_total"] == 4
    locations = stats["bad_record_locations"]
    assert f"[dev] {tmp_path / 'dev.tsv'}:3: unknown_label: label 'meh' is not in the label set " \
           "['neg', 'pos']" in locations
    assert f"[train] {tmp_path / 'train.tsv'}:3: missing_text: the text is missing or empty" in locations
    assert any(l.startswith(f"[train] {tmp_path / 'train.tsv'}:6: invalid_utf8") for l in locations)
    records = _records(spec.records_path("train"), F.classification_feature_spec(8))
    first = records[0]
    assert tokenizer.convert_ids_to_tokens(first[F.INPUT_IDS].numpy().tolist()) == [
        "[CLS]", "the", "class", "object", "[SEP]", "[PAD]", "[PAD]", "[PAD]"]
    assert [int(r[F.LABEL_IDS][0]) for r in records] == [1, 0, 1]  # file order


def test_job_ner_and_squad(tmp_path, vocab, tokenizer):
    (tmp_path / "train.conll").write_text(CONLL)
    spec = td.TaskDataSpec(task="ner", train=str(tmp_path / "train.conll"), vocab_path=vocab,
                           output_dir=str(tmp_path / "ner"), max_seq_length=8, doc_stride=2,
                           read=td.ReadOptions(tag_scheme="IOB1"))
    stats = td.run(spec)
    assert stats["labels"] == ["O", "B-LOC", "B-MISC", "B-ORG", "B-PER", "I-PER"]
    assert stats["bad_records"] == {**{k: 0 for k in td.BAD_RECORD_KINDS},
                                    "invalid_tag": 1, "missing_label": 1}
    records = _records(spec.records_path("train"), F.token_classification_feature_spec(8))
    # "EU rejects German call" is longer than 6 word pieces: more than one window.
    assert stats["splits"]["train"]["records"] == len(records) > 3
    first = records[0]
    tokens = tokenizer.convert_ids_to_tokens(first[F.INPUT_IDS].numpy().tolist())
    labels = first[F.LABEL_IDS].numpy().tolist()
    assert tokens[0] == "[CLS]" and labels[0] == tasks.IGNORE_LABEL
    assert labels[1] == stats["labels"].index("B-ORG")  # first piece of "EU"

    context = "The cat sat on the mat. " * 6
    squad = tmp_path / "squad.json"
    squad.write_text(json.dumps({"data": [{"paragraphs": [{"context": context, "qas": [
        {"id": "a", "question": "Where?", "answers": [{"text": "mat", "answer_start": 99}]},
        {"id": "b", "question": "Where?", "answers": [{"text": "mat", "answer_start": 19}]},
        {"id": "c", "question": "Why?", "answers": [], "is_impossible": True}]}]}]}))
    (tmp_path / "broken.json").write_text('{"data": [')
    spec = td.TaskDataSpec(task="squad2", train=str(squad), dev=str(tmp_path / "broken.json"),
                           vocab_path=vocab, output_dir=str(tmp_path / "squad"),
                           max_seq_length=24, doc_stride=8, max_query_length=4)
    stats = td.run(spec)
    assert stats["bad_records"]["answer_not_at_offset"] == 1
    assert stats["bad_records"]["no_valid_answer"] == 1
    assert stats["bad_records"]["malformed_json"] == 1
    assert f"[train] {squad}: question a answer 0: answer_not_at_offset: answer 'mat' is not at " \
           "character 99 (found ' ca')" in stats["bad_record_locations"]
    records = _records(spec.records_path("train"), F.span_feature_spec(24))
    assert stats["splits"]["train"]["records"] == len(records) > 2
    starts = [int(r[F.START_POSITIONS][0]) for r in records]
    ends = [int(r[F.END_POSITIONS][0]) for r in records]
    hits = [(r, s, e) for r, s, e in zip(records, starts, ends) if s > 0]
    assert hits and all(
        tokenizer.convert_ids_to_tokens([int(r[F.INPUT_IDS][s])]) == ["mat"] and s == e
        for r, s, e in hits)
    # The dev file was unreadable: the job still finishes, with an empty dev file.
    assert stats["splits"]["dev"]["records"] == 0
    assert list(tf.data.TFRecordDataset(spec.records_path("dev"))) == []
    assert not (tmp_path / "squad" / "labels.txt").exists()


def test_cli_parses_flags(tmp_path):
    spec, beam_args = td.parse_args(["--task", "pair", "--train", "t.tsv", "--vocab", "v.txt",
                                     "--output", "o", "--text_column", "3", "--text_b_column", "4",
                                     "--label_column", "0", "--header", "--labels", "0,1",
                                     "--direct_num_workers=2"])
    assert spec.read.header is True and spec.labels == ("0", "1")
    assert (spec.read.text_column, spec.read.text_b_column) == ("3", "4")
    assert beam_args == ["--direct_num_workers=2"]
    with pytest.raises(td.TaskDataError, match="task must be one of"):
        td.TaskDataSpec(task="nli", train="t", vocab_path="v", output_dir="o")
