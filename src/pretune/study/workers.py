"""``pretune study --workers N [--backend ray]``: the matrix's cells run N at a time, in
worker processes on this machine or as Ray tasks on a cluster.

Cells are independent runs, so a study is embarrassingly parallel; what makes it fast or slow
is how the workers share the machine. Each worker is a fresh process (``spawn``: no forked
torch / CUDA state) pinned to its share of it: on a GPU machine worker i sees one GPU
(``CUDA_VISIBLE_DEVICES``, round robin), on a CPU it gets ``cores // N`` threads
(``torch.set_num_threads``) — two trainings that each take every core of a 2-core machine ran
5-20x slower side by side. The tasks are loaded once in the parent and sent to each worker once.

Cells that share work stay together: the scikit-learn probe cells of one task and start run in
one worker, in plan order, so they extract that start's features once (the same cache a
sequential run uses). Every cell still writes its own JSON, so an interrupted parallel study
resumes like a sequential one. Each cell's result depends only on its seed and inputs, so the
rows equal a sequential run's on the same thread count (on CPU, a different thread count can
change float reductions in the last bits).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path
from typing import Any

_LOADED: dict[str, Any] = {}  # in a worker: task label -> its loaded task


def cores() -> int:
    """The cores this process may use (its CPU affinity, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def threads_per_worker(workers: int) -> int:
    return max(1, cores() // max(1, workers))


def _init(loaded: dict[str, Any], threads: int, slots: Any, gpus: list[str]) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what Ctrl-C stops
    slot = slots.get()
    if gpus:  # before anything touches CUDA in this process; the parent's own list counts
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    torch.set_num_threads(threads)
    _LOADED.update(loaded)


def _run_group(run_cell: Callable[..., dict], cfg: Any, out: Path, group: list[tuple]
               ) -> list[tuple[int, Any, dict]]:
    features_cache: dict = {}
    return [(i, cell, run_cell(cfg, cell, ft, fp, _LOADED[cell.task], out, features_cache))
            for i, cell, ft, fp in group]


def groups(todo: list[tuple]) -> list[list[tuple]]:
    """The todo cells in units of work: a task x start's scikit-learn probe cells together
    (they share extracted features), every other cell alone; in plan order."""
    out: list[list[tuple]] = []
    probe: dict[tuple[str, str], list[tuple]] = {}
    for item in todo:
        cell = item[1]
        if cell.strategy.endswith("-sklearn"):
            key = (cell.task, cell.start)
            if key not in probe:
                probe[key] = []
                out.append(probe[key])
            probe[key].append(item)
        else:
            out.append([item])
    return out


def run_parallel(cfg: Any, setup: Any, out: Path, todo: list[tuple], workers: int,
                 progress: Callable[..., None], run_cell: Callable[..., dict]
                 ) -> dict[int, dict]:
    """Run ``todo`` in ``workers`` processes, each cell with ``run_cell`` (``cells.run_cell``,
    sent by reference); ``progress`` is called in the parent as each cell finishes.
    Returns plan place -> row."""
    from concurrent.futures.process import BrokenProcessPool

    import torch

    from pretune.errors import PretuneError

    n_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    visible = [g for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g.strip()]
    gpus = (visible or [str(i) for i in range(n_gpus)])[:n_gpus] if n_gpus else []
    threads = threads_per_worker(workers)  # data work on the CPU, even beside a GPU
    ctx = get_context("spawn")
    slots = ctx.Queue()
    for k in range(workers):
        slots.put(k)
    print(f"running {len(todo)} cells in {workers} workers ("
          + (f"{len(gpus)} GPUs, one per worker" if gpus else f"{threads} CPU threads each")
          + ")", flush=True)
    ran: dict[int, dict] = {}
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init,
                               initargs=(setup.loaded, threads, slots, gpus))
    try:
        pending = {pool.submit(_run_group, run_cell, cfg, out, g) for g in groups(todo)}
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in finished:
                for i, cell, row in f.result():
                    ran[i] = row
                    progress(i, cell, row)
    except BrokenProcessPool:
        _stop(pool)
        raise PretuneError(f"a worker process died (out of memory?) after {len(ran)} of "
                           f"{len(todo)} cells; finished cells are kept: rerun the same command, "
                           "with fewer --workers if memory is short") from None
    except BaseException:  # Ctrl-C / SIGTERM: no queued cell starts; finished ones are kept
        _stop(pool)
        raise
    pool.shutdown()
    return ran


def _stop(pool: ProcessPoolExecutor) -> None:
    """Cancel the queued groups and end the running workers now (their cells rerun later)."""
    procs = list(getattr(pool, "_processes", {}).values())  # no public handle on them
    pool.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        p.terminate()


def _ray_group(run_cell: Callable[..., dict], cfg: Any, out: Path, group: list[tuple],
               loaded: dict[str, Any], threads: int) -> list[tuple[int, Any, dict]]:
    import torch

    torch.set_num_threads(threads)
    _LOADED.update(loaded)
    return _run_group(run_cell, cfg, out, group)


def run_ray(cfg: Any, setup: Any, out: Path, todo: list[tuple], workers: int,
            progress: Callable[..., None], run_cell: Callable[..., dict]) -> dict[int, dict]:
    """The same units of work as Ray tasks: on the cluster at ``RAY_ADDRESS`` (the study
    directory must be on a filesystem every node sees), else on a local Ray started here with
    this machine's cores. Each task asks for cores / ``workers`` CPUs (or one GPU), so Ray runs
    ``workers`` at a time per machine of this size."""
    try:
        import ray
    except ImportError:
        from pretune.errors import PretuneError

        raise PretuneError("--backend ray needs Ray: pip install 'pretune[ray]'") from None
    address = os.environ.get("RAY_ADDRESS") or None
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, num_cpus=None if address else cores(),
                 include_dashboard=False, configure_logging=False, log_to_driver=True)
    gpus = int(ray.cluster_resources().get("GPU", 0))
    largest = max((n.get("Resources", {}).get("CPU", 1) for n in ray.nodes() if n.get("Alive")),
                  default=1)
    threads = max(1, min(threads_per_worker(workers), int(largest)))  # fits on some node
    task = ray.remote(num_cpus=1 if gpus else threads, num_gpus=1 if gpus else 0)(_ray_group)
    where = address or "a local Ray"
    print(f"running {len(todo)} cells as Ray tasks on {where} ("
          + ("one GPU each" if gpus else f"{threads} CPUs each") + ")", flush=True)
    loaded = ray.put(setup.loaded)  # sent to each node once, not with every task
    ran: dict[int, dict] = {}
    try:
        pending = [task.remote(run_cell, cfg, out, g, loaded, threads) for g in groups(todo)]
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for i, cell, row in ray.get(done[0]):
                ran[i] = row
                progress(i, cell, row)
    finally:
        if started:
            ray.shutdown()
    return ran
