"""Push stage: copy a blessed export into the serving base path as a new version.

The model server's base path (`serving_base`) is the root of all served models:
a model lives in `<serving_base>/<model_name>/<version>/`.

Push reads two artifacts: the SavedModel that Export wrote and the blessing that
Evaluate wrote for it (`blessing.json`, see `components.evaluate`). It pushes only when
the blessing says blessed **and** names this very export, so a model that was not
evaluated, or evaluated under another path, is never served. The new version number
is one past the newest already served, and the copy is published by an atomic rename
so a polling model server never loads a half-copied folder.
"""

import dataclasses
import filecmp
import json
import os
import shutil

from components import common
from components.evaluate import EvaluationError, read_blessing
from keras_bert.export import next_version


STAGE = "push"
JOURNAL_FILE = "publishing.json"


class PushError(ValueError):
    """The export or blessing to push is missing or does not match."""


@dataclasses.dataclass(frozen=True)
class PushSpec:
    """The Push stage.

    Args:
        export_dir: the exported version folder (holding saved_model.pb).
        blessing: Evaluate's `blessing.json` for that export.
        serving_base: the model server's base path, the root of all served models.
        model_name: the served model's name; versions go to
            `<serving_base>/<model_name>/<version>`.
        journal_dir: a folder of this push's own (the pipeline stage's output) where
            the version about to be published is noted first; a push killed after
            publishing and run again then finds its version instead of pushing the
            same export twice. Defaults to None (no journal).
    """

    export_dir: str
    blessing: str
    serving_base: str
    model_name: str
    journal_dir: str = None

    @property
    def model_base_path(self):
        """`<serving_base>/<model_name>`: the folder of this model's versions."""
        return os.path.join(self.serving_base, self.model_name)


def run(spec):
    """Pushes if blessed; returns {"pushed": bool, "version": int|None, "path": str|None}.

    Raises:
        PushError: no SavedModel, no readable blessing, or a blessing of another model.
    """
    if not os.path.exists(os.path.join(spec.export_dir, "saved_model.pb")):
        raise PushError(f"{spec.export_dir}: no saved_model.pb to push")
    try:
        blessing = read_blessing(spec.blessing)
    except EvaluationError as e:
        raise PushError(str(e)) from None
    if os.path.abspath(blessing["model"]) != os.path.abspath(spec.export_dir):
        raise PushError(f"{spec.blessing} blesses {blessing['model']}, not the export to push "
                        f"{os.path.abspath(spec.export_dir)}")
    if not blessing["blessed"]:
        common.log_stage(STAGE, f"model not blessed ({blessing.get('metric')} {blessing.get('value')} vs "
              f"{blessing.get('baseline')} {blessing.get('baseline_value')}); nothing pushed to "
              f"{spec.model_base_path}")
        return {"pushed": False, "version": None, "path": None}
    journal = os.path.join(spec.journal_dir, JOURNAL_FILE) if spec.journal_dir else None
    published = _published_before(journal, spec.export_dir)
    if published is not None:
        common.log_stage(STAGE, f"already pushed as version {published[0]} by an interrupted run: "
                                f"{published[1]}")
        return {"pushed": True, "version": published[0], "path": published[1]}
    os.makedirs(spec.model_base_path, exist_ok=True)
    version = next_version(spec.model_base_path)
    target = os.path.join(spec.model_base_path, str(version))
    # Hidden (not an integer): a polling model server never loads a half-copied folder.
    staging = os.path.join(spec.model_base_path, f".push-{version}")
    shutil.rmtree(staging, ignore_errors=True)
    if journal:
        os.makedirs(spec.journal_dir, exist_ok=True)
        with common.atomic_write(journal) as f:
            json.dump({"version": version, "path": target, "export_dir": spec.export_dir}, f)
    try:
        shutil.copytree(spec.export_dir, staging)
    except (OSError, shutil.Error) as e:
        shutil.rmtree(staging, ignore_errors=True)
        raise PushError(f"cannot copy {spec.export_dir} to {staging} (nothing was pushed): "
                        f"{_first_error(e)}") from e
    os.rename(staging, target)
    common.log_stage(STAGE, f"blessed model pushed as version {version}: {target}")
    return {"pushed": True, "version": version, "path": target}


def _first_error(error):
    """The first (source, target, reason) of a `shutil.Error`, or the error itself."""
    if isinstance(error, shutil.Error) and error.args and isinstance(error.args[0], list):
        source, target, reason = error.args[0][0]
        return f"{target}: {reason}"
    return str(error)


def _same_tree(a, b):
    """Whether folders `a` and `b` hold the same files with the same bytes."""
    compared = filecmp.dircmp(a, b)
    if compared.left_only or compared.right_only or compared.funny_files:
        return False
    _, mismatch, errors = filecmp.cmpfiles(a, b, compared.common_files, shallow=False)
    if mismatch or errors:
        return False
    return all(_same_tree(os.path.join(a, d), os.path.join(b, d)) for d in compared.common_dirs)


def _published_before(journal, export_dir):
    """(version, path) an interrupted push of this very export published, or None."""
    if not journal or not os.path.exists(journal):
        return None
    with open(journal, encoding="utf-8") as f:
        entry = json.load(f)
    path = entry.get("path")
    if (entry.get("export_dir") == export_dir and path and os.path.isdir(path)
            and _same_tree(export_dir, path)):
        return entry["version"], path
    return None
