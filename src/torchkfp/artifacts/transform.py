"""The Transform artifact: ``transform.json`` (a :class:`~torchkfp.transform.FittedTransform`,
fitted on the training split) plus ``metadata.json`` and the ``_SUCCESS`` marker. The model
artifact carries a copy of the same file.

:func:`load_file` reads either copy and refuses one that cannot be applied as it stands
(:func:`problems`: NaN or zero scales, duplicate or non-string vocabulary entries, a target
without two classes, ...), with an ArtifactError naming the file.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from torchkfp.artifacts.folder import begin, commit, read_json_object, require
from torchkfp.errors import ArtifactError
from torchkfp.labels import TASKS
from torchkfp.transform import FittedTransform

KIND = "transform"
FILE = "transform.json"


def write(path: str | os.PathLike, tf: FittedTransform, metadata: dict[str, Any]) -> Path:
    out = begin(path)
    tf.save(out / FILE)
    commit(out, KIND, metadata)
    return out


def read(path: str | os.PathLike) -> FittedTransform:
    require(path, KIND)
    return load_file(Path(path) / FILE, f"transform artifact {str(path)!r}")


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def problems(tf: FittedTransform) -> list[str]:
    """What makes ``tf`` unusable (empty: nothing); each names the feature or field."""
    out: list[str] = []
    t = tf.target
    if t.task not in TASKS:
        out.append(f"target task {t.task!r} is not one of {list(TASKS)}")
    if not isinstance(t.label, str) or not t.label:
        out.append(f"target label {t.label!r} is not a column name")
    if t.task in ("binary", "multiclass"):
        classes = t.classes if isinstance(t.classes, list) else None
        if classes is None or len(classes) < 2:
            out.append(f"{t.task} target has classes {t.classes!r}: it needs at least two")
        elif t.task == "binary" and len(classes) != 2:
            out.append(f"binary target has {len(classes)} classes, not 2")
        elif len({repr(c) for c in classes}) != len(classes):
            out.append("target classes repeat a value")
    elif t.task == "regression" and not (_number(t.mean) and _number(t.std) and t.std > 0):
        out.append(f"regression target has mean={t.mean!r}, std={t.std!r}: need finite, std > 0")
    for name, s in tf.numeric.items():
        if not (_number(s.mean) and _number(s.std) and s.std > 0):
            out.append(
                f"numeric feature {name!r} has mean={s.mean!r}, std={s.std!r}: both must be "
                "finite numbers and std > 0"
            )
        if not isinstance(s.add_missing_flag, bool):
            out.append(f"numeric feature {name!r} has add_missing_flag={s.add_missing_flag!r}")
    for name, vocab in tf.vocab.items():
        if not all(isinstance(v, str) for v in vocab):
            out.append(f"vocabulary of {name!r} holds values that are not strings")
        elif len(set(vocab)) != len(vocab):
            out.append(f"vocabulary of {name!r} repeats a value")
    both = sorted(set(tf.numeric) & set(tf.vocab))
    if both:
        out.append(f"feature(s) {both} are both numeric and categorical")
    return out


def load_file(path: str | os.PathLike, what: str) -> FittedTransform:
    """The transform in ``path`` (either artifact's copy); ``what`` names the artifact in
    errors. ArtifactError if the file is not a transform or :func:`problems` finds any."""
    p = Path(path)
    raw = read_json_object(p, what)
    for part, kind in (("numeric", dict), ("vocab", list)):
        section = raw.get(part, {})
        if not isinstance(section, dict) or not all(isinstance(v, kind) for v in section.values()):
            raise ArtifactError(
                f"{what}: {p.name} is not a fitted transform ({part!r} must map each feature "
                f"to a {'mapping of statistics' if kind is dict else 'list of values'})"
            )
    try:
        tf = FittedTransform.from_dict(raw)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        detail = f"missing field {e}" if isinstance(e, KeyError) else str(e).splitlines()[0]
        raise ArtifactError(f"{what}: {p.name} is not a fitted transform ({detail})") from None
    found = problems(tf)
    if found:
        raise ArtifactError(f"{what}: {p.name} cannot be applied: {'; '.join(found[:5])}")
    return tf
