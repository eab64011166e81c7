"""Where corpus chunks are lifted: in this process, in worker processes, or on Ray actors.

Every executor runs :class:`engine.front.corpus.worker.CorpusWorker` (one loaded model each) and
turns an iterator of chunks (lists of clips) into an iterator of outcome lists, in completion
order, keeping ``depth`` chunks queued per worker so that no worker waits for the job's process.
Workers only compute: the job's process writes every output and manifest record, so an
interrupted job leaves nothing half-written wherever the lifting ran. A worker that dies (a
crash in native code, the OOM killer) turns its queued chunks into error outcomes; the others
go on. The Ray executor is in :mod:`engine.front.corpus.ray_pool` (Ray is an optional extra).
"""
from __future__ import annotations

import os
import signal
from collections.abc import Iterable, Iterator

from ...core.errors import InputError
from .inputs import ClipTask
from .worker import ClipOutcome, CorpusWorker, LiftSettings

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


def _process_main(settings: LiftSettings, checkpoint_sha256: str, conn) -> None:
    """A worker process: build the worker, then lift the chunks that arrive on ``conn`` until
    ``None`` (or until the job's process is gone)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)     # Ctrl-C is the job process's to handle
    try:
        worker = CorpusWorker(settings, checkpoint_sha256)
    except Exception as e:                           # noqa: BLE001 - reported by the job process
        conn.send(("failed", str(e)))
        return
    conn.send(("ready", worker.info()))
    parent = os.getppid()
    while True:
        if not conn.poll(5.0):
            if os.getppid() != parent:               # the job's process was killed: stop too
                return
            continue
        try:
            item = conn.recv()
        except EOFError:
            return
        if item is None:
            return
        cid, chunk = item
        conn.send(("done", cid, worker.lift_chunk(chunk)))


class ProcessExecutor:
    """``workers`` local processes (spawned, so no torch state is forked), one model each.

    Each worker has its own duplex pipe: a worker killed in the middle of a message (SIGKILL, the
    OOM killer) breaks only its own channel, never the others' (a queue shared by all would stay
    locked), and its process sentinel tells the job at once.
    """
    name = "processes"

    def __init__(self, settings: LiftSettings, checkpoint_sha256: str, workers: int):
        import multiprocessing as mp
        ctx = mp.get_context("spawn")
        self.workers = workers
        pipes = [ctx.Pipe(duplex=True) for _ in range(workers)]
        self.conns = [ours for ours, _ in pipes]
        self.procs = [ctx.Process(target=_process_main, args=(settings, checkpoint_sha256, theirs),
                                  daemon=True, name=f"starpose-corpus-{i}") for i, (_, theirs) in enumerate(pipes)]
        for p in self.procs:
            p.start()
        for _, theirs in pipes:
            theirs.close()                           # the child's end lives in the child only
        self.infos: list[dict] = [{"worker": ""} for _ in range(workers)]
        try:
            self._wait_ready()
        except BaseException:
            self.close()
            raise

    def _receive(self, w: int):
        """The next message from worker w, or None when its channel broke (the worker died)."""
        try:
            return self.conns[w].recv()
        except (EOFError, OSError):
            return None

    def _wait_ready(self) -> None:
        for w in range(self.workers):
            msg = self._receive(w)
            if msg is None:
                self.procs[w].join(timeout=5)
                raise InputError(f"worker process {w} exited with code {self.procs[w].exitcode} while loading "
                                 "the model")
            if msg[0] == "failed":
                raise InputError(msg[1])
            self.infos[w] = msg[1]

    def run(self, chunks: Iterable[list[ClipTask]]) -> Iterator[list[ClipOutcome]]:
        from multiprocessing.connection import wait
        it = iter(chunks)
        inflight: list[dict[int, list[ClipTask]]] = [{} for _ in range(self.workers)]
        alive = set(range(self.workers))
        counter = 0

        def feed(w: int) -> None:
            nonlocal counter
            chunk = next(it, None)
            if chunk is not None:
                inflight[w][counter] = chunk
                self.conns[w].send((counter, chunk))
                counter += 1

        for _ in range(QUEUE_DEPTH):             # round robin: the longest chunks go to different workers
            for w in range(self.workers):
                feed(w)
        while any(inflight):
            ready = wait([self.conns[w] for w in alive] + [self.procs[w].sentinel for w in alive])
            for w in sorted(alive):
                if self.conns[w] not in ready and self.procs[w].sentinel not in ready:
                    continue
                msg = self._receive(w) if self.conns[w].poll() else None
                if msg is None:                  # died: its chunks are lost, the others go on
                    alive.discard(w)
                    self.procs[w].join(timeout=5)
                    wid = self.infos[w]["worker"]
                    why = f"worker process {wid} died (exit code {self.procs[w].exitcode})"
                    for chunk in inflight[w].values():
                        yield lost_chunk(chunk, why, wid)
                    inflight[w].clear()
                    continue
                _, cid, outcomes = msg
                inflight[w].pop(cid, None)
                yield outcomes
                feed(w)
            if not alive:
                for chunk in it:                     # nothing left to lift with
                    yield lost_chunk(chunk, "every worker process died")
                return

    def close(self) -> None:
        """Stop the workers: idle ones exit at once; busy ones (after Ctrl-C) are terminated,
        which loses nothing, as workers write no file."""
        for conn, p in zip(self.conns, self.procs):
            if p.is_alive():
                try:
                    conn.send(None)
                except (OSError, ValueError):
                    pass
        for p in self.procs:
            p.join(timeout=1)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
        for conn in self.conns:
            conn.close()


def make_executor(settings: LiftSettings, checkpoint_sha256: str, workers: int, ray: bool = False,
                  ray_address: str | None = None):
    """The executor for a job (module doc)."""
    if ray:
        from .ray_pool import RayExecutor
        return RayExecutor(settings, checkpoint_sha256, workers, ray_address)
    if workers <= 1:
        return InlineExecutor(settings, checkpoint_sha256)
    return ProcessExecutor(settings, checkpoint_sha256, workers)
