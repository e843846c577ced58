"""The learning-rate schedule (torchtitan's warmup-stable-decay) and its re-fit when a resume changes it.

``Schedule.factor(s)`` is torchtitan 0.2.2's ``linear_warmup_stable_decay`` (bit for bit) extended by
``decay_from``: the decay progress at ``decay_start``. The checkpoint stores the schedule next to
torchtitan's scheduler state (``lr_scheduler.flame_schedule``). When a run resumes at step ``r``
with another schedule (``training.steps`` or ``lr_scheduler.total_steps`` changed, or the decay
settings), the lr stays continuous at ``r``:

* warmup and the stable phase that have not ended yet follow the new settings (they do not depend
  on the total, so the lr at ``r`` is unchanged);
* once the decay has begun at ``r`` (in the old schedule, or in the new one: a shorter WSD run
  whose decay should already have started), the rest of the decay is re-stretched: it starts at
  ``r`` from the lr the old schedule had there (its progress on the new decay curve) and reaches
  ``lr_min`` at the new last step.

The start-up log states the change: old and new total, the lr at the resume step.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass

from torchtitan.components.lr_scheduler import LRSchedulersContainer
from torchtitan.tools.logging import logger

SHAPES = ("linear", "sqrt", "cosine")


@dataclass(frozen=True)
class Schedule:
    """Linear warmup to step ``warmup``, 1.0 through ``decay_start``, then decay to ``lr_min`` at ``total``."""

    total: int
    warmup: int
    decay_start: int
    decay_type: str
    lr_min: float
    decay_from: float = 0.0  # decay progress at decay_start (0 = the decay starts there)

    @classmethod
    def from_config(cls, cfg, training_steps: int) -> Schedule:
        """torchtitan's reading of the ``[lr_scheduler]`` section (warmup and decay clamped to the total)."""
        total = cfg.total_steps if cfg.total_steps is not None else training_steps
        warmup = min(int(cfg.warmup_steps), total)
        decay = total - warmup
        if cfg.decay_ratio is not None:
            decay = min(round(total * cfg.decay_ratio), total - warmup)
        return cls(total, warmup, total - decay, cfg.decay_type, float(cfg.lr_min))

    def progress(self, step: int) -> float:
        """Decay progress in [0, 1] (0 before the decay)."""
        if step <= self.decay_start or self.total <= self.decay_start:
            return 0.0
        x = float(step - self.decay_start) / (self.total - self.decay_start)  # torchtitan's expression
        return x if self.decay_from == 0.0 else self.decay_from + (1.0 - self.decay_from) * x

    def factor(self, step: int) -> float:
        """The lr multiplier after ``step`` scheduler steps (LambdaLR's ``lr_lambda``)."""
        if step < self.warmup:
            return float((step + 1) / self.warmup)
        if step <= self.decay_start or self.total <= self.decay_start:
            return 1.0
        p = self.progress(step)
        if self.decay_type == "linear":
            y = 1 - p
        elif self.decay_type == "sqrt":
            y = 1 - math.sqrt(p)
        else:
            y = 0.5 * (1.0 + math.cos(math.pi * p))
        return self.lr_min + (1 - self.lr_min) * y

    def progress_at(self, factor: float) -> float:
        """The decay progress at which this schedule's factor is ``factor`` (the inverse of the decay)."""
        y = 1.0 if self.lr_min >= 1 else min(max((factor - self.lr_min) / (1 - self.lr_min), 0.0), 1.0)
        if self.decay_type == "linear":
            return 1 - y
        if self.decay_type == "sqrt":
            return (1 - y) ** 2
        return math.acos(2 * y - 1) / math.pi

    def refit(self, step: int, factor: float) -> Schedule:
        """This schedule resumed at ``step`` where the lr multiplier was ``factor``: continuous there."""
        if step >= self.total or step < self.warmup:
            return self  # nothing left to train, or still warming up (warmup does not depend on the total)
        if step <= self.decay_start and factor == 1.0:
            return self  # the decay has not begun in either schedule
        return Schedule(self.total, self.warmup, step, self.decay_type, self.lr_min, self.progress_at(factor))


def _factor(container: FlameLRSchedulers, step: int) -> float:
    return container.schedule.factor(step)


class FlameLRSchedulers(LRSchedulersContainer):
    """torchtitan's scheduler container over a :class:`Schedule`, saved with it and re-fit on load."""

    def __init__(self, optimizers, schedule: Schedule):
        self.schedule = schedule
        super().__init__(optimizers, functools.partial(_factor, self))

    def state_dict(self) -> dict:
        return {**super().state_dict(), "flame_schedule": asdict(self.schedule)}

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)
        saved = state_dict.pop("flame_schedule", None)
        super().load_state_dict(state_dict)
        first = self.schedulers[0]
        step = first.last_epoch
        old = Schedule(**saved) if saved else None
        factor = old.factor(step) if old is not None else first.get_last_lr()[0] / first.base_lrs[0]
        new = self.schedule
        if old == new or (old is None and math.isclose(factor, new.factor(step), rel_tol=1e-12)):
            return
        self.schedule = new.refit(step, factor)
        old_total = old.total if old is not None else "unknown (a checkpoint without its schedule)"
        lr, plain = first.get_last_lr()[0], first.base_lrs[0] * new.factor(step)
        how = (
            "the new schedule continues from there unchanged"
            if self.schedule is new
            else f"the decay is re-fit from {lr:.4g} at step {step} to {new.lr_min:g} x lr at step {new.total}"
        )
        logger.warning(
            f"lr schedule changed since the checkpoint: {old_total} -> {new.total} total steps; at the resume step "
            f"{step} the lr is {lr:.4g} (the new settings alone would give {plain:.4g}); {how}"
        )


def build_lr_schedulers(optimizers, cfg, training_steps: int) -> FlameLRSchedulers:
    """The run's lr schedulers: ``[lr_scheduler]`` over ``training.steps`` (see the module docstring)."""
    if cfg.decay_type not in SHAPES:
        raise ValueError(f"lr_scheduler.decay_type must be one of {', '.join(SHAPES)}, got {cfg.decay_type!r}")
    return FlameLRSchedulers(optimizers, Schedule.from_config(cfg, training_steps))
