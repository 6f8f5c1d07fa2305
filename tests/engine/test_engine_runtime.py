"""Distributed environment detection, RNG state round trips, preemption signal handling, precision, the CPU
allocator."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

from aaconv.engine import signals
from aaconv.engine.distributed import detect_env
from aaconv.engine.precision import NonFiniteGuard, NonFiniteLossError, Precision
from aaconv.engine.runtime import rng_state, set_cpu_allocator, set_rng_state
from aaconv.errors import ConfigError
from aaconv.models import create_model


def test_detect_env_torchrun_slurm_and_single():
    torchrun = detect_env(
        {"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "3", "MASTER_ADDR": "n1", "MASTER_PORT": "1234"}
    )
    assert (torchrun.rank, torchrun.world_size, torchrun.local_rank, torchrun.master_addr, torchrun.source) == (
        3,
        8,
        3,
        "n1",
        "torchrun",
    )
    slurm = detect_env(
        {
            "SLURM_PROCID": "9",
            "SLURM_NTASKS": "16",
            "SLURM_LOCALID": "1",
            "SLURM_JOB_ID": "4242",
            "SLURM_JOB_NODELIST": "gpu[007-008]",
        }
    )
    assert (slurm.rank, slurm.world_size, slurm.local_rank, slurm.master_addr, slurm.source) == (
        9,
        16,
        1,
        "gpu007",
        "slurm",
    )
    assert slurm.master_port == 20000 + 4242
    assert detect_env({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}).source == "single"  # e.g. an interactive salloc
    assert detect_env({}).world_size == 1


def test_rng_state_round_trip_is_weights_only_safe(tmp_path):
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    torch.save(rng_state(), tmp_path / "rng.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1))
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert (random.random(), np.random.rand()) == expected[:2] and torch.equal(torch.rand(1), expected[2])


def test_preemption_chains_to_a_python_handler_or_requeues_under_slurm(monkeypatch):
    calls = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: calls.append(signum))
    try:
        handler = signals.PreemptionHandler(["SIGUSR2"])
        os.kill(os.getpid(), signal.SIGUSR2)
        assert handler.requested and not calls  # only recorded: the trainer checkpoints first
        handler.finish(signal.SIGUSR2, is_main=True)
        assert calls == [signal.SIGUSR2]  # e.g. submitit's requeue handler
        handler.close()
    finally:
        signal.signal(signal.SIGUSR2, previous)

    commands = []
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setattr(signals.subprocess, "run", lambda cmd, check: commands.append(cmd))
    handler = signals.PreemptionHandler(["SIGUSR1"])
    with pytest.raises(SystemExit) as exit_info:
        handler.finish(signal.SIGUSR1, is_main=True)
    assert exit_info.value.code == 128 + signal.SIGUSR1 and commands == [["scontrol", "requeue", "77"]]
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


@pytest.mark.parametrize("name", ["fp16", "bf16"])
def test_autocast_resnet_forward_backward_on_cpu(name: str):
    model = create_model("resnet18", {"variant": "none"}, num_classes=6)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    precision = Precision(name, torch.device("cpu"))
    for _ in range(2):
        with precision.autocast():
            logits = model(torch.randn(2, 3, 32, 32))
        assert logits.dtype == precision.dtype
        precision.scaler.scale(nn.functional.cross_entropy(logits.float(), torch.tensor([0, 1]))).backward()
        precision.scaler.step(optimizer)  # fp16: skipped while the scale overflows, then the scale shrinks
        precision.scaler.update()
        optimizer.zero_grad()
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_nonfinite_guard_counts_bad_values_until_an_update_is_taken():
    guard = NonFiniteGuard(max_consecutive=2)
    assert not guard.bad(torch.tensor(1.0))
    assert guard.bad(torch.tensor(float("nan")))
    assert not guard.bad(torch.tensor(0.5)) and guard.consecutive == 1  # a finite loss alone is no update
    guard.stepped()
    assert guard.consecutive == 0
    assert guard.bad(torch.tensor(float("inf")))
    with pytest.raises(NonFiniteLossError):
        guard.bad(torch.tensor(float("nan")))


# A step's worth of frees and allocations: an 8 MiB tensor, then 64 MiB in 1 MiB tensors, five times over; prints the
# page faults of the last five rounds.
_REFAULT_SCRIPT = textwrap.dedent(
    """
    import ctypes, resource, sys, torch
    from aaconv.engine.runtime import set_cpu_allocator
    if sys.argv[1] == "tuned":
        set_cpu_allocator("tuned")
    else:  # glibc's initial thresholds, fixed (mallopt turns off their growth, which depends on the process's past)
        mallopt = ctypes.CDLL("libc.so.6").mallopt
        mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD
        mallopt(-1, 128 * 1024)  # M_TRIM_THRESHOLD
    def step():
        big = torch.empty(2 << 20).fill_(1)
        del big
        small = [torch.empty(1 << 18).fill_(1) for _ in range(64)]
        del small
    step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        step()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt and /proc page-fault counts")
def test_tuned_cpu_allocator_reuses_freed_memory_instead_of_faulting_it_back():
    """Each in a fresh process: with glibc's initial thresholds (128 KiB) the freed 64 MiB goes back to the OS and is
    faulted back in every round (the control), the tuned allocator keeps it for reuse. glibc's own default raises its
    thresholds as large blocks are freed, so whether it refaults depends on what the process freed before: measured
    at 16,000 faults a round in one fresh process and none in another."""

    def page_faults(mode: str) -> int:
        result = subprocess.run(
            [sys.executable, "-c", _REFAULT_SCRIPT, mode], capture_output=True, text=True, check=True
        )
        return int(result.stdout.split()[-1])

    assert page_faults("initial") > 5 * 8000  # 64 MiB is 16384 pages of 4 KiB
    assert page_faults("tuned") < 1000


def test_cpu_allocator_names_its_choices():
    assert set_cpu_allocator("default") is False
    with pytest.raises(ConfigError, match="tuned, default"):
        set_cpu_allocator("jemalloc")
