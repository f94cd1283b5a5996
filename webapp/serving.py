"""One process, many visitors (the web app on a public Space): a memory budget over every
session's cached results, and a first-come-first-served gate for heavy work.

Nothing here imports Streamlit; the app keeps one :class:`MemoryBudget` and one
:class:`WorkGate` per process (``st.cache_resource``) and one :class:`SessionCache` per session
(``st.session_state``, so it goes when the session does).
"""

from __future__ import annotations

import itertools
import os
import threading
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from hydralanet.io.system import release_free_memory

_clock = itertools.count()  # a global order of use: "oldest" across every session


def env_int(name: str, default: int, *, minimum: int = 1) -> int:
    """An integer operator setting from the environment; a bad value is a one-line error."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r}: expected a whole number") from None
    if value < minimum:
        raise ValueError(f"{name}={value}: must be at least {minimum}")
    return value


class SessionCache:
    """One session's results, newest last: at most ``max_entries``, and part of a process-wide
    :class:`MemoryBudget` that may drop the oldest entries of any session. ``get`` of a dropped
    entry is None: the caller recomputes it."""

    def __init__(self, budget: MemoryBudget, max_entries: int = 4, *, alive: Callable[[], bool] | None = None) -> None:
        """``alive``: whether the session that owns the cache is still connected; the budget's
        sweeper empties the caches of sessions that are not (None: never swept)."""
        self.budget, self.max_entries, self.alive = budget, max_entries, alive
        self._entries: OrderedDict[Any, tuple[Any, int, int]] = OrderedDict()  # key -> (value, bytes, last use)
        self._lock = threading.Lock()
        self.evicted = 0  # entries the budget took from this session
        budget.register(self)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Any) -> bool:
        return key in self._entries

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(size for _, size, _ in self._entries.values())

    def get(self, key: Any) -> Any | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries[key] = (entry[0], entry[1], next(_clock))
            self._entries.move_to_end(key)
            return entry[0]

    def put(self, key: Any, value: Any, nbytes: int) -> None:
        """Keep ``value`` (``nbytes`` large); then the session's own limit and the process budget
        drop older entries (never this one)."""
        with self._lock:
            self._entries[key] = (value, int(nbytes), next(_clock))
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        self.budget.enforce(keep=(self, key))

    def _oldest(self, keep: Any) -> tuple[int, Any] | None:
        with self._lock:
            for key, (_, _, used) in self._entries.items():
                if key != keep:
                    return used, key
        return None

    def _drop(self, key: Any) -> int:
        with self._lock:
            entry = self._entries.pop(key, None)
        if entry is None:
            return 0
        self.evicted += 1
        return entry[1]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


class MemoryBudget:
    """The bytes every live session's cache may hold together (``limit_bytes``). Over it, the
    least recently used entries of any session are dropped, oldest first; the entry just
    stored is always kept. Sessions that end take their caches with them (weak references)."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = int(limit_bytes)
        self._caches: weakref.WeakSet[SessionCache] = weakref.WeakSet()
        self._lock = threading.Lock()
        self.evictions = 0

    def register(self, cache: SessionCache) -> None:
        with self._lock:
            self._caches.add(cache)

    @property
    def sessions(self) -> int:
        with self._lock:
            return len(self._caches)

    def used(self) -> int:
        with self._lock:
            caches = list(self._caches)
        return sum(cache.nbytes for cache in caches)

    def sweep(self) -> int:
        """Empty the caches of sessions that have gone (their owner is not ``alive``) and give
        the memory back; returns how many caches were emptied."""
        with self._lock:
            caches = list(self._caches)
        emptied = 0
        for cache in caches:
            if len(cache) and cache.alive is not None and not _safe(cache.alive):
                cache.clear()
                emptied += 1
        ended = len(caches) < getattr(self, "_seen", 0)  # sessions the server has let go since last time
        self._seen = len(caches)
        if emptied or ended:
            release_free_memory()
        return emptied

    def start_sweeper(self, interval_s: float = 10.0) -> None:
        """Sweep every ``interval_s`` seconds in a daemon thread (once per budget)."""
        if getattr(self, "_sweeper", None) is not None:
            return

        def run() -> None:
            while not self._stop.wait(interval_s):
                self.sweep()

        self._stop = threading.Event()
        self._sweeper = threading.Thread(target=run, name="hydralanet-cache-sweeper", daemon=True)
        self._sweeper.start()

    def stop_sweeper(self) -> None:
        if getattr(self, "_sweeper", None) is not None:
            self._stop.set()
            self._sweeper.join()
            self._sweeper = None

    def enforce(self, keep: tuple[SessionCache, Any] | None = None) -> int:
        """Drop the oldest entries until the caches fit; returns how many were dropped."""
        dropped = 0
        with self._lock:  # one eviction pass at a time; caches lock themselves
            caches = list(self._caches)
            total = sum(cache.nbytes for cache in caches)
            while total > self.limit_bytes:
                candidates = []
                for cache in caches:
                    oldest = cache._oldest(keep[1] if keep is not None and cache is keep[0] else _NOTHING)
                    if oldest is not None:
                        candidates.append((oldest[0], id(cache), cache, oldest[1]))
                if not candidates:
                    break
                _, _, cache, key = min(candidates, key=lambda c: c[:2])
                total -= cache._drop(key)
                dropped += 1
            self.evictions += dropped
        if dropped:
            release_free_memory()
        return dropped


_NOTHING = object()


def _safe(alive: Callable[[], bool]) -> bool:
    try:
        return bool(alive())
    except Exception:  # a liveness probe that fails must not take the sweeper down
        return True


class WorkGate:
    """At most ``slots`` heavy jobs at once in the process, served first come, first served.

    ``with gate.slot(on_wait=...)``: when the job has to wait, ``on_wait(ahead)`` is called once
    with the number of jobs before it (running ones included), so the page can say "queued".
    ``first=True``: the job goes before those waiting (the next step of a job just served, such
    as a photo's reading after its segmentation, so that a visitor's results are made together)."""

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError(f"a work gate needs at least one slot, got {slots}")
        self.slots = slots
        self._cond = threading.Condition()
        self._queue: deque[object] = deque()
        self.running = 0
        self.served = 0
        self.waited = 0  # jobs that had to queue

    @property
    def waiting(self) -> int:
        with self._cond:
            return len(self._queue)

    @contextmanager
    def slot(self, on_wait: Callable[[int], None] | None = None, *, first: bool = False) -> Iterator[None]:
        ticket = object()
        with self._cond:
            free = self.running < self.slots and (first or not self._queue)
            if free:
                self.running += 1
            elif first:
                self._queue.appendleft(ticket)
                ahead = self.running
            else:
                self._queue.append(ticket)
                ahead = self.running + len(self._queue) - 1
        if not free:
            self.waited += 1
            try:
                if on_wait is not None:
                    on_wait(ahead)
                with self._cond:
                    self._cond.wait_for(lambda: self.running < self.slots and self._queue[0] is ticket)
                    self._queue.popleft()
                    self.running += 1
            except BaseException:  # the job was abandoned while waiting: let the next one go
                with self._cond:
                    if ticket in self._queue:
                        self._queue.remove(ticket)
                    self._cond.notify_all()
                raise
        try:
            yield
        finally:
            with self._cond:
                self.running -= 1
                self.served += 1
                self._cond.notify_all()
