"""The lr schedule (flame/schedule.py): torchtitan's values bit for bit, and a continuous lr when a resume
changes ``training.steps``."""

from __future__ import annotations

import pickle
import shutil

import pytest
import torch
from torchtitan.components.lr_scheduler import build_lr_schedulers as titan_schedulers

from flame.config import LRScheduler
from flame.schedule import Schedule, build_lr_schedulers
from tests.flame.test_train import ROOT, launch


class Optimizers(list):
    """What the scheduler container needs of torchtitan's OptimizersContainer: a list of optimizers."""


def optimizers(lr=3e-4):
    return Optimizers([torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)])


CONFIGS = [
    dict(warmup_steps=5, decay_type="linear"),
    dict(warmup_steps=3, decay_ratio=0.5, decay_type="linear", lr_min=0.1),
    dict(warmup_steps=0, decay_type="cosine", lr_min=0.05),
    dict(warmup_steps=4, decay_ratio=0.2, decay_type="sqrt"),
    dict(warmup_steps=50, decay_type="cosine"),  # warmup clamped to the total
]


@pytest.mark.parametrize("cfg", CONFIGS)
def test_same_values_as_torchtitan(cfg):
    c = LRScheduler(**cfg)
    ours = build_lr_schedulers(optimizers(), c, 30)
    theirs = titan_schedulers(optimizers(), c.to_torchtitan(), 30)
    for _ in range(30):
        assert ours.schedulers[0].get_last_lr() == theirs.schedulers[0].get_last_lr()  # bitwise
        ours.step()
        theirs.step()
    assert ours.schedulers[0].get_last_lr() == theirs.schedulers[0].get_last_lr()


def lrs_across_resume(cfg: LRScheduler, old_total: int, new_total: int, stop: int) -> list[float]:
    """The lr of every step (1..new_total) of a run that saves after ``stop`` steps and resumes with ``new_total``."""
    a = build_lr_schedulers(optimizers(), cfg, old_total)
    lrs = []
    for _ in range(stop):
        lrs.append(a.schedulers[0].get_last_lr()[0])
        a.step()
    state = pickle.loads(pickle.dumps(a.state_dict()))
    b = build_lr_schedulers(optimizers(), cfg, new_total)
    b.load_state_dict(state)
    for _ in range(new_total - stop):
        lrs.append(b.schedulers[0].get_last_lr()[0])
        b.step()
    lrs.append(b.schedulers[0].get_last_lr()[0])  # after the last step: lr_min
    return lrs


@pytest.mark.parametrize("cfg", CONFIGS[:4])
@pytest.mark.parametrize("old_total, new_total, stop", [(20, 40, 12), (40, 20, 12), (30, 60, 3), (20, 25, 19)])
def test_changed_steps_keep_the_lr_continuous(cfg, old_total, new_total, stop):
    c = LRScheduler(**cfg)
    lrs = lrs_across_resume(c, old_total, new_total, stop)
    ref_old = lrs_across_resume(c, old_total, old_total, stop)
    assert lrs[: stop + 1] == ref_old[: stop + 1], "the lr before and at the resume step must be the old one"
    assert lrs[-1] == pytest.approx(3e-4 * c.lr_min, abs=1e-12), "the new last step does not end at lr_min"
    after_warmup = lrs[c.warmup_steps :]
    assert all(b <= a + 1e-15 for a, b in zip(after_warmup, after_warmup[1:])), f"the lr rises: {lrs}"
    if stop >= c.warmup_steps and stop + 2 < len(lrs):  # no cliff: the resume's step is like the next one
        first, second = lrs[stop] - lrs[stop + 1], lrs[stop + 1] - lrs[stop + 2]
        assert first <= 3 * second + 1e-15, f"lr jumps at the resume: {lrs[stop - 1 : stop + 3]}"


def test_schedule_is_saved_and_the_same_steps_resume_unchanged():
    c = LRScheduler(warmup_steps=2, decay_ratio=0.5, lr_min=0.1)
    a = build_lr_schedulers(optimizers(), c, 20)
    for _ in range(7):
        a.step()
    state = a.state_dict()
    assert Schedule(**state["flame_schedule"]) == Schedule.from_config(c, 20)
    assert lrs_across_resume(c, 20, 20, 7) == lrs_across_resume(c, 20, 20, 20)


def test_trainer_states_the_change_and_keeps_the_lr_continuous(sample_dir, tmp_path):
    """One process: 20 steps (checkpoint at 10), then resumed from step 10 with training.steps 40 (tiny_cpu:
    warmup 5, linear decay to 0.1 x lr over the last 80%)."""
    args = [
        "--job.config_file", str(ROOT / "configs" / "tiny_cpu.toml"),
        "--data.dataset", str(sample_dir / "data"), "--model.tokenizer_path", str(sample_dir / "tokenizer"),
        "--training.seq_len", "32", "--training.batch_size", "2", "--metrics.log_freq", "1",
        "--checkpoint.interval", "10",
    ]  # fmt: skip
    script = "-m flame.train"
    proc, _ = launch(1, [*args, "--training.steps", "20", "--lr_scheduler.decay_ratio", "0.8"], tmp_path,
                     script=script)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    for step in range(11, 21):  # keep the step-10 checkpoint as the newest one
        shutil.rmtree(tmp_path / "checkpoint" / f"step-{step}", ignore_errors=True)
    proc, rows = launch(1, [*args, "--training.steps", "40", "--lr_scheduler.decay_ratio", "0.8"], tmp_path,
                        script=script)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = proc.stdout + proc.stderr
    assert "lr schedule changed since the checkpoint: 20 -> 40 total steps; at the resume step 10 the lr is" in text
    lr = {r["step"]: r["lr"] for r in rows}
    assert sorted(lr) == list(range(1, 41))
    seq = [lr[s] for s in range(6, 41)]
    assert all(b <= a + 1e-15 for a, b in zip(seq, seq[1:])), f"the lr rises after warmup: {seq}"
    first_decay = lr[9] - lr[10]  # a step of the old decay (20 steps, 80%: decaying from step 5)
    assert lr[10] - lr[11] <= first_decay + 1e-12, f"lr jumps at the resume: {lr[10]} -> {lr[11]} -> {lr[12]}"
