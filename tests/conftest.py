"""Shared fixtures live in tests/fixtures/ modules, each loaded here as a plugin; keep this file tiny."""

from pathlib import Path

import pytest

# fixture modules import each other; mark them all for assertion rewriting before any is imported
pytest.register_assert_rewrite("fixtures")

pytest_plugins = sorted(
    f"fixtures.{p.stem}" for p in (Path(__file__).parent / "fixtures").glob("*.py") if not p.stem.startswith("_")
)
