#!/usr/bin/env python3
"""Load time and decode throughput of the `qins` Python package, each beside its baseline in
the same run. Run by tools/bench-python.sh, which makes the inputs; see its header.

1. Load: `qins.torch.load_file(QINS)` against `safetensors.torch.load_file(SOURCE)` (the same
   weights, BF16), both page-cached, in alternating rounds; medians. safetensors maps the file
   and its tensors are views of the mapping, read from the page cache when first touched, while
   qins decodes every tensor into memory of its own: so each is also timed followed by a touch
   of every page of every tensor (`+ touch`), the cost of the first use either way, and
   safetensors' eager `backend="pread"` is timed too.
2. Decode throughput: `get_tensor` of the one tensor of QINS_LOG (8192 x 8192 BF16 weights
   coded with `log`: the shape and codec of `cargo bench -p qins-export --bench decode`) as
   bfloat16 and as float32, without and with checksum verification, in weights per second.
   Each read allocates its array, fresh memory that the kernel maps on first write, which the
   Rust benchmark's buffers, written before timing, do not pay.

Prints a table, and `--json FILE` writes the figures.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import statistics
import sys
import time


def cat(path: str) -> None:
    """Reads the file once, so that it is in the page cache."""
    with open(path, "rb") as f:
        while f.read(1 << 24):
            pass


def touch(tensors) -> None:
    """Reads one element of every 4 KiB page of every tensor."""
    import torch

    for t in tensors.values():
        if t.numel():
            flat = t.reshape(-1).view(torch.uint8) if t.element_size() == 1 else t.reshape(-1)
            step = max(1, 4096 // t.element_size())
            flat[::step].sum()


def cpu_seconds() -> float:
    """User + system time of this process, every thread."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


LAST_CPU = [0.0]


def timed(fn) -> float:
    """Wall seconds of `fn()`; its CPU seconds (all threads) are left in LAST_CPU[0]."""
    gc.collect()
    cpu = cpu_seconds()
    start = time.perf_counter()
    result = fn()
    elapsed = time.perf_counter() - start
    LAST_CPU[0] = cpu_seconds() - cpu
    del result
    gc.collect()
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", required=True, help="the BF16 model.safetensors")
    ap.add_argument("--qins", required=True, help="the same weights as a .qins")
    ap.add_argument("--qins-log", required=True, help="a .qins of one large log-coded tensor")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", help="write the figures here too")
    args = ap.parse_args()

    import torch
    import safetensors.torch

    import qins
    import qins.torch

    for p in (args.source, args.qins, args.qins_log):
        cat(p)

    cases = {
        "safetensors.torch.load_file": lambda: safetensors.torch.load_file(args.source),
        "safetensors.torch.load_file + touch": lambda: touch(safetensors.torch.load_file(args.source)),
        "safetensors.torch.load_file(backend='pread')": lambda: safetensors.torch.load_file(
            args.source, backend="pread"
        ),
        "qins.torch.load_file": lambda: qins.torch.load_file(args.qins),
        "qins.torch.load_file + touch": lambda: touch(qins.torch.load_file(args.qins)),
        "qins.torch.load_file(verify=False)": lambda: qins.torch.load_file(args.qins, verify=False),
    }
    times = {k: [] for k in cases}
    cpus = {k: [] for k in cases}
    for _ in range(args.runs):
        for name, fn in cases.items():
            times[name].append(timed(fn))
            cpus[name].append(LAST_CPU[0])
    load = {k: statistics.median(v) for k, v in times.items()}
    load_cpu = {k: statistics.median(v) for k, v in cpus.items()}

    with qins.safe_open(args.qins_log, framework="pt") as f:
        infos = {n: f.get_slice(n) for n in f.keys()}
    name = max(
        (n for n, s in infos.items() if s.get_storage() != "raw"),
        key=lambda n: torch.Size(infos[n].get_shape()).numel(),
    )
    numel = torch.Size(infos[name].get_shape()).numel()
    decode = {}
    for verify in (False, True):
        for dtype in (torch.bfloat16, torch.float32):
            samples = []
            for _ in range(args.runs):
                # A new file object each run, so that verification (done once per tensor and
                # file) is paid by every run that asks for it.
                with qins.safe_open(args.qins_log, framework="pt", verify=verify) as f:
                    samples.append(timed(lambda: f.get_tensor(name, dtype=dtype)))
            label = f"get_tensor {str(dtype).split('.')[-1]}" + (" + verify" if verify else "")
            decode[label] = numel / statistics.median(samples)
    st = load["safetensors.torch.load_file"]
    rows = [(k, f"{v:.3f} s", f"{v / st:.2f}x", f"{load_cpu[k]:.3f} s") for k, v in load.items()]
    touch_ratio = load["qins.torch.load_file + touch"] / load["safetensors.torch.load_file + touch"]
    pread_ratio = load["qins.torch.load_file"] / load["safetensors.torch.load_file(backend='pread')"]
    print(f"load, page-cached, median of {args.runs}: wall, ratio to safetensors.torch.load_file, CPU (all threads):")
    for r in rows:
        print(f"  {r[0]:<48} {r[1]:>9}  {r[2]:>7}  cpu {r[3]:>8}")
    print(f"  qins + touch / safetensors + touch: {touch_ratio:.2f}x; qins / safetensors pread: {pread_ratio:.2f}x")
    print(f"decode throughput, tensor {name!r} ({numel / 1e6:.1f} M weights), median of {args.runs}:")
    for k, v in decode.items():
        print(f"  {k:<48} {v / 1e9:6.2f} G weights/s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"load_s": load, "load_cpu_s": load_cpu, "decode_weights_per_s": decode, "tensor": name,
                       "numel": numel, "runs": args.runs}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
