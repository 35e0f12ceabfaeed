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
from ..tracking.results import FINAL_MARK, SCORE


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


class SweepProgress(Callback):
    def __init__(self, name: str, total: int, stages_of, planned: list[dict] = (), share: bool = True):
        """`stages_of(params)`: the trial's [(stage config, step offset)] (see trial.stages_with_offsets);
        `planned`: every trial's params when known up front (a grid), so that the estimate covers all of them;
        `share`: whether equal stages are trained once."""
        self.name, self.total, self.stages_of, self.share = name, total, stages_of, share
        self.numbers: dict[str, int] = {}
        self.stages: dict[str, list] = {}
        self.planned: dict[str, int] = {}     # stage key (or trial/stage) → epochs
        self.done: set[tuple[str, int]] = set()
        self.done_before = 0                  # epochs of trials that finished before a restore
        self.started = time.time()
        self.known_up_front = bool(planned)
        self.looked_for_restored = False
        for params in planned:
            self._plan(params)

    def setup(self, **info):
        """The start of every `fit`, also of a restored sweep's (whose callback is this one, unpickled)."""
        self.started, self.looked_for_restored = time.time(), False

    def on_step_begin(self, iteration, trials, **info):
        self._show_restored(trials)

    def on_experiment_end(self, trials, **info):
        self._show_restored(trials)  # a restored sweep with nothing left to run takes no step

    def _show_restored(self, trials) -> None:
        """Once per fit: a restored sweep's trials that finished before it restarted, shown and counted done."""
        if self.looked_for_restored:
            return
        self.looked_for_restored = True
        for trial in sorted(trials, key=lambda t: t.trial_id):  # in the order they were created
            if trial.status != "TERMINATED" or trial.trial_id in self.numbers:
                continue
            self._register(trial)
            for stage, _, key in self.stages[trial.trial_id]:
                self.done.update((key, epoch) for epoch in range(1, stage.train.epochs + 1))
            score = (trial.last_result or {}).get(SCORE)
            self._say(f"{self._who(trial)}: finished before this restore"
                      + (f", score {score:.2f}" if score is not None else ""))
        self.done_before = len(self.done)

    def _plan(self, params: dict) -> list:
        try:
            stages = self.stages_of(params)
        except Exception:  # noqa: BLE001 — progress lines must never stop a sweep
            return []
        own = repr(sorted(params.items(), key=str))
        keyed = [(stage, offset, (self.share and stage_key(stage)) or f"{own}/{stage.name}") for stage, offset in stages]
        for stage, _, key in keyed:
            self.planned[key] = stage.train.epochs
        return keyed

    def _say(self, text: str) -> None:
        sys.stdout.write(f"[{self.name}] {text}\n")  # the driver's stdout (no file object: Tune pickles callbacks)
        sys.stdout.flush()

    def _who(self, trial) -> str:
        params = trial.config or {}
        parts = [f"trial {self.numbers[trial.trial_id]}/{self.total}"]
        parts += [f"{k} {params[k]}" for k in ("arm", "seed") if k in params]
        return ", ".join(parts) if len(parts) > 1 else f"{parts[0]} ({trial.trial_id})"

    def _register(self, trial) -> None:
        if trial.trial_id in self.numbers:
            return
        self.numbers[trial.trial_id] = len(self.numbers) + 1
        self.stages[trial.trial_id] = self._plan(dict(trial.config or {}))

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
        current = [s for s in self.stages[trial.trial_id] if s[1] < step]
        if not current:
            return
        stage, offset, key = current[-1]
        self.done.add((key, step - offset))
        score = result.get(SCORE)
        planned, done = sum(self.planned.values()), len(self.done)
        if not self.known_up_front:  # a search: the trials not started yet are like the started ones
            planned = max(done, round(planned * self.total / len(self.numbers)))
        elapsed = time.time() - self.started
        left = elapsed * max(0, planned - done) / max(1, done - self.done_before)  # the pace since this start
        self._say(f"{self._who(trial)}, {stage.name}: epoch {step - offset}/{stage.train.epochs}"
                  + (f", held-out score {score:.2f}" if score is not None else "")
                  + f" | sweep: {done}/{planned} epochs, {duration(elapsed)} elapsed, ~{duration(left)} left")

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._register(trial)
        result = trial.last_result or {}
        reused = result.get("final/stages_reused")
        self._say(f"{self._who(trial)}: finished" + (f", score {result[SCORE]:.2f}" if result.get(SCORE) is not None else "")
                  + (f", {int(reused)} stage(s) copied from another trial" if reused else "")
                  + f" | {duration(time.time() - self.started)} elapsed")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._register(trial)
        self._say(f"{self._who(trial)}: FAILED (its error is above)")


def sweep_progress(spec, stages_of_config, share: bool) -> SweepProgress:
    """The callback for a `SweepSpec` (grid or search), given `stages_of_config(params)`."""
    keys = list(spec.grid or {})
    combos = [{}]
    for key in keys:
        combos = [{**c, key: v} for c in combos for v in spec.grid[key]]
    return SweepProgress(spec.name, spec.trial_count(), stages_of_config, combos if spec.grid else (), share)

