#!/usr/bin/env python3
"""How busy a command keeps its worker threads: runs it and samples Linux's per-thread
scheduler statistics (/proc/PID/task/TID/schedstat: nanoseconds on a CPU, nanoseconds waiting
on a run queue) every INTERVAL seconds (default 0.005).

    tools/cpu_share.py [--interval S] [--workers N] [--slices K] -- COMMAND [ARGS...]

Prints one JSON object: the wall time, each thread's name, on-CPU and run-queue seconds, and
for the worker threads (every thread but the first, which only waits for the pool, and threads
named `qins-write ...` (the flushing and direct-writing threads), which wait for the disk) their
share of the time up to the last sample ("sampled": the counts after it are lost with the
process), overall and in K (default 10) equal slices of the run (a serial tail shows as a low
last slice):

  - "busy": on-CPU time / (workers x sampled time);
  - "runnable": (on-CPU + run-queue time) / (workers x sampled time): what they would have used
    on a machine of their own (on a shared machine the run-queue time is the other jobs' share).

Time a worker spends asleep (no work for it, or blocked in a system call, e.g. a write waiting
for the disk) counts in neither. --workers N divides by N instead of the number of worker
threads seen (pass the --threads value). Public tools only: Python 3 and /proc.
"""
import json
import os
import subprocess
import sys
import time


def sample(pid):
    """{tid: (name, run_ns, wait_ns)} for every thread of pid, or None once it is gone."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                run, wait, _ = f.read().split()
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
        except OSError:
            continue
        out[int(tid)] = (name, int(run), int(wait))
    return out


def main():
    args = sys.argv[1:]
    interval, workers, nslices = 0.005, None, 10
    while args and args[0] != "--":
        if args[0] == "--interval":
            interval, args = float(args[1]), args[2:]
        elif args[0] == "--workers":
            workers, args = int(args[1]), args[2:]
        elif args[0] == "--slices":
            nslices, args = int(args[1]), args[2:]
        else:
            sys.exit(__doc__)
    if not args[1:]:
        sys.exit(__doc__)
    cmd = args[1:]
    start = time.monotonic()
    p = subprocess.Popen(cmd)
    samples = []  # (seconds since start, {tid: (name, run, wait)})
    last = {}
    while p.poll() is None:
        s = sample(p.pid)
        if s:
            # A thread that ended keeps its last counts.
            last.update(s)
            samples.append((time.monotonic() - start, dict(last)))
        time.sleep(interval)
    wall = time.monotonic() - start
    if p.returncode != 0:
        sys.exit(f"{cmd[0]} failed with status {p.returncode}")
    if not samples:
        sys.exit("the command ended before the first sample")
    final = samples[-1][1]

    def is_worker(tid, name):
        return tid != p.pid and not name.startswith("qins-write")

    worker_ids = [t for t, (n, _, _) in final.items() if is_worker(t, n)]
    n = workers or max(1, len(worker_ids))

    def totals(s):
        run = sum(s[t][1] for t in worker_ids if t in s) / 1e9
        wait = sum(s[t][2] for t in worker_ids if t in s) / 1e9
        return run, wait

    run, wait = totals(final)
    # Slices of the sampled span, each from the counts at its ends.
    span = samples[-1][0]
    slices = []
    for k in range(nslices):
        a, b = span * k / nslices, span * (k + 1) / nslices
        sa = min(samples, key=lambda x: abs(x[0] - a))
        sb = min(samples, key=lambda x: abs(x[0] - b))
        if sb[0] <= sa[0]:
            slices.append(None)
            continue
        r0, w0 = totals(sa[1])
        r1, w1 = totals(sb[1])
        dt = (sb[0] - sa[0]) * n
        slices.append({"busy": round((r1 - r0) / dt, 3), "runnable": round((r1 - r0 + w1 - w0) / dt, 3)})
    # The shares are of the time up to the last sample, whose counts they are: the counts after
    # it are lost with the process, and dividing them by the whole wall time undercounted a run
    # of half a second by up to a tenth (one interval in five hundred milliseconds).
    print(json.dumps({
        "command": cmd,
        "wall": round(wall, 3),
        "sampled": round(span, 3),
        "workers": n,
        "busy": round(run / (n * span), 3),
        "runnable": round((run + wait) / (n * span), 3),
        "slices": slices,
        "threads": {str(t): {"name": v[0], "cpu": round(v[1] / 1e9, 3), "queued": round(v[2] / 1e9, 3)}
                    for t, v in sorted(final.items())},
    }, indent=1))


if __name__ == "__main__":
    main()
