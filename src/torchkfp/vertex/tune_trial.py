"""One trial of a Vertex AI hyperparameter tuning job (:mod:`torchkfp.vertex.tuning`):

    python -m torchkfp.vertex.tune_trial --features DIR --transform DIR --dataset DIR
        --metric roc_auc --train-settings JSON [--threshold 0.5] --learning_rate=0.003 ...

trains with the base ``train`` settings plus the drawn values (every ``--<setting>=<value>``
Vertex AI adds), writes the model to ``AIP_MODEL_DIR`` (the trial's folder that Vertex sets, a
gs:// URI read through the GCS FUSE mount; else a temporary folder), scores it on the
validation rows and reports the metric for the tuning service
(:func:`torchkfp.tuning.report_hypertune_metric`). Prints one JSON line. Exit 2 on bad
arguments, 1 when training fails.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any


def parse(argv: list[str]) -> tuple[argparse.Namespace, dict[str, Any]]:
    from torchkfp.tuning import parse_trial_value

    ap = argparse.ArgumentParser(prog="python -m torchkfp.vertex.tune_trial")
    for name in ("features", "transform", "dataset", "metric", "train-settings"):
        ap.add_argument(f"--{name}", required=True)
    ap.add_argument("--threshold", type=float, default=0.5)
    known, rest = ap.parse_known_args(argv)
    drawn: dict[str, Any] = {}
    for arg in rest:
        key, eq, text = arg.partition("=")
        if not key.startswith("--") or not eq:
            ap.error(f"unexpected argument {arg!r}: the drawn values come as --setting=value")
        drawn[key[2:]] = parse_trial_value(key[2:], text)
    return known, drawn


def main(argv: list[str] | None = None) -> int:
    from torchkfp.artifacts import gcs_to_fuse
    from torchkfp.config import ConfigError, TrainConfig
    from torchkfp.errors import USER_ERRORS
    from torchkfp.training import launch
    from torchkfp.tuning import report_hypertune_metric, validation_rows, validation_score

    try:
        args, drawn = parse(sys.argv[1:] if argv is None else argv)
        tc = TrainConfig.from_dict({**json.loads(args.train_settings), **drawn})
    except (ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    aip = os.environ.get("AIP_MODEL_DIR")
    model = Path(gcs_to_fuse(aip)) if aip else Path(tempfile.mkdtemp(prefix="tune-trial-"))
    try:
        r = launch(tc, args.features, args.transform, model, tensorboard=False)
        value = validation_score(model, validation_rows(args.dataset), args.metric, args.threshold)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    path = report_hypertune_metric(args.metric, value, r.epochs_run)
    print(
        json.dumps(
            {
                "metric": args.metric,
                "value": value,
                "params": drawn,
                "model": str(model),
                "reported_to": path,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
