"""The gate's work: a bounded queue of jobs, one JSON file each, that outlives the process.

The service answers MLflow as soon as a delivery is queued and one worker audits the queued
versions one after the other. Every change of a job is a whole file written atomically
(`statefiles`), so a process killed at any moment leaves each job pending, running or done,
never half-written. A job left running by a killed process is pending again at the next start,
with that attempt counted (a job that kills the process each time must not do so for ever), and
is done once. Jobs done are remembered (the most recent `DONE_KEPT`) and jobs dead-lettered for
good, so the same delivery submitted again does nothing.

The state folder::

    jobs/ID.json        a job, pending, running or done (done ones without their data)
    dead/ID.json        a job that failed `max_attempts` times, with its last error
    dead/NAME.corrupt   a job file that could not be read back, moved aside as it was
    dead-letter.log     one JSON line per dead letter: when, which job or file, why
    queue.lock          held while a process uses the folder
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

from audit.datafiles import read_text_file
from audit.errors import AuditError, first_line
from audit.formats.text import shorten
from audit.gate.deliveries import DELIVERY_ID_SHAPE, MAX_BODY, Delivery
from audit.gate.statefiles import (
    StateError,
    append_line,
    cannot_write,
    make_folder,
    remove_temporaries,
    sync_folder,
    write_atomically,
)

#: Jobs pending or running at once; a delivery beyond is refused and MLflow retries it later.
CAPACITY = 1000
#: Attempts of a job before it is dead-lettered.
MAX_ATTEMPTS = 5
#: Seconds before the first retry; each next one waits twice as long (1, 2, 4, 8 s).
BACKOFF = 1.0
#: Done jobs remembered, so that the same delivery submitted again is not audited again.
DONE_KEPT = 10_000
#: Characters of an error kept with a job.
MAX_ERROR = 2000
#: Bytes of a job file read back: the delivery's body bound plus room for the bookkeeping.
_MAX_JOB_FILE = MAX_BODY + 64 * 1024

_STATES = frozenset({"pending", "running", "done"})


@dataclass(frozen=True)
class Job:
    """One piece of work: the delivery it came from (its id is the job's) and what to do."""

    id: str
    #: The MLflow event, e.g. ``model_version.created``.
    event: str
    #: The event's payload (plain JSON).
    data: Mapping[str, Any]
    #: Attempts that failed (or were cut short by the process stopping) so far.
    attempts: int = 0
    last_error: str | None = None

    @classmethod
    def of(cls, delivery: Delivery) -> Job:
        return cls(id=delivery.id, event=delivery.event, data=dict(delivery.data))


class QueueFull(Exception):
    """The queue holds `capacity` jobs: refuse the delivery (503), MLflow retries it later."""


@dataclass
class _Entry:
    job: Job
    state: str
    #: Unix time before which a pending job is not handed out (its backoff).
    not_before: float
    submitted_at: float
    finished_at: float | None = None


class WorkQueue:
    """The persistent queue in `folder`. One process at a time (a lock file says so), any
    number of threads submitting and one worker taking jobs."""

    def __init__(
        self,
        folder: Path,
        *,
        capacity: int = CAPACITY,
        max_attempts: int = MAX_ATTEMPTS,
        backoff: float = BACKOFF,
        done_kept: int = DONE_KEPT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.folder = folder
        self.capacity = capacity
        self.max_attempts = max_attempts
        self.backoff = backoff
        self._done_kept = done_kept
        self._clock = clock
        self._lock = threading.Lock()
        self._jobs = folder / "jobs"
        self._dead = folder / "dead"
        self.dead_letter_log = folder / "dead-letter.log"
        for each in (folder, self._jobs, self._dead):
            make_folder(each)
        self._lock_file = _hold_lock(folder / "queue.lock")
        #: Jobs pending or running.
        self._active: dict[str, _Entry] = {}
        #: Ids of jobs done, with when, oldest first.
        self._done: dict[str, float] = {}
        self._dead_ids: set[str] = set()
        try:
            remove_temporaries(self._jobs)
            remove_temporaries(self._dead)
            self._load()
        except BaseException:
            self.close()
            raise

    # ----------------------------------------------------------------------- the interface

    def submit(self, job: Job) -> bool:
        """Queue `job`; False (and nothing done) when a job of that id is already queued,
        running, done or dead. QueueFull when `capacity` jobs wait."""
        if not DELIVERY_ID_SHAPE.fullmatch(job.id):
            raise ValueError(f"job id {job.id!r} cannot name a file")
        with self._lock:
            if job.id in self._active or job.id in self._done or job.id in self._dead_ids:
                return False
            if len(self._active) >= self.capacity:
                raise QueueFull(f"the queue holds {self.capacity} jobs")
            now = self._clock()
            entry = _Entry(replace(job, attempts=0, last_error=None), "pending", now, now)
            self._write(entry)
            self._active[job.id] = entry
            return True

    def next(self) -> Job | None:
        """The pending job due first, now running; None when no job is due yet."""
        with self._lock:
            now = self._clock()
            due = [e for e in self._active.values() if e.state == "pending" and e.not_before <= now]
            if not due:
                return None
            entry = min(due, key=lambda e: (e.not_before, e.submitted_at))
            self._write(replace(entry, state="running"))
            entry.state = "running"
            return entry.job

    def done(self, job_id: str) -> None:
        """The running job succeeded: remember its id, drop its data."""
        with self._lock:
            entry = self._running(job_id)
            now = self._clock()
            self._write(
                replace(entry, job=replace(entry.job, data={}), state="done", finished_at=now)
            )
            del self._active[job_id]
            self._done[job_id] = now
            self._forget_old_done()

    def failed(self, job_id: str, error: str) -> float | None:
        """The running job failed with `error`: pending again after its backoff, whose seconds
        are returned, or dead-lettered (None) after `max_attempts` attempts."""
        with self._lock:
            entry = self._running(job_id)
            job = replace(entry.job, attempts=entry.job.attempts + 1, last_error=_bounded(error))
            return self._retry_or_bury(entry, job)

    def release(self, job_id: str) -> None:
        """Put the running job back as pending without counting an attempt: the service is
        stopping cleanly before the job could finish."""
        with self._lock:
            entry = self._running(job_id)
            self._write(replace(entry, state="pending"))
            entry.state = "pending"

    def depth(self) -> int:
        """Jobs pending or running."""
        with self._lock:
            return len(self._active)

    def due_in(self) -> float | None:
        """Seconds until the next pending job is due (0 when one is due now); None when no job
        is pending."""
        with self._lock:
            times = [e.not_before for e in self._active.values() if e.state == "pending"]
            return max(0.0, min(times) - self._clock()) if times else None

    def dead(self) -> int:
        """Jobs dead-lettered."""
        with self._lock:
            return len(self._dead_ids)

    def close(self) -> None:
        """Let another process use the folder."""
        with contextlib.suppress(OSError):
            self._lock_file.close()

    def __enter__(self) -> WorkQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------------- the files

    def _running(self, job_id: str) -> _Entry:
        entry = self._active.get(job_id)
        if entry is None or entry.state != "running":
            raise ValueError(f"job {job_id!r} is not running")
        return entry

    def _retry_or_bury(self, entry: _Entry, job: Job, *, wait: bool = True) -> float | None:
        """Pending again after the backoff of its attempts, or at once and in its old place
        in line (`wait` False); None when it had its last attempt and is buried."""
        if job.attempts >= self.max_attempts:
            self._bury(replace(entry, job=job))
            return None
        if wait:
            delay = self.backoff * 2.0 ** (job.attempts - 1)
            not_before = self._clock() + delay
        else:
            delay, not_before = 0.0, min(entry.not_before, self._clock())
        pending = replace(entry, job=job, state="pending", not_before=not_before)
        self._write(pending)
        self._active[job.id] = pending
        return delay

    def _bury(self, entry: _Entry) -> None:
        """Move the job to dead/ with its last error and note it in the dead-letter log; the
        dead file is written first, so a kill in between leaves it dead (see `_load`)."""
        job = entry.job
        record = {**_record(replace(entry, state="dead")), "dead_at": _when(self._clock())}
        path = self._dead / f"{job.id}.json"
        try:
            write_atomically(path, _dumps(record))
        except OSError as problem:
            raise cannot_write(path, problem) from None
        self._note({"id": job.id, "event": job.event, "attempts": job.attempts,
                    "error": job.last_error})  # fmt: skip
        self._dead_ids.add(job.id)
        self._active.pop(job.id, None)
        self._unlink(self._jobs / f"{job.id}.json")

    def _note(self, fields: Mapping[str, Any]) -> None:
        line = {"at": _when(self._clock()), **fields}
        try:
            append_line(self.dead_letter_log, json.dumps(line, separators=(",", ":")).encode())
        except OSError as problem:
            raise cannot_write(self.dead_letter_log, problem) from None

    def _write(self, entry: _Entry) -> None:
        path = self._jobs / f"{entry.job.id}.json"
        try:
            write_atomically(path, _dumps(_record(entry)))
        except OSError as problem:
            raise cannot_write(path, problem) from None

    def _unlink(self, path: Path) -> None:
        try:
            path.unlink(missing_ok=True)
            sync_folder(path.parent)
        except OSError as problem:
            raise cannot_write(path, problem) from None

    def _forget_old_done(self) -> None:
        while len(self._done) > self._done_kept:
            oldest = next(iter(self._done))
            self._unlink(self._jobs / f"{oldest}.json")
            del self._done[oldest]

    def _load(self) -> None:
        """Read every job back; a file that is not a valid job is moved to dead/ as it was and
        noted, a job left running is retried (or buried, if that was its last attempt)."""
        buried = (path.stem for path in self._dead.glob("*.json"))
        self._dead_ids = {name for name in buried if DELIVERY_ID_SHAPE.fullmatch(name)}
        for path in sorted(self._jobs.glob("*.json")):
            if path.stem in self._dead_ids:  # killed between writing dead/ and removing this
                self._unlink(path)
                continue
            try:
                entry = _parse(path, self.max_attempts)
            except AuditError as problem:
                self._set_aside(path, first_line(problem))
                continue
            if entry.state == "done":
                self._done[entry.job.id] = entry.finished_at or 0.0
            else:
                self._active[entry.job.id] = entry
        self._done = dict(sorted(self._done.items(), key=lambda item: item[1]))
        for entry in list(self._active.values()):
            if entry.state == "running":
                job = replace(
                    entry.job,
                    attempts=entry.job.attempts + 1,
                    last_error="interrupted: the service stopped while the job ran",
                )
                # Retried at once: the interruption was the service's, not the store's.
                self._retry_or_bury(entry, job, wait=False)
        self._forget_old_done()

    def _set_aside(self, path: Path, reason: str) -> None:
        target = self._dead / f"{path.name}.corrupt"
        count = 1
        while target.exists() or target.is_symlink():  # never over an earlier one
            count += 1
            target = self._dead / f"{path.name}.corrupt-{count}"
        try:
            path.replace(target)
            sync_folder(self._dead)
        except OSError as problem:
            raise cannot_write(target, problem) from None
        self._note({"file": f"jobs/{path.name}", "moved_to": f"dead/{target.name}",
                    "error": reason})  # fmt: skip


def _hold_lock(path: Path) -> IO[str]:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        raise StateError(f"{path.parent}: the queue needs a POSIX system (fcntl)") from None
    try:
        handle = path.open("a")
    except OSError as problem:
        raise cannot_write(path, problem) from None
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise StateError(f"{path.parent}: the queue is in use by another process") from None
    return handle


def _record(entry: _Entry) -> dict[str, Any]:
    return {
        "id": entry.job.id,
        "event": entry.job.event,
        "data": dict(entry.job.data),
        "state": entry.state,
        "attempts": entry.job.attempts,
        "last_error": entry.job.last_error,
        "not_before": entry.not_before,
        "submitted_at": entry.submitted_at,
        "finished_at": entry.finished_at,
    }


def _parse(path: Path, max_attempts: int) -> _Entry:
    """A job file read back, every field checked: anything else there is a corrupt file."""
    text = read_text_file(path, path.name, limit=_MAX_JOB_FILE, error=StateError)
    try:
        record = json.loads(text)
    except (ValueError, RecursionError):
        raise StateError(f"{path.name}: not JSON") from None
    if not isinstance(record, dict):
        raise StateError(f"{path.name}: not a JSON object")

    def wrong(field: str) -> StateError:
        return StateError(f"{path.name}: field {field} is missing or invalid")

    if record.get("id") != path.stem or not DELIVERY_ID_SHAPE.fullmatch(path.stem):
        raise wrong("id")
    if not isinstance(record.get("event"), str) or len(record["event"]) > 200:
        raise wrong("event")
    if not isinstance(record.get("data"), dict):
        raise wrong("data")
    if record.get("state") not in _STATES:
        raise wrong("state")
    attempts = record.get("attempts")
    if type(attempts) is not int or not 0 <= attempts < max_attempts:
        raise wrong("attempts")
    last_error = record.get("last_error")
    if last_error is not None and (not isinstance(last_error, str) or len(last_error) > MAX_ERROR):
        raise wrong("last_error")
    for field in ("not_before", "submitted_at"):
        if not _is_time(record.get(field)):
            raise wrong(field)
    finished_at = record.get("finished_at")
    if (finished_at is None) != (record["state"] != "done") or (
        finished_at is not None and not _is_time(finished_at)
    ):
        raise wrong("finished_at")
    job = Job(record["id"], record["event"], record["data"], attempts, last_error)
    return _Entry(job, record["state"], record["not_before"], record["submitted_at"], finished_at)


def _is_time(value: Any) -> bool:
    return type(value) in (int, float) and 0 <= value < 1e11


def _dumps(record: Mapping[str, Any]) -> bytes:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _bounded(error: str) -> str:
    return shorten(error, MAX_ERROR)


def _when(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, tz=dt.timezone.utc).isoformat(timespec="seconds")
