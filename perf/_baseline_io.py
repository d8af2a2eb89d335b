"""The baselines and limits each backend is measured against, in the same run.

Baselines are what a user would do without DCP: ``safetensors.torch`` and
``torch.save``/``torch.load(mmap=True)``, loading by copying into the same
preallocated targets the backends fill. Limits are plain copies of the same
bytes: memcpy into touched memory (CPU) and pinned host-to-device (GPU).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

__all__ = ["SAVERS", "LOADERS", "copy_pairs", "safetensors_to_device"]

Tensors = Mapping[str, torch.Tensor]


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _safetensors_save(tensors: Tensors, folder: Path, fsync: bool) -> None:
    save_file(dict(tensors), folder / "model.safetensors")
    if fsync:
        _fsync(folder / "model.safetensors")


def _torch_save(tensors: Tensors, folder: Path, fsync: bool) -> None:
    torch.save(dict(tensors), folder / "model.pt")
    if fsync:
        _fsync(folder / "model.pt")


def _copy_into(targets: Tensors, loaded: Tensors) -> None:
    for name, target in targets.items():
        target.copy_(loaded[name])


def _safetensors_load(folder: Path, targets: Tensors) -> None:
    _copy_into(targets, load_file(folder / "model.safetensors"))


def _torch_load_mmap(folder: Path, targets: Tensors) -> None:
    _copy_into(targets, torch.load(folder / "model.pt", mmap=True, weights_only=True))


#: name -> save(tensors, empty folder, fsync): each writes its own file format into the folder.
SAVERS: dict[str, Callable[[Tensors, Path, bool], None]] = {
    "safetensors": _safetensors_save,
    "torch.save": _torch_save,
}
#: name -> load(folder, targets), reading what the SAVERS entry of the same format wrote.
LOADERS: dict[str, tuple[str, Callable[[Path, Tensors], None]]] = {
    "safetensors": ("safetensors", _safetensors_load),
    "torch.load-mmap": ("torch.save", _torch_load_mmap),
}


def safetensors_to_device(folder: Path, targets: Tensors) -> None:
    """Read ``model.safetensors`` with ``safe_open`` onto the targets' device, then copy."""
    device = str(next(iter(targets.values())).device)
    with safe_open(str(folder / "model.safetensors"), framework="pt", device=device) as file:
        for name, target in targets.items():
            target.copy_(file.get_tensor(name))


def copy_pairs(pairs: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """The limit: copy each source into its destination (non-blocking where a device allows)."""
    for destination, source in pairs:
        destination.copy_(source, non_blocking=True)
