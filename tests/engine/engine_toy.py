"""A task small enough for exactness tests of the engine: a 2-layer MLP (no BatchNorm) on fixed vectors.

Used as `task._target_=engine_toy.ToyTask` (tests/engine on the Python path). Training samples get
random noise from the global torch RNG (like a random augmentation) and the model may have dropout, so
resume tests exercise the data and model random streams; `batchnorm` adds a BatchNorm layer (buffers a
diverged forward pass corrupts). Hooks for fault injection: `poison_batches` (1-based training_loss calls
whose inputs are made NaN), `nan_grad_batches` (calls whose loss stays finite but whose gradients are NaN),
`nan_metric_evals` (1-based evaluate calls that report a NaN accuracy), `accuracies` (the accuracy the n-th evaluate
call reports, for calls 1..len; with EMA the model's and the EMA's evaluations alternate),
`signal_at` (the training_loss call at which this process sends itself the signal `signal_name`: one point of a
sweep preempted, the others not), and the environment variables AACONV_TEST_SIGTERM_AT (send SIGTERM to this process at that training_loss
call), AACONV_TEST_HANG_AT (hang there for good, as a stuck process would) and AACONV_TEST_SIGKILL_AT (SIGKILL
this process there, with AACONV_TEST_SIGKILL_AGENT=1 its torchrun agent first: a node gone; only while the file
AACONV_TEST_FAULT_ONCE does not exist, which the kill creates, so a restarted run goes through) and
AACONV_TEST_LATE_S (once that file exists, wait that long before joining the process group: a restarted process
that comes late); under torchrun only on rank AACONV_TEST_SIGTERM_RANK, default 0 ("any": every rank started
with these variables, e.g. those of one torchrun agent).
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from aaconv.utils.distributed import all_gather_objects, all_reduce_sum

FEATURES, CLASSES = 12, 3


class ToyDataset(Dataset):
    def __init__(self, size: int, noise: float):
        g = torch.Generator().manual_seed(1234 + size)
        self.labels = torch.arange(size) % CLASSES
        centers = torch.randn(CLASSES, FEATURES, generator=g)
        self.inputs = centers[self.labels] + 0.5 * torch.randn(size, FEATURES, generator=g)
        self.noise = noise

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, int]:
        x = self.inputs[index] + self.noise * torch.randn(FEATURES)  # the global RNG, as augmentations use it
        return x.view(3, 2, 2), self.labels[index], index


class ToyTask:
    primary_metric = "accuracy"
    primary_metric_mode = "max"
    collate_fn = None

    def __init__(
        self,
        *,
        backbone: Mapping[str, Any],
        attention: Mapping[str, Any],
        data: Mapping[str, Any],
        label_smoothing: float = 0.0,
        train_size: int = 64,
        val_size: int = 45,
        noise: float = 0.1,
        dropout: float = 0.0,
        batchnorm: bool = False,
        poison_batches: Sequence[int] = (),
        nan_grad_batches: Sequence[int] = (),
        nan_metric_evals: Sequence[int] = (),
        accuracies: Sequence[float] = (),
        signal_at: int = 0,
        signal_name: str = "SIGTERM",
        **_: Any,
    ):
        self.train_size, self.val_size, self.noise, self.dropout = train_size, val_size, noise, dropout
        self.batchnorm = batchnorm
        self.poison_batches, self.nan_grad_batches = set(poison_batches), set(nan_grad_batches)
        self.nan_metric_evals, self.evals = set(nan_metric_evals), 0
        self.accuracies = list(accuracies)
        self.signal_at, self.signal = signal_at, signal.Signals[signal_name]
        self.calls = 0
        fault_rank = os.environ.get("AACONV_TEST_SIGTERM_RANK", "0")
        on_this_rank = fault_rank in ("any", os.environ.get("RANK", "0"))
        self.sigterm_at = int(os.environ.get("AACONV_TEST_SIGTERM_AT", "0")) if on_this_rank else 0
        self.hang_at = int(os.environ.get("AACONV_TEST_HANG_AT", "0")) if on_this_rank else 0
        self.kill_at = int(os.environ.get("AACONV_TEST_SIGKILL_AT", "0")) if on_this_rank else 0
        if on_this_rank and "AACONV_TEST_LATE_S" in os.environ and os.path.exists(os.environ["AACONV_TEST_FAULT_ONCE"]):
            time.sleep(float(os.environ["AACONV_TEST_LATE_S"]))  # the task is built before the process group

    def build_model(self) -> nn.Module:
        norm = [nn.BatchNorm1d(16)] if self.batchnorm else []
        return nn.Sequential(
            nn.Flatten(), nn.Linear(FEATURES, 16), nn.ReLU(), nn.Dropout(self.dropout), *norm, nn.Linear(16, CLASSES)
        )

    def build_datasets(self) -> tuple[Dataset, Dataset]:
        return ToyDataset(self.train_size, self.noise), ToyDataset(self.val_size, 0.0)

    def group_ids(self, dataset: Dataset) -> None:
        return None

    def training_loss(self, model: nn.Module, batch: Any, device: torch.device) -> tuple[Tensor, int]:
        x, y, _ = batch
        self.calls += 1
        if self.calls in self.poison_batches:
            x = x * float("nan")
        if self.calls == self.sigterm_at:
            os.kill(os.getpid(), signal.SIGTERM)
        if self.calls == self.signal_at:
            os.kill(os.getpid(), self.signal)
        if self.calls == self.kill_at and not os.path.exists(os.environ["AACONV_TEST_FAULT_ONCE"]):
            open(os.environ["AACONV_TEST_FAULT_ONCE"], "w").close()
            logging.getLogger("aaconv").warning(
                "rank %s killed at training step %d", os.environ.get("RANK"), self.calls
            )
            if os.environ.get("AACONV_TEST_SIGKILL_AGENT") == "1":
                os.kill(os.getppid(), signal.SIGKILL)
            os.kill(os.getpid(), signal.SIGKILL)
        if self.calls == self.hang_at:
            logging.getLogger("aaconv").warning("rank %s hangs at training step %d", os.environ.get("RANK"), self.calls)
            while True:
                time.sleep(1)
        loss = nn.functional.cross_entropy(model(x.to(device)), y.to(device))
        if self.calls in self.nan_grad_batches:  # d sqrt(|w - w|) / dw = 0 * inf = NaN; the value stays 0
            weight = next(model.parameters())
            loss = loss + (weight - weight.detach()).abs().sqrt().sum()
        return loss, x.shape[0]

    @torch.no_grad()
    def evaluate(
        self, model: nn.Module, loader: DataLoader, device: torch.device, output_dir: Any = None
    ) -> dict[str, float]:
        model.eval()
        sums = torch.zeros(2, dtype=torch.float64)
        seen: list[int] = []
        for x, y, index in loader:
            sums[0] += (model(x.to(device)).argmax(1).cpu() == y).sum()
            sums[1] += len(y)
            seen += index.tolist()
        self.evals += 1
        correct, count = all_reduce_sum(sums).tolist()
        if self.evals in self.nan_metric_evals:
            correct = float("nan")
        accuracy = self.accuracies[self.evals - 1] if self.evals <= len(self.accuracies) else 100 * correct / count
        everyone = [i for part in all_gather_objects(seen) for i in part]
        return {
            "accuracy": accuracy,
            "val_images": int(count),
            "val_unique": len(set(everyone)),
            "val_seen": len(everyone),
        }
