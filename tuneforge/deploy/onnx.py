"""ONNX export, checked against eager PyTorch, and int8 quantization with ONNX Runtime.

The exported graph is the task's inference graph (`Task.graph`): for images it takes uint8
NCHW pixels and does the scaling, normalisation and TTA inside, so production code only
decodes and resizes. The batch axis is dynamic."""
from __future__ import annotations

import logging
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..core.device import to_device
from ..errors import BundleError, ConfigError
from ..tasks.registry import Task

log = logging.getLogger("tuneforge")

OPSET = 17
ATOL = 1e-4


def onnx_providers(device: torch.device, explicit: bool = True) -> list:
    """ONNX Runtime's execution providers for `device`: CUDA's first (CPU after it, for the
    operators it lacks) on a CUDA device, the CPU's otherwise. A CUDA device asked for by name
    where onnxruntime has no CUDA provider (the CPU-only package) is refused; 'auto' falls back."""
    if device.type != "cuda":
        return ["CPUExecutionProvider"]
    import onnxruntime as ort
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        if explicit:
            raise ConfigError(f"--device {device}: this onnxruntime has no CUDAExecutionProvider (pip install "
                              f"onnxruntime-gpu), or run the model with --backend torch or --device cpu")
        log.warning("onnxruntime has no CUDA provider here: the ONNX model runs on the CPU")
        return ["CPUExecutionProvider"]
    return [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]


def session(path: str | Path, threads: int = 0, busy_wait: bool = True, providers: list | None = None):
    """An ONNX Runtime session (CPU unless `providers` says otherwise: `onnx_providers`) with all
    graph optimisations (conv+BN+activation fusion). `busy_wait=False` stops its worker threads
    spinning between operators: slower alone, but a server's event loop shares those cores (see
    serve/app.py)."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads or os.cpu_count() or 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # warnings about unused initializers are not the user's concern
    if not busy_wait:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=providers or ["CPUExecutionProvider"])


def run_session(sess, batch: dict[str, np.ndarray]) -> np.ndarray:
    """The graph's one output (`Task.output_name`: logits, or an aligned pair's embeddings)."""
    return sess.run(None, batch)[0]


@torch.inference_mode()
def eager_logits(graph: nn.Module, task: Task, batch: dict[str, np.ndarray],
                 device: torch.device | None = None) -> np.ndarray:
    """The torch graph's output on a numpy batch, computed on `device` (default: the CPU)."""
    inputs = [torch.from_numpy(np.ascontiguousarray(batch[n])) for n in task.input_names]
    if device is not None and device.type != "cpu":
        inputs = to_device(inputs, device)
    return graph(*inputs).float().cpu().numpy()


def export_onnx(model: nn.Module, task: Task, path: str | Path, check: dict[str, np.ndarray],
                atol: float = ATOL) -> dict:
    """Write `path` and prove it: ONNX Runtime's logits on the real inputs `check` (one batch,
    also run one example at a time to prove the dynamic batch axis) must equal eager
    PyTorch's within `atol`, else the file is removed and BundleError raised."""
    path = Path(path)
    graph = task.graph(model).eval()
    n = len(next(iter(check.values())))
    trace = {k: torch.from_numpy(np.ascontiguousarray(v[: min(2, n)])) for k, v in check.items()}
    args = tuple(trace[k] for k in task.input_names)
    with warnings.catch_warnings():
        # The TorchScript exporter is marked deprecated in favour of torch.export (dynamo). It is
        # kept on purpose: it exports these CNNs in well under a second where dynamo takes ~10 s
        # even for a toy model, and its graphs run as fast in ONNX Runtime.
        warnings.simplefilter("ignore")
        torch.onnx.export(graph, args, str(path), dynamo=False, opset_version=OPSET,
                          input_names=list(task.input_names), output_names=[task.output_name],
                          dynamic_axes=task.dynamic_axes(), do_constant_folding=True)
    sess = session(path)
    want = eager_logits(graph, task, check)
    got = run_session(sess, check)
    one = np.concatenate([run_session(sess, {k: v[i:i + 1] for k, v in check.items()}) for i in range(min(n, 4))])
    diff = max(float(np.abs(got - want).max()), float(np.abs(one - want[: len(one)]).max()))
    if not np.isfinite(diff) or diff > atol:
        path.unlink(missing_ok=True)
        raise BundleError(f"ONNX export of {path.name} does not match PyTorch: max |difference| {diff:.3g} > {atol} "
                          "on real inputs; the model uses an operation ONNX does not reproduce. Export with "
                          "--format safetensors instead")
    log.info("ONNX export checked on %d real inputs: max |logit difference| %.2g", n, diff)
    return {"opset": OPSET, "max_abs_diff": diff, "checked_on": n}


class _Reader:
    """Feeds calibration batches to ONNX Runtime's static quantizer."""

    def __init__(self, batches: list[dict[str, np.ndarray]]):
        self._it = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:  # pragma: no cover - only some calibrators call it
        pass


def quantize_int8(fp32: str | Path, out: str | Path, calibration: list[dict[str, np.ndarray]] | None) -> dict:
    """int8 weights and activations (QDQ, per-channel weights, MinMax calibration on
    `calibration`, real training images) or, without calibration data, dynamic quantization
    (int8 weights only). Static is what makes convolutions faster on a CPU; dynamic is the
    fallback that needs no data."""
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType, quant_pre_process,
                                          quantize_dynamic, quantize_static)
    out = Path(out)
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        # Shape inference + graph optimisation first, as ONNX Runtime's quantization guide asks:
        # it folds BatchNorm into the convolutions so one scale covers each fused layer.
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        if calibration:
            # uint8 weights (U8U8), not int8: on x86 CPUs without VNNI, ONNX Runtime's U8S8 kernels
            # saturate 16-bit intermediate sums, which cost EfficientNet-Lite0 4.4 points of
            # CIFAR-10 accuracy here; U8U8 lost 0.6 (BENCHMARKS.md). The file may run on any CPU.
            quantize_static(str(pre), str(out), _Reader(calibration), quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QUInt8,
                            calibrate_method=CalibrationMethod.MinMax)
            method = "static"
        else:
            quantize_dynamic(str(pre), str(out), weight_type=QuantType.QInt8)
            method = "dynamic"
    return {"method": method, "calibration_examples": sum(len(next(iter(b.values()))) for b in calibration or [])}


def accuracy(sess, inputs: dict[str, np.ndarray], labels: np.ndarray, batch_size: int = 256) -> float:
    """Top-1 accuracy of an ONNX session over a whole labelled set."""
    n = len(labels)
    right = 0
    for i in range(0, n, batch_size):
        logits = run_session(sess, {k: v[i:i + batch_size] for k, v in inputs.items()})
        right += int((logits.argmax(1) == labels[i:i + batch_size]).sum())
    return right / max(n, 1)
