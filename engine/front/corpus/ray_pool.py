"""Ray executor for corpus jobs (``python -m engine.corpus ... --ray [--ray-address ADDR]``).

Plain actors, not Ray Data: each actor is a :class:`engine.front.corpus.worker.CorpusWorker` (the model
loaded once, ``num_cpus`` = ``--threads``), and the job's process hands it chunks of
length-grouped clips, ``QUEUE_DEPTH`` at a time, taking results back as they finish
(``ray.wait``). The reasons: the job needs its own batch composition (clips grouped by length,
one batch = one autoregressive pass), per-clip error isolation, and one writer for the outputs
and the manifest (resume and Ctrl-C semantics identical to the local run); Ray Data's
``map_batches`` decides blocks and batches itself, streams results through its own writers and
pulls in pyarrow and pandas for what is here a few hundred lines. Outputs travel back through
the object store (about 0.5 KB per frame) and are written by the job's process, so a cluster
needs no shared file system for the outputs; the inputs must be readable from every node (a
shared folder or an fsspec URL), and the checkpoint too (its SHA-256 is checked on every actor).

Without ``--ray-address`` a local Ray instance with ``--workers`` x ``--threads`` CPUs is started
and shut down by the command; with it, the job joins that cluster (``auto``, ``ray://host:10001``)
and starts one actor per ``--threads`` CPUs of the cluster unless ``--workers`` says otherwise.
Every node needs this package installed (``pip install -e ".[ray]"``, same version).
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator

from ...core.errors import InputError
from .executor import QUEUE_DEPTH, lost_chunk
from .inputs import ClipTask
from .worker import ClipOutcome, CorpusWorker, LiftSettings, host_cpus


class _Actor:
    """The actor body (wrapped by ``ray.remote`` at run time, so that this module imports without Ray)."""

    def __init__(self, settings: LiftSettings, checkpoint_sha256: str):
        self.worker = CorpusWorker(settings, checkpoint_sha256)

    def info(self) -> dict:
        return self.worker.info()

    def lift_chunk(self, chunk: list[ClipTask]) -> list[ClipOutcome]:
        return self.worker.lift_chunk(chunk)


def _import_ray():
    try:
        import ray
    except ImportError:
        raise InputError('--ray needs Ray: pip install -e ".[ray]"') from None
    return ray


class RayExecutor:
    """``workers`` actors on a local Ray instance or an existing cluster (module doc)."""
    name = "ray"

    def __init__(self, settings: LiftSettings, checkpoint_sha256: str, workers: int | None = None,
                 address: str | None = None):
        ray = self.ray = _import_ray()
        self.started = address is None
        threads = settings.threads
        if self.started:
            workers = workers or max(1, host_cpus() // threads)
            ray.init(num_cpus=workers * threads, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
        else:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
            workers = workers or max(1, int(ray.cluster_resources().get("CPU", 1)) // threads)
        self.workers = workers
        try:
            actor = ray.remote(num_cpus=threads, max_restarts=1, max_task_retries=1)(_Actor)
            self.actors = [actor.remote(settings, checkpoint_sha256) for _ in range(workers)]
            self.infos = ray.get([a.info.remote() for a in self.actors])
        except ray.exceptions.RayError as e:
            self.close()
            cause = getattr(e, "cause", None)
            raise InputError(str(cause) if isinstance(cause, InputError) else
                             f"Ray workers failed to start: {str(e).splitlines()[0]}") from None
        except BaseException:
            self.close()
            raise

    def run(self, chunks: Iterable[list[ClipTask]]) -> Iterator[list[ClipOutcome]]:
        ray = self.ray
        it = iter(chunks)
        pending: dict = {}                     # object ref -> (actor index, chunk)

        def feed(w: int) -> None:
            chunk = next(it, None)
            if chunk is not None:
                pending[self.actors[w].lift_chunk.remote(chunk)] = (w, chunk)

        for _ in range(QUEUE_DEPTH):             # round robin: the longest chunks go to different workers
            for w in range(self.workers):
                feed(w)
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            w, chunk = pending.pop(done[0])
            try:
                yield ray.get(done[0])
            except ray.exceptions.RayError as e:
                wid = self.infos[w]["worker"]
                yield lost_chunk(chunk, f"Ray worker {wid} failed: {str(e).splitlines()[0]}", wid)
            feed(w)

    def close(self) -> None:
        ray = self.ray
        for a in getattr(self, "actors", []):
            try:
                ray.kill(a)
            except Exception:               # noqa: BLE001 - already gone
                pass
        if ray.is_initialized():           # stops a local instance; only disconnects from a cluster
            ray.shutdown()
