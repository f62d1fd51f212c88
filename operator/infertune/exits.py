"""CLI: the `infertune` command's exit statuses and its usage error, shared by every module that adds commands
(cli, offline, sim/commands), so that none of them imports another for them."""

from __future__ import annotations

import argparse
import sys

EXIT_OK = 0
EXIT_NO_KNEE = 1  # `infertune knee`: the analysis ran, and no measured concurrency meets the SLO
EXIT_INVALID = 2  # bad flags, files or input: argparse's own status for a usage error


class UsageError(Exception):
    """Bad input to a command: printed as one line naming the command, exit status 2."""


def run(args: argparse.Namespace) -> int:
    """Run the parsed command (`args.fn`); a UsageError becomes `infertune COMMAND: why` on stderr and status 2."""
    try:
        code: int = args.fn(args)
    except UsageError as e:
        print(f"infertune {args.command}: {e}", file=sys.stderr)
        return EXIT_INVALID
    return code
