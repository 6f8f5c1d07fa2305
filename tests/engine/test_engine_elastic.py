"""Elastic restarts across "nodes": two torchrun agents on localhost (c10d rendezvous, gloo) stand in for two
nodes with one process each. A killed process, or a killed node that is started again, ends in a run equal to
an uninterrupted one: the processes rejoin (aaconv.engine.distributed.launch_store), resume from last.pt and finish."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers.config import REPO
from helpers.processes import TOY, entry_env, load_weights, run_entry

pytestmark = pytest.mark.slow

# 32 vectors, 2 processes x 8: 2 steps per epoch; last.pt after epoch 1, the kill at the 3rd step (epoch 2)
COMMON = [
    *TOY,
    "data.workers=0",
    "logger.progress_bar=false",
    "trainer.deterministic=true",
    "+task.train_size=32",
    "trainer.epochs=2",
]
TIMING_KEYS = {"train_images_per_s", "train_time_s", "peak_memory_mb", "checkpoint"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def agent_args(port: int, run_dir: Path, *rdzv_conf: str) -> list[str]:
    """One "node": a torchrun agent of a 2-node job with up to 2 restarts."""
    conf = ["--rdzv_conf", ",".join(rdzv_conf)] if rdzv_conf else []
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=2",
        "--nproc_per_node=1",
        "--rdzv_backend=c10d",
        f"--rdzv_endpoint=127.0.0.1:{port}",
        "--max-restarts=2",
        *conf,
        "train.py",
        *COMMON,
        f"hydra.run.dir={run_dir}",
    ]


def start_agent(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(args, cwd=REPO, env=entry_env(env), stdout=log.open("a"), stderr=subprocess.STDOUT)


def wait_listening(port: int, agent: subprocess.Popen, timeout: float = 60) -> None:
    """Until the first agent hosts the rendezvous store (the second then joins it as a client)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and agent.poll() is None:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"no rendezvous store on port {port}")


def finish(agents: list[subprocess.Popen], logs: list[Path], timeout: float = 120) -> None:
    for agent, log in zip(agents, logs, strict=True):
        try:
            assert agent.wait(timeout) == 0, log.read_text()[-4000:]
        finally:
            agent.kill()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("elastic") / "reference"
    torchrun = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    result = run_entry([*torchrun, "train.py", *COMMON, f"hydra.run.dir={run_dir}"], cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def assert_same_run(run_dir: Path, reference: Path) -> None:
    """One metrics line per epoch, the same results.json (but timings) and bit-equal weights."""
    epochs = [json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]
    got, expected = (json.loads((d / "results.json").read_text()) for d in (run_dir, reference))
    assert {k: v for k, v in got.items() if k not in TIMING_KEYS} == {
        k: v for k, v in expected.items() if k not in TIMING_KEYS
    }
    final, reference_weights = load_weights(run_dir / "last.pt"), load_weights(reference / "last.pt")
    for key in reference_weights:
        assert torch.equal(final[key], reference_weights[key]), key


def test_a_killed_process_is_restarted_and_the_run_finishes_as_if_uninterrupted(tmp_path: Path, uninterrupted: Path):
    port, run_dir = free_port(), tmp_path / "run"
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    # the second node's process is SIGKILLed at its 3rd step; restarted, it joins 2 s late, so the first
    # node's new process would read the dead one's address from torchrun's store without a launch prefix
    faults = {
        "AACONV_TEST_SIGTERM_RANK": "any",
        "AACONV_TEST_SIGKILL_AT": "3",
        "AACONV_TEST_FAULT_ONCE": str(tmp_path / "killed"),
        "AACONV_TEST_LATE_S": "2",
    }
    first = start_agent(agent_args(port, run_dir), logs[0])
    wait_listening(port, first)
    second = start_agent(agent_args(port, run_dir), logs[1], faults)
    finish([first, second], logs)
    assert (tmp_path / "killed").exists()
    text = logs[0].read_text() + logs[1].read_text()
    assert "killed at training step 3" in text and "resumed from" in text and "torchrun launch 2" in text
    assert_same_run(run_dir, uninterrupted)


def test_a_killed_node_started_again_rejoins_and_the_run_finishes_as_if_uninterrupted(
    tmp_path: Path, uninterrupted: Path
):
    port, run_dir = free_port(), tmp_path / "run"
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    faults = {
        "AACONV_TEST_SIGTERM_RANK": "any",
        "AACONV_TEST_SIGKILL_AT": "3",
        "AACONV_TEST_SIGKILL_AGENT": "1",  # the agent and its process: the whole node
        "AACONV_TEST_FAULT_ONCE": str(tmp_path / "killed"),
        "AACONV_TEST_LATE_S": "2",
    }
    # torchrun's shared store cannot take a replaced agent back (its rank 0 never republishes the store's
    # address to a newcomer): the documented setting for runs that lose nodes
    unshared = {"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}
    # a dead node leaves the rendezvous after 2 missed 1 s heartbeats (torch's default: 3 x 5 s)
    args = agent_args(port, run_dir, "keep_alive_interval=1", "keep_alive_max_attempt=2")
    first = start_agent(args, logs[0], unshared)
    wait_listening(port, first)
    second = start_agent(args, logs[1], {**faults, **unshared})
    try:
        assert second.wait(120) == -signal.SIGKILL, logs[1].read_text()[-4000:]
    finally:
        second.kill()
    replacement = start_agent(args, logs[1], {**faults, **unshared})  # the node is back: a new agent, restart count 0
    finish([first, replacement], logs)
    text = logs[0].read_text() + logs[1].read_text()
    assert "killed at training step 3" in text and "resumed from" in text
    assert_same_run(run_dir, uninterrupted)
