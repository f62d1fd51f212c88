"""Test: one exit-status table and one usage error for every command module (cli, offline, sim/commands)."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from infertune import cli, exits


def _raise(args: argparse.Namespace) -> int:
    raise exits.UsageError("--flag: bad value")


def test_a_usage_error_is_one_line_naming_the_command_and_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert exits.run(argparse.Namespace(fn=_raise, command="sweep")) == exits.EXIT_INVALID == 2
    assert capsys.readouterr().err == "infertune sweep: --flag: bad value\n"


def test_the_command_s_own_status_passes_through() -> None:
    assert exits.run(argparse.Namespace(fn=lambda a: exits.EXIT_NO_KNEE, command="knee")) == 1


@pytest.mark.parametrize(("argv", "line"), [
    (["sweep", "--model", "llama-3.1-8b", "--gpu", "h100-sxm-80gb", "--isl", "x", "--osl", "10"],
     "infertune sweep: --isl: expected a whole number, got 'x'"),
    (["knee", "/nonexistent/export.json", "--ttft", "1s", "--itl", "40ms"],
     "infertune knee: /nonexistent/export.json: no such file"),
    (["validate", "/nonexistent/x.yaml"], "infertune validate: /nonexistent/x.yaml: cannot read"),
])
def test_every_command_module_reports_usage_errors_the_same_way(
        argv: list[str], line: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == exits.EXIT_INVALID
    assert capsys.readouterr().err.startswith(line)


def test_the_twin_s_commands_load_without_the_cli() -> None:
    # sim/commands once imported cli for its exit codes while cli imported sim/commands: an import circle.
    code = "import sys, infertune.sim.commands, infertune.offline; sys.exit('infertune.cli' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
