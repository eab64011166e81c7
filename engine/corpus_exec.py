"""Where corpus chunks are lifted: in this process, in worker processes, or on Ray actors.

Every executor runs :class:`engine.corpus_worker.CorpusWorker` (one loaded model each) and
turns an iterator of chunks (lists of clips) into an iterator of outcome lists, in completion
order, keeping ``depth`` chunks queued per worker so that no worker waits for the job's process.
Workers only compute: the job's process writes every output and manifest record, so an
interrupted job leaves nothing half-written wherever the lifting ran. A worker that dies (a
crash in native code, the OOM killer) turns its queued chunks into error outcomes; the others
go on. The Ray executor is in :mod:`engine.corpus_ray` (Ray is an optional extra).
"""
from __future__ import annotations

import os
import queue
import signal
from collections.abc import Iterable, Iterator

from .corpus_inputs import ClipTask
from .corpus_worker import ClipOutcome, CorpusWorker, LiftSettings
from .io import InputError

QUEUE_DEPTH = 2          # chunks queued per worker: one lifting, one waiting


def lost_chunk(chunk: list[ClipTask], why: str, worker: str = "") -> list[ClipOutcome]:
    """Error outcomes for a chunk whose worker died."""
    return [ClipOutcome(t, "error", error=why, worker=worker) for t in chunk]


class InlineExecutor:
    """One worker in this process (``--workers 1``)."""
    name = "inline"

    def __init__(self, settings: LiftSettings, checkpoint_sha256: str):
        self.worker = CorpusWorker(settings, checkpoint_sha256)
        self.workers = 1
        self.infos = [self.worker.info()]

    def run(self, chunks: Iterable[list[ClipTask]]) -> Iterator[list[ClipOutcome]]:
        for chunk in chunks:
            yield self.worker.lift_chunk(chunk)

    def close(self) -> None:
        pass


def _process_main(settings: LiftSettings, checkpoint_sha256: str, index: int, inbox, outbox) -> None:
    """A worker process: build the worker, then lift chunks until ``None`` arrives."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)     # Ctrl-C is the job process's to handle
    try:
        worker = CorpusWorker(settings, checkpoint_sha256)
    except Exception as e:                           # noqa: BLE001 - reported by the job process
        outbox.put(("failed", index, None, str(e)))
        return
    outbox.put(("ready", index, None, worker.info()))
    parent = os.getppid()
    while True:
        try:
            item = inbox.get(timeout=5.0)
        except queue.Empty:
            if os.getppid() != parent:               # the job's process was killed: stop too
                return
            continue
        if item is None:
            return
        cid, chunk = item
        outbox.put(("done", index, cid, worker.lift_chunk(chunk)))


class ProcessExecutor:
    """``workers`` local processes (spawned, so no torch state is forked), one model each."""
    name = "processes"

    def __init__(self, settings: LiftSettings, checkpoint_sha256: str, workers: int):
        import multiprocessing as mp
        ctx = mp.get_context("spawn")
        self.workers = workers
        self.outbox = ctx.Queue()
        self.inboxes = [ctx.Queue() for _ in range(workers)]
        self.procs = [ctx.Process(target=_process_main, args=(settings, checkpoint_sha256, i, q, self.outbox),
                                  daemon=True, name=f"starpose-corpus-{i}") for i, q in enumerate(self.inboxes)]
        for p in self.procs:
            p.start()
        self.infos: list[dict] = [{"worker": ""} for _ in range(workers)]
        try:
            self._wait_ready()
        except BaseException:
            self.close()
            raise

    def _wait_ready(self) -> None:
        waiting = set(range(self.workers))
        while waiting:
            try:
                kind, i, _, payload = self.outbox.get(timeout=1.0)
            except queue.Empty:
                dead = [i for i in waiting if not self.procs[i].is_alive()]
                if dead:
                    raise InputError(f"worker process {dead[0]} exited with code {self.procs[dead[0]].exitcode} "
                                     "while loading the model")
                continue
            if kind == "failed":
                raise InputError(payload)
            self.infos[i] = payload
            waiting.discard(i)

    def run(self, chunks: Iterable[list[ClipTask]]) -> Iterator[list[ClipOutcome]]:
        it = iter(chunks)
        inflight: list[dict[int, list[ClipTask]]] = [{} for _ in range(self.workers)]
        alive = [True] * self.workers
        counter = 0

        def feed(w: int) -> None:
            nonlocal counter
            chunk = next(it, None)
            if chunk is not None:
                inflight[w][counter] = chunk
                self.inboxes[w].put((counter, chunk))
                counter += 1

        for _ in range(QUEUE_DEPTH):             # round robin: the longest chunks go to different workers
            for w in range(self.workers):
                feed(w)
        while any(inflight):
            try:
                kind, w, cid, payload = self.outbox.get(timeout=1.0)
            except queue.Empty:
                for w, p in enumerate(self.procs):
                    if alive[w] and not p.is_alive():
                        alive[w] = False
                        wid = self.infos[w]["worker"]
                        why = f"worker process {wid} died (exit code {p.exitcode})"
                        for chunk in inflight[w].values():
                            yield lost_chunk(chunk, why, wid)
                        inflight[w].clear()
                if not any(alive):
                    for chunk in it:                 # nothing left to lift with
                        yield lost_chunk(chunk, "every worker process died")
                    return
                continue
            inflight[w].pop(cid, None)
            yield payload
            feed(w)

    def close(self) -> None:
        """Stop the workers: idle ones exit at once; busy ones (after Ctrl-C) are terminated,
        which loses nothing, as workers write no file."""
        for q, p in zip(self.inboxes, self.procs):
            if p.is_alive():
                try:
                    q.put(None)
                except (OSError, ValueError):
                    pass
        for p in self.procs:
            p.join(timeout=1)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)


def make_executor(settings: LiftSettings, checkpoint_sha256: str, workers: int, ray: bool = False,
                  ray_address: str | None = None):
    """The executor for a job (module doc)."""
    if ray:
        from .corpus_ray import RayExecutor
        return RayExecutor(settings, checkpoint_sha256, workers, ray_address)
    if workers <= 1:
        return InlineExecutor(settings, checkpoint_sha256)
    return ProcessExecutor(settings, checkpoint_sha256, workers)
