"""The rows of a bench: every way to run one model's per-frame networks on this machine.

A row is a callable uint8 crops (N, S, S, 3) -> uint8 translations, the same path the live
runtime takes (v1: the generator; v2: the FAN masks when w_hpf > 0, and the generator with a
fixed style). Rows:
  - PyTorch fp32 eager (the reference every row's accuracy is measured against), PyTorch bf16
    autocast (what a PyTorch user picks on a CPU with BF16), optionally torch.compile;
  - this project's engines: every available target and precision (``Translator.create``);
  - the peers, made from the same exported fp32 graph and calibration frames: NNCF's int8 for
    OpenVINO, ONNX Runtime's own quantize_static int8 for ONNX Runtime. Like the project, only
    the generator runs in int8; the FAN stays fp32 (the project's fp32 engine of that target).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

PROJECT_PRECISIONS = ("fp32", "fp16", "int8")


@dataclass
class Row:
    label: str
    runtime: str                    # torch | onnxruntime | openvino | tensorrt
    precision: str                  # what runs: fp32, bf16, f16, int8
    kind: str                       # pytorch | project | peer
    call: Callable[[np.ndarray], np.ndarray] | None = None
    build_s: float | None = None
    rss_mb: float | None = None     # resident memory the row's build added
    note: str = ""
    skipped: str | None = None      # why the row has no figures
    ceiling: tuple[str, str] | None = None
    times: dict[int, list[float]] = field(default_factory=dict)   # batch -> ms per call
    accuracy: dict = field(default_factory=dict)

    def key(self) -> str:
        return f"{self.kind}:{self.runtime}:{self.precision}:{self.label}"


def set_target(translator) -> None:
    """A fixed translation target: v1 the first attribute on, v2 the last domain, style seed 1."""
    if translator.arch == "v1":
        translator.set_labels([1] + [0] * (len(translator.domains) - 1))
    else:
        translator.set_domain(translator.domains[-1])
        translator.set_style(seed=1)


def _rss() -> float:
    from stargan_rt.stream.stats import rss_mb

    return rss_mb()


def _timed(row: Row, make: Callable[[], Callable]) -> Row:
    """Fill row.call by ``make()``, recording build time and RSS growth; failures -> skipped."""
    rss = _rss()
    start = time.perf_counter()
    try:
        row.call = make()
    except Exception as exc:  # noqa: BLE001 - one engine failing must not end the bench
        row.skipped = f"{type(exc).__name__}: {str(exc)[:300]}"
        return row
    row.build_s = round(time.perf_counter() - start, 2)
    row.rss_mb = round(max(0.0, _rss() - rss), 1)
    return row


# -- PyTorch -----------------------------------------------------------------------------------
def torch_rows(bundle_path: Path, compile_: bool = False) -> list[Row]:
    rows = []

    def eager():
        from stargan_rt.reference import TorchTranslator

        translator = TorchTranslator(bundle_path)
        set_target(translator)
        return translator

    rows.append(_timed(Row("PyTorch fp32 eager", "torch", "fp32", "pytorch",
                           ceiling=("torch", "fp32")), eager))

    def autocast():
        import torch

        translator = eager()
        plain = translator.translate_float

        def translate(x):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return plain(x).float()
        translator.translate_float = translate
        return translator

    rows.append(_timed(Row("PyTorch bf16 autocast", "torch", "bf16", "pytorch",
                           ceiling=("torch", "bf16")), autocast))
    if compile_:
        def compiled():
            import torch

            translator = eager()
            translator.generator = torch.compile(translator.generator)
            if getattr(translator, "fan", None) is not None:
                translator.fan = torch.compile(translator.fan)
            probe = np.zeros((1, translator.image_size, translator.image_size, 3), np.uint8)
            translator(probe)  # compiles now, so the build time holds it
            return translator

        rows.append(_timed(Row("PyTorch fp32 torch.compile", "torch", "fp32", "pytorch",
                               ceiling=("torch", "fp32")), compiled))
    return rows


# -- this project ------------------------------------------------------------------------------
def _ceiling(target: str, precision: str, engine) -> tuple[str, str]:
    if precision == "int8":
        return target, "int8"
    if target == "openvino" and precision == "fp16":
        hint = getattr(engine, "hint", "f32")
        return target, "bf16" if hint == "bf16" else "fp32"
    return target, "fp32"


def runs_as(target: str, precision: str, engine) -> str:
    if target == "openvino" and precision == "fp16":
        return {"bf16": "bf16", "f16": "f16"}.get(getattr(engine, "hint", ""), "fp32")
    return precision


def _log_built(row: Row, log) -> None:
    if log:
        log(f"built {row.label}: {row.build_s} s" if row.skipped is None
            else f"{row.label}: skipped ({row.skipped})")


def project_rows(bundle_path: Path, targets: list[str], precisions: list[str], cache_dir: Path,
                 calib=None, log=None) -> tuple[list[Row], dict]:
    """One row per (target, precision); returns (rows, {target: fp32 Translator})."""
    from stargan_rt.runtime import Translator

    rows, fp32 = [], {}
    quiet = (lambda m: None)
    for target in targets:
        for precision in precisions:
            holder = {}

            def make(target=target, precision=precision, holder=holder):
                translator = Translator.create(str(bundle_path), target=target,
                                               precision=precision, cache_dir=cache_dir,
                                               log=quiet, calib=calib)
                set_target(translator)
                holder["t"] = translator
                return translator

            row = _timed(Row(f"{target} {precision} (this project)", target, precision,
                             "project"), make)
            translator = holder.get("t")
            if translator is not None:
                engine = translator.engines["generator"]
                row.precision = runs_as(target, precision, engine)
                row.ceiling = _ceiling(target, precision, engine)
                row.note = engine.describe()
                if precision == "fp32":
                    fp32[target] = translator
            rows.append(row)
            _log_built(row, log)
    return rows, fp32


# -- the peers ---------------------------------------------------------------------------------
def peer_rows(bundle_path: Path, fp32: dict, fp32_graphs: dict[str, Path], frames: np.ndarray,
              workdir: Path, log=None) -> list[Row]:
    """NNCF int8 on OpenVINO and ONNX Runtime quantize_static int8, from the fp32 generator
    graph the project exported, calibrated on the same frames."""
    import onnx

    from stargan_rt.export.calibration import calibration_feeds
    from stargan_rt.runtime import Translator

    rows = []
    source = fp32_graphs["generator"]
    feeds_holder: dict = {}

    def feeds():
        if "f" not in feeds_holder:
            model = onnx.load(str(source), load_external_data=False)
            feeds_holder["f"] = calibration_feeds(source, model, frames)
        return feeds_holder["f"]

    def with_generator(target: str, engine):
        base = fp32[target]
        translator = Translator(base.bundle, target, "int8",
                                {**base.engines, "generator": engine})
        set_target(translator)
        return translator

    if "openvino" in fp32:
        from stargan_rt.export.int8_nncf import nncf_available

        why = nncf_available()
        row = Row("openvino int8 by NNCF (peer)", "openvino", "int8", "peer",
                  ceiling=("openvino", "int8"))
        if why:
            row.skipped = why
        else:
            def make_nncf():
                import openvino as ov

                from stargan_rt.backends.openvino import OvEngine
                from stargan_rt.export.int8_nncf import nncf_quantize

                model = nncf_quantize(source, feeds())
                compiled = ov.Core().compile_model(model, "CPU",
                                                   {"INFERENCE_PRECISION_HINT": "f32"})
                return with_generator("openvino", OvEngine(compiled, "int8", None))
            _timed(row, make_nncf)
            row.note = "nncf.quantize defaults, f32 hint for the float parts"
        rows.append(row)
        _log_built(row, log)
    if "onnxruntime" in fp32:
        row = Row("onnxruntime int8 by quantize_static (peer)", "onnxruntime", "int8", "peer",
                  ceiling=("onnxruntime", "int8"))

        def make_ort():
            from stargan_rt.backends.onnxruntime import OrtEngine
            from stargan_rt.export.int8_ort import quantize_defaults

            out = quantize_defaults(source, workdir / f"{source.stem}.ort-peer-int8.onnx",
                                    feeds())
            return with_generator("onnxruntime", OrtEngine(out, "int8"))
        _timed(row, make_ort)
        row.note = "QDQ, uint8 activations, per-channel int8 weights, MinMax"
        rows.append(row)
        _log_built(row, log)
    return rows
