"""Loading .qins files as numpy arrays.

numpy has no bfloat16: a BF16 tensor comes back as float32 (exactly the decoded value), or as
`ml_dtypes.bfloat16` when `ml_dtypes` is installed. The 8-bit float dtypes need `ml_dtypes`;
the packed 4- and 6-bit floats have no numpy type (read them with `framework="pt"`).
"""

from __future__ import annotations

from typing import Any, Dict

import numpy as np

from ._open import PathLike, safe_open

__all__ = ["load_file"]


def load_file(filename: PathLike, dtype: Any = None, *, verify: bool = True) -> Dict[str, np.ndarray]:
    """Loads a .qins file into numpy arrays.

    Args:
        filename (`str`, or `os.PathLike`):
            The name of the file which contains the tensors.
        dtype (optional):
            A floating-point dtype (`numpy.float32`, `numpy.float16`, `numpy.float64`, or
            `"bfloat16"` with `ml_dtypes`) to decode every floating-point tensor into. By
            default each tensor keeps its source dtype (BF16: see the module's notes).
            Integer tensors keep their dtype either way.
        verify (`bool`, defaults to `True`):
            Check every checksum before returning data (see `qins.safe_open`).

    Returns:
        `Dict[str, np.ndarray]`: the tensors by name, in file order. Each array owns its memory.

    Example:
    ```python
    from qins.numpy import load_file

    loaded = load_file("model.qins")
    ```
    """
    with safe_open(filename, framework="np", verify=verify) as f:
        return f.get_tensors(dtype)
