"""What a new user copies from the README works as printed: the commands after the quick start name the venv they
run in, every optional extra is named with what it is for, a CPU-only install is explained, and
scripts/mini_table.sh outside the venv says what to do instead of a traceback."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def test_commands_after_the_quick_start_run_in_its_venv() -> None:
    quick_start = README.index("## Quick start")
    first_bare_python = re.search(r"^\s+python (?!3 -m venv)", README[quick_start:], re.MULTILINE)
    assert first_bare_python is not None
    before = README[quick_start : quick_start + first_bare_python.start()]
    assert "source .venv/bin/activate" in before, "activate the venv before the first command that says `python`"


def test_every_extra_is_named_in_the_readme() -> None:
    pyproject = (REPO / "pyproject.toml").read_text()
    section = pyproject.split("[project.optional-dependencies]")[1].split("\n[")[0]
    extras = re.findall(r"^([\w-]+) = \[", section, re.MULTILINE)
    assert "dev" in extras and "plot" in extras
    first_cells = re.findall(r"^\| ((?:`[\w-]+`(?:, )?)+) \| .+ \|$", README, re.MULTILINE)  # `name`, `name` | for
    listed = {name for cell in first_cells for name in re.findall(r"`([\w-]+)`", cell)}
    assert set(extras) <= listed, f"extras without a row in the README's extras table: {sorted(set(extras) - listed)}"


def test_readme_says_how_to_install_a_cpu_only_torch() -> None:
    assert "--index-url https://download.pytorch.org/whl/cpu" in README


def test_mini_table_outside_the_venv_is_one_line_naming_the_fix(tmp_path: Path) -> None:
    bare = tmp_path / "python"  # an interpreter without aaconv's dependencies
    bare.write_text("#!/bin/sh\nexec /usr/bin/env -i /bin/false\n")
    bare.chmod(0o755)
    env = {**os.environ, "PYTHON": str(bare)}
    result = subprocess.run(
        ["bash", "scripts/mini_table.sh", str(tmp_path / "sweep")], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "source .venv/bin/activate" in result.stderr
    assert not (tmp_path / "sweep").exists()
