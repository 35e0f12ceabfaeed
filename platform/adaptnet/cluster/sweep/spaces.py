"""Search spaces as Optuna define-by-run functions, composable with `+`.

A space is called with an Optuna trial and suggests values under the dotted config keys of `adaptnet train`
(`imta.temperature`, `optim.lr`, …); values it derives (normalised exit weights, per-stage mandatory counts)
are returned as a dict of config keys. Raw helper samples are named `search.*` and never reach the config.
Spaces are plain picklable objects, because Tune saves the searcher (with its space) for restores.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

AUX_PREFIX = "search."


class Space:
    def __call__(self, trial) -> dict[str, Any] | None:
        raise NotImplementedError

    def __add__(self, other: "Space") -> "Space":
        return Composite((self, other))


@dataclass(frozen=True)
class Composite(Space):
    parts: tuple[Space, ...]

    def __call__(self, trial) -> dict[str, Any]:
        derived: dict[str, Any] = {}
        for part in self.parts:
            derived.update(part(trial) or {})
        return derived

    def __add__(self, other: Space) -> Space:
        return Composite(self.parts + (other,))


@dataclass(frozen=True)
class KDSpace(Space):
    """IMTA one-for-all KD: temperature T and the KD weight γ of exits 1..K−1."""
    temperature: tuple[float, float] = (1.0, 8.0)
    gamma: tuple[float, float] = (0.0, 1.0)

    def __call__(self, trial) -> None:
        trial.suggest_float("imta.temperature", *self.temperature, log=True)
        trial.suggest_float("imta.gamma", *self.gamma)


@dataclass(frozen=True)
class ExitWeightSpace(Space):
    """K non-negative exit-loss weights, normalised to sum K (so 'equal' is all ones), or the one-parameter
    scheme w_k ∝ (k/K)^p (p < 0 favours early exits, p > 0 late ones)."""
    num_exits: int
    scheme: str = "free"  # free | power
    power: tuple[float, float] = (-1.0, 2.0)

    def __call__(self, trial) -> dict[str, Any]:
        k = self.num_exits
        if self.scheme == "power":
            p = trial.suggest_float(f"{AUX_PREFIX}exit_power", *self.power)
            raw = [((i + 1) / k) ** p for i in range(k)]
        elif self.scheme == "free":
            raw = [trial.suggest_float(f"{AUX_PREFIX}exit_w{i + 1}", 0.0, 1.0) for i in range(k)]
        else:
            raise ValueError(f"scheme: free or power, got {self.scheme!r}")
        total = sum(raw) or 1.0
        return {"train.exit_weights": [round(k * w / total, 6) for w in raw]}


@dataclass(frozen=True)
class GESpace(Space):
    """Gradient Equilibrium off (None), on the coarsest scale (official code) or on every scale."""
    scopes: tuple[Any, ...] = (None, "coarsest", "all")

    def __call__(self, trial) -> None:
        trial.suggest_categorical("model.ge_scope", list(self.scopes))


@dataclass(frozen=True)
class ADNSpace(Space):
    """ADN sub-path choices: mandatory blocks per stage (in [1, blocks − 1]: every stage keeps a skippable
    block), skip-aware norms, and the distillation's α, T and top-K."""
    blocks_per_stage: tuple[int, ...]
    alpha: tuple[float, float] = (0.0, 1.0)
    temperature: tuple[float, float] = (1.0, 4.0)
    top_k: tuple[Any, ...] = (None,)
    skip_aware_norms: tuple[bool, ...] = (True, False)

    def __call__(self, trial) -> dict[str, Any]:
        mandatory = [trial.suggest_int(f"{AUX_PREFIX}mandatory_stage{s + 1}", 1, blocks - 1)
                     for s, blocks in enumerate(self.blocks_per_stage)]
        trial.suggest_categorical("model.args.skip_aware_norms", list(self.skip_aware_norms))
        trial.suggest_float("adn.alpha", *self.alpha)
        trial.suggest_float("adn.temperature", *self.temperature)
        if len(self.top_k) > 1:
            trial.suggest_categorical("adn.top_k", list(self.top_k))
        return {"model.args.n_mandatory": mandatory}


@dataclass(frozen=True)
class OptimSpace(Space):
    """Learning rate and weight decay, both log-uniform; `weight_decay=None` leaves it alone."""
    lr: tuple[float, float] = (0.01, 0.5)
    weight_decay: tuple[float, float] | None = field(default=(1e-5, 1e-3))

    def __call__(self, trial) -> None:
        trial.suggest_float("optim.lr", *self.lr, log=True)
        if self.weight_decay:
            trial.suggest_float("optim.weight_decay", *self.weight_decay, log=True)


def config_overrides(params: dict[str, Any]) -> dict[str, Any]:
    """A trial's sampled values → config overrides (helper samples dropped)."""
    return {k: v for k, v in params.items() if not k.startswith(AUX_PREFIX)}


def sample(space: Space, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """`n` random draws of a space (all its values, helpers included), without Ray: to validate a space
    against the config schema before any cluster work."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    draws = []
    for _ in range(n):
        trial = study.ask()
        derived = space(trial) or {}
        draws.append({**trial.params, **derived})
    return draws
