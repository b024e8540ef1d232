"""Where tensors run and in which precision, decided in one place for training and generation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Placement:
    """A device and the dtype frozen weights use there (fp32 on CPU; bf16, else fp16, on CUDA)."""

    device: torch.device
    dtype: torch.dtype

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"


def pick_placement(device: str = "auto") -> Placement:
    """Resolve a `TUNES_DEVICE` value ("auto", "cpu", "cuda", "cuda:N") to a `Placement`."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type != "cuda":
        return Placement(dev, torch.float32)
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return Placement(dev, dtype)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
