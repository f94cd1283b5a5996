"""The streaming batch pipeline behind ``predict`` (generators with bounded queues (docs/architecture.md#batch-pipeline)).

Three stages, each bounded, so memory stays flat on any number of photos:

1. **decode + preprocess** in ``workers`` processes (a :class:`torch.utils.data.DataLoader`
   over :class:`PhotoDataset`; at most ``2 x workers`` photos ahead), which also skip, under
   ``--resume``, photos whose outputs are complete;
2. **the model** in this process, ``batch_size`` photos at a time (one photo: :func:`predict`,
   several: :func:`predict_batch`, whose squares share one size), kept at the model's square
   (:class:`ModelOutput`);
3. **post-process + write** (the masks at the photo's resolution, statistics, the reading,
   overlay, PNGs, the record) in another
   ``workers`` processes (:class:`PostPool`, a queue of at most ``workers`` photos).

``workers=0`` runs all three one after the other in this process: the serial path. Records come
back in any order and are appended to this process's shard in input order (:class:`InOrder`).
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from ..config import CLASSES, PreprocessConfig
from ..inference import segment
from ..io.images import ImageError, read_image
from ..io.system import usable_cores
from ..preprocessing import BlankImageError, Preprocessed
from ..reading.photo import LESION_EXCLUSION_P, square_exudate_cores
from .outputs import OutputOptions, PhotoResult, ShardWriter, complete_record, write_photo_outputs


def one_line_reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {(str(exc).strip() or 'no message').splitlines()[0]}"


def failure(index: int, source: str, exc: BaseException) -> dict[str, Any]:
    """A failure record (``index, source, error``) and the stderr line it gets (``message``)."""
    if isinstance(exc, ImageError):
        return {"index": index, "source": source, "error": exc.problem, "message": f"error: {exc}"}
    reason = str(exc) if isinstance(exc, BlankImageError) else one_line_reason(exc)
    return {"index": index, "source": source, "error": reason, "message": f"error: {source}: {reason}"}


@dataclass(frozen=True)
class PhotoJob:
    index: int  # position in the whole input list (all ranks)
    source: str
    name: str  # the photo's output folder
    frame: int | None = None  # of a multi-frame DICOM file (1 = the first)


@dataclass
class Decoded:
    """Stage 1's photo: the decoded image and the :class:`Preprocessed` parts as tensors (they
    travel from a worker to the main process through shared memory)."""

    job: PhotoJob
    image: torch.Tensor
    tensor: torch.Tensor
    enhanced: torch.Tensor
    fov: torch.Tensor
    geometry: Any

    def prepared(self) -> Preprocessed:
        return Preprocessed(self.tensor, self.enhanced.numpy(), self.fov.numpy(), self.geometry)


@dataclass
class Skipped:
    """A photo whose outputs are complete (``--resume``): ``record``, as it was written."""

    job: PhotoJob
    record: dict[str, Any]


@dataclass
class Failed:
    """A photo that could not be read or segmented: ``record`` is its :func:`failure`."""

    job: PhotoJob
    record: dict[str, Any]


class PhotoDataset(torch.utils.data.Dataset):
    """Stage 1 for one photo: :class:`Decoded`, :class:`Skipped` or :class:`Failed`."""

    def __init__(
        self,
        jobs: list[PhotoJob],
        config: PreprocessConfig,
        overrides: dict[str, Any],
        *,
        out: Path | None = None,
        fingerprint: str | None = None,
    ) -> None:
        self.jobs, self.config, self.overrides = jobs, config, overrides
        self.out, self.fingerprint = out, fingerprint  # set: --resume

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, k: int) -> Decoded | Skipped | Failed:
        job = self.jobs[k]
        if self.fingerprint is not None:
            record = complete_record(self.out / job.name, job.source, self.fingerprint)
            if record is not None:
                return Skipped(job, {**record, "index": job.index})
        try:
            image = read_image(job.source, frame=job.frame)
            prepared = segment.prepare_photo(self.config, image, **self.overrides)
        except Exception as exc:  # one photo's failure must not cost the others
            return Failed(job, failure(job.index, job.source, exc))
        return Decoded(
            job,
            torch.from_numpy(np.require(image, requirements="W")),
            prepared.tensor,
            torch.from_numpy(prepared.enhanced),
            torch.from_numpy(prepared.fov),
            prepared.geometry,
        )


def _as_is(sample: Any) -> Any:
    return sample


def _quiet_worker(_: int = 0) -> None:
    """A worker process computes on one core: the processes, not threads, share the cores."""
    torch.set_num_threads(1)
    cv2.setNumThreads(1)


@contextlib.contextmanager
def fork_safe_opencv(workers: int) -> Iterator[None]:
    """OpenCV's thread pool does not survive fork: the child of a parent that used it hangs in
    its first parallel call. One OpenCV thread in this process while workers fork (and run)."""
    threads = cv2.getNumThreads()
    if workers:
        cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(threads)


def decoded(dataset: PhotoDataset, workers: int) -> Iterator[Decoded | Skipped | Failed]:
    """Stage 1's results in input order, ``workers`` processes (0: in this process). Call it
    under :func:`fork_safe_opencv`."""
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=None,
        num_workers=workers,
        collate_fn=_as_is,
        prefetch_factor=2 if workers else None,
        worker_init_fn=_quiet_worker if workers else None,
        multiprocessing_context="fork" if workers else None,
    )
    yield from loader


@dataclass
class ModelStage:
    """Stage 2: ``predict``/``predict_batch`` with the run's settings, then what stage 3 needs."""

    loaded: Any
    predict_args: dict[str, Any]

    def run(self, samples: list[Decoded]) -> Iterator[ModelOutput | Failed]:
        """A :class:`ModelOutput` per photo, or :class:`Failed`; a batch that fails is retried
        photo by photo, so a bad photo costs only itself."""
        images = [s.image.numpy() for s in samples]
        prepared = [s.prepared() for s in samples]
        try:
            if len(samples) == 1:
                predictions = [
                    segment.predict(self.loaded, images[0], prepared=prepared[0], square=True, **self.predict_args)
                ]
            else:
                predictions = segment.predict_batch(
                    self.loaded, images, prepared=prepared, square=True, **self.predict_args
                )
        except Exception as exc:
            if len(samples) > 1:
                for sample in samples:
                    yield from self.run([sample])
                return
            job = samples[0].job
            yield Failed(job, failure(job.index, job.source, exc))
            return
        for sample, prediction in zip(samples, predictions):
            yield self.result(sample, prediction)

    def result(self, sample: Decoded, prediction: segment.SquarePrediction) -> ModelOutput:
        """What stage 3 needs: the model's square and the photo and FOV as stage 1 shared them
        (no full-resolution map is made here, where the model waits for it, or copied between
        processes: stage 3 makes the masks)."""
        job = sample.job
        return ModelOutput(
            job.index, job.name, job.source, sample.image, sample.fov, prediction.square, prediction.geometry
        )


@dataclass
class ModelOutput:
    """One photo between stages 2 and 3: ``image`` (RGB uint8 ``H x W x 3``) and ``fov`` (bool
    ``H x W``) as tensors (in shared memory when stage 1 ran in workers: they travel on as
    handles, not copies) and the model's probabilities ``square`` (``4 x S x S`` float32)
    with the ``geometry`` that maps them to the photo."""

    index: int
    name: str
    source: str
    image: torch.Tensor
    fov: torch.Tensor
    square: np.ndarray | torch.Tensor
    geometry: Any

    def to_result(self, options: OutputOptions) -> PhotoResult:
        """The photo at its own resolution: masks once (outputs, statistics and the reading share
        them), the reading's lesion map, probability maps when kept; exactly as from
        :meth:`segment.Prediction.masks` and ``probabilities``."""
        image, fov = np.asarray(self.image), np.asarray(self.fov)
        square = np.asarray(self.square)
        masks = segment.square_masks(square, self.geometry, fov, options.thresholds)
        lesions = prob16 = cores = None
        if options.reading:  # max over the classes >= p  <=>  some class >= p
            cuts = dict.fromkeys(CLASSES, LESION_EXCLUSION_P)
            lesions = segment.square_masks(square, self.geometry, fov, cuts).any(axis=0)
            cores = square_exudate_cores(square, self.geometry, fov)
        if options.save_probabilities:
            full = self.geometry.to_original(square)
            full *= fov[None]
            prob16 = np.round(full * 65535.0).astype(np.uint16)
        return PhotoResult(self.index, self.name, self.source, image, fov, masks, lesions, prob16, cores)

    def for_queue(self) -> ModelOutput:
        """Arrays as tensors, to travel through shared memory (the square is copied there once)."""
        square = self.square if isinstance(self.square, torch.Tensor) else torch.from_numpy(self.square)
        return ModelOutput(self.index, self.name, self.source, self.image, self.fov, square, self.geometry)


def post_process(output: ModelOutput, out: Path, options: OutputOptions) -> dict[str, Any]:
    """Stage 3 for one photo: its record, or a failure record."""
    try:
        return write_photo_outputs(out / output.name, output.to_result(options), options)
    except Exception as exc:
        return failure(output.index, output.source, exc)


def _post_worker(tasks: Any, results: Any, out: Path, options: OutputOptions) -> None:
    _quiet_worker()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    parent = os.getppid()
    while True:
        try:
            task = tasks.get(timeout=2.0)
        except queue.Empty:
            if os.getppid() != parent:  # the main process was killed: nobody to report to
                return
            continue
        if task is None:
            return
        results.put(post_process(task, out, options))


class PostPool:
    """Stage 3 in ``workers`` processes fed through a queue of at most ``workers`` photos (0: in
    this process). :meth:`submit` blocks when it is full; :meth:`ready` returns the records done."""

    def __init__(self, workers: int, out: Path, options: OutputOptions) -> None:
        self.out, self.options, self.inline = out, options, []
        self.procs: list[Any] = []
        if workers:
            ctx = torch.multiprocessing.get_context("fork")
            self.tasks, self.results = ctx.Queue(maxsize=workers), ctx.Queue()
            self.procs = [
                ctx.Process(target=_post_worker, args=(self.tasks, self.results, out, options), daemon=True)
                for _ in range(workers)
            ]
            for proc in self.procs:
                proc.start()
        self.pending = 0

    def submit(self, output: ModelOutput) -> None:
        if not self.procs:
            self.inline.append(post_process(output, self.out, self.options))
            return
        task = output.for_queue()
        while True:
            self._check_alive()
            try:
                self.tasks.put(task, timeout=1.0)
                break
            except queue.Full:
                continue
        self.pending += 1

    def ready(self, wait: bool = False) -> list[dict[str, Any]]:
        """Records finished so far; ``wait``: block until every submitted photo is done."""
        done, self.inline = self.inline, []
        while self.procs and self.pending:
            try:
                done.append(self.results.get(timeout=1.0 if wait else 0.001))
                self.pending -= 1
            except queue.Empty:
                if not wait:
                    break
                self._check_alive()
        return done

    def _check_alive(self) -> None:
        dead = [p.exitcode for p in self.procs if not p.is_alive()]
        if dead:
            raise RuntimeError(f"a post-processing worker died (exit code {dead[0]}); rerun with --resume")

    def close(self) -> None:
        for _ in self.procs:
            try:
                self.tasks.put(None, timeout=1.0)
            except queue.Full:  # after an error: the workers may be gone or busy; they are stopped below
                break
        for proc in self.procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()


@dataclass
class InOrder:
    """Writes records to the shard in input order (they finish in any order). ``order``: this
    process's input indices, ascending; ``on_write(record)`` after each (progress, messages)."""

    order: range
    shard: ShardWriter
    on_write: Callable[[dict[str, Any]], None]
    waiting: dict[int, dict[str, Any]] = field(default_factory=dict)
    position: int = 0
    counts: dict[str, int] = field(default_factory=lambda: {"done": 0, "skipped": 0, "failed": 0})

    def add(self, record: dict[str, Any], kind: str) -> None:
        self.waiting[record["index"]] = (record, kind)
        while self.position < len(self.order) and self.order[self.position] in self.waiting:
            record, kind = self.waiting.pop(self.order[self.position])
            self.position += 1
            if "error" in record:
                kind = "failed"
                record = {k: record[k] for k in ("index", "source", "error")}
            self.counts[kind] += 1
            self.shard.write(record)
            self.on_write(record)


@dataclass
class Pipeline:
    """The three stages over a list of :class:`PhotoJob` (this process's share of the input)."""

    dataset: PhotoDataset
    model: ModelStage
    options: OutputOptions
    out: Path
    workers: int
    batch_size: int
    say: Callable[[str], None] = print  # one line about a failed photo

    def run(self, order: InOrder) -> None:
        with fork_safe_opencv(self.workers):
            self._run(order)

    def _run(self, order: InOrder) -> None:
        post = PostPool(self.workers, self.out, self.options)
        batch: list[Decoded] = []
        try:
            for sample in decoded(self.dataset, self.workers):
                if isinstance(sample, Skipped):
                    order.add(sample.record, "skipped")
                elif isinstance(sample, Failed):
                    self.say(sample.record["message"])
                    order.add(sample.record, "failed")
                else:
                    batch.append(sample)
                if len(batch) == self.batch_size:
                    self._model(batch, post, order)
                    batch = []
                self._collect(post.ready(), order)
            if batch:
                self._model(batch, post, order)
            self._collect(post.ready(wait=True), order)
        finally:
            post.close()

    def _model(self, batch: list[Decoded], post: PostPool, order: InOrder) -> None:
        for result in self.model.run(batch):
            if isinstance(result, ModelOutput):
                post.submit(result)
                self._collect(post.ready(), order)
            else:
                self.say(result.record["message"])
                order.add(result.record, "failed")

    def _collect(self, records: list[dict[str, Any]], order: InOrder) -> None:
        for record in records:
            if "error" in record:
                self.say(record["message"])
            order.add(record, "done")


def default_workers(local_world_size: int = 1) -> int:
    """One worker per core available to this process's share of the machine."""
    return max(1, usable_cores() // max(1, local_world_size))


def rank_share(count: int, rank: int, world_size: int) -> range:
    """Input indices of ``rank`` among ``world_size`` processes: every ``world_size``-th from
    ``rank`` (each index in exactly one share; shares differ in size by at most one; no repeats)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    return range(rank, count, world_size)
