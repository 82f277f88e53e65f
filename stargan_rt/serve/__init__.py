"""Serving a bundle's engines on NVIDIA Triton Inference Server.

- ``repository``: ``export --triton``: a Triton model repository for a bundle (one model per
  network, config.pbtxt from the export contract, a v2 ensemble), and its validation with
  Triton's own model-config protobuf.
- ``python_model``: the Triton Python-backend model that runs stargan-rt's own OpenVINO /
  ONNX Runtime engines (what the CPU-only ``tritonserver`` of the nvidia-pytriton wheel serves).
- ``server``: ``serve``: finds and starts ``tritonserver`` on loopback.
- ``client``: the remote engine: the same networks through Triton, behind the runtime's engine
  interface (``--server grpc://HOST:PORT`` for translate, parity and webcam).
"""
