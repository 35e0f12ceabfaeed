"""A sweep's progress as a person reads it, printed by the driver (a Tune callback): one line when a trial
starts and ends ("trial k/N", arm, seed, stages), and after every epoch of any trial a line with its stage and
epoch and the sweep's elapsed time and estimated time left.

The estimate counts work in trial-epochs to train: each distinct stage once (stages shared between trials,
see stage_share, are trained once), and an epoch is done the first time any trial reports it; the time left
is the elapsed time × epochs left / epochs done, so concurrency and shared stages are accounted for.
"""
from __future__ import annotations

import sys
import time

from ray.tune import Callback

from .stage_share import stage_key
from .trial_results import FINAL_MARK, SCORE


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


class SweepProgress(Callback):
    def __init__(self, name: str, total: int, stages_of, out=None):
        """`stages_of(params)`: the trial's [(stage config, step offset)] (see sweep._stages_with_offsets)."""
        self.name, self.total, self.stages_of, self.out = name, total, stages_of, out or sys.stdout
        self.numbers: dict[str, int] = {}
        self.stages: dict[str, list] = {}
        self.planned: dict[str, int] = {}     # stage key (or trial/stage) → epochs
        self.done: set[tuple[str, int]] = set()
        self.started = time.monotonic()

    def _say(self, text: str) -> None:
        self.out.write(f"[{self.name}] {text}\n")
        self.out.flush()

    def _who(self, trial) -> str:
        params = trial.config or {}
        parts = [f"trial {self.numbers[trial.trial_id]}/{self.total}"]
        parts += [f"{k} {params[k]}" for k in ("arm", "seed") if k in params]
        return ", ".join(parts) if len(parts) > 1 else f"{parts[0]} ({trial.trial_id})"

    def _register(self, trial) -> None:
        if trial.trial_id in self.numbers:
            return
        self.numbers[trial.trial_id] = len(self.numbers) + 1
        stages = [(stage, offset, stage_key(stage) or f"{trial.trial_id}/{stage.name}")
                  for stage, offset in self.stages_of(dict(trial.config or {}))]
        self.stages[trial.trial_id] = stages
        for stage, _, key in stages:
            self.planned[key] = stage.train.epochs

    def on_trial_start(self, iteration, trials, trial, **info):
        self._register(trial)
        stages = self.stages[trial.trial_id]
        shown = ", ".join(f"{s.name if len(stages) > 1 else 'one stage'} {s.train.epochs} epochs" for s, _, _ in stages)
        self._say(f"{self._who(trial)}: started ({shown})")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result.get(FINAL_MARK) or "step" not in result:
            return
        self._register(trial)
        step = int(result["step"])
        stage, offset, key = [s for s in self.stages[trial.trial_id] if s[1] < step][-1]
        self.done.add((key, step - offset))
        score = result.get(SCORE)
        planned, done = sum(self.planned.values()), len(self.done)
        elapsed = time.monotonic() - self.started
        left = elapsed * max(0, planned - done) / done
        self._say(f"{self._who(trial)}, {stage.name}: epoch {step - offset}/{stage.train.epochs}"
                  + (f", held-out score {score:.2f}" if score is not None else "")
                  + f" | sweep: {done}/{planned} epochs, {duration(elapsed)} elapsed, ~{duration(left)} left")

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._register(trial)
        result = trial.last_result or {}
        reused = result.get("final/stages_reused")
        self._say(f"{self._who(trial)}: finished" + (f", score {result[SCORE]:.2f}" if result.get(SCORE) is not None else "")
                  + (f", {int(reused)} stage(s) copied from another trial" if reused else "")
                  + f" | {duration(time.monotonic() - self.started)} elapsed")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._register(trial)
        self._say(f"{self._who(trial)}: FAILED (its error is above)")


def sweep_progress(spec, stages_of_config) -> SweepProgress:
    """The callback for a `SweepSpec` (grid or search), given `stages_of_config(params)`."""
    return SweepProgress(spec.name, spec.trial_count(), stages_of_config)

