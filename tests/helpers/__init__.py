"""Code shared by the tests (tests/ is on pytest's import path): composed configs and entry-point runs.

Fixtures live in tests/conftest.py; everything importable by name lives here."""
