"""The TRL side's tuning for `benchmarks/trl_grpo.py --sweep`: which GRPOConfig knobs, which
values, in what order, and what the sweep costs (pure: no TRL, no torch).

The knobs are those a TRL user tunes: the learning rate, the loss aggregation (`loss_type`),
passes over each generation batch (`num_iterations`, μ), reward scaling (`scale_rewards`) and
the KL coefficient (`beta`). Their full product is 4 · 3 · 2 · 2 · 2 = 96 runs; the sweep is a
coordinate search instead: from the centre (the GRPOConfig that does what cotflow's preset
does), each knob in turn takes each of its values with the others held at the best so far,
and keeps the best (a tie keeps the earlier value, the centre's first). Each grid holds the
centre's value and TRL's default, so with the grpo preset it is 1 + 3 + 2 + 1 + 1 + 1 = 9
runs, and knobs tried later are tried at the learning rate that suits them best so far.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

KNOBS = ("learning_rate", "loss_type", "num_iterations", "scale_rewards", "beta")
# Rates around cotflow's (1e-4): GRPOConfig's default is 1e-6, tuned for billion-parameter
# models; a 0.8 M-parameter model from scratch may want far more.
LEARNING_RATES = (1e-5, 3e-5, 1e-4)
# Alternatives to the centre and TRL's default: Dr. GRPO's aggregation and scaling, twice the
# centre's passes, and DeepSeekMath's KL coefficient.
LOSS_TYPES = ("grpo", "dr_grpo")
SCALE_REWARDS = ("none",)
BETAS = (0.04,)


@dataclass(frozen=True)
class Knobs:
    """One TRL configuration: GRPOConfig fields of the same names."""
    learning_rate: float
    loss_type: str
    num_iterations: int
    scale_rewards: str
    beta: float

    def label(self) -> str:
        return (f"lr {self.learning_rate:.0e}, loss {self.loss_type}, μ {self.num_iterations}, "
                f"scale {self.scale_rewards}, beta {self.beta:g}")


def trl_defaults(config_class: type) -> Knobs:
    """The knobs' defaults as the installed GRPOConfig (a dataclass) declares them."""
    defaults = {f.name: f.default for f in dataclasses.fields(config_class)}
    return Knobs(**{name: defaults[name] for name in KNOBS})


def _unique(values: Iterable[Any]) -> list[Any]:
    return list(dict.fromkeys(values))


def design(centre: Knobs, defaults: Knobs,
           knobs: Sequence[str] = KNOBS) -> dict[str, list[Any]]:
    """Each of `knobs`' values, knob by knob in the order swept and each in the order tried:
    the centre's first (already scored), then TRL's default, then the alternatives. Knobs
    left out keep the centre's value."""
    unknown = set(knobs) - set(KNOBS)
    if unknown:
        raise ValueError(f"unknown knobs {sorted(unknown)}; have {', '.join(KNOBS)}")
    alternatives: dict[str, Sequence[Any]] = {
        "learning_rate": LEARNING_RATES, "loss_type": LOSS_TYPES,
        "num_iterations": (2 * centre.num_iterations,), "scale_rewards": SCALE_REWARDS,
        "beta": BETAS}
    return {name: _unique([getattr(centre, name), getattr(defaults, name),
                           *alternatives[name]])
            for name in knobs}


def planned_runs(centre: Knobs, grid: dict[str, list[Any]]) -> int:
    """Configurations `coordinate_search` scores: the centre, then each knob's other values
    (none repeats: each differs from every earlier one in the knob being swept)."""
    return 1 + sum(len(values) - (getattr(centre, name) in values)
                   for name, values in grid.items())


def coordinate_search(centre: Knobs, grid: dict[str, list[Any]],
                      score: Callable[[Knobs], float]) -> tuple[Knobs, list[tuple[Knobs, float]]]:
    """Sweep `grid`'s knobs one at a time from `centre`, each from the best so far:
    (the best configuration, every (configuration, score) in the order scored)."""
    scores: dict[Knobs, float] = {}

    def scored(knobs: Knobs) -> float:
        if knobs not in scores:
            scores[knobs] = score(knobs)
        return scores[knobs]

    best = centre
    scored(best)
    for name, values in grid.items():
        for value in values:
            candidate = dataclasses.replace(best, **{name: value})
            if scored(candidate) > scores[best]:  # strictly: a tie keeps the earlier
                best = candidate
    return best, list(scores.items())


def expected_seconds(*, runs: int, sweep_samples: int, sweep_eval: int, samples: int,
                     eval_size: int, iterations: int, prepare: bool,
                     rates: dict[str, float]) -> float:
    """Rough wall time of a `--sweep` run: each side's iterations and evaluations at the
    full size, cotflow's row and `runs` TRL runs at the sweep's, and the warm start's
    evaluation on each held-out cut. `rates`: seconds per sample of a cotflow iteration and
    per held-out problem, TRL's time per sample as a multiple of cotflow's, seconds fixed
    per iteration with its evaluation (loading, starting the verifier, generation's
    latency), and the warm start's preparation."""
    per_sample, per_problem = rates["iteration_per_sample"], rates["eval_per_problem"]
    sides = 1 + rates["trl_per_cotflow"]
    full = iterations * (sides * per_sample * samples + 2 * per_problem * eval_size)
    sweep = ((1 + runs * rates["trl_per_cotflow"]) * per_sample * sweep_samples
             + (1 + runs) * per_problem * sweep_eval)
    warm = per_problem * (eval_size + sweep_eval)
    fixed = rates["per_iteration"] * (2 * iterations + 1 + runs)
    return full + sweep + warm + fixed + (rates["prepare"] if prepare else 0.0)
