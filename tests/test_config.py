"""params.yaml validation: every bad key is named before anything runs."""

from pathlib import Path

import pytest
import yaml

from cotflow.config import ConfigError, PipelineConfig, flatten, load_params, read_params
from cotflow.presets import LR
from tasks.common import stage_config
from tests.conftest import micro_params, preset_params_file

ROOT = Path(__file__).resolve().parents[1]


def _write(tmp_path: Path, mutate) -> Path:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    mutate(raw)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_shipped_params_are_valid():
    cfg = load_params(ROOT / "params.yaml")
    assert cfg.iteration_keys() == ["001", "002", "003", "004", "005"]
    load_params(ROOT / "tests" / "data" / "params.micro.yaml")


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda r: r["sample"].update(temprature=1.0), "sample.temprature: unknown key"),
        (lambda r: r.update(extra_section={}), "extra_section: unknown key"),
        (lambda r: r["allocate"].update(n=0), "allocate.n: Input should be greater than 0"),
        (lambda r: r["train"].update(lr="fast"), "train.lr"),
        (lambda r: r["train"].update(epochs=1.5), "train.epochs"),
        (lambda r: r["sample"].update(top_p=1.5), "sample.top_p"),
        (lambda r: r["sample"].update(backend="tpu"), "sample.backend"),
        (lambda r: r["train"].pop("lr"), "train.lr: missing key"),
        (lambda r: r["data"].update(prompt_template="no placeholder"), "data.prompt_template"),
        (lambda r: r["iterations"]["002"].update(prev="base"), "002.prev is 'base'"),
        (lambda r: r["iterations"].update({"7": {"algorithm": "raft", "prev": "iter-003"}}),
         "iterations must be '001', '002'"),
        (lambda r: r["iterations"]["001"].update(algorithm="ppo"), "iterations.001.algorithm"),
        (lambda r: r["allocate"].update(method="best"), "allocate.method"),
        (lambda r: r["allocate"]["gvm"].update(probe="cache"), "allocate.gvm.probe"),
        (lambda r: r["allocate"]["gvm"].update(filter_threshold=2.0),
         "allocate.gvm.filter_threshold"),
        (lambda r: r["allocate"]["gvm"].update(cap=0), "allocate.gvm.cap"),
        (lambda r: r["allocate"]["gvm"].update(grad_params=[]), "allocate.gvm.grad_params"),
        (lambda r: r["allocate"].update(method="gvm", gvm={**r["allocate"]["gvm"], "floor": 3}),
         "gvm.floor 3 × 4096 prompts exceeds the budget 8192"),
        (lambda r: r["allocate"].update(method="gvm", gvm={**r["allocate"]["gvm"], "cap": 1}),
         "gvm.cap 1 × 4096 prompts is below the budget 8192"),
    ],
)
def test_bad_params_name_the_key(tmp_path, mutate, needle):
    with pytest.raises(ConfigError) as err:
        load_params(_write(tmp_path, mutate))
    assert needle in str(err.value)


def test_not_a_mapping_and_not_yaml(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_params(p)
    p.write_text("seed: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(p)
    with pytest.raises(ConfigError, match="no such params file"):
        load_params(tmp_path / "missing.yaml")


def test_iteration_overrides_apply(tmp_path):
    def mutate(r):
        r["iterations"]["002"]["overrides"] = {"train": {"lr": 1.0e-5}}

    cfg = load_params(_write(tmp_path, mutate))
    assert cfg.for_iteration("001").train.lr == cfg.train.lr
    assert cfg.for_iteration("002").train.lr == 1.0e-5
    with pytest.raises(ConfigError, match="not in params.yaml"):
        cfg.for_iteration("009")


def test_flatten_is_dotted():
    flat = flatten(load_params(ROOT / "params.yaml"))
    assert flat["train.lr"] == "0.0001"
    assert flat["iterations.001.algorithm"] == "raft"


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda r: r["evaluate"].update(pass_k=[1, 8]), "pass_k 8 exceeds n_samples 4"),
        (lambda r: r["allocate"].update(prompts_per_iteration=10**6), "exceeds data.n_train"),
        (lambda r: r["iterations"]["002"].update(overrides={"train": {"lr": "x"}}),
         "iterations.002.overrides: train.lr"),
        (lambda r: r["iterations"]["002"].update(overrides={"nonsense": {"a": 1}}),
         "overrides.nonsense: not a config section"),
    ],
)
def test_cross_field_errors_at_load(tmp_path, mutate, needle):
    with pytest.raises(ConfigError) as err:
        load_params(_write(tmp_path, mutate))
    assert needle in str(err.value)


def test_unquoted_iteration_keys_say_to_quote(tmp_path):
    text = (ROOT / "params.yaml").read_text().replace('"001":', "001:")
    p = tmp_path / "params.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match="quote iteration keys"):
        load_params(p)


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda r: r["algorithms"]["grpo"].update(kind="ppo"), "algorithms.grpo"),
        (lambda r: r["algorithms"]["grpo"].update(advantage_std="mad"),
         "algorithms.grpo.grpo.advantage_std"),
        (lambda r: r["algorithms"]["dapo"].pop("eps_high"), "eps_high: missing key"),
        (lambda r: r["algorithms"]["nft"].update(normalize=3), "algorithms.nft.nft.normalize"),
        (lambda r: r["algorithms"]["dpo"].update(beta=0), "algorithms.dpo.dpo.beta"),
        (lambda r: r["algorithms"]["seed-grpo"]["semantic_entropy"].update(f="cubic"),
         "semantic_entropy.f"),
        (lambda r: r["iterations"]["002"].update(algorithm="my-grpo"),
         "iterations.002.algorithm 'my-grpo' is not a key of algorithms"),
    ],
)
def test_bad_algorithm_settings_name_the_key(tmp_path, mutate, needle):
    with pytest.raises(ConfigError) as err:
        load_params(_write(tmp_path, mutate))
    assert needle in str(err.value)


def test_overrides_change_one_algorithm_setting(tmp_path):
    def mutate(r):
        r["iterations"]["002"].update(algorithm="dapo", overrides={
            "algorithms": {"dapo": {"eps_high": 0.3}}, "sample": {"dynamic_sampling_rounds": 1}})

    cfg = load_params(_write(tmp_path, mutate))
    dapo = cfg.for_iteration("002").algorithm("002")
    assert dapo.eps_high == 0.3 and dapo.eps_low == 0.2 and dapo.reward_incorrect == -1.0
    assert cfg.algorithm("002").eps_high == 0.28
    assert cfg.for_iteration("002").sample.dynamic_sampling_rounds == 1


@pytest.mark.parametrize(("preset", "algorithm", "n"), [("gvm-raft", "raft++", 8),
                                                       ("gvm-grpo", "grpo", 8)])
def test_gvm_presets(tmp_path, preset, algorithm, n):
    import shutil

    from cotflow.presets import apply_preset

    params = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", params)
    apply_preset(params, [preset] * 3)
    cfg = load_params(params)
    for key in cfg.iterations:
        it = cfg.for_iteration(key)
        assert it.allocate.method == "gvm" and it.allocate.gvm.probe_n == 8
        assert it.algorithm(key).kind == algorithm and it.allocate.n == n
        assert it.allocate.budget == cfg.allocate.n * cfg.allocate.prompts_per_iteration
        assert it.train.lr == LR[algorithm]
        assert it.train.epochs == 1 and it.train.mini_batch_size == 8 * 1024 // 4  # 4 steps
    with pytest.raises(ConfigError, match="unknown"):
        apply_preset(params, ["nope"])


def _preset_params(tmp_path: Path, presets: list[str] | None = None, **overrides: dict) -> Path:
    """The micro params with iteration overrides, then `cotflow preset PRESETS` applied."""
    return preset_params_file(tmp_path / "params.yaml", micro_params(), presets, **overrides)


@pytest.fixture
def validations(monkeypatch) -> list[dict]:
    """What each PipelineConfig.model_validate call from here on got (the real one runs)."""
    calls: list[dict] = []
    real = PipelineConfig.model_validate

    def counting(raw, *args, **kwargs):
        calls.append(raw)
        return real(raw, *args, **kwargs)

    monkeypatch.setattr(PipelineConfig, "model_validate", counting)
    return calls


def test_a_stage_validates_the_base_and_its_own_overrides_once(tmp_path, validations):
    params = _preset_params(tmp_path, ["grpo", "grpo", "grpo"])  # every iteration has overrides
    validations.clear()
    base, cfg, key = stage_config("train", "2", params)
    assert key == "002" and len(validations) == 2  # was 1 + 3 + 1
    assert cfg.train.lr == LR["grpo"] and base.train.lr == micro_params()["train"]["lr"]

    validations.clear()
    stage_config("model", None, params)  # the first stage checks every iteration up front
    assert len(validations) == 4
    for later in ("data", "warmstart"):  # the base stages after it: params.yaml's own
        validations.clear()
        stage_config(later, None, params)
        assert len(validations) == 1
    validations.clear()
    load_params(params)
    assert len(validations) == 4


def test_an_iteration_without_overrides_validates_once(tmp_path, validations):
    params = _preset_params(tmp_path)
    validations.clear()
    base, cfg, _ = stage_config("verify", "001", params)
    assert cfg is base and len(validations) == 1


def test_a_stage_refuses_its_own_bad_override(tmp_path):
    params = _preset_params(tmp_path, **{"002": {"train": {"lr": "fast"}}})
    with pytest.raises(ConfigError, match=r"iterations\.002\.overrides: train\.lr"):
        stage_config("train", "002", params)
    with pytest.raises(ConfigError, match="iteration '009' is not in params.yaml"):
        stage_config("train", "9", params)
    assert read_params(params).train.lr == micro_params()["train"]["lr"]
