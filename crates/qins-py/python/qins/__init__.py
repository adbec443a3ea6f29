"""qins: load .qins files (8-bit compressed LLM weights) into numpy and PyTorch.

A `.qins` file holds a model's weights, each encoded as one 8-bit code and one sign bit per
weight and decoded as `w = ±LUT[code]` (times a per-row scale), next to the tensors kept
bit for bit and the model's small files (config, tokenizer) as assets. This package reads
them with the project's Rust reader: it validates the file, checks every checksum, and
decodes in parallel, with the GIL released, straight into the returned array's memory.

The API is safetensors', so that switching is a one-word change:

    import qins
    from qins.torch import load_file, load_model

    state_dict = load_file("model.qins")                 # {name: torch.Tensor}, source dtypes
    missing, unexpected = load_model(model, "model.qins")

    with qins.safe_open("model.qins", framework="pt", device="cpu") as f:
        names = f.keys()
        meta = f.metadata()
        w = f.get_tensor("model.layers.0.mlp.up_proj.weight")
        rows = f.get_slice("model.embed_tokens.weight")[1000:2000]   # decodes 1000 rows
        f.save_assets("model_dir")                       # config.json, tokenizer files, ...

- `qins.safe_open(filename, framework, device="cpu", *, verify=True)`: a file opened lazily
  (`framework="np"` or `"pt"`).
- `qins.numpy.load_file(filename, dtype=None)`: every tensor as a numpy array.
- `qins.torch.load_file(filename, device="cpu", dtype=None)`: every tensor as a torch tensor.
- `qins.torch.load_model(model, filename, strict=True)`: into a `torch.nn.Module`.

Dtypes: `dtype=None` gives each tensor its source dtype. BF16 stays `torch.bfloat16`;
numpy has no bfloat16, so it gets float32 (the exact decoded values) unless `ml_dtypes` is
installed, which gives `ml_dtypes.bfloat16`. A floating-point `dtype` decodes straight into
that type (rounded once from the exact f32 value).

Errors: everything raised about a file is a `qins.QinsError`, with one subclass per error
kind of the format's spec (`qins.BadMagicError`, `qins.DataChecksumError`, ...), grouped
under `qins.FormatError` (refused at open) and `qins.IntegrityError` (damaged data, found
when read). Messages name the file, the tensor and the spec section.

Sharded sets (a large model as several `.qins` shards and an index, spec §21): every function
takes the index (`model.qins.index.json`) or any shard, and reads the whole set as one model.

Memory: decoded tensors own their memory; a raw tensor of 1 MiB or more is, as in safetensors,
a private copy-on-write mapping of the file (writes never reach it). See `qins.safe_open`.

`qins` never writes a file, except the assets you ask `safe_open.save_assets` for.
"""

from ._errors import *  # noqa: F401,F403
from ._errors import __all__ as _errors_all
from ._open import QinsSlice, safe_open
from ._qins import __version__

__all__ = ["safe_open", "QinsSlice", "__version__", *_errors_all]
