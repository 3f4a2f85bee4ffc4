"""ExampleGen: corpus formats, stable ids, and bad records counted, never fatal."""

import collections
import gzip
import io
import json
import os

import pytest

from components import example_gen as eg

SENTENCES_CORPUS = "First doc, one.\nFirst doc, two.\n\n\nSecond doc only sentence.\n"


def read(path, options=eg.ReadOptions(), source=None):
    stats = collections.Counter()
    docs = list(eg.read_corpus_file(str(path), source or os.path.basename(path), options, stats))
    return docs, stats


def write(path, data):
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return path




def test_iter_lines_skips_overlong_lines_without_holding_them():
    data = b"short\r\n" + b"y" * 50 + b"\nok\nlast"
    lines = list(eg.iter_lines(io.BytesIO(data), max_line_bytes=10))
    assert lines == [(1, b"short"), (2, None), (3, b"ok"), (4, b"last")]
    # An overlong line that spans reads; the first chunk may be given separately.
    assert list(eg.iter_lines(io.BytesIO(b"z" * 30), 10, first_chunk=b"a\n")) == [(1, b"a"), (2, None)]


def test_sentences_format_documents_and_ids(tmp_path):
    docs, stats = read(write(tmp_path / "a.txt", SENTENCES_CORPUS))
    assert [d["sentences"] for d in docs] == [["First doc, one.", "First doc, two."], ["Second doc only sentence."]]
    assert [d["source"] for d in docs] == ["a.txt:1", "a.txt:5"]
    assert stats["documents"] == 2 and stats["sentences"] == 3
    # Ids depend on source and content, not on the order or place files are read.
    (tmp_path / "elsewhere").mkdir()
    again, _ = read(write(tmp_path / "elsewhere" / "a.txt", SENTENCES_CORPUS))
    assert [d["doc_id"] for d in again] == [d["doc_id"] for d in docs]
    other, _ = read(write(tmp_path / "b.txt", SENTENCES_CORPUS))
    assert not {d["doc_id"] for d in other} & {d["doc_id"] for d in docs}
    assert len({d["doc_id"] for d in docs}) == 2


def test_long_lines_are_split_into_sentences(tmp_path):
    line = " ".join(f"Sentence number {i} is here." for i in range(20))
    docs, stats = read(write(tmp_path / "a.txt", line + "\n"), eg.ReadOptions(max_sentence_chars=100))
    assert stats["split_long_lines"] == 1
    assert docs[0]["sentences"][:2] == ["Sentence number 0 is here.", "Sentence number 1 is here."]
    assert len(docs[0]["sentences"]) == 20


def test_lines_jsonl_and_documents_formats(tmp_path):
    docs, _ = read(write(tmp_path / "a.txt", "One. Two.\nThree.\n"), eg.ReadOptions(input_format="lines"))
    assert [d["sentences"] for d in docs] == [["One.", "Two."], ["Three."]]

    jsonl = '{"text": "Alpha one. Alpha two."}\n{"text": "Beta."}\n'
    docs, _ = read(write(tmp_path / "c.jsonl", jsonl))
    assert [d["sentences"] for d in docs] == [["Alpha one.", "Alpha two."], ["Beta."]]

    # ExampleGen's own output is read back as it was written (ids kept).
    out = "\n".join(json.dumps(d) for d in docs) + "\n"
    again, _ = read(write(tmp_path / "documents-00000-of-00001.jsonl", out))
    assert again == [dict(d, source=f"documents-00000-of-00001.jsonl:{i + 1}") for i, d in enumerate(docs)]


def test_gzip_is_read_transparently_whatever_the_name(tmp_path):
    plain, _ = read(write(tmp_path / "a.txt", SENTENCES_CORPUS), source="a")
    named, _ = read(write(tmp_path / "a.txt.gz", gzip.compress(SENTENCES_CORPUS.encode())), source="a")
    misnamed, _ = read(write(tmp_path / "a.data", gzip.compress(SENTENCES_CORPUS.encode())), source="a")
    assert plain == named == misnamed


def test_bad_records_are_counted_and_the_rest_is_kept(tmp_path):
    docs, stats = read(write(tmp_path / "garbage.bin", os.urandom(20000) + b"\x00"))
    assert docs == [] and stats["binary_files"] == 1

    docs, stats = read(write(tmp_path / "empty.txt", b""))
    assert docs == [] and stats["empty_files"] == 1

    mixed = b"Good one.\n\xff\xfe bad utf8\nGood two.\n\n\xc3\x28\n\nThird.\n" + b"x" * 200 + b"\n"
    docs, stats = read(write(tmp_path / "mixed.txt", mixed), eg.ReadOptions(max_line_bytes=100))
    assert [d["sentences"] for d in docs] == [["Good one.", "Good two."], ["Third."]]
    assert stats["invalid_utf8_lines"] == 2 and stats["overlong_lines"] == 1
    assert stats["empty_documents"] == 1  # The document made of one bad line.

    jsonl = b'{"text": "fine."}\n{not json\n[1, 2]\n{"body": "no text"}\n{"text": ""}\n'
    docs, stats = read(write(tmp_path / "bad.jsonl", jsonl))
    assert len(docs) == 1
    assert stats["malformed_json"] == 2 and stats["missing_text_field"] == 1 and stats["empty_documents"] == 1

    truncated = gzip.compress(SENTENCES_CORPUS.encode() * 200)[:-30]
    docs, stats = read(write(tmp_path / "cut.txt.gz", truncated))
    assert stats["unreadable_files"] == 1


def test_unknown_glob_and_format_are_typed_errors(tmp_path):
    with pytest.raises(eg.CorpusError, match="nothing-here"):
        eg.match_files(str(tmp_path / "nothing-here*.txt"))
    with pytest.raises(eg.CorpusError, match="input_format"):
        eg.ReadOptions(input_format="xml")


def test_pattern_base_and_relative_source():
    assert eg.pattern_base("/data/corpus/*/part-*.txt") == "/data/corpus/"
    assert eg.pattern_base("gs://b/c/file.txt") == "gs://b/c/"
    assert eg.relative_source("/data/corpus/x/part-1.txt", "/data/corpus/") == "x/part-1.txt"


def test_beam_run_writes_documents_and_statistics(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    write(corpus / "a.txt", SENTENCES_CORPUS)
    write(corpus / "b.txt.gz", gzip.compress(b"Gz doc one.\nGz doc two.\n"))
    write(corpus / "c.jsonl", '{"text": "Json doc."}\n{broken\n')
    write(corpus / "garbage.bin", os.urandom(5000) + b"\x00")
    write(corpus / "empty.txt", b"")
    write(corpus / "bad.txt", b"\xff\xfe\xfd\n\nok line.\n")
    spec = eg.ExampleGenSpec(input_pattern=str(corpus / "*"), output_dir=str(tmp_path / "out"))
    stats = eg.run(spec)

    bad = stats["bad_records"]
    assert bad["binary_files"] == 1 and bad["empty_files"] == 1 and bad["invalid_utf8_lines"] == 1
    assert bad["malformed_json"] == 1 and bad["empty_documents"] == 1
    assert stats["counters"]["files"] == 6 and stats["counters"]["documents"] == 5
    with open(tmp_path / "out" / "example_gen_stats.json") as f:
        assert json.load(f) == stats

    lines = []
    for name in sorted(os.listdir(tmp_path / "out")):
        if name.startswith("documents-"):
            with gzip.open(tmp_path / "out" / name, "rt") as f:
                lines.extend(json.loads(line) for line in f)
    assert sorted(s for d in lines for s in d["sentences"]) == sorted(
        ["First doc, one.", "First doc, two.", "Second doc only sentence.", "Gz doc one.", "Gz doc two.",
         "Json doc.", "ok line."]
    )
    assert sorted(d["source"] for d in lines)[:2] == ["a.txt:1", "a.txt:5"]
