"""What every benchmark shares: device names, dtypes, the timer, peak memory, a child process per
measurement, OOM handling, result tables. No benchmark times or measures memory any other way.

Every measurement produces a row (a dict). Each row names its device, dtype and shape; a row
that could not be measured keeps its columns and says why in `status` ("OOM", "skipped: ...",
"error: ...") so that one run always prints every table.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

# ---- device and dtype ------------------------------------------------------------------------

DTYPES = {
    "fp32": torch.float32,
    "tf32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "fp64": torch.float64,
}
# torch's names for the same dtypes, as some command lines spell them.
ALIASES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "float64": "fp64"}


def short_dtype(name: str) -> str:
    """'bfloat16' -> 'bf16' (and so on); the short names pass through. ValueError otherwise."""
    short = ALIASES.get(name, name)
    if short not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; valid: {sorted(DTYPES) + sorted(ALIASES)}")
    return short


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (platform.processor() where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def device_name(device: str) -> str:
    """A short human name: 'NVIDIA H100 80GB HBM3' or 'cpu (<model>, N threads)'."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"cpu ({cpu_model()}, {torch.get_num_threads()} threads)"


def dtype_label(device: str, dtype: str) -> str:
    """fp32 on CUDA runs with TF32 matmuls/convolutions enabled: label it 'tf32'."""
    if dtype in ("fp32", "tf32"):
        return "tf32" if device.startswith("cuda") else "fp32"
    return dtype


def set_tf32(device: str, enabled: bool = True) -> None:
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = enabled
        torch.backends.cudnn.allow_tf32 = enabled


def autocast(device: str, dtype: str):
    """Autocast for bf16/fp16, nothing for fp32/tf32."""
    if dtype in ("bf16", "fp16"):
        return torch.autocast(device_type=torch.device(device).type, dtype=DTYPES[dtype])
    return contextlib.nullcontext()


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(torch.device(device))


# ---- timing ----------------------------------------------------------------------------------


@dataclass
class Timing:
    times_ms: list[float]
    cpu_ms: list[float] = field(default_factory=list)  # process CPU time (all threads), CPU only

    @property
    def median(self) -> float:
        return statistics.median(self.times_ms) if self.times_ms else float("nan")

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu_ms) if self.cpu_ms else float("nan")

    def percentile(self, q: float) -> float:
        if not self.times_ms:
            return float("nan")
        s = sorted(self.times_ms)
        return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]

    @property
    def spread(self) -> str:
        """p10-p90 as text, for the tables."""
        return f"{self.percentile(0.1):.1f}-{self.percentile(0.9):.1f}"


def time_fn(fn: Callable[[int], Any], device: str, warmup: int, iters: int) -> Timing:
    """Median-ready timings of `fn(i)` in milliseconds.

    Each iteration is synchronous, as inference with outputs on the host is: synchronize, then
    CUDA events around the call (their elapsed time is the device timeline from the first launch
    to the last kernel, host gaps included), then synchronize again. On the CPU, perf_counter, and
    the process CPU time as well (all threads: steadier than the wall clock when other work
    shares the CPU). `warmup` iterations run first and are discarded (module load, cuDNN
    autotuning, allocator growth, extension compilation stay out of the numbers).
    """
    cuda = device.startswith("cuda")
    for i in range(warmup):
        fn(i)
    synchronize(device)
    times, cpu = [], []
    for i in range(iters):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            fn(warmup + i)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0, c0 = time.perf_counter(), time.process_time()
            fn(warmup + i)
            times.append((time.perf_counter() - t0) * 1e3)
            cpu.append((time.process_time() - c0) * 1e3)
    return Timing(times, cpu)


class Laps:
    """Split times of one synchronous run, in seconds: `lap = Laps(device)`, run a stage,
    `lap("backbone")`, run the next, ... `lap.times` maps each stage to its time. Each lap
    synchronizes the device first, so a stage's time includes its queued kernels."""

    def __init__(self, device: str):
        self.device = device
        self.times: dict[str, float] = {}
        synchronize(device)
        self._t = time.perf_counter()

    def __call__(self, stage: str) -> None:
        synchronize(self.device)
        now = time.perf_counter()
        self.times[stage] = now - self._t
        self._t = now


class SectionTimer:
    """Times groups of sub-modules inside a model call with forward (pre-)hooks.

    `groups` maps a name to modules; every call of any of them adds to that group's time of the
    current iteration (e.g. all 9 cross-attention layers of the decoder form one group). On CUDA
    the hooks record events (no host synchronisation inside the model); on the CPU, perf_counter.
    Nested groups are fine (a group can be the parent of others). Call `next_iteration()` after
    each model call and `results_ms()` after the last (it synchronizes).
    """

    def __init__(self, groups: dict[str, list[torch.nn.Module]], device: str):
        self.cuda = device.startswith("cuda")
        self.device = device
        self.groups = groups
        self._iters: list[dict[str, list]] = []
        self._cur: dict[str, list] = {g: [] for g in groups}
        self._handles = []
        for name, modules in groups.items():
            for m in modules:
                self._handles.append(m.register_forward_pre_hook(self._pre(name, m)))
                self._handles.append(m.register_forward_hook(self._post(name, m)))
        self._open: dict[int, Any] = {}

    def _stamp(self):
        if self.cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            return e
        return time.perf_counter()

    def _pre(self, name, module):
        def hook(mod, args):
            self._open[(name, id(module))] = self._stamp()

        return hook

    def _post(self, name, module):
        def hook(mod, args, out):
            start = self._open.pop((name, id(module)), None)
            if start is not None:
                self._cur[name].append((start, self._stamp()))

        return hook

    def next_iteration(self) -> None:
        self._iters.append(self._cur)
        self._cur = {g: [] for g in self.groups}

    def results_ms(self) -> dict[str, Timing]:
        synchronize(self.device)
        out = {}
        for g in self.groups:
            per_iter = []
            for it in self._iters:
                if self.cuda:
                    per_iter.append(sum(s.elapsed_time(e) for s, e in it[g]))
                else:
                    per_iter.append(sum((e - s) * 1e3 for s, e in it[g]))
            out[g] = Timing(per_iter)
        return out

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


# ---- memory ----------------------------------------------------------------------------------


def _proc_status_bytes(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def _rss_bytes() -> int:
    try:
        return _proc_status_bytes("VmRSS")
    except (OSError, KeyError, ValueError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS; False where Linux does not
    offer it (then the peak is sampled)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        _proc_status_bytes("VmHWM")
        return True
    except (OSError, KeyError, ValueError):
        return False


class PeakMemory:
    """Peak memory of a region.

    CUDA: `torch.cuda.max_memory_allocated` after `reset_peak_memory_stats` (absolute: weights,
    optimizer state and activations); `static` is what was allocated when the region began.
    CPU: the process's resident set size; `static` is the RSS when the region began and `peak`
    the kernel's high-water mark (VmHWM, reset at the start; where Linux does not offer that,
    RSS sampled every 2 ms), so `peak - static` is the region's growth (an approximation: the
    allocator may reuse pages it kept from earlier work; a fresh process per measurement,
    `run_child`, avoids that).
    """

    def __init__(self, device: str):
        self.device = device
        self.cuda = device.startswith("cuda")
        self.peak = 0
        self.static = 0
        self._stop = threading.Event()
        self._thread = None
        self._hwm = False

    @property
    def kind(self) -> str:
        return "CUDA max allocated" if self.cuda else "CPU RSS"

    def __enter__(self):
        gc.collect()
        if self.cuda:
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(torch.device(self.device))
            self.static = torch.cuda.memory_allocated(torch.device(self.device))
        else:
            self._hwm = _reset_peak_rss()
            self.static = self.peak = _rss_bytes()
            if not self._hwm:
                self._thread = threading.Thread(target=self._sample, daemon=True)
                self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes())
            self._stop.wait(0.002)

    def __exit__(self, *exc):
        if self.cuda:
            synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(torch.device(self.device))
        elif self._hwm:
            self.peak = max(self.static, _proc_status_bytes("VmHWM"))
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, _rss_bytes())
        return False

    @property
    def peak_gib(self) -> float:
        return self.peak / 2**30

    @property
    def growth_gib(self) -> float:
        return max(0, self.peak - self.static) / 2**30


# ---- failures --------------------------------------------------------------------------------


def is_oom(e: BaseException) -> bool:
    if isinstance(e, torch.cuda.OutOfMemoryError):
        return True
    msg = str(e).lower()
    return isinstance(e, (RuntimeError, MemoryError)) and (
        "out of memory" in msg or isinstance(e, MemoryError) or "can't allocate memory" in msg
    )


def free_memory(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def run_row(row: dict, fn: Callable[[dict], None], device: str, log=print) -> dict:
    """Fill `row` by `fn(row)`; an OOM or an error becomes the row's status instead of a crash."""
    row.setdefault("status", "ok")
    try:
        fn(row)
    except Exception as e:  # noqa: BLE001  one failing row must not lose the others
        if is_oom(e):
            row["status"] = "OOM"
        else:
            row["status"] = (
                f"error: {type(e).__name__}: {str(e).strip().splitlines()[0][:120] if str(e).strip() else ''}"
            )
            log(f"[benchmarks] {row.get('section', '')} row failed:\n{traceback.format_exc()}")
    finally:
        free_memory(device)
    return row


# ---- one measurement per process ----------------------------------------------------------------


def run_child(module: str, argv: list[str]) -> dict:
    """Run `python -m benchmarks.<module> *argv` in a fresh process and return the JSON object it
    prints on its last line. A fresh process per measurement: memory that one case's allocator
    kept cannot hide (or inflate) another's peak. Raises RuntimeError with the child's stderr."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=repo + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{module}", *argv],
        capture_output=True,
        text=True,
        cwd=repo,
        env=env,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"benchmarks.{module} {' '.join(argv)} failed (exit {proc.returncode}):\n"
            + proc.stderr[-3000:]
        )
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---- tables ----------------------------------------------------------------------------------


@dataclass
class Table:
    title: str
    columns: list[tuple[str, str]]  # (key in row, header)
    rows: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, row: dict) -> dict:
        self.rows.append(row)
        return row

    def render(self) -> str:
        heads = [h for _, h in self.columns]
        body = [[fmt(r.get(k)) for k, _ in self.columns] for r in self.rows]
        widths = [max([len(h)] + [len(b[i]) for b in body]) for i, h in enumerate(heads)]
        line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
        out = [
            f"### {self.title}",
            "",
            line(heads),
            "|" + "|".join("-" * (w + 2) for w in widths) + "|",
        ]
        out += [line(b) for b in body]
        out += [""] + [f"- {n}" for n in self.notes]
        return "\n".join(out).rstrip() + "\n"


def fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if v != v:  # nan
            return "-"
        a = abs(v)
        if a == 0:
            return "0"
        if a >= 100:
            return f"{v:.0f}"
        if a >= 10:
            return f"{v:.1f}"
        if a >= 0.01:
            return f"{v:.3g}" if a < 1 else f"{v:.2f}"
        return f"{v:.2e}"
    return str(v)


def dump_json(path: str, tables: Iterable[Table], meta: dict) -> None:
    data = {
        "meta": meta,
        "tables": [{"title": t.title, "rows": t.rows, "notes": t.notes} for t in tables],
    }
    with open(path, "w") as f:
        json.dump(data, f, indent=1, default=str)
