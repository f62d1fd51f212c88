"""CLI: the twin's commands (`infertune sweep`, `infertune simulate`)."""

from __future__ import annotations

from typing import Any


def register(sub: Any) -> None:
    """Add this module's subcommands to the `infertune` parser."""
    del sub  # sweep and simulate are registered here as they are written
