"""Real processes: DDP through torchrun (2 gloo ranks) against one process, SIGTERM mid-epoch + resume, a hung
rank, two writers on one run directory (and the Hydra record the refused one leaves alone)."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from aaconv.engine.run_lock import RunLock
from helpers.config import REPO
from helpers.processes import TOY, entry_env, load_weights, run_entry

pytestmark = pytest.mark.slow

COMMON = [*TOY, "data.workers=0", "logger.progress_bar=false", "trainer.deterministic=true", "+task.train_size=64"]


def train(
    run_dir: Path,
    *overrides: str,
    launcher: list[str] | None = None,
    env: dict[str, str] | None = None,
    preexec_fn=None,
):
    args = [*(launcher or []), "train.py", *COMMON, f"hydra.run.dir={run_dir}", *overrides]
    return run_entry(args, cwd=REPO, env=env, preexec_fn=preexec_fn)


def test_ddp_two_processes_match_one_process_and_count_each_val_image_once(tmp_path: Path):
    torchrun = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    # rank 1 alone gets SIGTERM at its 3rd batch: both ranks must stop after the same step, rank 0 checkpoints
    interrupted = train(
        tmp_path / "ddp",
        "data.batch_size=4",
        "trainer.epochs=1",
        launcher=torchrun,
        env={"AACONV_TEST_SIGTERM_AT": "3", "AACONV_TEST_SIGTERM_RANK": "1"},
    )
    assert interrupted.returncode != 0
    state = torch.load(tmp_path / "ddp/last.pt", weights_only=True)
    assert (state["epoch"], state["batch_in_epoch"], state["world_size"], len(state["rng"])) == (0, 3, 2, 2)
    ddp = train(tmp_path / "ddp", "data.batch_size=4", "trainer.epochs=1", launcher=torchrun)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    single = train(tmp_path / "single", "data.batch_size=8", "trainer.epochs=1")
    assert single.returncode == 0, single.stderr[-3000:]

    ddp_weights, single_weights = load_weights(tmp_path / "ddp/last.pt"), load_weights(tmp_path / "single/last.pt")
    for key in single_weights:
        torch.testing.assert_close(ddp_weights[key], single_weights[key], rtol=1e-5, atol=1e-6)
    results = json.loads((tmp_path / "ddp/results.json").read_text())
    # 45 validation vectors over 2 ranks: 23 + 22, none padded or repeated
    assert (results["val_images"], results["val_seen"], results["val_unique"]) == (45, 45, 45)
    assert results["world_size"] == 2 and results["global_batch"] == 8


def test_sigterm_mid_epoch_then_rerun_ends_with_identical_weights(tmp_path: Path):
    overrides = ["trainer.epochs=2", "+task.dropout=0.2"]  # 8 steps per epoch; dropout uses the model RNG
    reference = train(tmp_path / "reference", *overrides)
    assert reference.returncode == 0, reference.stderr[-3000:]

    # the 11th batch (epoch 2, batch 3) sends a real SIGTERM to the process; workers=2 also checks that the
    # random augmentation does not depend on how samples are loaded
    interrupted = train(tmp_path / "run", *overrides, "data.workers=2", env={"AACONV_TEST_SIGTERM_AT": "11"})
    assert interrupted.returncode == 128 + signal.SIGTERM, interrupted.stderr[-3000:]
    state = torch.load(tmp_path / "run/last.pt", weights_only=True)
    assert (state["epoch"], state["batch_in_epoch"], state["global_step"]) == (1, 3, 11)
    assert not (tmp_path / "run/results.json").exists()

    resumed = train(tmp_path / "run", *overrides, "data.workers=2")  # the same command, the same run dir
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stderr + resumed.stdout
    final, expected = load_weights(tmp_path / "run/last.pt"), load_weights(tmp_path / "reference/last.pt")
    assert final.keys() == expected.keys()
    for key in expected:
        assert torch.equal(final[key], expected[key]), key
    epochs = [json.loads(line)["epoch"] for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]


def test_a_hung_rank_fails_the_job_within_the_collective_timeout(tmp_path: Path):
    torchrun = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    # rank 1 stops making progress at its 3rd step (a stuck process, or a node gone without closing its
    # sockets); rank 0 waits in the next collective. preempt_signals=[]: torchrun's SIGTERM then ends rank 1.
    start = time.monotonic()
    result = train(
        tmp_path / "run",
        "data.batch_size=4",
        "trainer.dist_timeout_s=5",
        "trainer.preempt_signals=[]",
        launcher=torchrun,
        env={"AACONV_TEST_HANG_AT": "3", "AACONV_TEST_SIGTERM_RANK": "1"},
    )
    elapsed = time.monotonic() - start
    assert result.returncode != 0
    assert "rank 1 hangs at training step 3" in result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith("error: rank 0: a collective failed")
    assert "trainer.dist_timeout_s=5 s" in errors[0]
    assert elapsed < 60, elapsed  # the 30-minute default would have run into run_entry's timeout


def test_a_second_job_on_a_run_directory_is_refused_with_one_line(tmp_path: Path):
    run_dir = tmp_path / "run"
    first = subprocess.Popen(
        [sys.executable, "train.py", *COMMON, "trainer.epochs=1", f"hydra.run.dir={run_dir}"],
        cwd=REPO,
        env=entry_env({"AACONV_TEST_HANG_AT": "2"}),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        for line in first.stdout:  # the first job holds the directory mid-epoch
            if "hangs at training step 2" in line:
                break
        second = train(run_dir, "trainer.epochs=1")
        assert second.returncode == 2
        assert second.stderr.strip().splitlines() == [
            f"error: run directory {run_dir} is in use by process {first.pid} on {os.uname().nodename}; "
            "wait for it to finish, or give this run another hydra.run.dir"
        ]
    finally:
        first.kill()  # a crash: the kernel drops its lock
        first.wait()
    third = train(run_dir, "trainer.epochs=1")
    assert third.returncode == 0, third.stderr[-3000:]
    assert [json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()] == [1]


def test_a_refused_job_leaves_the_hydra_record_of_the_run_holding_the_directory(tmp_path: Path):
    run_dir = tmp_path / "run"
    first = train(run_dir, "trainer.epochs=1")
    assert first.returncode == 0, first.stderr[-3000:]
    names = ("config.yaml", "hydra.yaml", "overrides.yaml")
    record = {name: (run_dir / ".hydra" / name).read_bytes() for name in names}
    hydra = OmegaConf.load(run_dir / ".hydra" / "hydra.yaml").hydra  # read as scripts/paper_table.py reads it
    assert hydra.runtime.output_dir == str(run_dir) and hydra.runtime.choices.trainer == "default"
    assert "trainer.epochs=1" in OmegaConf.load(run_dir / ".hydra" / "overrides.yaml")

    lock = RunLock(run_dir)  # the directory is held, as by a run still training
    try:
        second = train(run_dir, "trainer.epochs=2", "seed=7")
    finally:
        lock.release()
    assert second.returncode == 2 and "is in use by process" in second.stderr, second.stderr[-3000:]
    assert {name: (run_dir / ".hydra" / name).read_bytes() for name in names} == record


def _file_size_limit() -> None:
    """A full disk, as far as writes go: files stop growing at 12 kB (a toy checkpoint is about 22 kB)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() then fails with EFBIG instead of killing the process
    resource.setrlimit(resource.RLIMIT_FSIZE, (12_000, 12_000))


def test_a_failed_checkpoint_write_is_one_line_and_leaves_no_duplicate_epoch_line(tmp_path: Path):
    run_dir = tmp_path / "run"
    full = train(run_dir, "trainer.epochs=1", preexec_fn=_file_size_limit)
    assert full.returncode == 2
    last = full.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: cannot write checkpoint {run_dir / 'best.pt'} ("), full.stderr[-3000:]
    assert last.endswith(
        "the disk is full or the folder is not writable; free space or fix the permissions, "
        "then rerun the same command to resume"
    )
    assert not (run_dir / "last.pt").exists() and not list(run_dir.glob(".*.pt.*.tmp"))

    def epochs() -> list[int]:
        return [json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]

    assert epochs() == [1]  # the epoch's line went out before its checkpoint failed

    again = train(run_dir, "trainer.epochs=2")  # space is back: the same command starts over, then goes on
    assert again.returncode == 0, again.stderr[-3000:]
    assert epochs() == [1, 2]
