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
import os
import shutil

from components import common
from components.evaluate import EvaluationError, read_blessing
from keras_bert.export import next_version


STAGE = "push"


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
    """

    export_dir: str
    blessing: str
    serving_base: str
    model_name: str

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
    os.makedirs(spec.model_base_path, exist_ok=True)
    version = next_version(spec.model_base_path)
    target = os.path.join(spec.model_base_path, str(version))
    staging = os.path.join(spec.model_base_path, f".push-{version}")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(spec.export_dir, staging)
    os.rename(staging, target)
    common.log_stage(STAGE, f"blessed model pushed as version {version}: {target}")
    return {"pushed": True, "version": version, "path": target}
