"""Test: the README's commands without a cluster run exactly as written from the repository's root and print
what the README says."""

from __future__ import annotations

import os
import subprocess

import pytest

import readme_commands as rc

HERE = [c for c in rc.commands() if c.text in rc.RUN_HERE]


def test_the_readme_still_shows_each_command_run_here() -> None:
    assert sorted(c.text for c in HERE) == sorted(rc.RUN_HERE)


@pytest.mark.parametrize("command", HERE, ids=[c.text[:60] for c in HERE])
def test_readme_command_runs_as_written(command: rc.Command) -> None:
    # One bash per command: the block's setup lines (`source .venv/bin/activate`), then the command as written.
    script = "\n".join(["set -euo pipefail", *command.setup, command.raw])
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    done = subprocess.run(["bash", "-c", script], cwd=rc.ROOT, env=env, capture_output=True, text=True,
                          timeout=240, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    expected, _ = rc.RUN_HERE[command.text]
    assert expected in done.stdout, done.stdout[-3000:]
