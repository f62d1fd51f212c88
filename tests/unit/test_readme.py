"""Test: every command in the README's shell blocks is run by a test as written, or listed with where it runs."""

from __future__ import annotations

import readme_commands as rc


def unlisted(found: list[rc.Command]) -> list[str]:
    """Commands that nothing runs and no list names; a setup line counts when a command run after it needs it."""
    covered = set(rc.RUN_HERE) | set(rc.RUN_IN_E2E) | set(rc.ELSEWHERE)
    out = []
    for c in found:
        if c.text in rc.SETUP:
            if not any(d.block == c.block and c.text in d.setup and (d.text in rc.RUN_HERE or d.text in rc.RUN_IN_E2E)
                       for d in found):
                out.append(c.text)
        elif c.text not in covered:
            out.append(c.text)
    return out


def test_every_readme_command_is_run_or_listed() -> None:
    assert unlisted(rc.commands()) == []


def test_every_command_named_in_the_prose_is_listed() -> None:
    assert [c for c in rc.inline_commands() if c not in rc.ELSEWHERE and c not in rc.RUN_HERE] == []


def test_no_listed_command_is_missing_from_the_readme() -> None:
    # A command the README dropped or changed must leave the lists too, or a test runs something nobody shows.
    shown = {c.text for c in rc.commands()} | set(rc.inline_commands())
    listed = set(rc.RUN_HERE) | set(rc.RUN_IN_E2E) | set(rc.ELSEWHERE) | set(rc.SETUP)
    assert sorted(listed - shown) == []


def test_the_readme_quotes_what_its_commands_print() -> None:
    text = rc.README.read_text()
    for command, (expected, claimed) in rc.RUN_HERE.items():
        if claimed:
            assert f"`{expected}`" in text, (command, expected)


def test_a_new_command_is_caught_and_the_parser_keeps_what_runs() -> None:
    readme = "\n".join([
        "text", "```sh",
        "source .venv/bin/activate",
        "infertune cost --gpu-hourly 2.50 --gpus 1 --tokens-per-second 1800   # a comment",
        "infertune knee x.csv \\",
        "    --ttft 1s   # '#' inside quotes stays: 'a # b'",
        "echo 'a # b'",
        "             # a comment line alone",
        "```",
        "```yaml", "not: a command", "```",
        "```", "make new-thing", "```",
    ])
    found = rc.commands(readme)
    assert [c.text for c in found] == ["source .venv/bin/activate",
                                        "infertune cost --gpu-hourly 2.50 --gpus 1 --tokens-per-second 1800",
                                        "infertune knee x.csv --ttft 1s", "echo 'a # b'", "make new-thing"]
    assert found[1].setup == ("source .venv/bin/activate",) and found[4].setup == ()
    assert found[4].block == 1  # the yaml block is not shell
    assert unlisted(found) == ["infertune knee x.csv --ttft 1s", "echo 'a # b'", "make new-thing"]
    prose = ("Run `make` or `make venv`, then `FOO=1 .venv/bin/python x.py`; see `docs/x.md` and `kubectl`.\n"
             "```sh\nmake y\n```")
    assert rc.inline_commands(prose) == ["make venv", "FOO=1 .venv/bin/python x.py"]
    # Without a command that needs it, the setup line is itself unlisted.
    assert unlisted(rc.commands("```sh\nsource .venv/bin/activate\n```\n")) == ["source .venv/bin/activate"]
