"""What the Vertex AI commands (``submit``, ``schedule create|list|pause|resume|delete``) share:
the compiled pipeline they send, and one way to call into :mod:`torchkfp.vertex` (the SDK's logs
kept off stdout, errors turned into exit codes)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from torchkfp.cli.options import fail

if TYPE_CHECKING:
    from torchkfp.config import Config

T = TypeVar("T")


def pipeline_template(
    cfg: Config, template: str | None, workdir: str, pipeline: str = "training"
) -> str:
    """The compiled pipeline: ``template`` if given, else the Vertex pipeline compiled from
    ``cfg`` into ``workdir``, with the effective images (the config's, else
    ``TORCHKFP_*_IMAGE`` now: :func:`torchkfp.images.with_images`) on its tasks and in its
    ``vertex_config``. ``pipeline``: ``training`` (the DAG) or ``batch`` (batch scoring)."""
    if template:
        return template
    from torchkfp.images import with_images

    if pipeline == "batch":
        from torchkfp.config.batch import batch_section
        from torchkfp.pipelines.batch_scoring import compile_batch_pipeline

        path = Path(workdir) / "batch_scoring_vertex.yaml"
        return compile_batch_pipeline("vertex", with_images(cfg), path, batch_section(cfg))
    from torchkfp.pipelines.compiler import compile_pipeline

    path = Path(workdir) / "flights_delay_vertex.yaml"
    return compile_pipeline("vertex", with_images(cfg), path)


def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call into the Vertex library; exit 2 on a config problem, 1 on a failed request or run."""
    from torchkfp.config import ConfigError
    from torchkfp.vertex.runs import SubmitError

    _sdk_logs_to_stderr()
    try:
        return fn(*args, **kwargs)
    except ConfigError as e:
        fail(str(e), 2)
    except SubmitError as e:
        fail(str(e), 1)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time of the record."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def _sdk_logs_to_stderr() -> None:
    """The aiplatform SDK logs progress to stdout, where these commands print their JSON result:
    send those logs to stderr. A handler on the SDK's parent logger stops the SDK from adding
    its own stdout handlers; loggers it already made are pointed at stderr."""
    parent = logging.getLogger("google.cloud.aiplatform")
    if not any(isinstance(h, _StderrHandler) for h in parent.handlers):
        parent.addHandler(_StderrHandler())
        parent.setLevel(logging.INFO)
    for name, lg in list(logging.root.manager.loggerDict.items()):
        if name.startswith("google.cloud.aiplatform.") and isinstance(lg, logging.Logger):
            for h in list(lg.handlers):
                if type(h) is logging.StreamHandler:  # the SDK's own (stdout) handler
                    lg.removeHandler(h)  # its records now reach the parent's stderr handler
