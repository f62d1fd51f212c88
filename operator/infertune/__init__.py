"""infertune: an operator that keeps LLM inference servers at the cheapest operating point meeting their SLOs."""

__version__ = "0.1.0"
