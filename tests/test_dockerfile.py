"""What the Dockerfile, README and docs tell a user to run exists: every experiment they name composes, and the
Dockerfile runs as a user, shares memory with its loader workers, keeps outputs and caches on volumes and
installs the dependencies before copying the code."""

from __future__ import annotations

import re

import pytest

from helpers.config import REPO, compose_config

DOCUMENTS = [
    REPO / "Dockerfile",
    REPO / "README.md",
    *sorted((REPO / "docs").glob("*.md")),
    *sorted((REPO / "scripts").glob("*.sbatch")),
]


def named_experiments() -> list[tuple[str, str]]:
    """(document, experiment) for every `experiment=<name>` (or comma-separated sweep) in the documents; a
    placeholder such as `experiment=paper/...` is not a name."""
    found = set()
    for path in DOCUMENTS:
        for match in re.finditer(r"experiment=([\w,/]+)", path.read_text()):
            found |= {(path.name, name) for name in match[1].split(",") if not name.endswith("/")}
    return sorted(found)


def test_the_documents_name_experiments():
    assert {"Dockerfile", "README.md"} <= {document for document, _ in named_experiments()}


@pytest.mark.parametrize("document, experiment", named_experiments())
def test_every_named_experiment_exists_and_composes(document: str, experiment: str):
    assert (REPO / "configs" / "experiment" / f"{experiment}.yaml").is_file(), f"{document} names {experiment}"
    cfg = compose_config(f"experiment={experiment}", "data.root=/data/somewhere")
    assert cfg.trainer.epochs >= 1 and cfg.backbone.name


def test_dockerfile_runs_as_a_user_with_shared_memory_volumes_and_cached_dependencies():
    text = (REPO / "Dockerfile").read_text()
    header = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    assert "docker run" in header and ("--ipc=host" in header or "--shm-size" in header)
    instructions = [line.split()[0] for line in text.splitlines() if line and not line[0].isspace() and line[0] != "#"]
    assert instructions[-1] == "CMD" and "USER" in instructions
    assert re.search(r"^USER (?!root\b)\w+", text, re.MULTILINE)
    volumes = re.search(r"^VOLUME (.+)$", text, re.MULTILINE)[1]
    assert "/workspace/aaconv/outputs" in volumes and "/cache" in volumes
    assert re.search(r"^ENV .*AACONV_CACHE=/cache", text, re.MULTILINE)
    lines = text.splitlines()
    dependencies = next(i for i, line in enumerate(lines) if "pip install" in line and "requirements" in line)
    code = next(i for i, line in enumerate(lines) if line.startswith("COPY aaconv"))
    assert dependencies < code  # a code edit keeps the dependency layer
