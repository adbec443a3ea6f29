"""Type stubs of `qins._qins`, the compiled core of the package (not a public API: use
`qins.safe_open`, `qins.numpy` and `qins.torch`)."""

import os
from typing import Dict, List, Optional, Tuple, Union

import numpy as np

__version__: str

class File:
    """An open, validated .qins model: one file, or a sharded set opened from its index or any
    shard."""

    def __init__(self, path: Union[str, "os.PathLike[str]"], verify: bool = True) -> None: ...
    @property
    def path(self) -> "os.PathLike[str]": ...
    @property
    def closed(self) -> bool: ...
    def version(self) -> Tuple[int, int]: ...
    def verifies(self) -> bool: ...
    def files(self) -> List["os.PathLike[str]"]:
        """The files read: the one file, or the set's shards in order."""
    def index_file(self) -> Optional["os.PathLike[str]"]:
        """The set's index, or None for a single file."""
    def keys(self) -> List[str]: ...
    def metadata(self) -> Dict[str, str]: ...
    def tensor_infos(self) -> List[Tuple[str, str, List[int], str]]:
        """`(name, dtype, shape, storage)` of every tensor, in file order."""
    def read(
        self,
        name: str,
        kind: str,
        start: int = 0,
        count: Optional[int] = None,
        step: int = 1,
    ) -> np.ndarray:
        """Tensor `name` (or `count` indices of its first dimension from `start`, `step`
        apart) as `kind`: "f32", "f16", "bf16" (uint16 bits) or "raw" (uint8 bytes), in a new
        1-D array. An array of 1 MiB or more is made on a `Memory` of its own: anonymous,
        or for a whole raw tensor a copy-on-write mapping of its file, not a copy."""
    def read_all(self, reads: List[Tuple[str, str]]) -> List[np.ndarray]:
        """The whole tensors `(name, kind)`, as `read` gives each, read all at once: in
        parallel across tensors as well as within large ones."""
    def asset_names(self) -> List[str]: ...
    def asset(self, name: str) -> bytes: ...
    def save_assets(
        self,
        directory: Union[str, "os.PathLike[str]"],
        names: Optional[List[str]] = None,
        overwrite: bool = False,
    ) -> List["os.PathLike[str]"]: ...
    def verify(self) -> None: ...
    def close(self) -> None: ...

class Memory:
    """A large tensor's memory: anonymous, or a private copy-on-write mapping of its bytes in
    the file. A writable buffer."""

    def __len__(self) -> int: ...
    @property
    def file(self) -> Optional["os.PathLike[str]"]:
        """The file mapped, or None for anonymous memory."""
