"""The sweep's progress lines on a restore: trials that finished before it are listed once and count as done."""
from types import SimpleNamespace

from adaptnet.cluster.sweep.progress import SweepProgress
from adaptnet.loop import load_config

EXPECTED = ["[demo] trial 1/3, arm ge, seed 0: finished before this restore, score 41.40",
            "[demo] trial 2/3, arm ge, seed 1: finished before this restore, score 38.50"]


def _trial(trial_id, status, seed, score=None):
    return SimpleNamespace(trial_id=trial_id, status=status, config={"arm": "ge", "seed": seed},
                           last_result={"score": score} if score is not None else {})


def _restored():
    stage = load_config("cifar10-smoke", ["train.epochs=3"])
    planned = [{"arm": "ge", "seed": s} for s in range(3)]
    progress = SweepProgress("demo", 3, lambda params: [(stage, 0)], planned, share=False)
    progress.setup()  # Tune calls it at the start of every fit, also of a restored one
    trials = [_trial("t_00002", "PENDING", 2), _trial("t_00000", "TERMINATED", 0, 41.4),
              _trial("t_00001", "TERMINATED", 1, 38.5)]
    return progress, trials


def test_a_restored_sweep_lists_its_finished_trials_and_counts_their_epochs(capsys):
    progress, trials = _restored()
    progress.on_step_begin(0, trials)
    progress.on_step_begin(1, trials)  # once per fit
    progress.on_experiment_end(trials)
    assert capsys.readouterr().out.splitlines() == EXPECTED
    assert len(progress.done) == 6 == progress.done_before  # their 2 × 3 epochs; the pace counts only new ones
    progress.on_trial_result(0, trials, trials[0], {"step": 1, "score": 20.0})
    assert "| sweep: 7/9 epochs" in capsys.readouterr().out


def test_a_restored_sweep_with_nothing_left_to_run_lists_them_too(capsys):
    progress, trials = _restored()
    progress.on_experiment_end(trials)  # Tune takes no step when every trial has ended
    assert capsys.readouterr().out.splitlines() == EXPECTED
