"""Sharing one server between visitors: the memory budget over session caches, the first-come
first-served work gate, square-resolution predictions, and the atomic checkpoint folder swap."""

from __future__ import annotations

import gc
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from hydralanet import CLASSES, load_model, predict, predict_square
from hydralanet.io.system import exchange_paths, replace_folder
from webapp.serving import MemoryBudget, SessionCache, WorkGate, env_int

MB = 1 << 20


def test_session_cache_keeps_its_newest_entries() -> None:
    cache = SessionCache(MemoryBudget(100 * MB), max_entries=2)
    for key in "abc":
        cache.put(key, key.upper(), MB)
    assert cache.get("a") is None and cache.get("b") == "B" and cache.get("c") == "C"
    cache.get("b")  # b is now the most recent: d pushes out c
    cache.put("d", "D", MB)
    assert cache.get("c") is None and cache.get("b") == "B" and len(cache) == 2 and cache.nbytes == 2 * MB


def test_budget_drops_the_oldest_entries_of_any_session_never_the_new_one() -> None:
    budget = MemoryBudget(10 * MB)
    first, second = SessionCache(budget), SessionCache(budget)
    first.put("old", 1, 4 * MB)
    second.put("mid", 2, 4 * MB)
    assert budget.used() == 8 * MB and budget.evictions == 0
    first.put("new", 3, 4 * MB)  # 12 MB: the oldest entry (first's "old") goes
    assert first.get("old") is None and second.get("mid") == 2 and first.get("new") == 3
    assert budget.used() == 8 * MB and budget.evictions == 1 and first.evicted == 1
    third = SessionCache(budget)
    third.put("huge", 4, 20 * MB)  # larger than the budget on its own: everything else goes, it stays
    assert third.get("huge") == 4 and len(first) == len(second) == 0 and budget.used() == 20 * MB
    assert budget.evictions == 3


def test_closed_sessions_leave_the_budget() -> None:
    budget = MemoryBudget(100 * MB)
    cache = SessionCache(budget)
    cache.put("a", np.zeros(10), 5 * MB)
    assert budget.sessions == 1 and budget.used() == 5 * MB
    del cache
    gc.collect()
    assert budget.sessions == 0 and budget.used() == 0


def test_sweep_empties_the_caches_of_disconnected_sessions() -> None:
    budget = MemoryBudget(100 * MB)
    connected = {"gone": True, "here": True}
    gone = SessionCache(budget, alive=lambda: connected["gone"])
    here = SessionCache(budget, alive=lambda: connected["here"])
    broken = SessionCache(budget, alive=lambda: 1 / 0)  # a failing probe keeps the cache
    for cache in (gone, here, broken):
        cache.put("k", "v", MB)
    assert budget.sweep() == 0
    connected["gone"] = False
    assert budget.sweep() == 1
    assert len(gone) == 0 and here.get("k") == "v" and broken.get("k") == "v"
    budget.start_sweeper(0.01)
    connected["here"] = False
    deadline = time.monotonic() + 60  # a bound, not a wait: the loop ends when the condition holds
    while len(here) and time.monotonic() < deadline:
        time.sleep(0.01)
    budget.stop_sweeper()
    assert len(here) == 0


def test_work_gate_bounds_concurrency_and_serves_in_arrival_order() -> None:
    gate = WorkGate(2)
    running, peak, order, lock = [0], [0], [], threading.Lock()
    release = threading.Event()
    waits: dict[int, int] = {}

    def job(i: int) -> None:
        with gate.slot(on_wait=lambda ahead: waits.__setitem__(i, ahead)):
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
                order.append(i)
            release.wait(60)
            with lock:
                running[0] -= 1

    threads = []
    for i in range(6):
        t = threading.Thread(target=job, args=(i,))
        t.start()
        threads.append(t)
        deadline = time.monotonic() + 60
        # each job is either running or queued before the next arrives: a fixed arrival order
        while len(order) + gate.waiting < i + 1 and time.monotonic() < deadline:
            time.sleep(0.001)
    assert order == [0, 1] and gate.waiting == 4
    assert waits == {2: 2, 3: 3, 4: 4, 5: 5}  # jobs ahead, the two running included
    release.set()
    for t in threads:
        t.join(60)
    assert peak[0] == 2 and order == list(range(6))
    assert gate.served == 6 and gate.waited == 4 and gate.running == 0


def test_work_gate_lets_the_next_job_go_when_a_waiting_one_is_abandoned() -> None:
    gate = WorkGate(1)
    hold = threading.Event()
    started = threading.Event()

    def holder() -> None:
        with gate.slot():
            started.set()
            hold.wait(60)

    t = threading.Thread(target=holder)
    t.start()
    assert started.wait(60)

    class Abandon(Exception):
        pass

    def impatient(ahead: int) -> None:
        raise Abandon  # raised before waiting: the ticket must not stay in the queue

    with pytest.raises(Abandon), gate.slot(on_wait=impatient):
        pass
    hold.set()
    t.join(60)
    with gate.slot():  # would hang if the abandoned ticket were still first in line
        pass
    assert gate.waiting == 0 and gate.running == 0


def test_env_int_reads_operator_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HYDRALANET_TEST_N", raising=False)
    assert env_int("HYDRALANET_TEST_N", 7) == 7
    monkeypatch.setenv("HYDRALANET_TEST_N", "12")
    assert env_int("HYDRALANET_TEST_N", 7) == 12
    for bad, message in (("lots", "expected a whole number"), ("0", "must be at least 1")):
        monkeypatch.setenv("HYDRALANET_TEST_N", bad)
        with pytest.raises(ValueError, match=f"HYDRALANET_TEST_N.*{message}"):
            env_int("HYDRALANET_TEST_N", 7)


@pytest.mark.parametrize("crop", ["fov", "centre_square"])
def test_square_prediction_gives_the_full_resolution_numbers_exactly(tiny_checkpoint, retina, crop) -> None:
    loaded = load_model(tiny_checkpoint, device="cpu")
    image = np.ascontiguousarray(retina[::3, ::2])  # not square, not the model size
    full = predict(loaded, image, precision="fp32", crop=crop)
    square = predict_square(loaded, image, precision="fp32", crop=crop)
    s = loaded.config.preprocessing.input_size
    assert square.square.shape == (len(CLASSES), s, s) and square.square.dtype == np.float32
    assert np.array_equal(square.probabilities(), full.probabilities)
    y0, y1, x0, x1 = square.geometry.box
    assert (y1 - y0, x1 - x0) != image.shape[:2]  # the box is not the whole photo: there is an outside
    # thresholds at the probabilities' own quantiles: every class has pixels either side
    inside = full.probabilities[:, full.fov]
    for q in (0.1, 0.5, 0.97):
        cuts = {c: float(np.quantile(inside[i], q)) for i, c in enumerate(CLASSES)}
        masks = square.masks(cuts)
        assert np.array_equal(masks, full.masks(cuts))
        assert 0 < masks.sum() < len(CLASSES) * full.fov.sum()
    zero = dict.fromkeys(CLASSES, 0.0)  # the lowest threshold: the whole FOV, outside the square too
    assert np.array_equal(square.masks(zero), full.masks(zero)) and square.masks(zero)[0].sum() == full.fov.sum()
    assert square.nbytes < full.probabilities.nbytes + full.image.nbytes + full.fov.nbytes


def test_replace_folder_swaps_in_one_step(tmp_path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "f").write_text("new")
    (b / "f").write_text("old")
    assert exchange_paths(a, b)  # Linux on tmpfs/ext4/overlayfs: the atomic path is the one taken
    assert (a / "f").read_text() == "old" and (b / "f").read_text() == "new"
    replace_folder(b, a)
    assert (a / "f").read_text() == "new" and not b.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["a"]


def test_checkpoint_folder_is_never_missing_while_rewritten(tiny_checkpoint, tmp_path) -> None:
    from hydralanet import save_checkpoint

    loaded = load_model(tiny_checkpoint, device="cpu")
    target = tmp_path / "ckpt"
    save_checkpoint(loaded.model, target, loaded.config)
    stop, missing, reads = threading.Event(), [], [0]

    def reader() -> None:
        while not stop.is_set():
            if not (target / "config.json").exists():
                missing.append(time.monotonic())
            reads[0] += 1

    t = threading.Thread(target=reader)
    t.start()
    for _ in range(15):
        save_checkpoint(loaded.model, target, loaded.config)
    stop.set()
    t.join()
    assert reads[0] > 100 and missing == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temp or old folders left


def test_heap_settings_take_on_glibc() -> None:
    from hydralanet.io.system import keep_heap_small

    assert keep_heap_small() is True  # this Linux has glibc: the server's freed memory goes back


def test_batch_heap_setting_keeps_freed_blocks_for_reuse() -> None:
    # In a fresh interpreter (the setting is per process): by default each 90 MB array is a new
    # mapping whose pages fault in (and are zeroed) anew: 22,000 of 4 KB, or ~45 of 2 MB with
    # transparent huge pages; after reuse_freed_memory the freed block is reused and its pages
    # are already there. Counted in page faults, not timed.
    code = """
import resource, numpy as np
from hydralanet.io.system import reuse_freed_memory
def faults():
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        a = np.ones((3000, 3000, 10), np.uint8)
        del a
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
before = faults()
ok = reuse_freed_memory()
faults()  # the first block after the setting is new
print(ok, before, faults())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    ok, before, after = out.stdout.split()
    assert ok == "True"
    assert int(before) >= 10 * 40 and int(after) * 20 < int(before), (before, after)


def test_work_gate_serves_a_first_job_before_those_waiting() -> None:
    """A photo's reading (``first=True``) goes before the segmentations that queued earlier."""
    gate = WorkGate(1)
    order: list[str] = []
    waits: dict[str, int] = {}
    release, held = threading.Event(), threading.Event()

    def job(name: str, first: bool = False) -> None:
        with gate.slot(on_wait=lambda ahead: waits.__setitem__(name, ahead), first=first):
            order.append(name)
            if name == "running":
                held.set()
                release.wait(60)

    threads = [threading.Thread(target=job, args=("running",))]
    threads[0].start()
    assert held.wait(60)
    for name, first in (("segment 1", False), ("segment 2", False), ("reading", True)):
        threads.append(threading.Thread(target=job, args=(name, first)))
        threads[-1].start()
        deadline = time.monotonic() + 60
        while gate.waiting < len(threads) - 1 and time.monotonic() < deadline:  # queued before the next comes
            time.sleep(0.001)
    assert waits == {"segment 1": 1, "segment 2": 2, "reading": 1}
    release.set()
    for t in threads:
        t.join(60)
    assert order == ["running", "reading", "segment 1", "segment 2"]
