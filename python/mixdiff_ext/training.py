"""Training loop for diffusion models: AdamW, gradient clipping, EMA, logging, exact resume, DDP.

**Model protocol.** The model is an nn.Module with

* ``sample_timesteps(n, generator) -> Tensor [n]``: training timesteps drawn from a CPU torch.Generator;
* ``loss(x0, t=None, seed=None, offset=0, conditions=None) -> scalar Tensor``: the mean loss over the rows
  of x0, where row i uses the counter-based noise of global row ``offset + i`` of stream ``seed``;
  ``conditions`` (the rows of the trainer's ``conditions``, e.g. attributes or class ids for a model with
  a GMMConditioner) is passed only when the trainer has them.

**Batches.** ``batch_size`` is the global batch. One CPU generator, seeded with ``seed``, drives the
data order and is advanced identically on every rank. Each step draws, in this order: the batch's row
indices (from one random permutation of the data per epoch, like a DataLoader with shuffle=True; a batch
that crosses the end of an epoch is completed from the next epoch's permutation, so every batch is full),
the timesteps ``model.sample_timesteps(batch_size, generator)``, and a noise seed in [0, 2**63). Rank r
of W then computes ``model.loss`` on rows [r B / W, (r + 1) B / W) with ``offset = r B / W``, so a
distributed step uses the same rows, timesteps and noise as a single-process step on the whole batch.

**Distributed.** When torch.distributed is initialised, or when the environment says WORLD_SIZE > 1 and
RANK (as torchrun sets it; the process group is then initialised with "nccl" for CUDA devices, "gloo"
otherwise, and left initialised afterwards), the loss runs through DistributedDataParallel. DDP only
runs ``forward``, so a small wrapper module's forward calls ``model.loss``. A plain "cuda" device means
"cuda:LOCAL_RANK" there. Only rank 0 writes checkpoints, logs and the progress bar; every rank reads the
checkpoint when resuming, so checkpoint_dir must be on a filesystem they share.

**EMA.** A copy of the model (no gradients, eval mode) tracks ema_p <- d ema_p + (1 - d) p after every
optimiser step, and copies buffers; with ``ema_warmup`` d = min(ema, (1 + step) / (10 + step)) at
global step ``step`` (1, 2, ...; the form of diffusers' EMAModel default), which keeps short runs from
averaging in the random initialisation, else d = ema. ``ema`` None or 0 makes the copy equal the model.
Sample from ``TrainResult.ema_model``.

**Checkpoints** (``checkpoint_dir/checkpoint.pt``, every ``checkpoint_every`` steps and at the end of a
run) hold the model, EMA and optimiser states, the step, the data generator state, the current epoch
permutation and position, the history and the configuration; they are written to a temporary file,
fsynced and renamed over the old one, so a crash leaves the previous checkpoint intact. With ``resume``
an existing checkpoint is loaded (torch.load with weights_only=True) and training continues as if
uninterrupted: the final parameters are bit-identical to an uninterrupted run's (given deterministic
kernels, as on the CPU). Resuming with a different configuration (batch size, optimiser, EMA, clipping,
seed or data shape) raises.

**Metrics** every ``log_every`` steps and at the end of a run: step, loss (mean over the steps since the
last record and the global batch), lr, grad_norm (mean pre-clipping norm), steps_per_s, time (training
seconds, summed over resumed runs). They are kept in ``history`` and written as JSON lines to
``log_file`` (default ``checkpoint_dir/metrics.jsonl``): a fresh run starts the file anew, a resumed run
rewrites it from the checkpoint's history and appends. A non-finite loss raises FloatingPointError.

Invalid arguments raise ValueError naming the argument.
"""
from __future__ import annotations

import copy
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

__all__ = ["TrainResult", "Trainer", "train"]

CHECKPOINT_NAME = "checkpoint.pt"
METRICS_NAME = "metrics.jsonl"
_FORMAT_VERSION = 1
# configuration entries a resumed run must share with its checkpoint to continue the same run
_RESUME_KEYS = ("batch_size", "lr", "weight_decay", "ema", "ema_warmup", "grad_clip", "seed", "data_shape",
                "conditions_shape")


@dataclass
class TrainResult:
    """What a training run returns; ``steps`` is the global step reached (counting resumed steps),
    ``seconds`` and ``steps_per_second`` cover this run only."""

    model: nn.Module
    ema_model: nn.Module
    history: list[dict[str, float]] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0
    steps_per_second: float = 0.0


# --------------------------------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------------------------------
def _check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_real(value, name: str, low: float, *, low_open: bool = False, high: float = math.inf) -> float:
    ok = not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))
    if ok:
        value = float(value)
        ok = math.isfinite(value) and (value > low if low_open else value >= low) and value < high
    if not ok:
        bounds = f"{'>' if low_open else '>='} {low:g}" + (f" and < {high:g}" if high < math.inf else "")
        raise ValueError(f"{name} must be a finite number {bounds}, got {value!r}")
    return value


def _check_data(data, dtype: torch.dtype) -> torch.Tensor:
    if isinstance(data, np.ndarray):
        data = torch.from_numpy(data)
    if not isinstance(data, torch.Tensor):
        raise ValueError(f"data must be a torch.Tensor or numpy.ndarray, got {type(data).__name__}")
    if data.dim() < 1 or data.shape[0] == 0 or data.numel() == 0:
        raise ValueError(f"data must be a non-empty [N, ...] tensor, got shape {tuple(data.shape)}")
    if data.dtype == torch.bool or data.is_complex():
        raise ValueError(f"data must be real, got dtype {data.dtype}")
    data = data.to(dtype)
    if not bool(torch.isfinite(data).all()):
        raise ValueError("data contains NaN or inf")
    return data


def _check_conditions(conditions, n: int) -> torch.Tensor | None:
    """Per-row conditions (attributes, class ids, soft labels...), kept on the CPU with the data order."""
    if conditions is None:
        return None
    if isinstance(conditions, np.ndarray):
        conditions = torch.from_numpy(conditions)
    if not isinstance(conditions, torch.Tensor):
        raise ValueError(f"conditions must be a torch.Tensor or numpy.ndarray, got {type(conditions).__name__}")
    if conditions.dim() < 1 or conditions.shape[0] != n:
        raise ValueError(f"conditions must have one row per data row ({n}), got shape {tuple(conditions.shape)}")
    return conditions.cpu()


def _model_dtype(model: nn.Module) -> torch.dtype:
    """The dtype batches are cast to: the model's first floating-point parameter's."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.get_default_dtype()


# --------------------------------------------------------------------------------------------------
# distributed setup and files
# --------------------------------------------------------------------------------------------------
def _setup_distributed(device: torch.device) -> tuple[int, int, torch.device]:
    """(rank, world size, device), initialising the process group from torchrun's environment."""
    if not dist.is_available():
        return 0, 1, device
    if not dist.is_initialized():
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or "RANK" not in os.environ:
            return 0, 1, device
        if device.type == "cuda":
            device = _local_cuda(device)
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    elif device.type == "cuda":
        device = _local_cuda(device)
    return dist.get_rank(), dist.get_world_size(), device


def _local_cuda(device: torch.device) -> torch.device:
    return device if device.index is not None else torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


def _atomic_write(path: str, write: Callable[[IO[bytes]], None]) -> None:
    """Write via a temporary file in the same directory, fsync, rename over path: readers see the old
    file or the complete new one, never a partial file."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    if os.name == "posix":  # make the rename itself durable
        fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class _LossModule(nn.Module):
    """DDP calls only forward(); routing forward to model.loss keeps the model protocol ``loss``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x0: torch.Tensor, t: torch.Tensor, seed: int, offset: int,
                conditions: torch.Tensor | None) -> torch.Tensor:
        if conditions is None:
            return self.model.loss(x0, t=t, seed=seed, offset=offset)
        return self.model.loss(x0, t=t, seed=seed, offset=offset, conditions=conditions)


# --------------------------------------------------------------------------------------------------
# trainer
# --------------------------------------------------------------------------------------------------
class Trainer:
    """Owns the optimiser, EMA copy, data order, logging and checkpoints of one training run; see the
    module docstring. ``run(steps)`` trains until the global step reaches ``steps``."""

    def __init__(
        self,
        model: nn.Module,
        data: torch.Tensor | np.ndarray,
        *,
        conditions: torch.Tensor | np.ndarray | None = None,
        batch_size: int = 256,
        lr: float = 2e-4,
        weight_decay: float = 0.0,
        ema: float | None = 0.999,
        ema_warmup: bool = True,
        grad_clip: float | None = 1.0,
        seed: int = 0,
        device: str | torch.device = "cpu",
        checkpoint_dir: str | os.PathLike | None = None,
        checkpoint_every: int = 1000,
        resume: bool = True,
        log_every: int = 100,
        progress: bool = True,
        log_file: str | os.PathLike | None = None,
    ) -> None:
        if not isinstance(model, nn.Module) or not all(
            callable(getattr(model, name, None)) for name in ("loss", "sample_timesteps")
        ):
            raise ValueError("model must be an nn.Module with loss(...) and sample_timesteps(n, generator) methods")
        self.batch_size = _check_int(batch_size, "batch_size", 1)
        self.lr = _check_real(lr, "lr", 0.0, low_open=True)
        self.weight_decay = _check_real(weight_decay, "weight_decay", 0.0)
        self.ema = 0.0 if ema is None else _check_real(ema, "ema", 0.0, high=1.0)
        self.ema_warmup = bool(ema_warmup)
        self.grad_clip = None if grad_clip is None else _check_real(grad_clip, "grad_clip", 0.0, low_open=True)
        self.seed = _check_int(seed, "seed", -(2**63))
        self.checkpoint_every = _check_int(checkpoint_every, "checkpoint_every", 1)
        self.log_every = _check_int(log_every, "log_every", 1)
        self.progress = bool(progress)
        self.data = _check_data(data, _model_dtype(model))
        self.conditions = _check_conditions(conditions, len(self.data))

        self.rank, self.world_size, self.device = _setup_distributed(torch.device(device))
        if self.batch_size % self.world_size:
            raise ValueError(f"batch_size {self.batch_size} must be divisible by the world size {self.world_size}")
        self.checkpoint_dir = None if checkpoint_dir is None else os.fspath(checkpoint_dir)
        if log_file is None and self.checkpoint_dir is not None:
            log_file = os.path.join(self.checkpoint_dir, METRICS_NAME)
        self.log_file = None if log_file is None else os.fspath(log_file)
        if self.checkpoint_dir is not None:
            os.makedirs(self.checkpoint_dir, exist_ok=True)

        self.model = model.to(self.device)
        self.ema_model = copy.deepcopy(self.model).requires_grad_(False).eval()
        loss_module = _LossModule(self.model)
        # DDP broadcasts rank 0's parameters and buffers on construction; the EMA then starts from them
        self._loss_module: nn.Module = (
            DistributedDataParallel(loss_module, device_ids=[self.device] if self.device.type == "cuda" else None)
            if self.world_size > 1
            else loss_module
        )
        self.ema_model.load_state_dict(self.model.state_dict())
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.lr, weight_decay=self.weight_decay)

        self.generator = torch.Generator().manual_seed(self.seed)
        self.permutation = torch.empty(0, dtype=torch.int64)  # this epoch's data order
        self.cursor = 0  # rows of it already used
        self.step = 0
        self.history: list[dict[str, float]] = []
        self._seconds_before = 0.0  # training seconds of earlier (resumed) runs
        self._checkpoint_step: int | None = None  # step of the checkpoint on disk, if this run knows it

        path = self.checkpoint_path
        if resume and path is not None and os.path.exists(path):
            self.load_checkpoint(path)
        elif self.log_file is not None and self.rank == 0:
            open(self.log_file, "w").close()

    # ---------------------------------------------------------------------------------------------
    @property
    def config(self) -> dict[str, Any]:
        return {
            "batch_size": self.batch_size,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "ema": self.ema,
            "ema_warmup": self.ema_warmup,
            "grad_clip": self.grad_clip,
            "seed": self.seed,
            "data_shape": list(self.data.shape),
            "conditions_shape": None if self.conditions is None else list(self.conditions.shape),
            "world_size": self.world_size,
            "model": type(self.model).__name__,
        }

    @property
    def checkpoint_path(self) -> str | None:
        return None if self.checkpoint_dir is None else os.path.join(self.checkpoint_dir, CHECKPOINT_NAME)

    def save_checkpoint(self, seconds: float | None = None) -> None:
        """Write checkpoint_dir/checkpoint.pt atomically (rank 0 only); ``seconds``: training time so far."""
        path = self.checkpoint_path
        if path is None:
            raise ValueError("save_checkpoint needs the trainer's checkpoint_dir")
        if self.rank == 0:
            state = {
                "format_version": _FORMAT_VERSION,
                "step": self.step,
                "model": self.model.state_dict(),
                "ema_model": self.ema_model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "generator": self.generator.get_state(),
                "permutation": self.permutation,
                "cursor": self.cursor,
                "history": self.history,
                "seconds": self._seconds_before if seconds is None else seconds,
                "config": self.config,
            }
            _atomic_write(path, lambda f: torch.save(state, f))
        self._checkpoint_step = self.step

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Restore the full training state from a checkpoint written by save_checkpoint."""
        # loaded on the CPU: load_state_dict moves tensors to the parameters' devices, except Adam's step
        # counts, which must stay on the CPU
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("format_version") != _FORMAT_VERSION:
            raise ValueError(f"{path}: unsupported checkpoint format {state.get('format_version')!r}")
        saved, current = state["config"], self.config
        changed = [k for k in _RESUME_KEYS if saved.get(k) != current[k]]
        if changed:
            details = ", ".join(f"{k}: {saved.get(k)!r} -> {current[k]!r}" for k in changed)
            raise ValueError(f"cannot resume from {path}: the configuration changed ({details}); pass resume=False")
        self.model.load_state_dict(state["model"])
        self.ema_model.load_state_dict(state["ema_model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.permutation = state["permutation"]
        self.cursor = int(state["cursor"])
        self.step = int(state["step"])
        self.history = list(state["history"])
        self._seconds_before = float(state["seconds"])
        self._checkpoint_step = self.step
        if self.log_file is not None and self.rank == 0:
            lines = "".join(json.dumps(record) + "\n" for record in self.history)
            _atomic_write(self.log_file, lambda f: f.write(lines.encode()))

    # ---------------------------------------------------------------------------------------------
    def _next_indices(self, n: int) -> torch.Tensor:
        parts = []
        while n:
            if self.cursor == len(self.permutation):
                self.permutation = torch.randperm(len(self.data), generator=self.generator)
                self.cursor = 0
            take = min(n, len(self.permutation) - self.cursor)
            parts.append(self.permutation[self.cursor : self.cursor + take])
            self.cursor += take
            n -= take
        return torch.cat(parts)

    def _ema_decay(self) -> float:
        if self.ema_warmup:
            return min(self.ema, (1 + self.step) / (10 + self.step))
        return self.ema

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = self._ema_decay()
        for e, p in zip(self.ema_model.parameters(), self.model.parameters()):
            if decay == 0.0:
                e.copy_(p)
            else:
                e.lerp_(p, 1.0 - decay)
        for e, b in zip(self.ema_model.buffers(), self.model.buffers()):
            e.copy_(b)

    def train_step(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimiser step on the next global batch; returns (this rank's loss, pre-clipping gradient
        norm) as tensors, so that no device synchronisation is forced."""
        batch = self.batch_size
        rows = self._next_indices(batch)
        t = torch.as_tensor(self.model.sample_timesteps(batch, self.generator))
        if t.shape != (batch,):
            raise ValueError(f"model.sample_timesteps({batch}, generator) returned shape {tuple(t.shape)}")
        noise_seed = int(torch.randint(0, 2**63 - 1, (1,), generator=self.generator))
        per_rank = batch // self.world_size
        start = self.rank * per_rank
        mine = rows[start : start + per_rank]
        x0 = self.data[mine.to(self.data.device)].to(self.device, non_blocking=True)
        conditions = None if self.conditions is None else self.conditions[mine].to(self.device, non_blocking=True)
        loss = self._loss_module(x0, t[start : start + per_rank].to(self.device), noise_seed, start, conditions)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # max_norm=inf only measures: the gradients are scaled by exactly 1
        grad_norm = nn.utils.clip_grad_norm_(
            self.model.parameters(), math.inf if self.grad_clip is None else self.grad_clip
        )
        self.optimizer.step()
        if self.world_size > 1 and hasattr(self.model, "synchronize_support"):
            self.model.synchronize_support()  # each rank's loss widened the boxes by its share of the batch
        self.step += 1
        self._update_ema()
        return loss.detach(), grad_norm

    def _record(
        self, loss_sum: torch.Tensor, grad_norm_sum: torch.Tensor, n: int, window_seconds: float, seconds: float
    ) -> dict[str, float]:
        if self.world_size > 1:  # each rank's loss is the mean over its equal share of the batch
            loss_sum = loss_sum.clone()
            dist.all_reduce(loss_sum)
            loss_sum /= self.world_size
        record = {
            "step": self.step,
            "loss": loss_sum.item() / n,
            "lr": self.optimizer.param_groups[0]["lr"],
            "grad_norm": grad_norm_sum.item() / n,
            "steps_per_s": n / max(window_seconds, 1e-9),
            "time": seconds,
        }
        if not math.isfinite(record["loss"]):
            raise FloatingPointError(f"the training loss is {record['loss']} at step {self.step}")
        self.history.append(record)
        if self.log_file is not None and self.rank == 0:
            with open(self.log_file, "a") as f:
                f.write(json.dumps(record) + "\n")
        return record

    def run(self, steps: int, callback: Callable[[Trainer], None] | None = None) -> TrainResult:
        """Train until the global step reaches ``steps`` (nothing to do if it already has).
        ``callback(trainer)`` runs on every rank after each step, after that step's log record and
        checkpoint; an exception from it stops the run without a final checkpoint."""
        steps = _check_int(steps, "steps", 0)
        start_step = self.step
        was_training = self.model.training
        self.model.train()
        start = window_start = time.perf_counter()
        bar = None
        if self.progress and self.rank == 0:
            from tqdm.auto import tqdm  # imported here: only the progress bar needs it

            bar = tqdm(total=steps, initial=self.step, desc="train", unit="step", dynamic_ncols=True)
        loss_sum = grad_norm_sum = torch.zeros((), device=self.device)
        window = 0
        try:
            while self.step < steps:
                loss, grad_norm = self.train_step()
                loss_sum = loss_sum + loss.float()
                grad_norm_sum = grad_norm_sum + grad_norm.float()
                window += 1
                if self.step % self.log_every == 0 or self.step == steps:
                    now = time.perf_counter()
                    record = self._record(
                        loss_sum, grad_norm_sum, window, now - window_start, self._seconds_before + now - start
                    )
                    loss_sum = grad_norm_sum = torch.zeros((), device=self.device)
                    window, window_start = 0, now
                    if bar is not None:
                        bar.set_postfix(loss=f"{record['loss']:.4g}", refresh=False)
                if self.checkpoint_dir is not None and self.step % self.checkpoint_every == 0:
                    self.save_checkpoint(self._seconds_before + time.perf_counter() - start)
                if bar is not None:
                    bar.update(1)
                if callback is not None:
                    callback(self)
        finally:
            if bar is not None:
                bar.close()
            self.model.train(was_training)
        seconds = time.perf_counter() - start
        self._seconds_before += seconds
        if self.checkpoint_dir is not None and self._checkpoint_step != self.step:
            self.save_checkpoint()
        done = self.step - start_step
        return TrainResult(
            model=self.model,
            ema_model=self.ema_model,
            history=list(self.history),
            steps=self.step,
            seconds=seconds,
            steps_per_second=done / seconds if seconds > 0 else 0.0,
        )


def train(
    model: nn.Module,
    data: torch.Tensor | np.ndarray,
    steps: int,
    *,
    callback: Callable[[Trainer], None] | None = None,
    **options: Any,
) -> TrainResult:
    """Train ``model`` on ``data`` until global step ``steps``: ``Trainer(model, data, **options).run(steps,
    callback)``. ``options`` are the Trainer's keyword arguments (conditions, batch_size, lr, ema, seed,
    device, checkpoint_dir, resume, log_every, progress, ...); see the module docstring."""
    steps = _check_int(steps, "steps", 0)
    return Trainer(model, data, **options).run(steps, callback)
