"""fp16 precision graphs.

fp16: ONNX Runtime's float16 converter (onnxruntime.transformers.float16, the same code as
onnxconverter-common) with the graph's I/O types kept (uint8 frames stay uint8, float I/O stays
float32) and these kept in fp32, with Casts at the borders:
  - InstanceNormalization (statistics and variance), every Reduce*, Pow, Sqrt, Exp, Log,
    Softmax, and ops ONNX Runtime's converter always keeps (Resize scales, ...); inference-mode
    BatchNormalization (the FAN's) is a fixed per-channel affine and may run in fp16;
  - the frame I/O and mask arithmetic: every node that is not between two weighted layers (Conv,
    ConvTranspose, Gemm, MatMul), i.e. the cast / scale / colour swap before the first conv, the
    clamp / round / cast after the last one, the FAN's heatmap post-processing.
  An AdaIN plugin node of a fused graph runs in fp16 (the plugin keeps its statistics in fp32).
"""
from __future__ import annotations

import onnx

from stargan_rt.export.graph import (constants_to_initializers, name_nodes, prune_unused,
                                     topological_sort)

HEAVY_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul"}
FP32_OPS = ["InstanceNormalization", "ReduceMean", "ReduceSum",
            "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2", "ReduceSumSquare", "Pow", "Sqrt",
            "Exp", "Log", "Softmax", "LayerNormalization", "GroupNormalization", "IsNaN",
            "IsInf", "Range", "CumSum", "TopK", "NonMaxSuppression", "RoiAlign", "Upsample",
            "RandomUniformLike", "RandomNormalLike"]


def _outside_heavy_span(model: onnx.ModelProto) -> list[str]:
    """Names of nodes with no weighted layer upstream or none downstream (frame I/O, masks)."""
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def closure(start_nodes, step):
        reached, stack = set(), list(start_nodes)
        while stack:
            node = stack.pop()
            for nxt in step(node):
                if nxt.name not in reached:
                    reached.add(nxt.name)
                    stack.append(nxt)
        return reached

    heavy = [n for n in graph.node if n.op_type in HEAVY_OPS]
    down = closure(heavy, lambda n: [c for o in n.output for c in consumers.get(o, [])])
    up = closure(heavy, lambda n: [producer[i] for i in n.input if i in producer])
    heavy_names = {n.name for n in heavy}
    return [n.name for n in graph.node
            if n.name not in heavy_names and (n.name not in down or n.name not in up)]


def to_fp16_model(model: onnx.ModelProto) -> onnx.ModelProto:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.ModelProto.FromString(model.SerializeToString())
    constants_to_initializers(model)
    name_nodes(model)
    block_nodes = _outside_heavy_span(model)
    converted = convert_float_to_float16(model, keep_io_types=True, op_block_list=FP32_OPS,
                                         node_block_list=block_nodes)
    name_nodes(converted)
    topological_sort(converted.graph)
    _drop_cast_round_trips(converted)
    del converted.graph.value_info[:]  # stale annotations; consumers re-infer what they need
    return converted


def _drop_cast_round_trips(model: onnx.ModelProto) -> int:
    """Cast(fp32 -> fp16) -> Cast(-> fp32) pairs between two fp32 nodes: read the fp32 tensor."""
    graph = model.graph
    bare = onnx.ModelProto.FromString(model.SerializeToString())
    del bare.graph.value_info[:]  # the converter leaves some stale fp32 annotations behind
    try:
        inferred = onnx.shape_inference.infer_shapes(bare)
    except Exception:
        return 0
    types = {v.name: v.type.tensor_type.elem_type for v in
             list(inferred.graph.value_info) + list(graph.input)}
    types.update({i.name: i.data_type for i in graph.initializer})
    producer = {o: n for n in graph.node for o in n.output}

    def cast_to(node):
        return next((a.i for a in node.attribute if a.name == "to"), None)

    dropped = 0
    outputs = {o.name for o in graph.output}
    for node in graph.node:
        if node.op_type != "Cast" or cast_to(node) != onnx.TensorProto.FLOAT:
            continue
        first = producer.get(node.input[0])
        if first is None or first.op_type != "Cast" or cast_to(first) != onnx.TensorProto.FLOAT16:
            continue
        if types.get(first.input[0]) != onnx.TensorProto.FLOAT or node.output[0] in outputs:
            continue
        for other in graph.node:  # consumers read the original fp32 tensor
            for index, name in enumerate(other.input):
                if name == node.output[0]:
                    other.input[index] = first.input[0]
        dropped += 1
    prune_unused(model, initializers=False)
    return dropped
