"""CLI: offline analysis commands (`infertune knee`, `infertune cost`)."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    """Add this module's subcommands to the `infertune` parser."""
    del sub  # the knee and cost commands are registered here as they are written


__all__ = ["argparse", "register"]
