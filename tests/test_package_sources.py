"""Data sources from packages (the `data` extra), on the real packages: reasoning-gym tasks
(records, splits fixed by the seed and disjoint, settings refused by name, the task's scorer
beside the verifier) and CHAMP (records with subjects, the answers it skips and why)."""

from __future__ import annotations

import importlib.util
import logging
import sys

import pytest
import yaml

from cotflow.config import load_params
from cotflow.config_types import ConfigError
from cotflow.data.errors import DataError
from cotflow.data.splits import load_split, load_splits
from tests.conftest import micro_params

needs_gym = pytest.mark.skipif(
    importlib.util.find_spec("reasoning_gym") is None,
    reason="needs reasoning-gym: pip install -e '.[data]'",
)
needs_champ = pytest.mark.skipif(
    importlib.util.find_spec("champ_dataset") is None,
    reason="needs champ-dataset: pip install -e '.[data]'",
)

# Sums of two or three numbers up to two digits: the sizes a 135M model can learn.
CHAIN_SUM = {"min_terms": 2, "max_terms": 3, "min_digits": 1, "max_digits": 2}


def _cfg(tmp_path, task="chain_sum", n_train=40, n_test=10, **gym):
    settings = {"size": 500, "seed": 0, "difficulty": None, "config": {}} | gym
    raw = micro_params(
        data={
            "source": f"reasoning-gym:{task}",
            "n_train": n_train,
            "n_test": n_test,
            "reasoning_gym": settings,
        }
    )
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    return load_params(tmp_path / "params.yaml")


# --- reasoning-gym: records and splits ---------------------------------------------------


@needs_gym
def test_entries_become_records(tmp_path):
    import reasoning_gym

    cfg = _cfg(tmp_path, difficulty="num_terms", config=CHAIN_SUM)
    train, test = load_splits(cfg)
    assert (len(train), len(test)) == (40, 10)
    first = test[0]
    assert set(first) == {"id", "question", "solution", "answer", "difficulty"}
    assert first["id"] == "chain_sum-0-0"
    entry = reasoning_gym.create_dataset("chain_sum", seed=0, size=500, **CHAIN_SUM)[0]
    assert (first["question"], first["answer"]) == (entry["question"], entry["answer"])
    assert first["difficulty"] == entry["metadata"]["num_terms"]
    assert {p["difficulty"] for p in train + test} <= {2, 3}
    assert all(isinstance(p["answer"], str) and p["solution"] == "" for p in train + test)


@needs_gym
def test_a_task_that_writes_its_working_gives_the_solution(tmp_path):
    cfg = _cfg(tmp_path, task="gsm_symbolic", n_train=1, n_test=2)
    cfg = cfg.model_copy(
        update={"model": cfg.model.model_copy(update={"name_or_path": "a-real-model"})}
    )  # the tiny model's context is too short
    for p in load_split(cfg, "test"):
        assert p["solution"] and "####" not in p["solution"]  # GSM8K's marker is dropped
        assert p["answer"].lstrip("-").isdigit()
        assert p["difficulty"] == 1  # the entry's own metadata difficulty, 1.0


@needs_gym
def test_splits_are_fixed_by_the_seed_and_disjoint(tmp_path):
    train, test = load_splits(_cfg(tmp_path, config=CHAIN_SUM))
    assert (train, test) == load_splits(_cfg(tmp_path, config=CHAIN_SUM))
    assert not {p["question"] for p in train} & {p["question"] for p in test}
    assert len({p["question"] for p in train + test}) == 50  # no question twice
    other_train, other_test = load_splits(_cfg(tmp_path, seed=1, config=CHAIN_SUM))
    assert [p["question"] for p in other_test] != [p["question"] for p in test]
    # The held-out problems lead: more training problems leave them be.
    assert load_splits(_cfg(tmp_path, n_train=80, config=CHAIN_SUM))[1] == test
    # `cotflow eval` takes the same splits, or their first n.
    cfg = _cfg(tmp_path, config=CHAIN_SUM)
    assert load_split(cfg, "test") == test and load_split(cfg, "test", 3) == test[:3]
    assert load_split(cfg, "train", 5) == train[:5]
    with pytest.raises(ValueError, match="has the splits train and test"):
        load_split(cfg, "validation")


@needs_gym
def test_duplicates_are_skipped_and_a_short_set_refused(tmp_path):
    # One-digit sums of two: at most 100 distinct questions among the 500 entries.
    tiny = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}
    train, test = load_splits(_cfg(tmp_path, n_train=60, n_test=20, config=tiny))
    assert len({p["question"] for p in train + test}) == 80
    assert int(train[-1]["id"].rsplit("-", 1)[1]) > 80  # later entries fill the gaps
    with pytest.raises(
        DataError,
        match=r"data\.reasoning_gym\.size 500: .* fewer than "
        r"data\.n_test \+ data\.n_train = 400",
    ):
        load_splits(_cfg(tmp_path, n_train=380, n_test=20, config=tiny))


# --- reasoning-gym: bad settings ---------------------------------------------------------


@needs_gym
@pytest.mark.parametrize(
    ("task", "gym", "message"),
    [
        (
            "chain_sums",
            {},
            r"data.source 'reasoning-gym:chain_sums': reasoning-gym has no task "
            r"'chain_sums' \(have .*chain_sum, ",
        ),
        (
            "chain_sum",
            {"config": {"max_term": 3}},
            r"data.reasoning_gym.config.max_term: not a "
            r"setting of reasoning-gym task 'chain_sum' \(have min_terms, max_terms, ",
        ),
        ("chain_sum", {"config": {"seed": 3}}, r"config.seed: set data.reasoning_gym.seed instead"),
        ("chain_sum", {"config": {"max_terms": "3"}}, r"config.max_terms: expected an int"),
        (
            "chain_sum",
            {"config": {"min_terms": 4, "max_terms": 3}},
            r"data.reasoning_gym.config: task 'chain_sum' refuses it: .*max_terms",
        ),
        (
            "chain_sum",
            {"difficulty": "level"},
            r"data.reasoning_gym.difficulty 'level': .*fields "
            r"that are: num_digits, num_terms, source_index",
        ),
    ],
)
def test_bad_settings_are_refused_by_name(tmp_path, task, gym, message):
    with pytest.raises(DataError, match=message):
        load_splits(_cfg(tmp_path, task=task, **gym))


@needs_gym
def test_validate_refuses_them_before_any_stage(tmp_path):
    from tasks.validate import validate

    _cfg(tmp_path, config={"max_term": 3})
    with pytest.raises(ConfigError, match="data.reasoning_gym.config.max_term: not a setting"):
        validate(tmp_path)
    _cfg(tmp_path, config=CHAIN_SUM)
    assert validate(tmp_path).data.source == "reasoning-gym:chain_sum"


@pytest.mark.parametrize("source", ["reasoning-gym", "reasoning-gym:", "reasoning-gym:a b"])
def test_a_source_without_a_task_is_refused_on_load(tmp_path, source):
    raw = micro_params(data={"source": source})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"data.source: .*expected reasoning-gym:<task>"):
        load_params(tmp_path / "params.yaml")


def test_without_the_package_the_error_names_the_key_and_the_command(tmp_path, monkeypatch):
    from cotflow.data.splits import check_source

    # None in sys.modules: `import reasoning_gym` fails as if it were not installed.
    monkeypatch.setitem(sys.modules, "reasoning_gym", None)
    monkeypatch.setitem(sys.modules, "champ_dataset", None)
    cfg = _cfg(tmp_path)
    want = (
        r"data.source 'reasoning-gym:chain_sum' needs the package reasoning-gym, which is "
        r"not installed: pip install reasoning-gym \(or the extra: pip install -e "
        r"'.\[data\]'\)"
    )
    with pytest.raises(DataError, match=want):
        load_splits(cfg)
    with pytest.raises(DataError, match=want):
        check_source(cfg.data)
    champ = cfg.model_copy(update={"data": cfg.data.model_copy(update={"source": "champ"})})
    with pytest.raises(
        DataError,
        match=r"'champ' needs the package champ-dataset.*"
        r"pip install champ-dataset",
    ):
        load_split(champ, "test")


# --- reasoning-gym: its scorer beside the verifier ---------------------------------------

# (task, how a model writes the answer, the task's scorer gives 1.0, the verifier: correct).
# chain_sum's scorer reads a decimal (sign, ".0" and commas allowed), as the verifier does;
# leg_counting's is the default exact-string one, which refuses "146.0" and "+146".
AGREEMENT = [
    ("chain_sum", "{}", True, True),
    ("chain_sum", "{}.0", True, True),
    ("chain_sum", "+{}", True, True),
    ("chain_sum", " {} ", True, True),
    ("chain_sum", "wrong", False, False),
    ("leg_counting", "{}", True, True),
    ("leg_counting", "{}.0", False, True),
    ("leg_counting", "+{}", False, True),
    ("leg_counting", "{} legs", False, False),
    ("leg_counting", "wrong", False, False),
]


@needs_gym
def test_the_scorer_and_the_verifier_on_a_table_of_answers(tmp_path):
    from cotflow.data.gym_scorer import compare

    for task, written, scorer_right, verifier_right in AGREEMENT:
        cfg = _cfg(tmp_path, task=task, n_train=1, n_test=10)
        if task == "leg_counting":
            cfg = cfg.model_copy(
                update={"model": cfg.model.model_copy(update={"name_or_path": "a-real-model"})}
            )  # its questions are long
        # Positive answers: "+-5" is -5 to the verifier, and to no one a way to write it.
        records = [r for r in load_split(cfg, "test") if int(r["answer"]) > 0][:3]
        assert len(records) == 3
        answers = [
            str(int(r["answer"]) + 1) if written == "wrong" else written.format(r["answer"])
            for r in records
        ]
        for c in compare(cfg.data.source, cfg.data.reasoning_gym, records, answers):
            assert (c.score == 1.0, c.verdict == "correct") == (scorer_right, verifier_right), (
                task,
                c,
            )
            assert c.agrees == (scorer_right == verifier_right)


@needs_gym
def test_the_data_stage_reports_the_agreement(tmp_path):
    from cotflow.data.gym_scorer import agreement_stats, probe_answers

    assert probe_answers("1234") == ["1234", "1234.0", "1235", "+1234", "1,234"]
    assert probe_answers("x + 1") == ["x + 1"]
    cfg = _cfg(tmp_path, config=CHAIN_SUM)
    test = load_split(cfg, "test")
    stats = agreement_stats(cfg.data.source, cfg.data.reasoning_gym, test)
    assert stats["scorer_agreement"] == stats["scorer_agreement_gold"] == 1.0
    assert stats["scorer_probes"] == sum(len(probe_answers(p["answer"])) for p in test)
    # A record these settings did not generate is refused, not scored against another entry.
    other = _cfg(tmp_path, seed=5, config=CHAIN_SUM)
    with pytest.raises(
        DataError, match="not a problem of reasoning-gym:chain_sum with data.reasoning_gym.seed 5"
    ):
        agreement_stats(other.data.source, other.data.reasoning_gym, test)


# --- champ ---------------------------------------------------------------------------------


@needs_champ
def test_champ_records_load_with_subjects_and_the_skipped_are_counted(caplog):
    from cotflow.data.champ import champ_rows, load_champ
    from cotflow.verify.grade import reads_as_value

    rows, skipped = champ_rows()
    assert len(rows) + sum(n for _, n in skipped) == 270
    assert dict(skipped) == {
        "yes/no": 33,
        "prose or several values": 48,
        "math the verifier cannot parse": 4,
    }
    assert {r["subject"] for r in rows} == {
        "Combinatorics",
        "Inequality",
        "Number-Theory",
        "Polynomial",
        "Sequence",
    }
    assert all(reads_as_value(r["answer"]) for r in rows)
    by_id = {r["id"]: r for r in rows}
    assert by_id["P_Combinatorics_1"]["answer"] == "239"
    assert by_id["P_Combinatorics_1"]["solution"].endswith(
        "there are x_6+y_6+z_6=70+99+70=239 such strings."
    )
    assert "@@" not in by_id["P_Combinatorics_19"]["question"]
    with caplog.at_level(logging.WARNING, logger="cotflow.data.champ"):
        first = load_champ("test", 3)
    assert [r["id"] for r in first] == [r["id"] for r in rows[:3]]
    assert "champ: 185 of 270 problems kept; skipped 85" in caplog.text
    with pytest.raises(DataError, match="the split test only"):
        load_champ("train")


@needs_champ
@pytest.mark.parametrize(
    ("raw", "answer"),
    [
        ("239", "239"),
        ("98 values", "98"),
        ("0 is the only possible value", "0"),
        ("900 (i.e., all values)", "900"),
        ("@@n(n+1)*2^(n-2)@@", "n(n+1)*2^(n-2)"),
        ("@@C(10, 5)@@, or equivalently @@252@@", "252"),
        ("@@C(n+1, 2m+1)@@", r"\binom{n+1}{2m+1}"),
        ("The limit exists and is equal to @@2/3@@", "2/3"),
        ("No", None),
        ("376 and 625", None),
        ("Always greater than 20", None),
    ],
)
def test_champ_answers_the_verifier_can_grade(raw, answer):
    from cotflow.data.champ import answer_of

    assert answer_of(raw)[0] == answer


@needs_champ
def test_champ_is_a_test_split_for_eval_not_the_pipeline(tmp_path):
    from tasks.validate import validate

    raw = micro_params(data={"source": "champ"})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    cfg = load_params(tmp_path / "params.yaml")
    assert {p["subject"] for p in load_split(cfg, "test", 2)} == {"Combinatorics"}
    for refuse in (lambda: load_splits(cfg), lambda: validate(tmp_path)):
        with pytest.raises(
            ValueError, match="data.source champ: an evaluation set with a test split only"
        ):
            refuse()
