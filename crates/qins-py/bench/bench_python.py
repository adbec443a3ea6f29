#!/usr/bin/env python3
"""Load time and decode throughput of the `qins` Python package, each beside its baseline in
the same run. Run by tools/bench-python.sh, which makes the inputs; see its header.

1. Load: `qins.torch.load_file(QINS)` against `safetensors.torch.load_file(SOURCE)` (the same
   weights, BF16), page-cached. Each load runs in a fresh Python process, as a user's first
   load does (a second load in one process can reuse memory the first freed, which a first
   cannot); the cases alternate, round after round, and the medians are reported. Three
   baselines, because safetensors' default does no work at load time:
   - `safetensors.torch.load_file`: tensors are views of a mapping of the file, read from the
     page cache when first touched: the load itself is almost free;
   - the same `+ touch` (one element of every 4 KiB page of every tensor): the cost a user pays
     at first use, whatever the library; the fair comparison for `qins ... + touch`;
   - `backend="pread"`: an eager copy of every tensor into new memory, the safetensors load
     that does the same kind of work as qins (which decodes into new memory).
   Wall time, CPU time (user + system, every thread) and page faults of the load call alone.
2. Decode throughput: the one tensor of QINS_LOG (8192 x 8192 BF16 weights coded with `log`:
   the shape and codec of `cargo bench -p qins-export --bench decode`), in weights per second:
   - `read_into`: decoded into the memory of an earlier read (written before timing), without
     verification, as the Rust benchmark decodes into buffers written before timing: the
     comparison with it (`qins._qins.File.read_into`, the extension's, for this benchmark);
   - `read_into + verify`: the same with the checksums checked in the same pass;
   - `get_tensor`: what a user calls, into new memory each time (which the system maps and
     zeroes on first write), without and with verification.
   With `--rust FILE` (the output of the Rust benchmark, run by bench-python.sh in the same
   run), the Rust paired-pass figures on all cores and the ratios.

Prints a table, and `--json FILE` writes the figures.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time

LOADS = [
    "safetensors.torch.load_file",
    "safetensors.torch.load_file + touch",
    "safetensors.torch.load_file(backend='pread')",
    "qins.torch.load_file",
    "qins.torch.load_file + touch",
    "qins.torch.load_file(verify=False)",
]


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


def usage() -> tuple:
    """(CPU seconds of user + system time of every thread, minor page faults) so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime, r.ru_minflt


def measure(fn) -> dict:
    """Wall seconds, CPU seconds and page faults of `fn()`."""
    gc.collect()
    cpu, faults = usage()
    start = time.perf_counter()
    result = fn()
    wall = time.perf_counter() - start
    cpu2, faults2 = usage()
    del result
    gc.collect()
    return {"wall": wall, "cpu": cpu2 - cpu, "faults": faults2 - faults}


def one_load(case: str, source: str, qins_path: str) -> dict:
    """The load `case`, once, in this (fresh) process."""
    import safetensors.torch

    import qins.torch

    cat(source)
    cat(qins_path)
    fn = {
        LOADS[0]: lambda: safetensors.torch.load_file(source),
        LOADS[1]: lambda: touch(safetensors.torch.load_file(source)),
        LOADS[2]: lambda: safetensors.torch.load_file(source, backend="pread"),
        LOADS[3]: lambda: qins.torch.load_file(qins_path),
        LOADS[4]: lambda: touch(qins.torch.load_file(qins_path)),
        LOADS[5]: lambda: qins.torch.load_file(qins_path, verify=False),
    }[case]
    return measure(fn)


def loads(args) -> dict:
    """Every load case, `args.runs` times each in fresh processes, alternating: medians."""
    samples = {case: [] for case in LOADS}
    for r in range(args.runs):
        # Rotate the order, so that no case always follows the same neighbour.
        order = LOADS[r % len(LOADS):] + LOADS[: r % len(LOADS)]
        for case in order:
            out = subprocess.run(
                [sys.executable, __file__, "--one", case, "--source", args.source, "--qins", args.qins],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            samples[case].append(json.loads(out.strip().splitlines()[-1]))
    return {
        case: {k: statistics.median(s[k] for s in got) for k in ("wall", "cpu", "faults")}
        for case, got in samples.items()
    }


def decode(args) -> tuple:
    """Weights per second of each way of reading the log-coded tensor: medians."""
    import torch

    import qins
    import qins._qins

    cat(args.qins_log)
    with qins.safe_open(args.qins_log, framework="pt") as f:
        slices = {n: f.get_slice(n) for n in f.keys()}
    name = max(
        (n for n, s in slices.items() if s.get_storage() != "raw"),
        key=lambda n: torch.Size(slices[n].get_shape()).numel(),
    )
    numel = torch.Size(slices[name].get_shape()).numel()
    rates = {}
    for kind in ("bf16", "f32"):
        # The memory of a first read: written before timing.
        first = qins._qins.File(args.qins_log, False).read(name, kind)
        memory = first.base
        assert isinstance(memory, qins._qins.Memory)
        for verify in (False, True):
            samples = []
            for _ in range(args.runs):
                # A new file object each run, so that verification (done once per tensor and
                # file) is paid by every run that asks for it.
                f = qins._qins.File(args.qins_log, verify)
                samples.append(measure(lambda: f.read_into(name, kind, memory))["wall"])
            rates[f"read_into {kind}" + (" + verify" if verify else "")] = numel / statistics.median(samples)
    for verify in (False, True):
        for dtype in (torch.bfloat16, torch.float32):
            samples = []
            for _ in range(args.runs):
                with qins.safe_open(args.qins_log, framework="pt", verify=verify) as f:
                    samples.append(measure(lambda: f.get_tensor(name, dtype=dtype))["wall"])
            label = f"get_tensor {str(dtype).split('.')[-1].replace('bfloat16', 'bf16').replace('float32', 'f32')}"
            rates[label + (" + verify" if verify else "")] = numel / statistics.median(samples)
    return name, numel, rates


def rust_rates(path: str) -> dict:
    """The Rust benchmark's paired-pass weights/s on all cores, by output (`bf16`, `f32`), from
    its printed table: the rows `CORES OUT | criterion... | Gweight/s GB/s ...`."""
    rows = {}
    for line in open(path, encoding="utf-8"):
        m = re.match(r"\s*(\d+)\s+(f32|bf16)\s*\|[^|]*\|\s*([0-9.]+)", line)
        if m:
            rows.setdefault(m.group(2), []).append((int(m.group(1)), float(m.group(3)) * 1e9))
    return {out: max(v)[1] for out, v in rows.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", required=True, help="the BF16 model.safetensors")
    ap.add_argument("--qins", required=True, help="the same weights as a .qins")
    ap.add_argument("--qins-log", help="a .qins of one large log-coded tensor")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--rust", help="the output of `cargo bench -p qins-export --bench decode`")
    ap.add_argument("--json", help="write the figures here too")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: one load, in a fresh process
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one_load(args.one, args.source, args.qins)))
        return 0
    if not args.qins_log:
        ap.error("--qins-log is needed")

    load = loads(args)
    name, numel, rates = decode(args)
    rust = rust_rates(args.rust) if args.rust else {}

    gb = lambda p: os.path.getsize(p) / 1e9  # noqa: E731
    print(
        f"load: {gb(args.source):.2f} GB BF16 safetensors, its .qins {gb(args.qins):.2f} GB; page-cached; "
        f"one load per fresh process; median of {args.runs}"
    )
    print(f"  {'':<46} {'wall':>8} {'CPU':>8} {'faults':>8}")
    for case, m in load.items():
        print(f"  {case:<46} {m['wall']:>6.3f} s {m['cpu']:>6.3f} s {m['faults']:>8.0f}")
    ratios = {
        "qins / safetensors (default, lazy)": (LOADS[3], LOADS[0]),
        "qins + touch / safetensors + touch": (LOADS[4], LOADS[1]),
        "qins / safetensors pread": (LOADS[3], LOADS[2]),
        "qins(verify=False) / safetensors pread": (LOADS[5], LOADS[2]),
    }
    print(f"  ratios {'':<39} {'wall':>8} {'CPU':>8}")
    ratio_figures = {}
    for label, (a, b) in ratios.items():
        w = load[a]["wall"] / max(load[b]["wall"], 1e-9)
        c = load[a]["cpu"] / max(load[b]["cpu"], 1e-9)
        ratio_figures[label] = {"wall": w, "cpu": c}
        print(f"  {label:<46} {w:>7.2f}x {c:>7.2f}x")
    print(f"decode: tensor {name!r}, {numel / 1e6:.1f} M weights, all cores; median of {args.runs}")
    print(f"  {'':<46} {'G weights/s':>11} {'vs Rust':>8}")
    for label, v in rates.items():
        out = "bf16" if "bf16" in label else "f32"
        vs = f"{v / rust[out]:>7.2f}x" if out in rust else f"{'-':>8}"
        print(f"  {label:<46} {v / 1e9:>11.2f} {vs}")
    for out, v in sorted(rust.items()):
        print(f"  {'Rust benchmark, paired pass, ' + out:<46} {v / 1e9:>11.2f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"load": load, "ratios": ratio_figures, "decode_weights_per_s": rates,
                       "rust_weights_per_s": rust, "tensor": name, "numel": numel,
                       "runs": args.runs}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
