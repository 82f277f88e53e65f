"""ONNX graph utilities shared by the graph passes (fp16, int8, AdaIN fusion): node naming,
topological order, dead-node pruning, constants as initializers, and running a graph on ONNX
Runtime's CPU provider."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx


def name_nodes(model: onnx.ModelProto) -> None:
    """Give every node a unique name (``<op>_<index>`` where it has none or a taken one)."""
    seen = set()
    for index, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{index}"
        seen.add(node.name)


def constants_to_initializers(model: onnx.ModelProto) -> None:
    """Constant nodes -> initializers (the fp16 converter casts Constant outputs to fp16 and
    back even where fp32 nodes read them; it handles initializers per consumer)."""
    graph = model.graph
    keep = []
    for node in graph.node:
        value = next((a for a in node.attribute if a.name == "value"), None)
        if node.op_type == "Constant" and value is not None and len(node.attribute) == 1:
            tensor = onnx.TensorProto()
            tensor.CopyFrom(value.t)
            tensor.name = node.output[0]
            graph.initializer.append(tensor)
        else:
            keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)


def topological_sort(graph: onnx.GraphProto) -> None:
    """Reorder nodes so each comes after the producers of its inputs (stable otherwise)."""
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        progress = []
        rest = []
        for node in pending:
            if all(name in available for name in node.input):
                progress.append(node)
                available.update(node.output)
            else:
                rest.append(node)
        if not progress:
            missing = sorted({n for node in rest for n in node.input if n not in available})
            raise RuntimeError(f"graph has a cycle or undefined tensors: {missing[:5]}")
        ordered.extend(progress)
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)


def prune_unused(model: onnx.ModelProto, initializers: bool = True) -> None:
    """Remove nodes whose outputs nothing reads (repeatedly, so whole dead chains go) and, with
    ``initializers``, the initializers nothing reads any more."""
    graph = model.graph
    outputs = {o.name for o in graph.output}
    while True:
        used = {name for node in graph.node for name in node.input} | outputs
        keep = [n for n in graph.node if any(o in used for o in n.output)]
        if len(keep) == len(graph.node):
            break
        del graph.node[:]
        graph.node.extend(keep)
    if initializers:
        used = {name for node in graph.node for name in node.input}
        inits = [i for i in graph.initializer if i.name in used]
        del graph.initializer[:]
        graph.initializer.extend(inits)


def cpu_session(path: Path):
    """An ONNX Runtime session on the CPU provider (graph checks, calibration inputs)."""
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def run_batched(path: Path, feeds: dict[str, np.ndarray], batch: int | None = None
                ) -> list[np.ndarray]:
    """All outputs of ``path`` for ``feeds``, ``batch`` samples per run (None: all at once)."""
    session = cpu_session(path)
    count = len(next(iter(feeds.values())))
    batch = batch or count
    parts = [session.run(None, {k: v[i:i + batch] for k, v in feeds.items()})
             for i in range(0, count, batch)]
    return [np.concatenate([p[j] for p in parts]) for j in range(len(parts[0]))]
