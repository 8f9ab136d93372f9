"""Progress display of the training loops: a tqdm bar on a terminal, plain lines in a log file."""

from __future__ import annotations

import sys
import time
from typing import Any, Dict

__all__ = ["LineProgress", "progress_bar"]


class LineProgress:
    """Progress for a log file: a first line after ``first`` iterations (so a slow stage shows its rate and
    ETA at once), then one plain line every ``every`` percent and at the end.

    Used instead of a tqdm bar when stderr is not a terminal, so a log holds a few lines per stage
    rather than every refresh of a bar joined by carriage returns.
    """

    def __init__(
        self, desc: str, total: int, initial: int = 0, every: float = 10.0, stream: Any = None, first: int = 3
    ) -> None:
        self.desc, self.total, self.n, self.every = desc, total, initial, every
        self.stream = stream if stream is not None else sys.stderr
        self.postfix: Dict[str, str] = {}
        self._start_n, self._start_t = initial, time.monotonic()
        self._next = min(self._threshold(initial), initial + max(1, first))

    def _threshold(self, n: int) -> int:
        step = max(1, int(self.total * self.every / 100))
        return (n // step + 1) * step

    def set_postfix(self, values: Dict[str, str], refresh: bool = False) -> None:
        self.postfix = dict(values)

    def update(self, k: int = 1) -> None:
        self.n += k
        if self.n >= self._next or self.n >= self.total:
            self._next = self._threshold(self.n)
            self._print()

    def _print(self) -> None:
        elapsed = time.monotonic() - self._start_t
        done = self.n - self._start_n
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.n) / rate if rate > 0 else 0.0
        pct = 100.0 * self.n / max(self.total, 1)
        extra = "".join(f", {k}={v}" for k, v in self.postfix.items())
        print(
            f"{self.desc}: {self.n}/{self.total} ({pct:.0f}%) {rate:.3g} it/s, elapsed {_hms(elapsed)}, "
            f"ETA {_hms(eta)}{extra}",
            file=self.stream,
            flush=True,
        )

    def close(self) -> None:
        pass


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def progress_bar(desc: str, total: int, initial: int, enabled: bool) -> Any:
    """A tqdm bar on a terminal, :class:`LineProgress` lines when stderr is a file or pipe, or nothing."""
    if enabled and not sys.stderr.isatty():
        return LineProgress(desc, total, initial)
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="it", dynamic_ncols=True, disable=not enabled, leave=True)
