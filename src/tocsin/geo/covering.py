"""Covers computed in a child process under a deadline, so that no area can freeze a node.

h3 holds the GIL while it fills a polygon (measured: a thread computing a 10 s cover left
the event loop no turn for 10 s), so a thread does not keep the loop free and cannot be
stopped. A child process can: the loop waits on its pipe, and a cover that passes its
deadline is ended with its process (by its own pid) and the next cover starts a new one.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from tocsin.cap.model import Circle, Polygon
from tocsin.geo.cells import Cover, cover_of_shapes
from tocsin.geo.extent import circle_km2, polygon_km2

log = logging.getLogger(__name__)

Shapes = tuple[tuple[Polygon, ...], tuple[Circle, ...]]

# Shapes this small are covered on the loop, in a few milliseconds (measured: 53,000 km² and
# 37 points, 4 ms): the probes' area every few seconds needs no round trip to the child.
_INLINE_MAX_KM2 = 100_000.0
_INLINE_MAX_POINTS = 1_000


def is_cheap(shapes: Shapes) -> bool:
    """Whether covering `shapes` takes milliseconds, judged from their coordinates."""
    polygons, circles = shapes
    km2 = sum(map(polygon_km2, polygons)) + sum(map(circle_km2, circles))
    return km2 <= _INLINE_MAX_KM2 and sum(map(len, polygons)) <= _INLINE_MAX_POINTS


class CoverTooSlow(Exception):
    """The cover did not finish within its deadline; its process was ended."""


def _serve(conn: Connection) -> None:
    """The child: read shapes, answer their compacted cells, until the pipe closes."""
    while True:
        try:
            polygons, circles = conn.recv()
        except EOFError:
            return
        conn.send(sorted(cover_of_shapes(polygons, circles).cells))


def _exchange(conn: Connection, shapes: Shapes) -> list[str]:
    """Send the shapes, wait for the cells; a child ended under it closes the pipe here,
    in the thread that uses it."""
    try:
        conn.send(shapes)
        cells: list[str] = conn.recv()
    except (EOFError, OSError):
        conn.close()
        raise
    return cells


class CoverWorker:
    """One child process that computes covers, one at a time, each under a deadline."""

    def __init__(self) -> None:
        self._context = multiprocessing.get_context("spawn")  # a small process, not a copy of the node
        self._process: BaseProcess | None = None
        self._conn: Connection | None = None
        self._lock = asyncio.Lock()

    async def cover(self, shapes: Shapes, deadline_s: float) -> Cover:
        """The cover of `shapes`, computed by the child.

        Raises:
            CoverTooSlow: not done within `deadline_s` (starting the child counts too).
        """
        if is_cheap(shapes):
            return cover_of_shapes(*shapes)
        async with self._lock:
            try:
                async with asyncio.timeout(deadline_s):
                    conn = await self._started()
                    # In a thread: the pipe stays blocking (a loop reader would make it
                    # non-blocking under a half-read answer), and the wait holds no GIL.
                    cells = await asyncio.to_thread(_exchange, conn, shapes)
            except TimeoutError:
                log.warning("cover over its deadline", extra={"deadline_s": deadline_s})
                self._end(close_pipe=False)  # the waiting thread meets EOF and closes it
                raise CoverTooSlow(f"not covered within {deadline_s:g} s") from None
        return Cover(cells=frozenset(cells))

    async def _started(self) -> Connection:
        if self._process is not None and self._process.is_alive() and self._conn is not None:
            return self._conn
        self.close()
        ours, theirs = self._context.Pipe()
        process = self._context.Process(target=_serve, args=(theirs,), name="tocsin-cover", daemon=True)
        # Spawning imports h3 and shapely in the child: a blocking fork and exec, kept off the loop.
        await asyncio.to_thread(process.start)
        theirs.close()
        self._process, self._conn = process, ours
        return ours

    def close(self) -> None:
        """End the child (by its pid), if one runs."""
        self._end(close_pipe=True)

    def _end(self, *, close_pipe: bool) -> None:
        process, conn = self._process, self._conn
        self._process = self._conn = None
        if process is not None:
            process.kill()
            process.join(timeout=5)
        if conn is not None and close_pipe:
            conn.close()
