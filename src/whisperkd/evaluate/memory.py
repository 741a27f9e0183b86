"""Memory of the evaluating process: resident set size (RSS) on the host, allocated memory on CUDA.

Several models are measured in one process, so a model's share is taken as two differences:

- ``load`` = RSS after loading it minus RSS before (its weights and buffers);
- ``peak_extra`` = peak RSS while it transcribes one batch minus RSS just before (its working memory).

Freed heap memory is handed back to the OS first (glibc ``malloc_trim``): otherwise a model that runs
after a bigger one reuses its freed pages and seems to need no memory. The peak is read from ``VmHWM`` in ``/proc/self/status`` after resetting it (writing ``5`` to
``/proc/self/clear_refs``, Linux >= 4.0). Where that is impossible, a thread samples the RSS every 5 ms
(psutil, else ``/proc/self/statm``), which can miss short spikes. The reset also resets
``ru_maxrss``, so the process peak is tracked here across resets (:func:`process_peak_rss`).
On CUDA the same two differences come from ``torch.cuda.memory_allocated`` / ``max_memory_allocated``
(tensors allocated by torch only: a CTranslate2 model's GPU memory is not seen).
"""

from __future__ import annotations

import ctypes
import os
import resource
import sys
import threading
from pathlib import Path

import torch

try:  # optional: a more exact RSS than /proc/self/statm where psutil is installed
    import psutil
except ImportError:
    psutil = None

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_process_peak = 0  # bytes; the highest peak seen before any reset


def release_free_memory() -> None:
    """Hand freed heap memory back to the OS (glibc ``malloc_trim``), so that an RSS baseline counts live
    memory only and the next model's working memory shows up as growth, whichever model ran before."""
    global _malloc_trim
    if _malloc_trim is None:
        try:
            _malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


_malloc_trim = None


def current_rss() -> int | None:
    """Resident set size of this process in bytes (None where it cannot be read)."""
    if psutil is not None:
        return int(psutil.Process().memory_info().rss)
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return None


def _ru_maxrss() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, KiB on Linux


def _vm_hwm() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def process_peak_rss() -> int:
    """Peak RSS of the whole process so far, in bytes (ru_maxrss, kept across VmHWM resets)."""
    global _process_peak
    _process_peak = max(_process_peak, _ru_maxrss(), _vm_hwm() or 0)
    return _process_peak


def _reset_hwm() -> bool:
    process_peak_rss()  # remember the peak before it is forgotten
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class PeakRSS:
    """``with PeakRSS() as peak: ...`` then ``peak.before``, ``peak.peak``, ``peak.extra`` (bytes) and ``peak.method``."""

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.before = self.peak = None
        self.method = "unavailable"
        self._stop = threading.Event()
        self._thread = None

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            rss = current_rss()
            if rss is not None:
                self.peak = max(self.peak or 0, rss)

    def __enter__(self) -> PeakRSS:
        release_free_memory()
        self.before = current_rss()
        if _reset_hwm() and _vm_hwm() is not None:
            self.method = "VmHWM reset"
        elif self.before is not None:
            self.method = "RSS sampled every 5 ms"
            self.peak = self.before
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.method == "VmHWM reset":
            self.peak = _vm_hwm()
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()
            rss = current_rss()
            self.peak = max(self.peak or 0, rss or 0)
        process_peak_rss()

    @property
    def extra(self) -> int | None:
        if self.peak is None or self.before is None:
            return None
        return max(0, self.peak - self.before)


class PeakCuda:
    """Like :class:`PeakRSS` for torch's CUDA allocations on ``device``; all None off CUDA."""

    def __init__(self, device: str):
        self.device = str(device)
        self.before = self.peak = None

    def __enter__(self) -> PeakCuda:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.before = int(torch.cuda.memory_allocated(self.device))
        return self

    def __exit__(self, *exc) -> None:
        if self.before is not None:
            torch.cuda.synchronize(self.device)
            self.peak = int(torch.cuda.max_memory_allocated(self.device))

    @property
    def extra(self) -> int | None:
        return None if self.peak is None else max(0, self.peak - self.before)


def cuda_allocated(device: str) -> int | None:
    """Bytes torch has allocated on a CUDA ``device`` now (None off CUDA)."""
    if not str(device).startswith("cuda"):
        return None
    torch.cuda.synchronize(device)
    return int(torch.cuda.memory_allocated(device))


def directory_size(path: str | Path | None) -> int | None:
    """Bytes of all files under ``path`` (None when it is not a local directory)."""
    if path is None or not Path(path).is_dir():
        return None
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())
