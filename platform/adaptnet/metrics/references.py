"""Published reference numbers as data (from the briefs: imta.md, adn.md §4.3, paper-tables.md), each with the
exact setting it was measured in, its source and how it was obtained. A comparison claims a paper comparison
only when its own setting is that setting; otherwise it says, in one line, what differs."""
from __future__ import annotations

from dataclasses import dataclass
from os.path import commonprefix

IMAGENET_TRAIN = 1_281_167  # ImageNet-1k training images (the references train on all of them, or all but 50k)


@dataclass(frozen=True)
class Setting:
    """What a reference number depends on: dataset, model config, training epochs, and whether every image of
    the dataset was used (no train/test subsets)."""
    dataset: str      # imagenet-1k | cifar100 | cifar10, or a description of another dataset
    model: str        # registry name, with its default arguments
    epochs: int       # per stage
    full_data: bool = True

    def differences(self, other: Setting) -> list[str]:
        """What of this (a run's) setting differs from `other` (a reference's), in words."""
        out = []
        if self.dataset != other.dataset:
            out.append(f"dataset {self.dataset} (the reference: {other.dataset})")
        if self.model != other.model:
            out.append(f"model {self.model} (the reference: {other.model})")
        if self.epochs != other.epochs:
            out.append(f"{self.epochs} epoch{'s' * (self.epochs != 1)} (the reference: {other.epochs})")
        if not self.full_data:
            out.append("a subset of the data")
        return out


@dataclass(frozen=True)
class Reference:
    setting: Setting
    arm: str        # the arm of our comparison it stands for
    output: str     # the table's metric label: exit1.., super, base
    top1: float     # %
    macs: float | None
    label: str      # how the table shows it: "paper", "paper (unverified)", or the re-run's source
    source: str
    obtained: str   # printed | plot | third-party claim | third-party re-run


IMTA_IMAGENET = Setting("imagenet-1k", "msdnet_imagenet_step4", 90)
_CLAIM = "a survey note citing IMTA Tables 2-3 (paper-tables.md §1.2)"
_JAZBEC = "Jazbec et al. (NeurIPS 2023) re-run, 3-seed mean (paper-tables.md §3.1)"
_ADN = "wchkang/depth README (adn.md §4.3)"
_ADN_GFLOPS = {"resnet50_adn": (4.11e9, 2.58e9), "mobilenet_v2_adn": (0.32e9, 0.22e9), "vit_b16_adn": (17.58e9, 11.76e9),
               "swin_t_adn": (4.49e9, 2.34e9)}
# ADN: (super, base) top-1 of the ADN network and of individually trained networks of the same depths (implied by
# the README's "(+x)"); Swin-T's base gain has no sign in the README, so its individual-base value is left out.
_ADN_TOP1 = {"resnet50_adn": (150, 77.6, 76.1, 76.7, 75.0), "mobilenet_v2_adn": (300, 72.5, 70.6, 72.1, 70.2),
             "vit_b16_adn": (300, 81.4, 80.6, 81.1, 78.7), "swin_t_adn": (300, 81.6, 78.0, 81.5, None)}


def _imta() -> list[Reference]:
    refs = [Reference(IMTA_IMAGENET, arm, exit_, top1, None, "paper (unverified)", _CLAIM, "third-party claim")
            for arm, exit_, top1 in (("baseline", "exit1", 56.64), ("baseline", "exit5", 71.34),
                                     ("imta", "exit1", 57.28), ("imta", "exit5", 72.43))]
    rerun = {"baseline": (56.63, 65.14, 68.42, 69.77, 71.34), "imta": (57.74, 66.27, 70.33, 72.16, 72.90)}
    for arm, values in rerun.items():
        source = _JAZBEC if arm == "imta" else "the official step-4 checkpoint re-evaluated by Jazbec et al. (§3.1)"
        refs += [Reference(IMTA_IMAGENET, arm, f"exit{k}", v, None, "Jazbec et al. re-run", source, "third-party re-run")
                 for k, v in enumerate(values, 1)]
    return refs


def _adn() -> list[Reference]:
    refs = []
    for model, (epochs, super_, base, individual, individual_base) in _ADN_TOP1.items():
        setting = Setting("imagenet-1k", model, epochs)
        macs = _ADN_GFLOPS[model]
        for arm, output, top1, cost in (("adn", "super", super_, macs[0]), ("adn", "base", base, macs[1]),
                                        ("individual", "super", individual, macs[0]),
                                        ("individual-base", "base", individual_base, macs[1])):
            if top1 is not None:
                refs.append(Reference(setting, arm, output, top1, cost, "paper", _ADN,
                                      "printed" if arm == "adn" else "printed gain, subtracted"))
    return refs


REFERENCES: list[Reference] = _imta() + _adn()


def dataset_identity(spec: str, classes: int, train_images: int) -> str:
    """The dataset a reference would name: imagenet-1k, cifar100, cifar10, or a description of another."""
    name = spec.rstrip("/").rsplit("/", 1)[-1].lower()
    if classes == 1000 and train_images >= IMAGENET_TRAIN:
        return "imagenet-1k"
    for known, n in (("cifar100", 100), ("cifar10", 10)):
        if name.startswith(known) and classes == n and train_images == 50_000:
            return known
    return f"a {classes}-class set of {train_images:,} training images"


def references_for(setting: Setting, arms: list[str]) -> dict[tuple[str, str], Reference]:
    """{(arm, output): reference} for this exact setting; a printed paper value wins over a re-run."""
    rank = {"paper": 0, "paper (unverified)": 1}
    found: dict[tuple[str, str], Reference] = {}
    for ref in REFERENCES:
        if ref.setting == setting and ref.arm in arms:
            key = (ref.arm, ref.output)
            if key not in found or rank.get(ref.label, 2) < rank.get(found[key].label, 2):
                found[key] = ref
    return found


def closest_difference(setting: Setting, arms: list[str]) -> str:
    """One line: why no reference applies to this setting (what differs from the nearest reference setting)."""
    candidates = {ref.setting for ref in REFERENCES if ref.arm in arms}
    if not candidates:
        return f"no paper comparison: no published numbers for the arms {', '.join(arms)}"
    nearest = min(candidates, key=lambda s: (len(setting.differences(s)), -len(commonprefix([setting.model, s.model])),
                                             s.model))  # e.g. resnet56_adn → the resnet50_adn numbers
    return (f"no paper comparison: {'; '.join(setting.differences(nearest))} — the published numbers are for "
            f"{nearest.model} on {nearest.dataset}, {nearest.epochs} epochs, all data")


def paper_lines(setting: Setting, rows: list[dict]) -> list[str]:
    """Beside our rows (metrics.stats.comparison_rows), each matching reference: its value and label, our mean
    and 95% CI, Δ(ours − reference) and whether the reference lies in our interval; or the one line saying why
    there is none."""
    arms = sorted({row["arm"] for row in rows})
    found = references_for(setting, arms)
    lines = []
    for row in rows:
        ref = found.get((row["arm"], row["metric"]))
        if ref is None or row["interval"] is None:
            continue
        ours = row["interval"]
        inside = abs(ours.mean - ref.top1) <= ours.half_width  # False when the interval is undefined (n < 2)
        lines.append(f"{row['metric']:<6} {row['arm']:<16} {ref.label}: {ref.top1:.2f}  ours {ours.mean:.2f} ± "
                     f"{ours.half_width:.2f}  Δ {ours.mean - ref.top1:+.2f}  "
                     f"{'inside' if inside else 'outside'} our 95% CI  ({ref.obtained}; {ref.source})")
    return lines or [closest_difference(setting, arms)]
