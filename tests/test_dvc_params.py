"""dvc.yaml's params per stage: a setting reruns the stages that read it and no other. The
base folder is four stages so that what only evaluates the warm start (evaluate.*) does
not redo it (issue 18), and only the model's name converts a GGUF model again. Read through
DVC's own resolution of dvc.yaml (foreach included), on a fresh workspace: nothing runs."""

from __future__ import annotations

import pytest

from cotflow.workspace import make_workspace
from tests.conftest import micro_params


@pytest.fixture(scope="module")
def dvc_stages(tmp_path_factory) -> list:
    """DVC's stages of dvc.yaml on a fresh workspace (read in, not run)."""
    from dvc.repo import Repo

    ws = make_workspace(tmp_path_factory.mktemp("params"), micro_params())
    with Repo(str(ws)) as repo:
        return list(repo.index.stages)


@pytest.fixture(scope="module")
def params_of(dvc_stages) -> dict[str, list[str]]:
    """DVC stage -> the params.yaml keys it depends on ([]: the whole file)."""
    from dvc.dependency.param import ParamsDependency

    return {stage.addressing.rsplit(":", 1)[-1]: [
        key for dep in stage.deps if isinstance(dep, ParamsDependency)
        for key in (dep.params or [""])] for stage in dvc_stages}


def stale_by(params_of: dict[str, list[str]], setting: str) -> set[str]:
    """The stages a change of `setting` (a dotted key) makes stale by their params."""
    return {stage for stage, keys in params_of.items()
            if any(k == "" or setting == k or setting.startswith(k + ".") for k in keys)}


EVALUATE = {"evaluate@001", "evaluate@002"}


@pytest.mark.parametrize(("setting", "stages"), [
    # What the evaluations read: the warm start's and each iteration's, not the warm start.
    ("evaluate.n_samples", {"baseline", *EVALUATE}),
    ("evaluate.pass_k", {"baseline", *EVALUATE}),
    # ... but a longer answer needs room in the context, which the data stage checks.
    ("evaluate.max_new_tokens", {"data", "baseline", *EVALUATE}),
    ("warmstart.thought_dropout", {"warmstart"}),
    ("warmstart.steps", {"warmstart"}),
    ("data.n_train", {"data"}),
    ("model.hidden_size", {"warmstart"}),
    # The model stage reads the name alone: a GGUF file is converted again for nothing else.
    ("model.name_or_path", {"model", "data", "warmstart"}),
    ("critique.wording", {"warmstart", "critique@001", "critique@002"}),
    # Every stage that builds the policy's prompts (models/prompts.py).
    ("data.chat_template", {"data", "warmstart", "baseline", *EVALUATE,
                            *{f"{s}@{k}" for s in ("allocate", "sample", "critique")
                              for k in ("001", "002")}}),
])
def test_a_setting_makes_the_stages_that_read_it_stale(params_of, setting, stages):
    # validate reads all of params.yaml (and costs nothing): it reruns on any change.
    assert stale_by(params_of, setting) == {"validate", *stages}


def test_base_stages_are_in_dvc_yaml(params_of):
    from cotflow.layout import BASE_STAGES

    assert set(BASE_STAGES) <= set(params_of) and "prepare" not in params_of


def test_the_stages_that_load_the_model_depend_on_the_model_stage(dvc_stages):
    """What the model stage writes (a GGUF source's checkpoint) is a dep of each stage that
    loads it (models/source.py source_model), so DVC runs it first and reruns them after."""
    from pathlib import Path

    from cotflow.layout import Layout

    by_name = {stage.addressing.rsplit(":", 1)[-1]: stage for stage in dvc_stages}
    rel = Layout(Path(".")).base_model.as_posix()
    outs = [out.def_path for out in by_name["model"].outs]
    assert outs == [rel, "artifacts/base/stats/model.json"]
    loaders = {
        name for name, stage in by_name.items() if rel in {dep.def_path for dep in stage.deps}
    }
    assert loaders == {"data", "warmstart"}
