"""Run a benchmark grid on Ray: one Ray task per cell, declared resources, the driver alone records.

``python -m benchmarks.reproduce --profile NAME --executor ray [--address ADDR] [--threads N]``

- Resources: a cell of a CPU profile reserves ``--threads`` CPUs (default 1) and runs torch with that
  many threads; a cell of a GPU profile reserves one GPU (and ``--threads`` CPUs). A cell's numbers
  do not depend on the executor: the same seed at the same thread count gives the same record.
- Order: each group's ``dcwp-official`` cell (and the rebuild of its run folder where a fresh clone
  lacks it) runs first, since every other cell of the group starts from that run; then all the rest.
- Records: only this driver appends to ``results.jsonl``; finished cells are skipped, as by the local
  executor. A cell that fails (an exception in the cell, or its worker killed) is recorded as failed
  and submitted once more.
- Ctrl-C, or SIGTERM (``kill``, a batch scheduler's stop), cancels the running tasks and stops (exit 130);
  the same command resumes. Both are caught even where the shell started the driver with SIGINT ignored
  (a background job), so ``kill -INT`` stops it too.
- Where: Ray on this machine by default (it uses every core: ``--threads 1`` runs two cells at once on
  two cores); ``--address`` joins a running cluster, whose nodes must hold this checkout at the same
  path and ``--out`` on a shared file system.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import time
from typing import Any, Dict, Iterator, List, Optional, Tuple

__all__ = ["run_on_ray"]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _task(
    profile: Any, out: str, args: Dict[str, Any], cell: Dict[str, Any], threads: int, rebuild_base: bool = False
) -> Optional[Dict[str, Any]]:
    """The body of one Ray task: a cell's record, or (``rebuild_base``) the group's missing base run."""
    import torch

    torch.set_num_threads(threads)
    from benchmarks.reproduce import Runner

    runner = Runner(profile, out, argparse.Namespace(**args))
    if rebuild_base:
        runner.ensure_base(cell)
        return None
    return runner.execute(cell)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGINT and SIGTERM raise ``KeyboardInterrupt`` in the driver while the grid runs (the previous handlers are
    restored after): a background driver, whose shell ignores SIGINT, and a scheduler's SIGTERM stop it cleanly."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _failed(runner: Any, cell: Dict[str, Any], threads: int, err: BaseException) -> Dict[str, Any]:
    """The record of a cell whose task raised (its worker died, or it was cancelled)."""
    return {
        **cell,
        "schedule": runner.schedule_name(cell["backbone"]),
        "profile": runner.profile.name,
        "commit": runner.commit,
        "threads": threads,
        "status": "failed",
        "error": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:500],
    }


def run_on_ray(
    profile: Any, out: str, args: argparse.Namespace, cells: List[Dict[str, Any]], deadline: Optional[float] = None
) -> int:
    """Run the unfinished ``cells`` as Ray tasks; the number of cells that failed twice."""
    import ray

    from benchmarks.reproduce import OWN_TRAINING, Runner, _hms, cell_label

    runner = Runner(profile, out, args)
    os.makedirs(out, exist_ok=True)
    todo = runner.todo(cells)
    threads = args.threads or 1
    gpu = (args.device or profile.device).startswith("cuda")
    print(
        f"{profile.name}: {len(cells)} cells, {len(cells) - len(todo)} finished, {len(todo)} to run on Ray "
        f"({threads} thread(s) {'and 1 GPU ' if gpu else ''}per cell) -> {out}",
        file=sys.stderr,
        flush=True,
    )
    if not todo:
        return 0
    env = {"PYTHONPATH": os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)}
    if not ray.is_initialized():
        ray.init(
            address=args.address,
            runtime_env={"env_vars": env},
            include_dashboard=False,
            logging_level="ERROR",
            log_to_driver=False,
        )
    task = ray.remote(_task).options(num_cpus=threads, num_gpus=1 if gpu else 0, max_retries=0)
    plain = {k: v for k, v in vars(args).items()}
    first = [c for c in todo if c["method"] == "dcwp-official"]
    rest = [c for c in todo if c["method"] != "dcwp-official"]
    official = {runner.group_dir(c) for c in first}
    rebuild = {}
    for c in rest:  # a base recorded as finished whose folder is missing (a fresh clone): rebuilt once per group
        if c["method"] in OWN_TRAINING:
            continue
        group = runner.group_dir(c)
        if group not in official and not os.path.isfile(os.path.join(group, "dcwp-official", "results.json")):
            rebuild.setdefault(group, c)
    failed, done, start = 0, 0, time.monotonic()
    pending: Dict[Any, Tuple[Dict[str, Any], int]] = {}
    with stop_on_signals():  # Ctrl-C or SIGTERM: cancel what runs, record nothing of it
        try:
            for phase in ("base", "rest"):
                if phase == "base":
                    for c in first:
                        pending[task.remote(profile, out, plain, c, threads)] = (c, 0)
                    bases = [task.remote(profile, out, plain, c, threads, True) for c in rebuild.values()]
                else:
                    for c in rest:
                        if deadline is not None and time.monotonic() > deadline:
                            print(
                                "time budget reached: the cells not started are left for a later run", file=sys.stderr
                            )
                            break
                        pending[task.remote(profile, out, plain, c, threads)] = (c, 0)
                    bases = []
                while pending or bases:
                    for ref in bases:
                        try:
                            ray.get(ref)
                        except Exception as err:  # the group's cells then fail (and are recorded) on their own
                            print(f"rebuilding a base run failed: {type(err).__name__}: {err}", file=sys.stderr)
                    bases = []
                    if not pending:
                        break
                    ready, _ = ray.wait(list(pending), num_returns=1)
                    for ref in ready:
                        cell, attempt = pending.pop(ref)
                        try:
                            record = ray.get(ref)
                        except Exception as err:  # the worker was killed or lost: recorded as a failed cell
                            record = _failed(runner, cell, threads, err)
                        runner.record(record)
                        done += 1
                        ok = record["status"] == "ok"
                        if not ok and attempt == 0:
                            pending[task.remote(profile, out, plain, cell, threads)] = (cell, 1)
                        elif not ok:
                            failed += 1
                        elapsed = time.monotonic() - start
                        print(
                            f"[{done}] {cell_label(record)}{'' if ok or attempt else ' (retrying once)'} "
                            f"({_hms(elapsed)} elapsed)",
                            file=sys.stderr,
                            flush=True,
                        )
        except KeyboardInterrupt:
            for ref in pending:
                ray.cancel(ref, force=True)
            print(
                f"\nstopped: {len(pending)} running cell(s) cancelled, none of them recorded; run the same command "
                "again to resume",
                file=sys.stderr,
            )
            raise SystemExit(130) from None
    print(f"Ray executor: {done} record(s) in {_hms(time.monotonic() - start)} wall clock", file=sys.stderr, flush=True)
    return failed
