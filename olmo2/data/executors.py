"""Executors: where the tasks of a `prepare` stage run, and the completion markers that make a
re-run skip finished tasks.

    with make_executor("local" | "ray", workers=2, address=None) as ex:
        results = run_stage(ex, work_dir, "analyze", analyze_shard, job, shards)

A stage is a list of task specs and one top-level function `fn(job, spec) -> dict` (the dict
holds counts only: it is what the driver sees). Both executors run the same functions, so
their outputs are the same files:

- `LocalExecutor`: a fork pool (`pool.ordered_map`; in-process with one worker). The pool is
  forked after the job is set, so the workers inherit it (filters, contamination index)
  instead of unpickling it.
- `RayExecutor`: one Ray task per spec, the job shipped once per stage with `ray.put`. It
  connects to `address` ("auto", "HOST:PORT") or starts a local Ray for the job (`workers`
  CPUs, no dashboard) and shuts it down at the end. A task whose worker dies is retried
  (`max_retries`; Ray retries system failures, not exceptions: docs.ray.io, "Task fault
  tolerance"); a task's exception stops the job with the original error.

`run_stage` wraps every task so that, in the worker, after the task has written its outputs
(each one atomically), it writes `WORK/STAGE/done/NNNNN.json` holding its result: a re-run
after the driver died skips the tasks with markers and reads their results from them
(datatrove's `completions/` markers, `executor/base.py`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tqdm import tqdm

from olmo2.data.pool import ordered_map
from olmo2.utils import write_text_atomic

log = logging.getLogger(__name__)

EXECUTORS = ("local", "ray")
RAY_HINT = "--executor ray needs Ray: pip install 'olmo2[ray]' (or pip install 'ray>=2.40')"


class Executor:
    """Runs `fn(job, spec)` for each spec; yields (position, result) as tasks finish."""

    description = ""

    def map(
        self, fn: Callable, job: Any, specs: list, names: list[str]
    ) -> Iterator[tuple[int, dict]]:
        """`names` label the tasks (`STAGE.NNNNN`) where the executor shows them."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_JOB: Any = None


def _call_local(item: tuple[Callable, Any]) -> dict:
    fn, spec = item
    return fn(_JOB, spec)


class LocalExecutor(Executor):
    def __init__(self, workers: int = 1):
        self.workers = max(1, workers)
        self.description = f"local ({self.workers} process{'es' * (self.workers > 1)})"

    def map(self, fn, job, specs, names):
        global _JOB
        _JOB = job  # set before the pool forks, so the workers inherit it
        try:
            items = [(fn, spec) for spec in specs]
            workers = min(self.workers, len(items))
            for i, (_, result) in enumerate(ordered_map(_call_local, items, workers)):
                yield i, result
        finally:
            _JOB = None


def _call_ray(job: Any, fn: Callable, spec: Any) -> dict:
    return fn(job, spec)


class RayExecutor(Executor):
    def __init__(self, address: str | None = None, workers: int = 2, max_retries: int = 3):
        try:
            import ray
        except ImportError:
            raise ValueError(RAY_HINT) from None
        self.ray, self.max_retries = ray, max_retries
        self.owned = not ray.is_initialized()  # else: the caller's session, left as it is
        if self.owned and address:
            ray.init(address=address)
        elif self.owned:
            # A Ray for this job only ("local": not a `ray start` cluster found on this machine
            # or in $RAY_ADDRESS); it goes with `close`.
            ray.init(address="local", num_cpus=max(1, workers), include_dashboard=False)
        cpus = int(ray.cluster_resources().get("CPU", 0))
        where = address or ("this session's Ray" if not self.owned else "a local Ray")
        self.description = f"ray ({where}, {cpus} CPUs)"

    def map(self, fn, job, specs, names):
        ray = self.ray
        remote, job_ref = ray.remote(_call_ray), ray.put(job)
        pending = {}
        for i, (spec, label) in enumerate(zip(specs, names)):
            # The name shows in `ray list tasks` and as the worker's process title.
            task = remote.options(name=f"olmo2.{label}", num_cpus=1, max_retries=self.max_retries)
            pending[task.remote(job_ref, fn, spec)] = i
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    i = pending.pop(ref)
                    yield i, self._get(ref)
        finally:
            for ref in pending:  # an error (or the caller stopped): drop the rest
                ray.cancel(ref, force=True)

    def _get(self, ref) -> dict:
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayTaskError as e:
            cause = e.cause
            if isinstance(cause, Exception):  # the task's own error, as the local path has it
                raise cause from None
            raise

    def close(self) -> None:
        if self.owned and self.ray.is_initialized():
            self.ray.shutdown()


def make_executor(name: str, workers: int = 1, address: str | None = None) -> Executor:
    if name == "local":
        if address:
            raise ValueError("--ray-address needs --executor ray")
        return LocalExecutor(workers)
    if name == "ray":
        return RayExecutor(address, workers)
    raise ValueError(f"--executor {name}: expected one of {', '.join(EXECUTORS)}")


def _with_marker(job: Any, item: tuple[str, Callable, Any]) -> dict:
    """Run one task, then write its completion marker (in the worker)."""
    marker, fn, spec = item
    result = fn(job, spec)
    write_text_atomic(marker, json.dumps(result, sort_keys=True))
    return result


def run_stage(
    ex: Executor, work: Path, stage: str, fn: Callable, job: Any, specs: list
) -> list[dict]:
    """Run `fn(job, spec)` for every spec not yet marked done; return all results in order."""
    done = work / stage / "done"
    done.mkdir(parents=True, exist_ok=True)
    results: list[dict | None] = [None] * len(specs)
    todo = []
    for i in range(len(specs)):
        marker = done / f"{i:05d}.json"
        if marker.is_file():
            results[i] = json.loads(marker.read_text())
        else:
            todo.append(i)
    if len(todo) < len(specs):
        log.info(
            "%s: %d of %d tasks already complete (markers in %s), skipped",
            stage,
            len(specs) - len(todo),
            len(specs),
            done,
        )
    items = [(str(done / f"{i:05d}.json"), fn, specs[i]) for i in todo]
    bar = tqdm(
        total=len(specs), initial=len(specs) - len(todo), desc=stage, unit=" tasks", mininterval=1
    )
    try:
        names = [f"{stage}.{i:05d}" for i in todo]
        for k, result in ex.map(_with_marker, job, items, names):
            results[todo[k]] = result
            bar.update(1)
    finally:
        bar.close()
    return results  # type: ignore[return-value]
