"""What every stage shares and no stage owns: log lines, sentence splitting (no Beam, no TensorFlow).

What the Beam jobs share (statistics JSON, counters, output helpers) is in
`components.runners`.

Every stage logs through `stage_logger(STAGE)`: one format, `<time> [<stage>] <message>`,
to standard output (where progress lines of Beam jobs and training runs go), whether
the stage runs under `python -m pipeline.run` or on its own.
"""

import contextlib
import logging
import os
import re
import sys
import uuid

LOGGER = "keras_bert_pipeline"
LOG_FORMAT = "%(asctime)s [%(stage)s] %(message)s"
# A sentence ends at `.`, `!` or `?` (possibly followed by one closing quote or
# bracket) and whitespace, unless the dot is that of "e.g.", "i.e.", "cf." or "vs.",
# or what follows is a lowercase ASCII letter or continues the sentence (closing
# brackets, punctuation, operators): "etc. and", "x.) More", "... }" stay whole.
_SENTENCE_END = re.compile(
    r"(?:(?<=[.!?])|(?<=[.!?][\"')\]]))(?<!\be\.g\.)(?<!\bi\.e\.)(?<!\bcf\.)(?<!\bvs\.)"
    r"\s+(?![a-z)\]}.,;!?/&+])")


class _StdoutHandler(logging.StreamHandler):
    """Writes to the current `sys.stdout` (which pytest and notebooks replace)."""

    def __init__(self):
        super().__init__(sys.stdout)

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value):
        pass


class _StageFormatter(logging.Formatter):
    def format(self, record):
        record.stage = record.name.rsplit(".", 1)[-1]
        return super().format(record)


def stage_logger(stage):
    """The logger of one stage (`keras_bert_pipeline.<stage>`), configured on first use.

    Args:
        stage: the stage's name as it appears in log lines, e.g. "example_gen".

    Returns:
        A `logging.Logger` at INFO level writing `<time> [<stage>] <message>` lines.
    """
    parent = logging.getLogger(LOGGER)
    if not parent.handlers:
        handler = _StdoutHandler()
        handler.setFormatter(_StageFormatter(LOG_FORMAT, datefmt="%H:%M:%S"))
        parent.addHandler(handler)
        parent.setLevel(logging.INFO)
        # TensorFlow and Beam configure the root logger; these lines are shown once.
        parent.propagate = False
    return logging.getLogger(f"{LOGGER}.{stage}")


def log_stage(stage, text):
    """Logs one progress line of `stage` (flushed at once)."""
    stage_logger(stage).info(text)


def log_bad_records(stage, bad):
    """One line summing up a run's bad records.

    Args:
        stage: the stage's name.
        bad: {kind: count} of bad records (zeros included or not).
    """
    details = " ".join(f"{name}={count}" for name, count in bad.items() if count)
    log_stage(stage, f"bad records: {sum(bad.values())}" + (f" ({details})" if details else ""))


@contextlib.contextmanager
def atomic_write(path, encoding="utf-8"):
    """Opens a temporary text file next to local `path` that becomes `path` on success.

    The text goes to a hidden temporary file in `path`'s folder, which is flushed to
    disk and renamed over `path` when the block ends without an exception, so a reader
    (or a rerun after a crash or a full disk) finds either the whole old file or the
    whole new one, never a truncated one. On an exception the temporary file is
    removed and `path` is left as it was. A writer killed outright (SIGKILL, a lost
    machine) cannot remove its temporary file, so the file's name carries the
    writer's process id, and the next write of `path` removes those of writers no
    longer running.

    Args:
        path: the local file to write.
        encoding: text encoding. Defaults to "utf-8".

    Yields:
        A text file object to write to.
    """
    folder = os.path.dirname(os.path.abspath(path))
    _remove_dead_writers_temporaries(folder, os.path.basename(path))
    # A fresh unique name opened with "x" (not tempfile.mkstemp, whose files are
    # private to their owner): the file gets the permissions `open(path, "w")` gives.
    temporary = os.path.join(
        folder, f".{os.path.basename(path)}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        with open(temporary, "x", encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        raise


def _remove_dead_writers_temporaries(folder, name):
    """Removes `atomic_write`'s temporary files for `name` whose writer process is gone."""
    prefix = f".{name}."
    for entry in os.listdir(folder):
        if not (entry.startswith(prefix) and entry.endswith(".tmp")):
            continue
        pid = entry[len(prefix):-len(".tmp")].split(".")[0]
        if not pid.isdigit() or _process_running(int(pid)):
            continue
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(folder, entry))


def _process_running(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def split_sentences(text, max_sentence_chars=None):
    """Splits text into sentences: the one sentence splitter of every stage.

    Line breaks end a sentence too. A sentence end followed by a lowercase letter is
    not split (abbreviations such as "e.g." are far more common there than
    sentences starting in lowercase), so all-lowercase text is cut only at line
    breaks and `max_sentence_chars`.

    Args:
        text: the text; whitespace inside a sentence is kept as it is.
        max_sentence_chars: longer sentences are cut at the last space that keeps
            them within it (or at the limit, in a word longer than it). Defaults to
            None (no limit).

    Returns:
        The sentences, stripped, none empty.

    Example:
        >>> split_sentences('He said "stop." Then left! Ok? yes, e.g. this')
        ['He said "stop."', 'Then left!', 'Ok? yes, e.g. this']
    """
    sentences = []
    for line in text.splitlines():
        for sentence in _SENTENCE_END.split(line):
            sentence = sentence.strip()
            while max_sentence_chars and len(sentence) > max_sentence_chars:
                cut = sentence.rfind(" ", 0, max_sentence_chars + 1)
                if cut <= 0:
                    cut = max_sentence_chars
                sentences.append(sentence[:cut].strip())
                sentence = sentence[cut:].strip()
            if sentence:
                sentences.append(sentence)
    return sentences
