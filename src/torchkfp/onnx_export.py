"""The model as ONNX: export at training time, the parity check, and running it on ONNX Runtime.

:func:`export_checked` (the trainer, global rank 0, on the weights it ships) exports the
network with ``torch.onnx.export(dynamo=True)`` (a dynamic batch dimension; inputs ``x_num``
float32 [N, F] and ``x_cat`` int64 [N, C], output ``logits``), runs the export on ONNX Runtime
over the test split's features (:data:`PARITY_MAX_ROWS` rows at most, evenly spaced; the
validation split's when the features artifact has no test split) and compares what serving
would return with each runtime: probabilities for classification (sigmoid / softmax of the
logits), the model's output for regression (the standardized value; in the label's units the
difference is that times the label's standard deviation, recorded too). An export whose
largest absolute difference is above :data:`PARITY_TOLERANCE` is dropped, as is a network the
exporter cannot trace (a user factory's data-dependent Python control flow, an operator ONNX
lacks): training still succeeds and the model artifact records ``onnx: {"exported": false,
"reason": ...}``; serving on ONNX Runtime then refuses that model at startup with the reason.

:class:`OnnxModel` runs an export with ONNX Runtime (CPU) and gives logits shaped as
:func:`torchkfp.model.output_logits` gives them; :func:`probabilities` turns logits into what
the predictor returns. torch, onnx and onnxruntime are imported where they are used.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

INPUT_NAMES = ("x_num", "x_cat")
OUTPUT_NAME = "logits"
PARITY_TOLERANCE = 1e-5
"""The largest absolute difference allowed between PyTorch and ONNX Runtime (probabilities;
regression: the model's standardized output)."""
PARITY_MAX_ROWS = 10_000
"""Rows of the split the parity check compares at most (evenly spaced over a larger split): a
numerical check, not a statistical one; 50,000 rows would add seconds to every training."""
EXAMPLE_ROWS = 64
"""Rows of the example input the exporter traces with (at least 2: a batch of 1 would be
specialized to a fixed size)."""
EXPORTER = "torch.onnx.export(dynamo=True)"


@dataclass
class OnnxExport:
    """The result of :func:`export_checked`: the serialized model (None: not exported) and
    what the model artifact's metadata records under ``onnx``."""

    model: bytes | None
    info: dict[str, Any] = field(default_factory=dict)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_QUIET_LOGGERS = ("torch", "torch.onnx", "torch.export", "torch._dynamo", "torch.fx")


def _first_line(e: BaseException, n: int = 300) -> str:
    text = (_ANSI.sub("", str(e)).strip().splitlines() or [""])[0]
    return f"{type(e).__name__}: {text[:n]}"


def _describe_failure(e: BaseException) -> str:
    """The exporter's error and its root cause (the exporter wraps it in advice about filing
    PyTorch issues), one line each."""
    root = e
    seen = {id(e)}
    while (nxt := root.__cause__ or root.__context__) is not None and id(nxt) not in seen:
        seen.add(id(nxt))
        root = nxt
    head = _first_line(e, 120)
    step = re.search(r"step \d/\d", head)
    where = f"{type(e).__name__}, {step.group(0)}" if step else type(e).__name__
    return head if root is e else f"{where}: {_first_line(root)}"


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter's warnings, log lines and printed graphs (torchvision operators it skips,
    deprecations inside torch, the traced program when tracing fails) say nothing the
    recorded reason does not: kept out of the training log."""
    loggers = [logging.getLogger(n) for n in _QUIET_LOGGERS]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.CRITICAL)
        sink = io.StringIO()
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(sink),
            contextlib.redirect_stderr(sink),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def export_model(module: torch.nn.Module, x_num: torch.Tensor, x_cat: torch.Tensor) -> bytes:
    """``module`` (in eval mode) as a serialized ONNX model with a dynamic batch dimension,
    traced on the example inputs (at least 2 rows). Raises what the exporter raises."""
    import torch
    from torch.export import Dim

    batch = Dim("batch")
    with _quiet_exporter(), torch.no_grad():
        program = torch.onnx.export(
            module,
            (x_num, x_cat),
            dynamo=True,
            dynamic_shapes=({0: batch}, {0: batch}),
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            optimize=False,  # ONNX Runtime optimizes the graph itself; this saves 1-3 s
            verbose=False,
        )
        if program is None:  # the signature allows it; dynamo=True always returns a program
            raise RuntimeError("torch.onnx.export returned no program")
        return program.model_proto.SerializeToString()


def opset(model: bytes) -> int | None:
    """The default-domain ONNX opset version of a serialized model."""
    import onnx

    proto = onnx.load_model_from_string(model)
    return next((int(o.version) for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)


def probabilities(logits: np.ndarray, task: str) -> np.ndarray:
    """What a predictor returns for the normalized logits ([N] or [N, K]) of a ``task`` model:
    binary sigmoid, multiclass softmax over classes, regression the output itself; float64."""
    x = np.asarray(logits, dtype=np.float64)
    if task == "binary":
        e = np.exp(-np.abs(x))  # never overflows
        return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    if task == "multiclass":
        z = np.exp(x - x.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)
    return x


def _torch_outputs(module: torch.nn.Module, x_num: torch.Tensor, x_cat: torch.Tensor, task: str):
    """PyTorch's probabilities as :class:`torchkfp.predictor.Predictor` computes them."""
    import torch

    from torchkfp.model import output_logits

    with torch.inference_mode():
        logits = output_logits(module, x_num, x_cat)
        if task == "binary":
            out = torch.sigmoid(logits)
        elif task == "multiclass":
            out = torch.softmax(logits, dim=1)
        else:
            out = logits
    return out.double().numpy()


def export_checked(
    module: torch.nn.Module,
    task: str,
    x_num: torch.Tensor,
    x_cat: torch.Tensor,
    *,
    split: str,
    label_std: float = 1.0,
    tolerance: float = PARITY_TOLERANCE,
) -> OnnxExport:
    """Export ``module`` (eval mode, CPU) and check it against PyTorch on ``x_num``/``x_cat``
    (the features of ``split``, at most :data:`PARITY_MAX_ROWS` rows used). Never raises for
    a model that cannot be exported or fails the check: the result then has no model and
    ``info["reason"]`` says why (module docstring)."""
    import torch

    t0 = time.perf_counter()
    info: dict[str, Any] = {"exported": False, "exporter": EXPORTER}
    split_rows = int(len(x_num))
    if split_rows > PARITY_MAX_ROWS:  # evenly spaced: every part of a temporal split
        pick = torch.linspace(0, split_rows - 1, PARITY_MAX_ROWS).round().long()
        x_num, x_cat = x_num[pick], x_cat[pick]
    x_num, x_cat = x_num.cpu(), x_cat.cpu()
    if len(x_num) >= 2:
        ex_num, ex_cat = x_num[:EXAMPLE_ROWS], x_cat[:EXAMPLE_ROWS]
    else:  # too few rows to trace with: zeros of the right shape
        ex_num = torch.zeros((2, x_num.shape[1]), dtype=torch.float32)
        ex_cat = torch.zeros((2, x_cat.shape[1]), dtype=torch.int64)
    try:
        model = export_model(module, ex_num, ex_cat)
    except Exception as e:  # an exporter failure is the model's trait, not a training failure
        info.update(
            reason=f"the network cannot be exported to ONNX ({_describe_failure(e)})",
            seconds=round(time.perf_counter() - t0, 3),
        )
        return OnnxExport(None, info)
    info["export_seconds"] = round(time.perf_counter() - t0, 3)
    info["opset"] = opset(model)
    check: dict[str, Any] = {
        "split": split,
        "rows": int(len(x_num)),
        "split_rows": split_rows,
        "tolerance": tolerance,
    }
    check["compared"] = "value (standardized)" if task == "regression" else "probability"
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
        rows_num, rows_cat = (x_num, x_cat) if len(x_num) else (ex_num, ex_cat)
        want = _torch_outputs(module, rows_num, rows_cat, task)
        got = probabilities(OnnxModel(model)(rows_num.numpy(), rows_cat.numpy()), task)
        if got.shape != want.shape:
            raise ValueError(
                f"ONNX Runtime gives shape {list(got.shape)}, PyTorch {list(want.shape)}"
            )
        diff = float(np.max(np.abs(got - want))) if got.size else 0.0
    except Exception as e:
        info.update(
            reason=f"the ONNX export does not run on ONNX Runtime ({_first_line(e)})",
            seconds=round(time.perf_counter() - t0, 3),
        )
        return OnnxExport(None, info)
    check["max_abs_diff"] = diff if np.isfinite(diff) else None
    if task == "regression":
        check["max_abs_diff_label_units"] = diff * abs(label_std) if np.isfinite(diff) else None
    check["passed"] = bool(np.isfinite(diff) and diff <= tolerance)
    info["parity"] = check
    info["seconds"] = round(time.perf_counter() - t0, 3)
    if not check["passed"]:
        info["reason"] = (
            f"parity check failed: ONNX Runtime differs from PyTorch by up to {diff:.3g} "
            f"({check['compared']}, {check['rows']} {split} rows), more than {tolerance:g}; "
            "the export was dropped (serve this model on PyTorch)"
        )
        return OnnxExport(None, info)
    info["exported"] = True
    return OnnxExport(model, info)


class OnnxModel:
    """An ONNX export run by ONNX Runtime on CPU: ``model(x_num, x_cat)`` -> logits (numpy
    float32, ``[N]`` for one output, ``[N, K]`` otherwise). ``threads``: intra-op threads
    (None: ONNX Runtime's default, all cores)."""

    def __init__(self, model: bytes, threads: int | None = None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads is not None:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        opts.log_severity_level = 3  # errors only
        self.session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
        names = [i.name for i in self.session.get_inputs()]
        if names != list(INPUT_NAMES):
            raise ValueError(f"the ONNX model's inputs are {names}, expected {list(INPUT_NAMES)}")
        self._output = self.session.get_outputs()[0].name

    def __call__(self, x_num: np.ndarray, x_cat: np.ndarray) -> np.ndarray:
        (out,) = self.session.run([self._output], {"x_num": x_num, "x_cat": x_cat})
        if out.ndim == 2 and out.shape[1] == 1:
            out = out[:, 0]
        return out
