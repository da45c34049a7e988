"""Training loop (train.train, train.Trainer) on a toy model implementing the model protocol: learning,
the documented data order, EMA, atomic checkpoints, bit-exact resume, JSON-lines metrics, argument
checks, and 2-process DDP (gloo, launched as torchrun would: RANK / WORLD_SIZE / MASTER_* in the
environment) against a single process on the same global batch.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

from conftest import gen
from mixdiff_ext import training as train_mod
from mixdiff_ext.training import Trainer, train

DIM = 3


class ToyModel(nn.Module):
    """x_t = sqrt(1 - s) x0 + sqrt(s) eps with s = t / 1000, loss = mean_i ||eps_i - net(x_t, s)_i||^2.

    Row i's noise comes from numpy's generator seeded with (seed, offset + i) only, as the protocol
    requires of the real models' counter-based noise. `seen` counts loss rows (a buffer for the EMA
    copy to follow); `record` keeps each call's (x0, t, seed, offset) when set to a list."""

    def __init__(self, dim: int = DIM, hidden: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim + 1, hidden), nn.Tanh(), nn.Linear(hidden, dim))
        self.register_buffer("seen", torch.zeros((), dtype=torch.int64))
        self.record: list | None = None

    def sample_timesteps(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randint(0, 1000, (n,), generator=generator)

    def noise(self, n: int, seed: int, offset: int, like: torch.Tensor) -> torch.Tensor:
        rows = [np.random.default_rng([seed, offset + i]).standard_normal(like.shape[1]) for i in range(n)]
        return torch.from_numpy(np.stack(rows)).to(like.dtype)

    def loss(self, x0, t=None, seed=None, offset=0, cond=None):
        if self.record is not None:
            self.record.append((x0.clone(), t.clone(), seed, offset))
        with torch.no_grad():
            self.seen += x0.shape[0]
        eps = self.noise(x0.shape[0], seed, offset, x0)
        s = (t.to(x0.dtype) / 1000)[:, None]
        xt = (1 - s).sqrt() * x0 + s.sqrt() * eps
        return (self.net(torch.cat([xt, s], dim=1)) - eps).square().sum(1).mean()


def toy_data(n: int = 50, dtype=torch.float32) -> torch.Tensor:
    """Two clusters at +-2 in DIM dimensions."""
    g = gen(7)
    signs = torch.where(torch.rand(n, 1, generator=g) < 0.5, -2.0, 2.0)
    return (signs + 0.3 * torch.randn(n, DIM, generator=g)).to(dtype)


def toy_model(seed: int = 0, dtype=torch.float32) -> ToyModel:
    torch.manual_seed(seed)
    return ToyModel().to(dtype)


QUIET = dict(progress=False)


def assert_states_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# --------------------------------------------------------------------------------------------------
def eval_loss(model: ToyModel, data: torch.Tensor) -> float:
    """The loss on all of data at fixed timesteps and noise."""
    with torch.no_grad():
        return model.loss(data, t=torch.randint(0, 1000, (len(data),), generator=gen(3)), seed=9).item()


def test_loss_decreases_with_progress_bar(capsys):
    model, data = toy_model(), toy_data()
    initial = eval_loss(model, data)  # about 3.0: the untrained net misses eps in every dimension
    res = train(model, data, steps=200, batch_size=32, lr=1e-2, log_every=40, progress=True)
    assert [r["step"] for r in res.history] == [40, 80, 120, 160, 200]
    assert res.history[-1]["loss"] < res.history[0]["loss"]
    assert eval_loss(res.model, data) < 0.5 * initial and eval_loss(res.ema_model, data) < 0.5 * initial
    assert res.steps == 200 and res.seconds > 0 and res.steps_per_second > 0
    assert res.model.training and not res.ema_model.training
    assert "200/200" in capsys.readouterr().err  # tqdm wrote the bar to stderr


def test_data_order_timesteps_and_noise_seeds():
    """Each step draws from one seeded CPU generator: the batch's rows (epoch permutations; a batch
    crossing an epoch boundary continues with the next permutation), the timesteps, the noise seed."""
    data = toy_data(10)
    model = toy_model()
    model.record = []
    train(model, data, steps=3, batch_size=4, seed=5, **QUIET)
    g = torch.Generator().manual_seed(5)
    perm = torch.randperm(10, generator=g)
    rows, cursor = [], 0
    for step in range(3):
        idx = []
        while len(idx) < 4:
            if cursor == 10:
                perm, cursor = torch.randperm(10, generator=g), 0
            idx.append(int(perm[cursor]))
            cursor += 1
        rows.append(idx)
        t = torch.randint(0, 1000, (4,), generator=g)
        seed = int(torch.randint(0, 2**63 - 1, (1,), generator=g))
        x0, t_seen, seed_seen, offset = model.record[step]
        assert torch.equal(x0, data[idx]) and torch.equal(t_seen, t)
        assert seed_seen == seed and offset == 0
    assert sorted(rows[0] + rows[1] + rows[2][:2]) == list(range(10)), "first epoch: each row once"


def test_numpy_and_integer_data_are_cast_to_the_model_dtype():
    model = toy_model(dtype=torch.float64)
    model.record = []
    train(model, toy_data(8).numpy().astype(np.float32), steps=1, batch_size=4, **QUIET)
    train(toy_model(), np.arange(12).reshape(4, 3), steps=1, batch_size=4, **QUIET)
    assert model.record[0][0].dtype == torch.float64


# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("warmup", [False, True])
def test_ema_one_step_formula_and_buffers(warmup):
    model = toy_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = train(model, toy_data(), steps=1, batch_size=8, lr=1e-2, ema=0.9, ema_warmup=warmup, **QUIET)
    decay = min(0.9, 2 / 11) if warmup else 0.9
    after = res.model.state_dict()
    ema = res.ema_model.state_dict()
    for k, p0 in before.items():
        if k == "seen":
            assert ema[k] == after[k] == 8, "buffers are copied"
            continue
        assert not torch.equal(after[k], p0)
        torch.testing.assert_close(ema[k], decay * p0 + (1 - decay) * after[k], rtol=1e-6, atol=1e-7)
    assert all(not p.requires_grad for p in res.ema_model.parameters())


@pytest.mark.parametrize("ema", [None, 0.0])
def test_ema_disabled_copies_the_model(ema):
    res = train(toy_model(), toy_data(), steps=5, batch_size=8, lr=1e-2, ema=ema, **QUIET)
    assert_states_equal(res.ema_model.state_dict(), res.model.state_dict())


def test_ema_differs_from_model():
    res = train(toy_model(), toy_data(), steps=20, batch_size=8, lr=1e-2, ema=0.99, **QUIET)
    assert res.ema_model is not res.model
    diff = max((a - b).abs().max().item() for a, b in zip(res.ema_model.parameters(), res.model.parameters()))
    assert diff > 1e-4


# --------------------------------------------------------------------------------------------------
def test_checkpoint_file_contents(tmp_path):
    res = train(toy_model(), toy_data(), steps=25, batch_size=8, checkpoint_dir=tmp_path, checkpoint_every=10,
                log_every=10, **QUIET)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.pt", "metrics.jsonl"]  # no temporary files left
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["step"] == 25  # the final checkpoint after the last periodic one (20)
    assert_states_equal(state["model"], res.model.state_dict())
    assert_states_equal(state["ema_model"], res.ema_model.state_dict())
    assert state["generator"].dtype == torch.uint8
    assert state["config"]["batch_size"] == 8 and state["config"]["data_shape"] == [50, DIM]
    assert [r["step"] for r in state["history"]] == [10, 20, 25]


def test_failed_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    trainer = Trainer(toy_model(), toy_data(), batch_size=8, checkpoint_dir=tmp_path, checkpoint_every=5, **QUIET)
    trainer.run(5)
    good = (tmp_path / "checkpoint.pt").read_bytes()

    def torn_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(train_mod.torch, "save", torn_save)
    with pytest.raises(OSError, match="disk full"):
        trainer.run(10)
    assert (tmp_path / "checkpoint.pt").read_bytes() == good
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.pt", "metrics.jsonl"]


class Killed(Exception):
    pass


def kill_at(step: int):
    def callback(trainer: Trainer) -> None:
        if trainer.step == step:
            raise Killed

    return callback


def test_resume_is_bit_exact(tmp_path):
    """30 uninterrupted steps == 17 steps killed after the step-10 checkpoint + a resumed run to 30 (from
    a differently initialised model, so everything comes from the checkpoint). 50 rows with batch 16:
    batches cross epoch boundaries, also across the resume."""
    kw = dict(batch_size=16, lr=1e-2, ema=0.9, checkpoint_every=10, log_every=5, **QUIET)
    full = train(toy_model(), toy_data(), steps=30, checkpoint_dir=tmp_path / "a", **kw)

    with pytest.raises(Killed):
        train(toy_model(), toy_data(), steps=30, checkpoint_dir=tmp_path / "b", callback=kill_at(17), **kw)
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["step"] == 10
    resumed = train(toy_model(seed=1), toy_data(), steps=30, checkpoint_dir=tmp_path / "b", **kw)

    assert resumed.steps == 30
    assert_states_equal(resumed.model.state_dict(), full.model.state_dict())
    assert_states_equal(resumed.ema_model.state_dict(), full.ema_model.state_dict())
    a, b = (torch.load(tmp_path / d / "checkpoint.pt", weights_only=True) for d in "ab")
    assert torch.equal(a["generator"], b["generator"]) and torch.equal(a["permutation"], b["permutation"])
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert_states_equal(sa, sb)
    metrics = ["step", "loss", "grad_norm", "lr"]
    assert [[r[k] for k in metrics] for r in resumed.history] == [[r[k] for k in metrics] for r in full.history]
    # the log file holds each step once: the killed run's records past the checkpoint were dropped
    logged = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [5, 10, 15, 20, 25, 30]


def test_resume_when_done_and_resume_false(tmp_path):
    kw = dict(batch_size=8, checkpoint_dir=tmp_path, **QUIET)
    first = train(toy_model(), toy_data(), steps=6, **kw)
    again = train(toy_model(seed=1), toy_data(), steps=4, **kw)  # already past step 4: loads, trains nothing
    assert again.steps == 6
    assert_states_equal(again.model.state_dict(), first.model.state_dict())
    fresh = train(toy_model(seed=1), toy_data(), steps=2, resume=False, **kw)
    assert fresh.steps == 2
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == 2


def test_resume_with_changed_config_raises(tmp_path):
    train(toy_model(), toy_data(), steps=2, batch_size=8, checkpoint_dir=tmp_path, **QUIET)
    with pytest.raises(ValueError, match="batch_size"):
        train(toy_model(), toy_data(), steps=4, batch_size=4, checkpoint_dir=tmp_path, **QUIET)
    with pytest.raises(ValueError, match="data_shape"):
        train(toy_model(), toy_data(40), steps=4, batch_size=8, checkpoint_dir=tmp_path, **QUIET)


# --------------------------------------------------------------------------------------------------
def test_json_lines_log(tmp_path):
    log = tmp_path / "sub" / "log.jsonl"
    log.parent.mkdir()
    log.write_text("stale\n")
    res = train(toy_model(), toy_data(), steps=10, batch_size=8, lr=1e-3, log_every=4, log_file=log, **QUIET)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert records == res.history
    assert [r["step"] for r in records] == [4, 8, 10]  # and the end of the run
    for r in records:
        assert set(r) == {"step", "loss", "lr", "grad_norm", "steps_per_s", "time"}
        assert r["lr"] == 1e-3 and r["loss"] > 0 and r["grad_norm"] > 0 and r["steps_per_s"] > 0
    assert records[0]["time"] < records[1]["time"] < records[2]["time"]


def test_grad_clip():
    """grad_norm records the norm before clipping; clipping changes the updates."""
    kw = dict(steps=3, batch_size=8, lr=1e-2, log_every=1, **QUIET)
    clipped = train(toy_model(), toy_data(), grad_clip=1e-3, **kw)
    free = train(toy_model(), toy_data(), grad_clip=None, **kw)
    assert clipped.history[0]["grad_norm"] == free.history[0]["grad_norm"] > 1e-3
    assert not torch.equal(clipped.model.net[0].weight, free.model.net[0].weight)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(steps=-1), "steps"),
        (dict(steps=1.5), "steps"),
        (dict(steps=True), "steps"),
        (dict(batch_size=0), "batch_size"),
        (dict(lr=0.0), "lr"),
        (dict(lr=float("nan")), "lr"),
        (dict(weight_decay=-1e-3), "weight_decay"),
        (dict(ema=1.0), "ema"),
        (dict(ema=-0.1), "ema"),
        (dict(grad_clip=0.0), "grad_clip"),
        (dict(seed=0.5), "seed"),
        (dict(checkpoint_every=0), "checkpoint_every"),
        (dict(log_every=0), "log_every"),
        (dict(data=torch.zeros(0, DIM)), "data"),
        (dict(data=torch.tensor([[0.0, float("nan"), 1.0]])), "data"),
        (dict(data=[[0.0, 1.0, 2.0]]), "data"),
        (dict(model=nn.Linear(3, 3)), "model"),
    ],
)
def test_bad_arguments(kwargs, name):
    args = dict(model=toy_model(), data=toy_data(), steps=1, batch_size=4, **QUIET)
    args.update(kwargs)
    with pytest.raises(ValueError, match=name):
        train(**args)


# --------------------------------------------------------------------------------------------------
DDP_WORKER = """
import sys
import torch
sys.path.insert(0, {tests!r})
from test_training import toy_data, toy_model
from mixdiff_ext.training import Trainer, train

try:  # the first Trainer initialises the process group from the environment, then rejects the batch
    Trainer(toy_model(dtype=torch.float64), toy_data(), batch_size=5, progress=False)
    raise SystemExit("batch_size 5 with 2 ranks was accepted")
except ValueError as err:
    assert "divisible" in str(err), err
# rank 1 starts from other parameters: DDP must broadcast rank 0's
rank = torch.distributed.get_rank()
res = train(toy_model(seed=rank, dtype=torch.float64), toy_data(dtype=torch.float64), steps=6, batch_size=16,
            lr=1e-2, ema=0.5, log_every=3, progress=False)
torch.save({{"model": res.model.state_dict(), "ema": res.ema_model.state_dict(), "history": res.history}},
           {out!r} + f".{{rank}}")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_two_ranks(script) -> None:
    """Runs `script` as ranks 0 and 1 of a gloo group, with the environment torchrun would set."""
    env = dict(os.environ, WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()),
               OMP_NUM_THREADS="1")
    procs = [
        subprocess.Popen([sys.executable, str(script)], env=dict(env, RANK=str(r), LOCAL_RANK=str(r)),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for r in range(2)
    ]
    outputs = []
    for p in procs:
        try:
            outputs.append(p.communicate(timeout=120)[0])
        finally:
            p.kill()
    assert all(p.returncode == 0 for p in procs), "\n".join(outputs)


def test_ddp_two_processes_match_single_process(tmp_path):
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    script = tmp_path / "worker.py"
    out = str(tmp_path / "result.pt")
    script.write_text(textwrap.dedent(DDP_WORKER.format(tests=tests_dir, out=out)))
    run_two_ranks(script)

    single = train(toy_model(dtype=torch.float64), toy_data(dtype=torch.float64), steps=6, batch_size=16, lr=1e-2,
                   ema=0.5, log_every=3, **QUIET)
    for r in range(2):
        got = torch.load(f"{out}.{r}", weights_only=True)
        for key, want in (("model", single.model), ("ema", single.ema_model)):
            for k, v in want.state_dict().items():
                if k == "seen":  # a per-rank count
                    continue
                torch.testing.assert_close(got[key][k], v, rtol=0, atol=1e-10, msg=f"rank {r} {key} {k}")
        assert got["model"]["seen"] == 8 * 6, "each rank saw half of each global batch"
        for a, b in zip(got["history"], single.history):
            assert a["step"] == b["step"] and abs(a["loss"] - b["loss"]) < 1e-10 * b["loss"]


class RecordingModel(nn.Module):
    """Records the (x0, conditions) pairs the trainer passes to loss."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.seen = []

    def sample_timesteps(self, n, generator=None):
        return torch.randint(0, 10, (n,), generator=generator)

    def loss(self, x0, t=None, seed=None, offset=0, conditions=None):
        self.seen.append((x0.clone(), None if conditions is None else conditions.clone()))
        return ((x0.sum(1) - self.w) ** 2).mean()


def test_conditions_follow_their_data_rows():
    data = torch.arange(40, dtype=torch.float32).reshape(20, 2)
    conditions = torch.arange(20) * 10  # row i's condition is 10 i
    model = RecordingModel()
    train(model, data, steps=7, batch_size=6, conditions=conditions.numpy(), **QUIET)
    assert len(model.seen) == 7
    for x0, cond in model.seen:
        assert torch.equal(cond, (x0[:, 0] / 2).long() * 10)
    plain = RecordingModel()
    train(plain, data, steps=2, batch_size=6, **QUIET)
    assert all(cond is None for _, cond in plain.seen)  # no conditions: loss is called without them
    with pytest.raises(ValueError, match="conditions must have one row per data row"):
        train(RecordingModel(), data, steps=1, batch_size=6, conditions=conditions[:5], **QUIET)
    with pytest.raises(ValueError, match="conditions must be a torch.Tensor"):
        train(RecordingModel(), data, steps=1, batch_size=6, conditions=[1, 2], **QUIET)
