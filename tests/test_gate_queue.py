"""The gate's work queue on disk: idempotent per delivery, retries on an injected clock, dead
letters, bounds, and a real process killed with SIGKILL while a job runs."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from audit.gate.queue import Job, QueueFull, WorkQueue
from audit.gate.statefiles import StateError
from tests.stores import tree_state

REPO = Path(__file__).resolve().parent.parent


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def job(number: int = 1) -> Job:
    return Job(
        f"delivery-{number}", "model_version.created", {"name": "churn", "version": str(number)}
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def queue(tmp_path: Path, clock: Clock) -> Any:
    with WorkQueue(tmp_path / "state", clock=clock) as opened:
        yield opened


def dead_letters(queue: WorkQueue) -> list[dict[str, Any]]:
    return [json.loads(line) for line in queue.dead_letter_log.read_text().splitlines()]


def test_jobs_come_out_in_order_and_once(queue: WorkQueue) -> None:
    assert queue.submit(job(1)) and queue.submit(job(2))
    assert queue.depth() == 2
    first = queue.next()
    assert first == job(1)
    second = queue.next()
    assert second == job(2)
    assert queue.next() is None
    queue.done(first.id)
    queue.done(second.id)
    assert queue.depth() == 0
    assert queue.due_in() is None


def test_a_delivery_submitted_again_is_a_no_op(tmp_path: Path, clock: Clock) -> None:
    folder = tmp_path / "state"
    with WorkQueue(folder, clock=clock) as queue:
        assert queue.submit(job(1))
        before = tree_state(folder)
        assert not queue.submit(job(1))  # pending
        assert tree_state(folder) == before
        taken = queue.next()
        assert taken is not None
        assert not queue.submit(job(1))  # running
        queue.done(taken.id)
        assert not queue.submit(job(1))  # done
    with WorkQueue(folder, clock=clock) as queue:
        assert not queue.submit(job(1))  # done, remembered across a restart
        assert queue.depth() == 0
        assert json.loads((folder / "jobs" / "delivery-1.json").read_text())["data"] == {}


def test_retries_back_off_then_the_job_is_dead_lettered(
    tmp_path: Path, queue: WorkQueue, clock: Clock
) -> None:
    queue.submit(job(1))
    delays = []
    for attempt in range(1, 6):
        taken = queue.next()
        assert taken is not None and taken.attempts == attempt - 1
        delays.append(queue.failed(taken.id, f"store unreachable \x1b[31m (attempt {attempt})"))
        if delays[-1] is None:
            break
        assert queue.next() is None  # not before its backoff
        assert queue.due_in() == delays[-1]
        clock.now += delays[-1] - 0.001
        assert queue.next() is None
        clock.now += 0.001
    assert delays == [1.0, 2.0, 4.0, 8.0, None]
    assert queue.depth() == 0 and queue.dead() == 1
    assert queue.next() is None
    folder = tmp_path / "state"
    assert not (folder / "jobs" / "delivery-1.json").exists()
    buried = json.loads((folder / "dead" / "delivery-1.json").read_text())
    assert buried["attempts"] == 5
    assert buried["last_error"] == "store unreachable \x1b[31m (attempt 5)"
    assert buried["data"] == {"name": "churn", "version": "1"}
    [letter] = dead_letters(queue)
    assert letter["id"] == "delivery-1" and letter["attempts"] == 5
    assert "\x1b" not in queue.dead_letter_log.read_text()  # escaped by JSON
    assert not queue.submit(job(1))  # the same delivery again does not revive it


def test_a_job_left_running_by_a_killed_process_runs_again_once(tmp_path: Path) -> None:
    folder = tmp_path / "state"
    script = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from audit.gate.queue import Job, WorkQueue\n"
        "queue = WorkQueue(Path(sys.argv[1]))\n"
        "queue.submit(Job('delivery-1', 'model_version.created', {'name': 'churn'}))\n"
        "queue.submit(Job('delivery-2', 'model_version.created', {'name': 'churn'}))\n"
        "assert queue.next().id == 'delivery-1'\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    killed = subprocess.run(
        [sys.executable, "-c", script, str(folder)], cwd=REPO, capture_output=True, timeout=60
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()
    running = json.loads((folder / "jobs" / "delivery-1.json").read_text())
    assert running["state"] == "running"
    with WorkQueue(folder) as queue:  # the dead process's lock went with it
        assert queue.depth() == 2
        assert not queue.submit(Job("delivery-1", "model_version.created", {"name": "churn"}))
        again = queue.next()
        assert again is not None and again.id == "delivery-1"
        assert again.attempts == 1 and again.last_error is not None
        assert "interrupted" in again.last_error
        queue.done(again.id)
        later = queue.next()
        assert later is not None and later.id == "delivery-2"
        queue.done(later.id)
        assert queue.next() is None


def test_a_job_interrupted_on_its_last_attempt_is_dead_lettered(
    tmp_path: Path, clock: Clock
) -> None:
    folder = tmp_path / "state"
    queue = WorkQueue(folder, clock=clock, max_attempts=2)
    queue.submit(job(1))
    queue.failed(queue.next().id, "first")  # type: ignore[union-attr]
    clock.now += 10
    assert queue.next() is not None
    queue.close()  # as if killed: the job stays running
    with WorkQueue(folder, clock=clock, max_attempts=2) as reopened:
        assert reopened.depth() == 0 and reopened.dead() == 1
        assert "interrupted" in dead_letters(reopened)[0]["error"]


def test_release_puts_a_job_back_without_counting_an_attempt(queue: WorkQueue) -> None:
    queue.submit(job(1))
    taken = queue.next()
    assert taken is not None
    queue.release(taken.id)
    assert queue.next() == taken


def test_a_full_queue_refuses_and_changes_nothing(tmp_path: Path, clock: Clock) -> None:
    folder = tmp_path / "state"
    with WorkQueue(folder, clock=clock, capacity=2) as queue:
        queue.submit(job(1))
        queue.submit(job(2))
        before = tree_state(folder)
        with pytest.raises(QueueFull):
            queue.submit(job(3))
        assert tree_state(folder) == before
        assert queue.depth() == 2
        queue.done(queue.next().id)  # type: ignore[union-attr]
        assert queue.submit(job(3))  # room again


def test_a_second_process_cannot_use_the_same_folder(queue: WorkQueue) -> None:
    with pytest.raises(StateError, match="in use by another process"):
        WorkQueue(queue.folder)


def test_only_the_most_recent_done_jobs_are_remembered(tmp_path: Path, clock: Clock) -> None:
    with WorkQueue(tmp_path, clock=clock, done_kept=2) as queue:
        for number in (1, 2, 3):
            queue.submit(job(number))
            queue.done(queue.next().id)  # type: ignore[union-attr]
            clock.now += 1
        assert sorted(path.name for path in (tmp_path / "jobs").iterdir()) == [
            "delivery-2.json",
            "delivery-3.json",
        ]


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b'{"id": "delivery-9", "state": "pend', "not JSON"),
        (b"\xff\xfe", "not UTF-8"),
        (b"[1, 2]", "not a JSON object"),
        (b" " * (2 * 1024 * 1024), "too large"),
    ],
)
def test_a_corrupt_job_file_is_set_aside_with_a_note(
    tmp_path: Path, clock: Clock, content: bytes, says: str
) -> None:
    folder = tmp_path / "state"
    with WorkQueue(folder, clock=clock) as queue:
        queue.submit(job(1))
    (folder / "jobs" / "delivery-9.json").write_bytes(content)
    (folder / "jobs" / ".tmp-leftover").write_bytes(b"half a job")
    with WorkQueue(folder, clock=clock) as queue:
        assert queue.depth() == 1 and queue.next() == job(1)
        assert (folder / "dead" / "delivery-9.json.corrupt").read_bytes() == content
        assert not (folder / "jobs" / ".tmp-leftover").exists()
        [note] = dead_letters(queue)
        assert note["file"] == "jobs/delivery-9.json" and says in note["error"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("id", "delivery-8"),
        ("state", "finished"),
        ("attempts", 99),
        ("attempts", "1"),
        ("data", "x"),
        ("not_before", True),
        ("finished_at", 1.0),
        ("last_error", "x" * 5000),
    ],
)
def test_a_job_file_with_an_invalid_field_is_set_aside(
    tmp_path: Path, clock: Clock, field: str, value: Any
) -> None:
    folder = tmp_path / "state"
    with WorkQueue(folder, clock=clock) as queue:
        queue.submit(job(1))
    path = folder / "jobs" / "delivery-1.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), field: value}))
    with WorkQueue(folder, clock=clock) as queue:
        assert queue.depth() == 0
        assert f"field {field} is missing or invalid" in dead_letters(queue)[0]["error"]
        # The job was lost to the corruption: the same delivery sent again is queued anew.
        assert queue.submit(job(1))


def contents(folder: Path) -> dict[str, tuple[bool, bytes]]:
    """Every path below folder with its bytes; modification times aside (a temporary file
    written and removed again changes its folder's)."""
    return {path: (folder_, content) for path, (folder_, content, _) in tree_state(folder).items()}


def test_a_job_that_cannot_be_written_is_refused_and_changes_nothing(
    tmp_path: Path, clock: Clock
) -> None:
    folder = tmp_path / "state"
    with WorkQueue(folder, clock=clock) as queue:
        queue.submit(job(2))
        (folder / "jobs" / "delivery-1.json").mkdir()  # where the file must go
        before = contents(folder)
        with pytest.raises(StateError, match=r"delivery-1\.json: cannot write"):
            queue.submit(job(1))
        assert contents(folder) == before
        assert queue.depth() == 1
        (folder / "jobs" / "delivery-1.json").rmdir()
        assert queue.submit(job(1))  # not taken for known after the failure


def test_a_second_corrupt_file_of_the_same_name_keeps_the_first(
    tmp_path: Path, clock: Clock
) -> None:
    folder = tmp_path / "state"
    for content in (b"first", b"second"):
        with WorkQueue(folder, clock=clock):
            pass
        (folder / "jobs" / "delivery-9.json").write_bytes(content)
    with WorkQueue(folder, clock=clock) as queue:
        assert queue.depth() == 0
    assert (folder / "dead" / "delivery-9.json.corrupt").read_bytes() == b"first"
    assert (folder / "dead" / "delivery-9.json.corrupt-2").read_bytes() == b"second"


def test_a_job_of_a_delivery_carries_its_id_event_and_data(queue: WorkQueue) -> None:
    from audit.gate.deliveries import Delivery

    delivery = Delivery("d-1", 1, "model_version_alias", "created", {"alias": "champion"}, "0" * 64)
    assert queue.submit(Job.of(delivery))
    assert queue.next() == Job("d-1", "model_version_alias.created", {"alias": "champion"})
