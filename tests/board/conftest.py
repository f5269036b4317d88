"""Fixtures for the board tests (helpers live in board_support.py: another conftest can shadow this name)."""

from board_support import workdir  # noqa: F401  (a fixture)
