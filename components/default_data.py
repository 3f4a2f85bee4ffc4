"""The embedded default dataset: English prose every Python installation carries.

No network is reachable at run time, so the default pipeline builds its data from
the standard library itself:

- **Corpus** (for pre-training): the documentation topics of `pydoc_data.topics` and
  the docstrings of the standard library's modules (read with `ast`, never imported),
  written in the original BERT corpus format: one sentence per line, a blank line
  between documents, a few shards.
- **Held-out corpus**: 5% of the documents, never pre-trained on, for held-out MLM
  evaluation.
- **Task** (for fine-tuning): "which standard-library package does this docstring
  paragraph come from?" over `TASK_PACKAGES`. Paragraphs are split into
  train/dev/test **by source file**, so no file contributes to two splits; dev and
  test files are also left out of the pre-training corpus.

The same inputs and `fraction` always give the same files (sorted walks, hashed
splits, no global random state).
"""

import ast
import dataclasses
import hashlib
import json
import os
import re
import sysconfig

from components import common

TASK_PACKAGES = ("asyncio", "email", "importlib", "multiprocessing", "unittest", "xml")
_SKIP_DIRS = ("site-packages", "test", "tests", "idlelib", "lib2to3", "__pycache__", "turtledemo")
_MIN_WORDS = 8
HELDOUT_SHARE = 0.05


@dataclasses.dataclass(frozen=True)
class DefaultDataSpec:
    """Where and how much of the default data to write.

    Args:
        output_dir: folder for `corpus/` and `task/`.
        fraction: share of documents and task paragraphs to keep (a small slice for
            tests). Defaults to 1.0.
        num_shards: corpus files. Defaults to 4.
    """

    output_dir: str
    fraction: float = 1.0
    num_shards: int = 4


def _stable_unit(key):
    """A deterministic number in [0, 1) from a string."""
    return int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:12], 16) / float(1 << 48)


def _sentences(paragraph):
    return common.split_sentences(" ".join(paragraph.split()))  # (whitespace collapsed)


def _prose_paragraphs(docstring):
    """Paragraphs of a docstring that read like prose (no doctests, tables or code)."""
    out = []
    for para in re.split(r"\n\s*\n", docstring):
        lines = [l.strip() for l in para.strip().splitlines() if l.strip()]
        if not lines:
            continue
        if any(l.startswith((">>>", "...", "$ ", "+--", "|", "--")) for l in lines):
            continue
        text = " ".join(lines)
        words = text.split()
        letters = sum(c.isalpha() for c in text)
        if len(words) < _MIN_WORDS or letters < 0.6 * len(text):
            continue
        out.append(text)
    return out


def stdlib_files(stdlib_dir=None):
    """Sorted (relative path, absolute path) of the standard library's .py files."""
    root = stdlib_dir or sysconfig.get_paths()["stdlib"]
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        for name in sorted(filenames):
            if name.endswith(".py"):
                path = os.path.join(dirpath, name)
                found.append((os.path.relpath(path, root), path))
    return found


def file_docstrings(path):
    """Prose paragraphs of every module/class/function docstring in a source file."""
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return []
    paragraphs = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc:
                paragraphs += _prose_paragraphs(doc)
    return paragraphs


SPLIT_SHARES = {"train": 0.7, "dev": 0.15, "test": 0.15}


def assign_splits(file_sizes):
    """Assigns whole files to train/dev/test, per package, near 70/15/15 by paragraphs.

    Files are visited largest first (ties by a hash of the path) and each goes to the
    split furthest below its share of that package's paragraphs, so no file is
    divided and every split sees every package.

    Args:
        file_sizes: {relpath: number of paragraphs}.

    Returns:
        {relpath: "train" | "dev" | "test"}.
    """
    by_package = {}
    for relpath, size in file_sizes.items():
        by_package.setdefault(package_of(relpath), []).append((relpath, size))
    out = {}
    for package, files in sorted(by_package.items()):
        total = sum(size for _, size in files) or 1
        filled = {split: 0 for split in SPLIT_SHARES}
        for relpath, size in sorted(files, key=lambda f: (-f[1], _stable_unit("split:" + f[0]))):
            split = min(SPLIT_SHARES, key=lambda s: (filled[s] / total - SPLIT_SHARES[s], s))
            out[relpath] = split
            filled[split] += size
    return out


def package_of(relpath):
    return relpath.split(os.sep)[0].split("/")[0].removesuffix(".py")


def build(spec):
    """Writes the default corpus and task; returns a dict of paths and counts."""
    import pydoc_data.topics

    corpus_dir = os.path.join(spec.output_dir, "corpus")
    task_dir = os.path.join(spec.output_dir, "task")
    os.makedirs(corpus_dir, exist_ok=True)
    os.makedirs(task_dir, exist_ok=True)

    documents = []  # (key, [sentences])
    for topic in sorted(pydoc_data.topics.topics):
        sentences = []
        for para in _prose_paragraphs(pydoc_data.topics.topics[topic]):
            sentences += _sentences(para)
        if sentences:
            documents.append((f"pydoc:{topic}", sentences))

    task_rows = {"train": [], "dev": [], "test": []}
    files = [(relpath, file_docstrings(path)) for relpath, path in stdlib_files()]
    splits = assign_splits({relpath: len(paragraphs) for relpath, paragraphs in files
                            if paragraphs and package_of(relpath) in TASK_PACKAGES})
    for relpath, paragraphs in files:
        if not paragraphs:
            continue
        package = package_of(relpath)
        split = splits.get(relpath)
        if split is not None:
            for i, para in enumerate(paragraphs):
                if _stable_unit(f"keep:{relpath}:{i}") < spec.fraction:
                    task_rows[split].append({"text": para, "label": package, "source": relpath})
        if split in ("dev", "test"):
            continue  # never pre-train on held-out task text
        sentences = [s for para in paragraphs for s in _sentences(para)]
        documents.append((f"stdlib:{relpath}", sentences))

    documents = [d for d in documents if _stable_unit("doc:" + d[0]) < spec.fraction]
    # A few documents are held out of pre-training, for its held-out MLM evaluation.
    heldout = [d for d in documents if _stable_unit("heldout:" + d[0]) < HELDOUT_SHARE]
    documents = [d for d in documents if _stable_unit("heldout:" + d[0]) >= HELDOUT_SHARE]
    heldout_dir = os.path.join(spec.output_dir, "heldout")
    os.makedirs(heldout_dir, exist_ok=True)
    with open(os.path.join(heldout_dir, "corpus-heldout.txt"), "w", encoding="utf-8") as f:
        for _, sentences in heldout:
            f.write("\n".join(sentences) + "\n\n")
    shards = [open(os.path.join(corpus_dir, f"corpus-{i:05d}-of-{spec.num_shards:05d}.txt"),
                   "w", encoding="utf-8") for i in range(spec.num_shards)]
    try:
        for i, (_, sentences) in enumerate(documents):
            out = shards[i % spec.num_shards]
            out.write("\n".join(sentences) + "\n\n")
    finally:
        for f in shards:
            f.close()
    counts = {}
    for split, rows in task_rows.items():
        with open(os.path.join(task_dir, f"{split}.jsonl"), "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        counts[split] = len(rows)
    chars = sum(len(s) for _, sents in documents for s in sents)
    result = {"corpus_glob": os.path.join(corpus_dir, "*.txt"),
              "heldout_glob": os.path.join(heldout_dir, "*.txt"), "heldout_documents": len(heldout),
              "task_dir": task_dir,
              "train": os.path.join(task_dir, "train.jsonl"),
              "dev": os.path.join(task_dir, "dev.jsonl"),
              "test": os.path.join(task_dir, "test.jsonl"),
              "documents": len(documents), "corpus_chars": chars, "task_examples": counts,
              "labels": list(TASK_PACKAGES)}
    with common.atomic_write(os.path.join(spec.output_dir, "default_data.json")) as f:
        json.dump(result, f, indent=2)
    return result
