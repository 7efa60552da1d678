"""The suite's leak fixtures (tests/conftest.py) fail a test that leaves work running."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PROBE = '''
import asyncio


async def test_leaves_a_task_running():
    asyncio.get_running_loop().create_task(asyncio.Event().wait(), name="forgotten-watcher")


async def test_cancels_its_task_without_awaiting_it():
    task = asyncio.create_task(asyncio.Event().wait())
    await asyncio.sleep(0)
    task.cancel()


async def test_awaits_its_task():
    await asyncio.create_task(asyncio.sleep(0.01))


async def test_uses_the_default_executor():
    await asyncio.to_thread(sum, [1, 2])


def test_runs_its_own_loop():
    asyncio.run(asyncio.sleep(0))
'''


def test_an_async_test_that_leaves_a_task_running_fails_and_names_it(tmp_path: Path) -> None:
    """pytest-asyncio cancels what is left when it closes the loop, silently; the fixture makes
    a forgotten task an error naming it, and leaves tidy tests (and executor threads, stopped
    with the loop) alone."""
    probe = tmp_path / "test_probe.py"
    probe.write_text(PROBE)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.conftest",
         "--rootdir", str(ROOT), "-c", str(ROOT / "pyproject.toml"), str(probe)],
        cwd=ROOT, capture_output=True, text=True)
    out = run.stdout
    errors = [line for line in out.splitlines() if line.startswith("ERROR ")]
    assert len(errors) == 1 and "test_leaves_a_task_running" in errors[0], out
    assert "test left asyncio tasks running" in out and "forgotten-watcher" in out, out
    assert "5 passed, 1 error" in out, out  # the error is the leaking test's teardown
