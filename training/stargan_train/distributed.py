"""Multi-process training: the process group from torchrun's environment, and the explicit
gradient / buffer / metric averaging both solvers use (``Dist``)."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


class Dist:
    """Process group from torchrun's environment (RANK/WORLD_SIZE/LOCAL_RANK); gloo on CPU,
    nccl on CUDA. world == 1 without torchrun."""

    def __init__(self, device: str):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled = self.world > 1
        if self.enabled and not dist.is_initialized():
            backend = "nccl" if device.startswith("cuda") else "gloo"
            if backend == "nccl":
                torch.cuda.set_device(self.local_rank)
            dist.init_process_group(backend)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def broadcast_module(self, module: torch.nn.Module) -> None:
        if self.enabled:
            for tensor in list(module.parameters()) + list(module.buffers()):
                dist.broadcast(tensor.data, 0)

    def average_gradients(self, modules) -> None:
        """All-reduce (mean) the gradients of the given modules in one flat bucket per call.

        Equivalent to DistributedDataParallel's reduction, but done explicitly after backward:
        DDP does not support the double backward of the WGAN-GP / R1 penalties, which
        differentiate the discriminator's input gradient."""
        if not self.enabled:
            return
        grads = [p.grad for m in modules for p in m.parameters() if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat.div_(self.world)
        offset = 0
        for g in grads:
            n = g.numel()
            g.copy_(flat[offset:offset + n].view_as(g))
            offset += n

    def average_buffers(self, module: torch.nn.Module) -> None:
        """All-reduce (mean) the floating-point buffers, e.g. BatchNorm running statistics that
        the module uses in eval mode: each rank sees other images, and all must judge alike."""
        if not self.enabled:
            return
        for buf in module.buffers():
            if buf.is_floating_point():
                dist.all_reduce(buf.data)
                buf.data.div_(self.world)

    def all_reduce_mean(self, values: dict[str, float]) -> dict[str, float]:
        if not self.enabled or not values:
            return values
        keys = sorted(values)
        t = torch.tensor([values[k] for k in keys], dtype=torch.float64)
        dist.all_reduce(t)
        return {k: float(v) / self.world for k, v in zip(keys, t.tolist())}

    def gather_objects(self, obj):
        if not self.enabled:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()
