"""The Triton Python-backend model of a ``--backend python`` repository: one network of a bundle
run by stargan-rt's own engine (OpenVINO or ONNX Runtime) on the graph file in the model's
version folder, so a served model gives what the local engine of the same graph gives.

Triton hands ``execute`` every request its dynamic batcher gathered; they are run as one batch
and split back. Tensors cross the Python backend through DLPack, not ``as_numpy()`` /
``pb_utils.Tensor(name, array)``: the backend stubs of the nvidia-pytriton wheel are built
against numpy 1.x, and with numpy 2 those two read and write wrong bytes (all-equal inputs,
empty outputs; seen with tritonserver 2.51), while DLPack carries the buffer as it is.

Imported only inside tritonserver's Python stub (``triton_python_backend_utils`` exists there).
"""
from __future__ import annotations

import ctypes
import json
from pathlib import Path

import numpy as np

PARAM_PREFIX = "stargan_rt."   # repository.PARAM_PREFIX (not imported: no torch/onnx here)


class _Capsule:
    """A DLPack capsule as the object numpy.from_dlpack and pb_utils.Tensor.from_dlpack ask
    for."""

    def __init__(self, capsule):
        self.capsule = capsule

    def __dlpack__(self, **_):
        return self.capsule

    def __dlpack_device__(self):
        return (1, 0)  # kDLCPU, device 0


# The backend marks a capsule it consumed "used_dlpack", not DLPack's "used_dltensor"; numpy's
# capsule destructor then fails to read it and prints a traceback for every output tensor
# (harmless: the consumer owns the buffer). Renaming it the standard way keeps the log clean.
_USED = ctypes.c_char_p(b"used_dltensor")  # lives as long as the module: capsules keep the pointer
_set_name = ctypes.pythonapi.PyCapsule_SetName
_set_name.argtypes = [ctypes.py_object, ctypes.c_char_p]
_set_name.restype = ctypes.c_int


def _mark_consumed(capsule) -> None:
    if _set_name(capsule, _USED) != 0:
        raise RuntimeError("could not mark a DLPack capsule as consumed")


class TritonPythonModel:
    def initialize(self, args) -> None:
        from stargan_rt.backends import get_engine
        from stargan_rt.backends.cache import EngineCache

        config = json.loads(args["model_config"])
        params = {k[len(PARAM_PREFIX):]: v["string_value"]
                  for k, v in config.get("parameters", {}).items() if k.startswith(PARAM_PREFIX)}
        folder = Path(args["model_repository"]) / args["model_version"]
        self.network = params["network"]
        self.outputs = [o["name"] for o in config["output"]]
        # compiled into the user's engine cache, like a local build (reused across restarts)
        self.engine, _ = get_engine(params["target"], folder / params["graph"], self.network,
                                    params["network_precision"], EngineCache(), log=print)

    def execute(self, requests):
        import triton_python_backend_utils as pb_utils

        names = [spec.name for spec in self.engine.inputs]
        try:
            feeds_per_request = [
                {n: np.from_dlpack(_Capsule(pb_utils.get_input_tensor_by_name(r, n).to_dlpack()))
                 for n in names} for r in requests]
            sizes = [len(f[names[0]]) for f in feeds_per_request]
            batch = feeds_per_request[0] if len(requests) == 1 else {  # no copy for one request
                n: np.concatenate([f[n] for f in feeds_per_request]) for n in names}
            result = self.engine.run(batch)
        except Exception as exc:  # answer every request with the reason, keep serving
            error = pb_utils.TritonError(f"{self.network}: {exc}")
            return [pb_utils.InferenceResponse(output_tensors=[], error=error) for _ in requests]
        responses, start = [], 0
        for size in sizes:
            # a capsule, as the backend's docs pass one: given the array itself, it first tries
            # a capsule name it cannot read and logs a traceback per tensor
            tensors = []
            for name in self.outputs:
                capsule = np.ascontiguousarray(result[name][start:start + size]).__dlpack__()
                tensors.append(pb_utils.Tensor.from_dlpack(name, capsule))
                _mark_consumed(capsule)
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += size
        return responses

    def finalize(self) -> None:
        self.engine.close()
