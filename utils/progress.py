"""Progress with an ETA for steps that can run for minutes (feature extraction, distances, re-ranking).

On a terminal a tqdm bar on stderr; otherwise (log files, ``nohup``, CI) a log line every
``interval`` seconds. Either appears only once a step has run for ``delay`` seconds, so short runs
(tests, small data sets) print nothing.
"""
from __future__ import annotations

import sys
import time

from tqdm import tqdm

from utils.logger import get_logger

__all__ = ["Progress"]


class Progress:
    """Counts work units of one step and reports done / total, rate and ETA.

    Use as a context manager: ``with Progress(total, "re-ranking: row pass", "rows") as p: ... p.update(n)``.
    """

    def __init__(self, total: float, desc: str, unit: str = "it", delay: float = 10.0, interval: float = 30.0,
                 bar: bool | None = None) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.delay, self.interval = delay, interval
        self.done = 0
        self.start = self._last = time.perf_counter()
        use_bar = sys.stderr.isatty() if bar is None else bar
        self._bar = (tqdm(total=total, desc=desc, unit=unit, delay=delay, leave=False, file=sys.stderr)
                     if use_bar else None)

    def update(self, n: float = 1) -> None:
        """Add ``n`` finished units."""
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.perf_counter()
        if now - self.start >= self.delay and now - self._last >= self.interval and self.done < self.total:
            self._last = now
            get_logger().info(self.line(now))

    def line(self, now: float | None = None) -> str:
        """``desc: done/total unit (pct), elapsed, ETA``."""
        elapsed = (time.perf_counter() if now is None else now) - self.start
        eta = elapsed / self.done * (self.total - self.done) if self.done else float("nan")
        return (f"{self.desc}: {self.done:,.0f}/{self.total:,.0f} {self.unit} "
                f"({100 * self.done / max(self.total, 1):.0f}%), "
                f"{tqdm.format_interval(elapsed)} elapsed, ETA {tqdm.format_interval(eta) if self.done else '?'}")

    def close(self) -> None:
        """End the bar; a step that reported progress also logs its total time."""
        if self._bar is not None:
            self._bar.close()
        elif time.perf_counter() - self.start >= self.delay:
            get_logger().info(f"{self.desc}: done in {tqdm.format_interval(time.perf_counter() - self.start)}")

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
