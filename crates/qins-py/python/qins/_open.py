"""`safe_open`: a .qins file opened lazily, its tensors decoded as asked, for numpy or PyTorch."""

from __future__ import annotations

import operator
import os
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import _qins
from ._errors import TensorNotFoundError, UnsupportedDtypeError

__all__ = ["safe_open", "QinsSlice"]

PathLike = Union[str, "os.PathLike[str]"]

# The numpy dtype of each raw dtype numpy has natively (little-endian, as stored, §13).
_NUMPY_RAW = {
    "BOOL": "?",
    "U8": "u1",
    "I8": "i1",
    "I16": "<i2",
    "U16": "<u2",
    "I32": "<i4",
    "U32": "<u4",
    "I64": "<i8",
    "U64": "<u8",
    "F16": "<f2",
    "F32": "<f4",
    "F64": "<f8",
    "C64": "<c8",
}

# The ml_dtypes type of the dtypes numpy lacks, where ml_dtypes has one of the same layout.
_ML_DTYPES = {
    "BF16": "bfloat16",
    "F8_E5M2": "float8_e5m2",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E8M0": "float8_e8m0fnu",
    "F8_E4M3FNUZ": "float8_e4m3fnuz",
    "F8_E5M2FNUZ": "float8_e5m2fnuz",
}

# The torch dtype of each dtype, by attribute name (F4: two values per byte, as torch packs them).
_TORCH = {
    "BOOL": "bool",
    "U8": "uint8",
    "I8": "int8",
    "I16": "int16",
    "U16": "uint16",
    "I32": "int32",
    "U32": "uint32",
    "I64": "int64",
    "U64": "uint64",
    "F16": "float16",
    "BF16": "bfloat16",
    "F32": "float32",
    "F64": "float64",
    "F8_E5M2": "float8_e5m2",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E8M0": "float8_e8m0fnu",
    "F8_E4M3FNUZ": "float8_e4m3fnuz",
    "F8_E5M2FNUZ": "float8_e5m2fnuz",
    "C64": "complex64",
    "F4": "float4_e2m1fn_x2",
}

_FLOATS = ("F16", "BF16", "F32", "F64")

_FRAMEWORKS = {"np": "np", "numpy": "np", "pt": "pt", "torch": "pt", "pytorch": "pt"}


def _ml_dtypes() -> Any:
    """The `ml_dtypes` module, or None if it is not installed."""
    try:
        import ml_dtypes
    except ImportError:
        return None
    return ml_dtypes


def _numpy_dtype(path: str, name: str, dtype: str) -> np.dtype:
    """The numpy dtype of a raw tensor's stored elements."""
    if dtype in _NUMPY_RAW:
        return np.dtype(_NUMPY_RAW[dtype])
    ml = _ml_dtypes()
    if dtype in _ML_DTYPES and ml is not None and hasattr(ml, _ML_DTYPES[dtype]):
        return np.dtype(getattr(ml, _ML_DTYPES[dtype]))
    hint = " without ml_dtypes (pip install ml_dtypes)" if dtype in _ML_DTYPES else ""
    raise UnsupportedDtypeError(
        f"{path}: tensor {name!r} is {dtype}, which numpy cannot hold{hint}; "
        "framework='pt' reads it as a torch tensor",
        path=path,
        tensor=name,
    )


def _torch_dtype(path: str, name: str, dtype: str) -> Any:
    import torch

    found = getattr(torch, _TORCH.get(dtype, ""), None)
    if found is None:
        raise UnsupportedDtypeError(
            f"{path}: tensor {name!r} is {dtype}, which this torch ({torch.__version__}) "
            "has no dtype for",
            path=path,
            tensor=name,
        )
    return found


def _wanted(framework: str, dtype: Any) -> Optional[str]:
    """`"f32"`, `"f16"`, `"bf16"` or `"f64"` for a requested floating-point dtype, None for
    None; ValueError for anything else."""
    if dtype is None:
        return None
    if framework == "pt":
        import torch

        table = {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16",
                 torch.float64: "f64"}
        if isinstance(dtype, torch.dtype) and dtype in table:
            return table[dtype]
    else:
        if isinstance(dtype, str) and dtype == "bfloat16":
            return "bf16"
        try:
            d = np.dtype(dtype)
        except TypeError:
            d = None
        if d is not None:
            if d.name == "bfloat16":
                return "bf16"
            found = {"float32": "f32", "float16": "f16", "float64": "f64"}.get(d.name)
            if found is not None:
                return found
    raise ValueError(
        f"dtype {dtype!r}: expected None or a floating-point dtype "
        "(float32, float16, bfloat16, float64)"
    )


def _shaped(array: Any, shape: Tuple[int, ...], path: str, name: str) -> Any:
    """`array` reshaped to `shape`, or a ValueError naming the tensor where the framework
    cannot make an array of that shape (numpy refuses an empty [0, 2**40, 2**40], say)."""
    try:
        return array.reshape(shape)
    except (ValueError, RuntimeError) as e:
        raise ValueError(
            f"{path}: tensor {name!r} of shape {list(shape)}: cannot be made an array of this "
            f"shape here ({e})"
        ) from None


class _Tensor:
    """What the file says of one tensor."""

    __slots__ = ("name", "dtype", "shape", "storage")

    def __init__(self, name: str, dtype: str, shape: Sequence[int], storage: str):
        self.name = name
        self.dtype = dtype
        self.shape = tuple(shape)
        self.storage = storage


def _plan(
    path: str, framework: str, device: Any, info: _Tensor, want: Optional[str]
) -> Tuple[str, Callable[[Any, Tuple[int, ...]], Any]]:
    """How to read tensor `info` as a numpy array or a torch tensor, in its source dtype or the
    floating-point dtype `want`: `(kind, finish)`, where `kind` is what the extension reads
    (`"f32"`, `"f16"`, `"bf16"` or `"raw"`) and `finish(array, shape)` makes the tensor
    returned from the 1-D array read. Dtypes the framework lacks are refused here, before
    anything is read."""
    name = info.name
    encoded = info.storage != "raw"

    if framework == "pt":
        import torch

        def to_device(t: Any) -> Any:
            return t.to(device) if device is not None and str(device) != "cpu" else t

        if encoded:
            kind = {None: {"BF16": "bf16", "F16": "f16"}.get(info.dtype, "f32"), "f64": "f32"}.get(
                want, want
            )

            def finish_encoded(array: Any, shape: Tuple[int, ...]) -> Any:
                t = torch.from_numpy(array)
                if kind == "bf16":
                    t = t.view(torch.bfloat16)
                t = _shaped(t, shape, path, name)
                if want == "f64":
                    t = t.to(torch.float64)
                return to_device(t)

            return kind, finish_encoded

        target = _torch_dtype(path, name, info.dtype)

        def finish_raw(array: Any, shape: Tuple[int, ...]) -> Any:
            if array.size == 0:
                # torch views no empty byte buffer as a wider dtype.
                t = torch.empty(0, dtype=target)
            else:
                t = torch.from_numpy(array).view(target)
            if info.dtype == "F4":
                # Two values per byte: torch's float4_e2m1fn_x2 counts bytes.
                if not shape or shape[-1] % 2:
                    raise UnsupportedDtypeError(
                        f"{path}: tensor {name!r} is F4 with an odd last dimension, which "
                        "torch's float4_e2m1fn_x2 (two values per byte) cannot shape",
                        path=path,
                        tensor=name,
                    )
                shape = shape[:-1] + (shape[-1] // 2,)
            t = _shaped(t, shape, path, name)
            if want is not None and info.dtype in _FLOATS:
                t = t.to({"f32": torch.float32, "f16": torch.float16,
                          "bf16": torch.bfloat16, "f64": torch.float64}[want])
            return to_device(t)

        return "raw", finish_raw

    ml = _ml_dtypes()
    bf16 = np.dtype(ml.bfloat16) if ml is not None else None
    if want == "bf16" and bf16 is None:
        raise UnsupportedDtypeError(
            f"{path}: dtype bfloat16 needs ml_dtypes in numpy (pip install ml_dtypes)",
            path=path,
            tensor=name,
        )
    if encoded:
        if want is None:
            want = {"F16": "f16", "BF16": "bf16" if bf16 is not None else "f32"}.get(
                info.dtype, "f32"
            )
        kind = "f32" if want == "f64" else want

        def finish_np_encoded(array: Any, shape: Tuple[int, ...]) -> Any:
            if kind == "bf16":
                array = array.view(bf16)
            array = _shaped(array, shape, path, name)
            return array.astype(np.float64) if want == "f64" else array

        return kind, finish_np_encoded
    if info.dtype == "BF16" and bf16 is None:

        def finish_widened(array: Any, shape: Tuple[int, ...]) -> Any:
            # numpy has no bfloat16: widen the stored bits to float32, exactly.
            bits = array.view("<u2")
            return _shaped((bits.astype(np.uint32) << 16).view(np.float32), shape, path, name)

        finish = finish_widened
    else:
        stored = _numpy_dtype(path, name, info.dtype)

        def finish_raw_np(array: Any, shape: Tuple[int, ...]) -> Any:
            return _shaped(array.view(stored), shape, path, name)

        finish = finish_raw_np
    if want is None or info.dtype not in _FLOATS:
        return "raw", finish
    converted = {"f32": np.float32, "f16": np.float16, "bf16": bf16, "f64": np.float64}[want]

    def finish_converted(array: Any, shape: Tuple[int, ...]) -> Any:
        array = finish(array, shape)
        return array if array.dtype == converted else array.astype(converted)

    return "raw", finish_converted


def _read(
    file: Any,
    framework: str,
    device: Any,
    info: _Tensor,
    want: Optional[str],
    rows: Optional[Tuple[int, int, int]] = None,
) -> Any:
    """Tensor `info` (or the indices `rows` = (start, count, step) of its first dimension) as a
    numpy array or a torch tensor, in its source dtype or the floating-point dtype `want`."""
    kind, finish = _plan(str(file.path), framework, device, info, want)
    if rows is None:
        return finish(file.read(info.name, kind), info.shape)
    return finish(file.read(info.name, kind, *rows), (rows[1],) + info.shape[1:])


def _read_all(
    file: Any, framework: str, device: Any, infos: Sequence[_Tensor], want: Optional[str]
) -> Dict[str, Any]:
    """Every tensor of `infos`, whole, as `_read` gives it: read all at once by the extension
    (in parallel across tensors as well as within large ones)."""
    path = str(file.path)
    plans = [_plan(path, framework, device, info, want) for info in infos]
    arrays = file.read_all([(info.name, kind) for info, (kind, _) in zip(infos, plans)])
    return {
        info.name: finish(array, info.shape)
        for info, (_, finish), array in zip(infos, plans, arrays)
    }


class QinsSlice:
    """A tensor not yet read: index it to decode part of it.

    Returned by `safe_open.get_slice(name)`. `get_shape()` and `get_dtype()` read nothing;
    indexing decodes only the indices asked for along the first dimension:

    - first dimension: an integer (negative counts from the end) or a slice with a positive
      step (`a:b`, `a:b:k`, `:`), which decodes only those indices' elements;
    - `...` and further dimensions: any basic index numpy (or torch) accepts, applied to the
      decoded part.

    Example:
    ```python
    with qins.safe_open("model.qins", framework="pt") as f:
        s = f.get_slice("model.embed_tokens.weight")
        rows = s[1000:2000]          # decodes 1000 rows, not the whole table
        col = s[:, 0]                # decodes every row, keeps column 0
    ```
    """

    def __init__(self, owner: "safe_open", info: _Tensor):
        self._owner = owner
        self._info = info

    def get_shape(self) -> List[int]:
        """The tensor's shape."""
        return list(self._info.shape)

    def get_dtype(self) -> str:
        """The tensor's source dtype, by its safetensors name (`"F32"`, `"BF16"`, ...)."""
        return self._info.dtype

    def get_storage(self) -> str:
        """`"raw"`, or the codec that encoded the tensor (`"lloyd-rows"`, `"log"`, ...)."""
        return self._info.storage

    def __len__(self) -> int:
        if not self._info.shape:
            raise TypeError("len() of a 0-d tensor")
        return self._info.shape[0]

    def __getitem__(self, key: Any) -> Any:
        shape = self._info.shape
        key = key if isinstance(key, tuple) else (key,)
        if sum(k is Ellipsis for k in key) > 1:
            raise IndexError("an index can only have a single ellipsis ('...')")
        if any(k is Ellipsis for k in key):
            i = next(i for i, k in enumerate(key) if k is Ellipsis)
            key = key[:i] + (slice(None),) * (len(shape) - len(key) + 1) + key[i + 1 :]
        if len(key) > len(shape):
            raise IndexError(
                f"too many indices for tensor {self._info.name!r}: it has {len(shape)} dimensions"
            )
        if not key:
            return self._owner._read(self._info, None)
        first, rest = key[0], key[1:]
        n = shape[0]
        if isinstance(first, slice):
            start, stop, step = first.indices(n)
            if step <= 0:
                raise ValueError(f"slice step must be positive, got {step}")
            rows = (start, len(range(start, stop, step)), step)
            lead: Tuple[Any, ...] = (slice(None),)
        else:
            try:
                i = operator.index(first)
            except TypeError:
                raise TypeError(
                    f"index {first!r}: the first dimension takes an integer or a slice"
                ) from None
            if not -n <= i < n:
                raise IndexError(f"index {i} is out of bounds for dimension 0 with size {n}")
            rows = (i % n, 1, 1)
            lead = (0,)
        part = self._owner._read(self._info, rows)
        index = lead + rest
        return part if index == (slice(None),) else part[index]

    def __repr__(self) -> str:
        i = self._info
        return f"QinsSlice({i.name!r}, shape={list(i.shape)}, dtype={i.dtype}, storage={i.storage})"


class safe_open:
    """Opens a .qins model lazily and returns tensors as asked.

    The model is a single `.qins` file or a sharded set (spec §21): pass the set's index
    (`model.qins.index.json`) or any of its shards, and the whole set is opened and read as
    one model. Opening maps the files and validates their headers (spec §17; for a set, that
    the shards and the index agree, §21.5), in time proportional to the headers, not the
    weights. Tensors are decoded when asked for, each into a new array of its own, on every
    core, with the GIL released; `get_tensors` (and `load_file`) reads them all at once, in
    parallel across tensors too.

    Memory: a decoded tensor owns its memory. A raw tensor (kept bit for bit, such as an
    embedding table) of 1 MiB or more is, as in `safetensors`, a private copy-on-write mapping
    of its bytes in the file: nothing is copied until it is used, writing into it changes the
    process's copy only (never the file), and it stays valid after the file is closed. The
    file must not be modified or truncated in place while such a tensor lives (replacing it,
    by a rename, is safe): the contract of every memory-mapped file.

    Args:
        filename (`str`, or `os.PathLike`):
            The file to open: a `.qins` file, a set's index, or any shard of a set.
        framework (`str`):
            The framework you want your tensors in: `"np"` (numpy) or `"pt"` (PyTorch).
        device (`str`, `int` or `torch.device`, defaults to `"cpu"`):
            The device on which you want the tensors (PyTorch only: tensors are decoded on
            the CPU, then moved).
        verify (`bool`, defaults to `True`):
            Check checksums before handing out data: everything outside the tensors (tables,
            assets, padding) when the file is opened, and each tensor's sections the first
            time any part of it is read (a checksum covers a whole section, so a slice of a
            tensor reads the whole tensor once). `False` skips this, for files you trust.

    Example:
    ```python
    import qins

    with qins.safe_open("model.qins", framework="pt", device="cpu") as f:
        for name in f.keys():
            tensor = f.get_tensor(name)
    ```
    """

    def __init__(
        self,
        filename: PathLike,
        framework: str,
        device: Any = "cpu",
        *,
        verify: bool = True,
    ):
        fw = _FRAMEWORKS.get(str(framework).lower())
        if fw is None:
            raise ValueError(
                f"framework {framework!r}: expected 'np' (numpy) or 'pt' (PyTorch)"
            )
        if fw == "np" and str(device) != "cpu":
            raise ValueError(f"device {device!r}: numpy arrays live on the CPU")
        if fw == "pt":
            import torch  # noqa: F401  (fail here, not at the first tensor, if missing)

            if isinstance(device, int):
                device = f"cuda:{device}"
        self._framework = fw
        self._device = device
        self._file = _qins.File(os.fspath(filename), verify)
        self._infos: Dict[str, _Tensor] = {
            name: _Tensor(name, dtype, shape, storage)
            for name, dtype, shape, storage in self._file.tensor_infos()
        }

    def __enter__(self) -> "safe_open":
        """Starts the context manager."""
        return self

    def __exit__(self, *exc: Any) -> None:
        """Exits the context manager, closing the file."""
        self.close()

    def close(self) -> None:
        """Closes the file (every file of a set). Tensors already returned stay valid: they own
        their memory, or their mapping of the file."""
        self._file.close()

    def _open_infos(self) -> Dict[str, _Tensor]:
        if self._file.closed:
            raise ValueError(f"{os.fspath(self._file.path)}: the file is closed")
        return self._infos

    def _info(self, name: str) -> _Tensor:
        info = self._open_infos().get(name)
        if info is None:
            path = os.fspath(self._file.path)
            raise TensorNotFoundError(
                f"{path}: no tensor called {name!r}", path=path, tensor=name
            )
        return info

    def _read(self, info: _Tensor, rows: Optional[Tuple[int, int, int]], dtype: Any = None) -> Any:
        return _read(
            self._file, self._framework, self._device, info, _wanted(self._framework, dtype), rows
        )

    def keys(self) -> List[str]:
        """Returns the names of the tensors in the file, sorted.

        Returns:
            (`List[str]`): the tensor names.
        """
        return sorted(self._open_infos())

    def offset_keys(self) -> List[str]:
        """Returns the names of the tensors in the file, in the order of their data (for a
        set: shard 1's, then shard 2's, ...).

        Returns:
            (`List[str]`): the tensor names, in file order.
        """
        return list(self._open_infos())

    def files(self) -> List[str]:
        """Returns the files the model is read from: the one file, or the set's shards in
        order.

        Returns:
            (`List[str]`): their paths.
        """
        return [os.fspath(p) for p in self._file.files()]

    def index_file(self) -> Optional[str]:
        """Returns the path of the set's index (spec §21.2), or `None` for a single file.

        Returns:
            (`Optional[str]`): the index's path.
        """
        index = self._file.index_file()
        return None if index is None else os.fspath(index)

    def metadata(self) -> Dict[str, str]:
        """Returns the file's free-form metadata (spec §7; a set's is its first shard's, §21.4,
        with the `qins.set.*` keys): the writer, the source, the policy
        that chose what was encoded.

        Returns:
            (`Dict[str, str]`): the metadata.
        """
        return dict(self._file.metadata())

    def get_tensor(self, name: str, dtype: Any = None) -> Any:
        """Returns a full tensor, decoded.

        Args:
            name (`str`):
                The name of the tensor you want.
            dtype (optional):
                A floating-point dtype to decode into (`torch.float32`, `torch.bfloat16`,
                `numpy.float16`, ...). By default the tensor's source dtype: BF16 stays
                `torch.bfloat16`; numpy, which has no bfloat16, gives float32 unless
                `ml_dtypes` is installed. Integer tensors keep their dtype.

        Returns:
            (`Tensor`): the tensor in the framework you opened the file for.

        Example:
        ```python
        with qins.safe_open("model.qins", framework="pt") as f:
            tensor = f.get_tensor("model.layers.0.mlp.up_proj.weight")
        ```
        """
        return self._read(self._info(name), None, dtype)

    def get_tensors(self, dtype: Any = None) -> Dict[str, Any]:
        """Returns every tensor in the file, decoded, by name in file order: all read at once,
        in parallel across tensors as well as within large ones.

        Args:
            dtype (optional): as for `get_tensor`.

        Returns:
            (`Dict[str, Tensor]`): the tensors.
        """
        infos = list(self._open_infos().values())
        return _read_all(
            self._file, self._framework, self._device, infos, _wanted(self._framework, dtype)
        )

    def get_slice(self, name: str) -> QinsSlice:
        """Returns a slice object: index it to decode only part of the tensor.

        Args:
            name (`str`):
                The name of the tensor you want.

        Returns:
            (`QinsSlice`): an object you can slice into to get a real tensor; only the indices
            asked for along the first dimension are decoded.

        Example:
        ```python
        with qins.safe_open("model.qins", framework="pt") as f:
            part = f.get_slice("lm_head.weight")[:1024]
        ```
        """
        return QinsSlice(self, self._info(name))

    def asset_names(self) -> List[str]:
        """Returns the names of the files the model carries (config, tokenizer, ...), as paths
        relative to the model directory, with `/` as separator.

        Returns:
            (`List[str]`): the asset names, in file order.
        """
        return list(self._file.asset_names())

    def get_asset(self, name: str) -> bytes:
        """Returns an asset's bytes.

        Args:
            name (`str`): the asset's name, e.g. `"config.json"`.

        Returns:
            (`bytes`): the file's content, exactly as in the source directory.
        """
        return bytes(self._file.asset(name))

    def save_assets(
        self,
        directory: PathLike,
        names: Optional[Sequence[str]] = None,
        *,
        overwrite: bool = False,
    ) -> List[str]:
        """Writes the assets (all, or those named) into `directory`, which is created if
        missing, and returns the paths written.

        Every file lands inside `directory` (spec §5): asset names are plain relative paths,
        and a directory on the way that is a symbolic link is refused rather than followed.
        Each file is written beside its target and renamed into place. Nothing else is ever
        written by this package.

        Args:
            directory (`str`, or `os.PathLike`): where to write.
            names (`Sequence[str]`, optional): which assets; all by default.
            overwrite (`bool`, defaults to `False`): replace existing files instead of failing.

        Returns:
            (`List[str]`): the paths written.
        """
        written = self._file.save_assets(
            os.fspath(directory), None if names is None else list(names), overwrite
        )
        return [os.fspath(p) for p in written]

    def verify(self) -> None:
        """Verifies every byte of the file (every shard of a set; spec §14): the checksum of
        every section, the padding, the unused sign bits and the row scales. Raises the
        `IntegrityError` of the first problem found."""
        self._file.verify()

    def version(self) -> Tuple[int, int]:
        """The file's format version, `(major, minor)` (shard 1's, for a set)."""
        return tuple(self._file.version())  # type: ignore[return-value]

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __repr__(self) -> str:
        state = "closed" if self._file.closed else f"{len(self._infos)} tensors"
        return f"safe_open({os.fspath(self._file.path)!r}, framework={self._framework!r}, {state})"


safe_open.__module__ = "qins"
QinsSlice.__module__ = "qins"
