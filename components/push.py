"""Push stage: copy a blessed export into the serving base path as a new version.

Only a model whose Evaluate marker says BLESSED is pushed. The new version number is
one past the newest already served, and the copy is published by an atomic rename so a
polling model server never loads a half-copied folder.
"""

import dataclasses
import os
import shutil

from keras_bert.export import next_version


class PushError(ValueError):
    """The export or blessing to push is missing."""


@dataclasses.dataclass(frozen=True)
class PushSpec:
    """The Push stage.

    Args:
        export_dir: the exported version folder (holding saved_model.pb).
        evaluation_dir: the Evaluate output folder (holding BLESSED or NOT_BLESSED).
        serving_base: the model server's base path for this model (`.../<model_name>`).
    """

    export_dir: str
    evaluation_dir: str
    serving_base: str


def run(spec):
    """Pushes if blessed; returns {"pushed": bool, "version": int|None, "path": str|None}."""
    if not os.path.exists(os.path.join(spec.export_dir, "saved_model.pb")):
        raise PushError(f"{spec.export_dir}: no saved_model.pb to push")
    blessed = os.path.exists(os.path.join(spec.evaluation_dir, "BLESSED"))
    if not blessed:
        if not os.path.exists(os.path.join(spec.evaluation_dir, "NOT_BLESSED")):
            raise PushError(f"{spec.evaluation_dir}: no blessing decision (run Evaluate first)")
        print(f"[Push] model not blessed; nothing pushed to {spec.serving_base}", flush=True)
        return {"pushed": False, "version": None, "path": None}
    os.makedirs(spec.serving_base, exist_ok=True)
    version = next_version(spec.serving_base)
    target = os.path.join(spec.serving_base, str(version))
    staging = os.path.join(spec.serving_base, f".push-{version}")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(spec.export_dir, staging)
    os.rename(staging, target)
    print(f"[Push] blessed model pushed as version {version}: {target}", flush=True)
    return {"pushed": True, "version": version, "path": target}
