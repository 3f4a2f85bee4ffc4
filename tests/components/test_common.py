"""components.common: the one sentence splitter of ExampleGen, the default data and Evaluate."""

import os

import pytest

from components import common


def test_split_sentences_at_sentence_ends():
    assert common.split_sentences('He said "stop." Then left! Ok? Yes (really.) Done') == [
        'He said "stop."', "Then left!", "Ok?", "Yes (really.)", "Done"]
    assert common.split_sentences("para one\npara two") == ["para one", "para two"]
    # Docstring-style lists start new sentences.
    assert common.split_sentences("Options. - verbose: talk. * quiet") == [
        "Options.", "- verbose: talk.", "* quiet"]


def test_split_sentences_keeps_abbreviations_and_lowercase_continuations():
    text = "Use a list, e.g. Python lists, i.e. Mutable ones. Compare (cf. RFC 1). Etc. and so on."
    assert common.split_sentences(text) == [
        "Use a list, e.g. Python lists, i.e. Mutable ones.", "Compare (cf. RFC 1).",
        "Etc. and so on."]
    assert common.split_sentences("Ok? yes. 3.5 is a number. {a.} b") == [
        "Ok? yes.", "3.5 is a number.", "{a.} b"]


def test_split_sentences_cuts_long_sentences_at_spaces():
    assert common.split_sentences("aaaa bbbb cccc", 9) == ["aaaa bbbb", "cccc"]
    assert common.split_sentences("x" * 25, 10) == ["x" * 10, "x" * 10, "x" * 5]
    assert common.split_sentences("  \n \n") == []


def test_write_json_replaces_the_file_whole_and_leaves_no_temporary(tmp_path, monkeypatch):
    import json

    from apache_beam.io.filesystems import FileSystems

    from components import runners

    path = str(tmp_path / "stats.json")
    runners.write_json({"lines": 1}, path)
    runners.write_json({"lines": 2, "bad_lines": 0}, path)
    assert json.loads(open(path).read()) == {"lines": 2, "bad_lines": 0}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stats.json"]

    # A write that fails before the rename keeps the old file whole and cleans up.
    def refuse(sources, destinations):
        raise OSError("disk full")

    monkeypatch.setattr(FileSystems, "rename", refuse)
    with pytest.raises(OSError, match="disk full"):
        runners.write_json({"lines": 3}, path)
    assert json.loads(open(path).read()) == {"lines": 2, "bad_lines": 0}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stats.json"]


def test_atomic_write_removes_what_a_killed_writer_left(tmp_path):
    """A writer killed with SIGKILL leaves its temporary file; the next write of the same
    file removes it (its process is gone), and leaves a running writer's alone."""
    import subprocess
    import sys

    path = tmp_path / "pretrain_spec.json"
    writer = subprocess.Popen([sys.executable, "-c", """
import sys, time
sys.path.insert(0, %r)
from components import common
with common.atomic_write(%r) as f:
    f.write("{")
    f.flush()
    print("writing", flush=True)
    time.sleep(60)
""" % (os.getcwd(), str(path))], stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "writing"
    writer.kill()
    writer.wait()
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith(".pretrain_spec.json.") and left[0].endswith(".tmp")
    running = tmp_path / f".pretrain_spec.json.{os.getpid()}.0123.tmp"  # this process's
    running.write_text("")
    other = tmp_path / ".metrics.json.1.0123.tmp"  # another file's
    other.write_text("")
    with common.atomic_write(str(path)) as f:
        f.write("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [running.name, other.name, "pretrain_spec.json"])
    assert path.read_text() == "{}"


def test_atomic_write_replaces_the_file_whole_or_not_at_all(tmp_path):
    import json

    path = tmp_path / "metrics.json"
    with common.atomic_write(str(path)) as f:
        json.dump({"accuracy": 0.5}, f)
    with common.atomic_write(str(path)) as f:
        json.dump({"accuracy": 0.75, "f1": 0.7}, f)
    assert json.loads(path.read_text()) == {"accuracy": 0.75, "f1": 0.7}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]
    # The same permissions as a file made with open(path, "w") (readable by other users
    # under the usual umask), not a temporary file's owner-only ones.
    plain = tmp_path / "plain"
    plain.write_text("")
    assert path.stat().st_mode == plain.stat().st_mode
    plain.unlink()

    # A writer that fails halfway (a full disk, a crash in the caller) leaves the old
    # file as it was and no temporary file behind.
    with pytest.raises(OSError, match="No space left"):
        with common.atomic_write(str(path)) as f:
            f.write('{"accuracy": 0.9')
            raise OSError(28, "No space left on device")
    assert json.loads(path.read_text()) == {"accuracy": 0.75, "f1": 0.7}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]

    # A new file appears only when complete.
    fresh = tmp_path / "blessing.json"
    with pytest.raises(KeyboardInterrupt):
        with common.atomic_write(str(fresh)) as f:
            f.write("{")
            raise KeyboardInterrupt
    assert not fresh.exists()
