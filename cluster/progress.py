"""Progress of a batch of Dask futures: a tqdm bar on a terminal, sparse status lines in logs."""
from __future__ import annotations

import sys
import time
from typing import Any, Iterable, Iterator, TextIO

from .errors import TaskError

STATUS_INTERVAL_S = 10.0  # at most one status line per this many seconds when not on a terminal


def format_duration(seconds: float) -> str:
    """Compact duration: ``42s``, ``12m05s``, ``14h02m``, ``3d04h``."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"


def _plural(unit: str) -> str:
    if unit.endswith("s"):
        return unit
    return unit + ("es" if unit.endswith(("ch", "sh", "x", "z")) else "s")


def format_status(label: str, done: int, total: int | None, elapsed_s: float, unit: str = "task") -> str:
    """One status line, e.g. ``simulate: 12/288 tasks (4.2%) | 0.32 task/min | elapsed 38m00s | ETA 14h02m``.

    The rate is per second when at least 1/s, else per minute. The ETA assumes the
    mean rate so far; it reads ``ETA ?`` before the first completion and ``done`` at the end.
    ``total=None`` (unknown) drops the percentage and the ETA.
    """
    if total is not None:
        pct = 100.0 * done / total if total else 100.0
        parts = [f"{label}: {done}/{total} {_plural(unit)} ({pct:.1f}%)"]
    else:
        parts = [f"{label}: {done} {_plural(unit)}"]
    rate_s = done / elapsed_s if elapsed_s > 0 else 0.0
    if rate_s >= 1:
        parts.append(f"{rate_s:.3g} {unit}/s")
    else:
        parts.append(f"{rate_s * 60:.3g} {unit}/min")
    parts.append(f"elapsed {format_duration(elapsed_s)}")
    if total is not None:
        if done >= total:
            parts.append("done")
        elif done == 0 or rate_s == 0:
            parts.append("ETA ?")
        else:
            parts.append(f"ETA {format_duration((total - done) / rate_s)}")
    return " | ".join(parts)


def _is_tty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def track(
    futures: Iterable[Any],
    *,
    label: str,
    unit: str = "task",
    total: int | None = None,
    stream: TextIO | None = None,
    interval_s: float = STATUS_INTERVAL_S,
) -> Iterator[Any]:
    """Yield the result of each future as it completes (completion order, not submission order).

    Progress goes to ``stream`` (default ``sys.stderr``): a tqdm bar when it is a terminal, otherwise a
    :func:`format_status` line at most every ``interval_s`` seconds plus a final line. A task that
    raised is re-raised as :class:`TaskError` naming the task key (original error as ``__cause__``);
    the remaining futures keep running until the caller cancels them or closes the client.
    """
    from distributed import as_completed  # deferred: distributed costs ~2 s; `import cluster` stays light

    stream = sys.stderr if stream is None else stream
    futures = list(futures)
    if total is None:
        total = len(futures)
    start = time.monotonic()
    bar = None
    if _is_tty(stream):
        from tqdm.auto import tqdm  # deferred: ~0.4 s; only a terminal gets a bar

        bar = tqdm(total=total, desc=label, unit=unit, file=stream, dynamic_ncols=True)
    last_line = start
    done = printed = 0
    try:
        for future in as_completed(futures):
            try:
                result = future.result()
            except Exception as exc:
                raise TaskError(f"{label}: task {future.key!r} failed: {type(exc).__name__}: {exc}", str(future.key)) from exc
            done += 1
            if bar is not None:
                bar.update(1)
            else:
                now = time.monotonic()
                if now - last_line >= interval_s or done == total:
                    print(format_status(label, done, total, now - start, unit), file=stream, flush=True)
                    last_line, printed = now, done
            yield result
        if bar is None and printed != done:  # the final line, also when fewer than `total` came back
            print(format_status(label, done, total, time.monotonic() - start, unit), file=stream, flush=True)
    finally:
        if bar is not None:
            bar.close()


def track_items(items: Iterable[Any], *, label: str, unit: str = "item", total: int | None = None,
                stream: TextIO | None = None, interval_s: float = STATUS_INTERVAL_S) -> Iterator[Any]:
    """Yield ``items`` (work done in this process, e.g. reading shard after shard) with the progress
    :func:`track` shows for futures: a :func:`format_status` line at most every ``interval_s`` seconds and a
    final line, on ``stream`` (default ``sys.stderr``); nothing for work shorter than ``interval_s``."""
    stream = sys.stderr if stream is None else stream
    items = list(items) if total is None else items
    total = len(items) if total is None else total
    start = last = time.monotonic()
    done = printed = 0
    for item in items:
        yield item
        done += 1
        now = time.monotonic()
        if now - last >= interval_s:
            print(format_status(label, done, total, now - start, unit), file=stream, flush=True)
            last, printed = now, done
    if printed and printed != done:
        print(format_status(label, done, total, time.monotonic() - start, unit), file=stream, flush=True)
