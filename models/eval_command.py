"""`cotflow eval MODEL`: a local checkpoint on one split of any source, k samples a problem.

Settings come from the workspace's params.yaml (the project's own when the workspace has
none), each flag replacing its key. The problems are one split of `data.source` as the
pipeline splits it (cotflow/data/splits.py); completions and grades are the evaluate
stage's (models/evaluation.py: greedy, and k samples with evaluate.n_samples = k), and so
are its metrics. On top of them: avg@k and maj@k (cotflow/algorithms/metrics.py), pass@k,
avg@k and maj@k per difficulty level and per subject, and the sampled completions' length
and finished share.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cotflow.config import PipelineConfig, load_params
from cotflow.data.sources import ColumnMap, is_local_file
from cotflow.verify.extract import FORMATS
from models.evaluation import Graded

_COLUMN_FIELDS = tuple(ColumnMap.__dataclass_fields__)


@dataclass(frozen=True)
class EvalRequest:
    """What `cotflow eval` was asked; None: the params' value."""

    model: Path
    source: str | None = None
    split: str = "test"
    n: int | None = None  # the first n problems of the split; None: all of it
    k: int | None = None  # evaluate.n_samples
    temperature: float | None = None  # evaluate.temperature
    max_new_tokens: int | None = None  # evaluate.max_new_tokens
    fmt: str | None = None  # verify.format
    seed: int | None = None  # the sampling seed (the builtin task keeps the params' seed)
    columns: dict[str, str | None] = field(default_factory=dict)  # over data.columns
    answer_format: str | None = None  # data.answer_format


def parse_columns(text: str | None) -> dict[str, str | None]:
    """`question=problem,subject=type` (`none` unmaps a field) as a dict, fields checked."""
    out: dict[str, str | None] = {}
    for item in filter(None, (text or "").split(",")):
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or key not in _COLUMN_FIELDS or not value:
            raise ValueError(f"--columns {item!r}: expected FIELD=COLUMN with FIELD one of "
                             f"{', '.join(_COLUMN_FIELDS)}")
        out[key] = None if value.lower() in ("none", "null") else value
    return out


def check_request(req: EvalRequest) -> None:
    """Refuse bad flags before anything loads, naming the flag."""
    if not req.model.is_dir():
        raise ValueError(f"MODEL {str(req.model)!r}: no such folder")
    if not (req.model / "config.json").is_file():
        raise ValueError(f"MODEL {str(req.model)!r}: not a save_pretrained checkpoint (no "
                         "config.json), e.g. artifacts/iter-001/policy")
    checks = [(req.k, "-k", 1), (req.n, "--n", 1), (req.max_new_tokens, "--max-new-tokens", 1)]
    for value, flag, least in checks:
        if value is not None and value < least:
            raise ValueError(f"{flag} must be >= {least}, got {value}")
    if req.temperature is not None and not req.temperature > 0:
        raise ValueError(f"--temperature must be > 0, got {req.temperature}")
    if req.seed is not None and req.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {req.seed}")
    if req.fmt is not None and req.fmt not in FORMATS:
        raise ValueError(f"--format {req.fmt!r}: unknown (have {', '.join(FORMATS)})")
    from cotflow.data.sources import ANSWER_FORMATS

    if req.answer_format is not None and req.answer_format not in ANSWER_FORMATS:
        raise ValueError(f"--answer-format {req.answer_format!r}: unknown (have "
                         f"{', '.join(ANSWER_FORMATS)})")


def params_file(root: Path) -> Path:
    """The workspace's params.yaml, else the project's (so `cotflow eval` runs anywhere)."""
    from cotflow.workspace import PROJECT

    own = Path(root) / "params.yaml"
    return own if own.is_file() else PROJECT / "params.yaml"


def _copy(section: Any, **values: Any) -> Any:
    # The flags are checked in check_request; validating the whole config again would also
    # re-check iterations (e.g. TON's kind wants verify.format think) that eval never runs.
    return section.model_copy(update={k: v for k, v in values.items() if v is not None})


def data_config(base: PipelineConfig, req: EvalRequest, root: Path) -> PipelineConfig:
    """`base` with the request's data settings: the problems' config."""
    d = base.data
    source = req.source
    if source is None and is_local_file(d.source):
        source = str(Path(root) / d.source)  # params.yaml's paths are the workspace's
    return _copy(base, data=_copy(d, source=source, answer_format=req.answer_format))


def eval_config(data_cfg: PipelineConfig, req: EvalRequest) -> PipelineConfig:
    """The problems' config with the request's sampling and grading settings; pass@k for
    1, k and the params' pass_k up to k."""
    e = data_cfg.evaluate
    k = req.k if req.k is not None else e.n_samples
    pass_k = sorted({1, k, *(j for j in e.pass_k if j <= k)})
    max_new = req.max_new_tokens or e.max_new_tokens
    return _copy(
        data_cfg, seed=req.seed,
        evaluate=_copy(e, n_samples=k, pass_k=pass_k, temperature=req.temperature,
                       max_new_tokens=max_new),
        # The context check reads sample.max_new_tokens too: eval samples with max_new.
        sample=_copy(data_cfg.sample, max_new_tokens=max_new),
        verify=_copy(data_cfg.verify, format=req.fmt),
        model=_copy(data_cfg.model, name_or_path=str(req.model)))


def run_eval(req: EvalRequest, root: Path) -> tuple[dict[str, Any], PipelineConfig]:
    """Evaluate the request: (the report written to JSON, the config it ran with)."""
    from cotflow.data.splits import load_split
    from models.drawing import check_context
    from models.evaluation import draw_and_grade, policy_metrics
    from models.policy import tokenizer_and_context

    started, t0 = datetime.now(UTC), time.perf_counter()
    check_request(req)
    params = params_file(root)
    data_cfg = data_config(load_params(params), req, root)
    cfg = eval_config(data_cfg, req)
    columns = ColumnMap(**{**data_cfg.data.columns.model_dump(), **req.columns})
    problems = load_split(data_cfg, req.split, req.n, columns)  # the params' seed: builtin
    if not problems:
        raise ValueError(f"{cfg.data.source}: the {req.split} split has no problems")
    tokenizer, context = tokenizer_and_context(cfg, cfg.model.name_or_path)
    check_context(cfg, tokenizer, context, {req.split: problems})
    graded = draw_and_grade(cfg, req.model, problems)
    # A mapped subject column, or a source whose records have one (champ's categories).
    subjects = [p["subject"] for p in problems] if all("subject" in p for p in problems) else None
    metrics = (policy_metrics(cfg, problems, graded)
               | sampled_metrics(problems, graded, cfg.verify.format, subjects))
    e = cfg.evaluate
    settings = {"model": str(req.model), "source": cfg.data.source, "split": req.split,
                "n": len(problems), "k": e.n_samples, "temperature": e.temperature,
                "max_new_tokens": e.max_new_tokens, "format": cfg.verify.format,
                "seed": cfg.seed, "pass_k": e.pass_k, "backend": cfg.sample.backend,
                "answer_format": cfg.data.answer_format,
                "columns": {k: v for k, v in vars(columns).items() if v is not None},
                "prompt_template": cfg.data.prompt_template,
                "chat_template": cfg.data.chat_template, "system_prompt": cfg.data.system_prompt,
                "params": str(params)}
    timing = {"started_at": started.isoformat(timespec="seconds"),
              "seconds": round(time.perf_counter() - t0, 3),
              "tokens_per_s": round(graded.tokens_per_s, 1)}
    return {"settings": settings, "metrics": metrics, "timing": timing}, cfg


def sampled_metrics(problems: Sequence[dict], graded: Graded, fmt: str,
                    subjects: Sequence[str] | None = None) -> dict[str, float]:
    """avg@k, maj@k and the sampled completions' mean length and finished share; avg@k,
    maj@k and pass@k per difficulty level; with `subjects`, these and greedy accuracy per
    subject. maj@k votes over the canonical forms (grade.answer_key) of the answers
    extract_answer reads in format `fmt`."""
    from cotflow.algorithms.metrics import avg_at_k, maj_at_k, pass_at_k
    from cotflow.algorithms.ton import per_level
    from cotflow.verify.extract import extract_answer
    from cotflow.verify.grade import CORRECT, answer_key

    k, correct = graded.n_samples, graded.sampled_correct()
    keys = [answer_key(extract_answer(c.text, fmt)) for c in graded.sampled]
    per_problem = {
        f"avg@{k}": [avg_at_k(ok) for ok in correct],
        f"maj@{k}": [float(maj_at_k(keys[i * k:(i + 1) * k], ok))
                     for i, ok in enumerate(correct)],
        f"pass@{k}": [pass_at_k(k, sum(ok), k) for ok in correct],
    }
    sampled = graded.sampled
    out = {name: round(sum(v) / len(v), 6) for name, v in per_problem.items()
           if not name.startswith("pass@")}  # pass@k overall: policy_metrics has it
    out["sampled_mean_completion_tokens"] = round(
        sum(c.num_tokens for c in sampled) / len(sampled), 4)
    out["sampled_finished_fraction"] = round(sum(c.finished for c in sampled) / len(sampled), 6)
    levels = [p["difficulty"] for p in problems]
    for name, values in per_problem.items():
        out |= per_level(levels, values, name)
    if subjects is not None:
        greedy = [float(g.verdict == CORRECT) for g in graded.greedy_grades]
        for name, values in {"accuracy": greedy, **per_problem}.items():
            out |= per_level(subjects, values, name, by="subject")
    return out


def summary(report: dict[str, Any]) -> str:
    """A short table: the headline metrics overall, per difficulty level and per subject."""
    import re

    s, m = report["settings"], report["metrics"]
    k = s["k"]
    rows = [("greedy accuracy", "accuracy"), (f"avg@{k}", f"avg@{k}"),
            (f"maj@{k}", f"maj@{k}"), *((f"pass@{j}", f"pass@{j}") for j in s["pass_k"]),
            ("mean tokens, greedy", "mean_completion_tokens"),
            ("mean tokens, sampled", "sampled_mean_completion_tokens"),
            ("finished, greedy", "finished_fraction"),
            ("finished, sampled", "sampled_finished_fraction")]
    groups = [g.group(1) for name in m
              if (g := re.fullmatch(r"accuracy_((?:difficulty|subject)_.+)", name))]
    labels = ["all", *(g.replace("difficulty_", "level ").removeprefix("subject_")[:14]
                       for g in groups)]
    width = max(len(label) for label in labels) + 2
    lines = [f"cotflow eval {s['model']}: {s['source']} {s['split']}, {s['n']} problems, "
             f"k={k}, temperature {s['temperature']}, format {s['format']}, seed {s['seed']}",
             f"{'':22}" + "".join(f"{label:>{width}}" for label in labels)]
    for label, name in rows:
        cells = [m.get(name), *(m.get(f"{name}_{g}") for g in groups)]
        lines.append(f"{label:22}" + "".join(
            f"{'':>{width}}" if v is None else f"{v:>{width}.3f}" for v in cells))
    t = report["timing"]
    lines.append(f"{t['seconds']:.1f} s, {t['tokens_per_s']:.0f} tokens/s")
    return "\n".join(lines)
