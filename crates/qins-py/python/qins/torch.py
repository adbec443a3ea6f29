"""Loading .qins files as PyTorch tensors, and into PyTorch models.

Tensors are decoded into numpy arrays that torch then adopts without a copy
(`torch.from_numpy`; bfloat16 is decoded into 16-bit buffers viewed as `torch.bfloat16`).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Dict, Iterable, List, Set, Tuple, Union

import torch

from ._open import PathLike, safe_open

__all__ = ["load_file", "load_model"]


def load_file(
    filename: PathLike,
    device: Union[str, int, "torch.device"] = "cpu",
    dtype: Any = None,
    *,
    verify: bool = True,
) -> Dict[str, torch.Tensor]:
    """Loads a .qins file into torch tensors.

    Args:
        filename (`str`, or `os.PathLike`):
            The name of the file which contains the tensors.
        device (`Union[str, int, torch.device]`, *optional*, defaults to `cpu`):
            The device where the tensors need to be located after load.
            Available options are all regular torch device locations.
        dtype (`torch.dtype`, *optional*):
            A floating-point dtype (`torch.float32`, `torch.bfloat16`, `torch.float16`,
            `torch.float64`) to decode every floating-point tensor into, with no intermediate
            float32 copy. By default each tensor keeps its source dtype: a BF16 tensor stays
            `torch.bfloat16`. Integer tensors keep their dtype either way.
        verify (`bool`, defaults to `True`):
            Check every checksum before returning data (see `qins.safe_open`).

    Returns:
        `Dict[str, torch.Tensor]`: the tensors by name, in file order.

    Example:
    ```python
    from qins.torch import load_file

    state_dict = load_file("model.qins")
    ```
    """
    with safe_open(filename, framework="pt", device=device, verify=verify) as f:
        return f.get_tensors(dtype)


def _storage_key(t: torch.Tensor) -> Any:
    """Where a tensor's memory lives, or None for tensors without memory (meta, empty)."""
    if t.device.type == "meta":
        return None
    storage = t.untyped_storage()
    if storage.data_ptr() == 0 or storage.nbytes() == 0:
        return None
    return (t.device, storage.data_ptr(), storage.nbytes())


def _shared_groups(state: Dict[str, torch.Tensor]) -> List[Set[str]]:
    """Sets of two or more names whose tensors overlap in memory (tied weights)."""
    by_storage: Dict[Any, List[str]] = defaultdict(list)
    for name, t in state.items():
        key = _storage_key(t)
        if key is not None:
            by_storage[key].append(name)
    groups = []
    for names in by_storage.values():
        if len(names) < 2:
            continue
        # Names on one storage share memory only where their byte ranges overlap.
        spans = sorted(
            (state[n].data_ptr(), state[n].data_ptr() + state[n].nbytes, n) for n in names
        )
        current: Set[str] = set()
        end = -1
        for start, stop, n in spans:
            if current and start >= end:
                if len(current) > 1:
                    groups.append(current)
                current = set()
            current.add(n)
            end = max(end, stop)
        if len(current) > 1:
            groups.append(current)
    return groups


def _is_whole(t: torch.Tensor) -> bool:
    """Whether the tensor covers its whole storage (it is the original, not a view of part)."""
    return t.data_ptr() == t.untyped_storage().data_ptr() and t.nbytes == t.untyped_storage().nbytes()


def _tied_names(state: Dict[str, torch.Tensor], preferred: Iterable[str]) -> Dict[str, List[str]]:
    """For each group of tied tensors, the name kept (a whole tensor, one the file has if any,
    else the first in sorted order) and the other names."""
    preferred = set(preferred)
    tied: Dict[str, List[str]] = {}
    for group in _shared_groups(state):
        whole = sorted(n for n in group if _is_whole(state[n]))
        if not whole:
            raise RuntimeError(
                f"tensors {sorted(group)} share memory but none of them covers it whole: "
                "this model's tied weights cannot be loaded by name"
            )
        in_file = [n for n in whole if n in preferred]
        keep = (in_file or whole)[0]
        tied[keep] = sorted(group - {keep})
    return tied


def load_model(
    model: torch.nn.Module,
    filename: PathLike,
    strict: bool = True,
    device: Union[str, int, "torch.device"] = "cpu",
    *,
    verify: bool = True,
) -> Tuple[List[str], List[str]]:
    """Loads a .qins file's tensors into a torch model.

    Tied weights (several names for one tensor, such as an input embedding shared with the
    output head) are handled as `safetensors.torch.load_model` handles them: a file that holds
    one of the names fills them all, and the other names are not reported missing.

    Args:
        model (`torch.nn.Module`):
            The model to load onto.
        filename (`str`, or `os.PathLike`):
            The file to load from.
        strict (`bool`, *optional*, defaults to True):
            Whether to fail if the model has names the file lacks or the file names the model
            lacks. When false, the function simply returns them.
        device (`Union[str, int, torch.device]`, *optional*, defaults to `cpu`):
            The device where the tensors are decoded to before being copied into the model.
        verify (`bool`, defaults to `True`):
            Check every checksum before loading (see `qins.safe_open`).

    Returns:
        `(missing, unexpected)`: `(List[str], List[str])`: `missing` are names of the model
        that the file did not fill; `unexpected` are names in the file that the model does not
        have.

    Example:
    ```python
    from qins.torch import load_model

    missing, unexpected = load_model(model, "model.qins")
    ```
    """
    state = load_file(filename, device=device, verify=verify)
    tied = _tied_names(model.state_dict(), preferred=state.keys())
    missing_keys, unexpected_keys = model.load_state_dict(state, strict=False)
    missing = set(missing_keys)
    unexpected = list(unexpected_keys)
    for others in tied.values():
        for name in others:
            if name in missing:
                missing.remove(name)
            else:
                unexpected.append(name)
    if strict and (missing or unexpected):
        error = f"Error(s) in loading state_dict for {model.__class__.__name__}:"
        if missing:
            error += "\n    Missing key(s) in state_dict: " + ", ".join(f'"{k}"' for k in sorted(missing))
        if unexpected:
            error += "\n    Unexpected key(s) in state_dict: " + ", ".join(
                f'"{k}"' for k in sorted(unexpected)
            )
        raise RuntimeError(error)
    return sorted(missing), sorted(unexpected)
