"""`cotflow eval`: avg@k and maj@k on hand numbers, and the command end to end on a tiny
warm start (builtin, a local jsonl with subjects, the package sources), its JSON, its MLflow
run, its errors."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cotflow.algorithms.metrics import avg_at_k, maj_at_k, majority_index, pass_at_k
from cotflow.records import read_json
from cotflow.verify.grade import CORRECT, INCORRECT, UNPARSEABLE, Grade, answer_key
from cotflow.workspace import PROJECT, make_workspace
from models.eval_command import parse_columns, sampled_metrics
from models.evaluation import Graded
from models.sampler import Completion
from tests.conftest import ROOT, micro_params

K = 4
N_TEST = 8


# --- the pure math ---------------------------------------------------------------------

def test_avg_and_maj_at_k_on_hand_numbers():
    answers = ["3", "3", "4", None]
    correct = [True, True, False, False]  # gold 3: the None completion stated no answer
    assert avg_at_k(correct) == 0.5
    assert majority_index(answers) == 0
    assert maj_at_k(answers, correct) is True
    # pass@1 is avg@k exactly (the unbiased estimator with k = 1 is c / n).
    assert pass_at_k(4, 2, 1) == avg_at_k(correct)


def test_a_tie_goes_to_the_answer_seen_first():
    # 2 votes each: "4" came first and wins, so maj@4 is wrong; reversed, it is right.
    assert majority_index(["4", "3", "3", "4"]) == 0
    assert maj_at_k(["4", "3", "3", "4"], [False, True, True, False]) is False
    assert maj_at_k(["3", "4", "4", "3"], [True, False, False, True]) is True
    # A plurality beats an earlier single answer.
    assert majority_index(["5", "4", "3", "3"]) == 2


def test_no_answer_does_not_vote():
    assert majority_index([None, None, "7"]) == 2
    assert majority_index([None, None]) is None
    assert maj_at_k([None, None], [False, False]) is False
    # Two unanswered samples do not outvote one answer.
    assert maj_at_k([None, None, "7"], [False, False, True]) is True


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="at least one"):
        avg_at_k([])
    with pytest.raises(ValueError, match="2 answers but 1 verdicts"):
        maj_at_k(["1", "2"], [True])


def test_answers_vote_by_their_canonical_form():
    # "3.0", "\boxed{3}" and "\$3" are one answer, 3; "0.5" and "\frac12" one, 1/2.
    assert {answer_key(a) for a in ("3", "3.0", " \\boxed{3}", "\\$3")} == {"3"}
    assert answer_key("0.5") == answer_key("\\frac12") == "1/2"
    assert answer_key("x  +\n1") == "x + 1"
    assert answer_key("") is None and answer_key(None) is None
    keys = [answer_key(a) for a in ("3.0", "4", "3", "4 ")]  # 3 and 4 twice each: 3 first
    assert maj_at_k(keys, [True, False, True, False]) is True


def _completion(text: str, finished: bool = True) -> Completion:
    ids = list(range(len(text))) + ([0] if finished else [])
    return Completion(text=text, token_ids=ids, prompt_ids=[1], finished=finished)


def test_sampled_metrics_on_a_hand_made_evaluation():
    """Two problems, k = 4. p1 (level 1, algebra): answers 3, 3, 4, none with gold 3; p2
    (level 2, geometry): 5, 6, 6, 5 with gold 5 (a tie: 5 came first)."""
    texts = ["\\boxed{3}", "\\boxed{3.0}", "\\boxed{4}", "no box",
             "\\boxed{5}", "\\boxed{6}", "\\boxed{6}", "\\boxed{5}"]
    verdicts = [CORRECT, CORRECT, INCORRECT, UNPARSEABLE,
                CORRECT, INCORRECT, INCORRECT, CORRECT]
    graded = Graded(
        greedy=[_completion("\\boxed{3}"), _completion("\\boxed{6}")],
        greedy_grades=[Grade(CORRECT, "3"), Grade(INCORRECT, "6")],
        sampled=[_completion(t, finished=i != 3) for i, t in enumerate(texts)],
        sampled_grades=[Grade(v, None) for v in verdicts], n_samples=4, tokens_per_s=1.0)
    problems = [{"difficulty": 1}, {"difficulty": 2}]
    m = sampled_metrics(problems, graded, "boxed", subjects=["algebra", "geometry"])
    assert m["avg@4"] == 0.5  # (2/4 + 2/4) / 2
    assert m["maj@4"] == 1.0  # p1: 3 (x2) wins; p2: 5 and 6 tie, 5 first
    assert m["avg@4_difficulty_1"] == 0.5 and m["maj@4_difficulty_2"] == 1.0
    assert m["pass@4_difficulty_1"] == m["pass@4_subject_geometry"] == 1.0
    assert m["accuracy_subject_algebra"] == 1.0 and m["accuracy_subject_geometry"] == 0.0
    # lengths: 9 + 11 + 9 + 6 (unfinished: no <eos>) + 4 x 9, plus 7 <eos>; 7 of 8 finished
    assert m["sampled_mean_completion_tokens"] == round((9 + 11 + 9 + 6 + 36 + 7) / 8, 4)
    assert m["sampled_finished_fraction"] == 0.875
    assert "pass@4" not in m  # overall pass@k is policy_metrics' (the evaluate stage's)


def test_columns_flag():
    assert parse_columns("question=problem, subject=type,solution=none") == {
        "question": "problem", "subject": "type", "solution": None}
    assert parse_columns(None) == {}
    with pytest.raises(ValueError, match="FIELD=COLUMN"):
        parse_columns("topic=type")


# --- the command, end to end ------------------------------------------------------------

def _cotflow(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "cotflow", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    """A micro workspace after its base stages, with a brief warm start and 8 held-out
    problems."""
    from tasks.common import run_base

    root = make_workspace(tmp_path_factory.mktemp("eval-ws"), micro_params(
        tracking={"enabled": False}, warmstart={"steps": 20}, data={"n_test": N_TEST}))
    cwd = Path.cwd()
    os.chdir(root)
    try:
        run_base(root, root / "params.yaml")
    finally:
        os.chdir(cwd)
    return root


def test_eval_writes_its_json_and_an_mlflow_run(ws: Path):
    from mlflow.tracking import MlflowClient

    r = _cotflow(ws, "eval", "artifacts/base/policy", "--n", str(N_TEST), "-k", str(K),
                 "--out", "x.json", "--mlflow")
    assert r.returncode == 0, r.stderr
    report = read_json(ws / "x.json")
    assert set(report) == {"settings", "metrics", "timing"}
    s, m = report["settings"], report["metrics"]
    assert s["model"] == "artifacts/base/policy" and s["source"] == "builtin"
    assert (s["split"], s["n"], s["k"], s["seed"], s["format"]) == ("test", N_TEST, K, 0, "boxed")
    assert s["pass_k"] == [1, 2, 4]  # 1, k, and the params' pass_k (micro: [1, 2])
    assert s["params"] == str(ws / "params.yaml")
    for name in ("accuracy", f"avg@{K}", f"maj@{K}", "pass@1", "pass@2", f"pass@{K}",
                 "finished_fraction", "sampled_finished_fraction", "accuracy_difficulty_1",
                 f"avg@{K}_difficulty_1", f"maj@{K}_difficulty_1", f"pass@{K}_difficulty_1"):
        assert 0.0 <= m[name] <= 1.0, name
    assert m["pass@1"] == pytest.approx(m[f"avg@{K}"])
    assert m[f"maj@{K}"] <= m[f"pass@{K}"] and m[f"avg@{K}"] <= m[f"pass@{K}"]
    for name in ("mean_completion_tokens", "sampled_mean_completion_tokens"):
        assert 0 < m[name] <= 32 + 1, name  # micro's evaluate.max_new_tokens
    assert report["timing"]["seconds"] > 0
    # The greedy half is the baseline stage's own evaluation of the same problems.
    base = read_json(ws / "artifacts" / "base" / "metrics.json")
    assert m["accuracy"] == base["accuracy"]
    assert m["mean_completion_tokens"] == base["mean_completion_tokens"]
    assert f"avg@{K}" in r.stdout and "maj@4" in r.stdout and "wrote x.json" in r.stdout

    run_id = r.stdout.split("MLflow run ")[1].split()[0]
    run = MlflowClient(f"sqlite:///{ws / 'mlflow.db'}").get_run(run_id)
    assert run.data.tags["cotflow.kind"] == "eval"
    assert run.data.params["k"] == str(K) and run.data.params["split"] == "test"
    assert run.data.metrics["eval/avg_at_4"] == m[f"avg@{K}"]
    assert run.data.metrics["eval/maj_at_4"] == m[f"maj@{K}"]
    assert run.data.metrics["evaluate/sampled_finished_fraction"] == m[
        "sampled_finished_fraction"]
    assert run.info.status == "FINISHED"


def test_eval_of_a_local_jsonl_anywhere_groups_by_subject(ws: Path, tmp_path: Path):
    """No params.yaml where it runs: the project's defaults, the flags over them."""
    from cotflow.data.arithmetic import make_splits

    _, problems = make_splits(0, 4, 7, [1, 2])
    rows = [{"problem": p["question"], "answer": p["answer"],
             "level": f"Level {p['difficulty']}", "type": ["Sums", "Gifts"][i % 2]}
            for i, p in enumerate(problems)]
    (tmp_path / "probs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = _cotflow(tmp_path, "eval", str(ws / "artifacts" / "base" / "policy"),
                 "--source", "probs.jsonl", "-k", "2", "--max-new-tokens", "16",
                 "--columns", "question=problem,difficulty=level,subject=type",
                 "--seed", "3")
    assert r.returncode == 0, r.stderr
    report = read_json(tmp_path / "eval.json")
    s, m = report["settings"], report["metrics"]
    assert s["params"] == str(PROJECT / "params.yaml")
    assert (s["source"], s["n"], s["k"], s["seed"], s["max_new_tokens"]) == (
        "probs.jsonl", 4, 2, 3, 16)
    assert s["pass_k"] == [1, 2]  # the project's pass_k [1, 4] up to k
    assert s["columns"]["subject"] == "type"
    levels = {p["difficulty"] for p in problems}
    for name in ("accuracy", "avg@2", "maj@2", "pass@2"):
        for subject in ("Sums", "Gifts"):
            assert 0.0 <= m[f"{name}_subject_{subject}"] <= 1.0
        for level in levels:
            assert 0.0 <= m[f"{name}_difficulty_{level}"] <= 1.0
    assert "inconsistency_rate" not in m  # the builtin task's steps only
    assert "Sums" in r.stdout and "level 1" in r.stdout


@pytest.mark.skipif(
    importlib.util.find_spec("champ_dataset") is None
    or importlib.util.find_spec("reasoning_gym") is None,
    reason="needs the data extra: pip install -e '.[data]'",
)
def test_eval_on_package_sources(ws: Path):
    """champ groups by its categories and says what it skipped; a reasoning-gym task's
    held-out split comes from data.reasoning_gym (the micro params: chain_sum's defaults)."""
    args = ["eval", "artifacts/base/policy", "-k", "2", "--max-new-tokens", "8"]
    r = _cotflow(ws, *args, "--source", "champ", "--n", "2", "--out", "champ.json")
    assert r.returncode == 0, r.stderr
    assert "champ: 185 of 270 problems kept; skipped 85" in r.stderr
    s, m = (read_json(ws / "champ.json")[k] for k in ("settings", "metrics"))
    assert (s["source"], s["n"]) == ("champ", 2)
    assert 0.0 <= m["accuracy_subject_Combinatorics"] <= 1.0
    assert "Combinatorics" in r.stdout
    r = _cotflow(ws, *args, "--source", "reasoning-gym:chain_sum", "--n", "3", "--out", "g.json")
    assert r.returncode == 0, r.stderr
    s = read_json(ws / "g.json")["settings"]
    assert (s["source"], s["n"]) == ("reasoning-gym:chain_sum", 3)


@pytest.mark.parametrize(("args", "message"), [
    (["no-such-policy"], "MODEL 'no-such-policy': no such folder"),
    (["artifacts/base"], "not a save_pretrained checkpoint"),
    (["artifacts/base/policy", "-k", "0"], "-k must be >= 1, got 0"),
    (["artifacts/base/policy", "--format", "xml"], "--format 'xml': unknown (have boxed"),
])
def test_bad_input_is_one_line_and_writes_nothing(ws: Path, args: list[str], message: str):
    r = _cotflow(ws, "eval", *args, "--out", "bad.json")
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("cotflow: error: ") and message in last
    assert "Traceback" not in r.stderr
    assert not (ws / "bad.json").exists()
