"""The papers' training regime around the formulas (issue: foundation v2, points 1-7).

Each test names the point it covers; each failed on the code before recipes: 256 off-policy
steps per iteration, an EOS appended to cut-off completions, DAPO's filter on shaped
rewards, RAFT++ without KL, re-tokenised text, per-micro-batch means and a full step for a
leftover, and AdamW at betas (0.9, 0.98) without weight decay.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from cotflow.config import ModelConfig, load_params
from cotflow.presets import iterations_for
from cotflow.recipes import recipe_for
from cotflow.recipes.base import Example, Inputs, StepSize, TokenBatch
from cotflow.rollouts import Rollout
from models.steps import plan_steps
from models.torch_trainer import collate, encode, make_optimizer, train_policy

ROOT = Path(__file__).resolve().parents[1]
EOS = 2


def _settings(name: str, **updates):
    cfg = load_params(ROOT / "params.yaml")
    return cfg.algorithms[name].model_copy(update=updates)


def _rollout(pid: str, idx: int, reward: float, completion_ids: tuple[int, ...], *,
             finished: bool = True, extracted: str | None = "1") -> Rollout:
    return Rollout(pid, idx, "q\n", "text", (1, 7, 8), completion_ids, finished, reward,
                   extracted)


class NoServices:
    def equivalent(self, pairs):
        raise AssertionError("not needed")

    def completion_logprobs(self, rows):
        raise AssertionError("not needed")


def _plan(name: str, rows: list[Rollout], **updates):
    s = _settings(name, **updates)
    return recipe_for(s.kind).plan(s, Inputs(rows, {"prompt_id": [], "chosen_idx": [],
                                                    "rejected_idx": []},
                                             max_new_tokens=8, dedup=False,
                                             services=NoServices()))


# 1. Optimizer steps per rollout batch: the papers' ratio, reported per iteration.
@pytest.mark.parametrize(("preset", "steps"), [("raft++", 4), ("grpo", 4), ("dr-grpo", 1),
                                              ("seed-grpo", 1), ("dapo", 16), ("nft", 16),
                                              ("gvm-grpo", 4)])
def test_presets_take_the_papers_steps_per_rollout_batch(preset, steps):
    cfg = load_params(ROOT / "params.yaml")
    its = iterations_for(cfg, [preset])
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["iterations"] = its
    from cotflow.config import PipelineConfig

    it_cfg = PipelineConfig.model_validate(raw).for_iteration("001")
    n = it_cfg.allocate.prompts_per_iteration * it_cfg.allocate.n
    t = it_cfg.train
    plan = plan_steps([[i] for i in range(n)], epochs=t.epochs,
                      mini_batch_size=t.mini_batch_size, micro_batch_size=t.micro_batch_size,
                      seed=0)
    assert len(plan) == steps
    assert n == 8192  # params.yaml's budget, 8 samples per prompt


def test_leftover_examples_get_no_optimizer_step_of_their_own():
    # 13 examples in mini-batches of 4: three steps of 5, 4, 4 — never a step of 1.
    plan = plan_steps([[i] for i in range(13)], epochs=1, mini_batch_size=4,
                      micro_batch_size=2, seed=0)
    sizes = [sum(len(m) for m in step[0]) for step in plan]
    assert sorted(sizes) == [4, 4, 5]
    assert sorted(i for step in plan for m in step[0] for i in m) == list(range(13))
    # Every rank gets the same number of micro-batches in every step (DeepSpeed's lockstep).
    two = plan_steps([[i] for i in range(13)], epochs=2, mini_batch_size=4,
                     micro_batch_size=2, seed=0, ranks=2)
    assert {len(share) for step in two for share in step} == {2}
    assert len(two) == 6


def test_units_stay_in_one_micro_batch():
    units = [[2 * i, 2 * i + 1] for i in range(5)]
    plan = plan_steps(units, epochs=1, mini_batch_size=2, micro_batch_size=1, seed=3)
    for step in plan:
        for micro in step[0]:
            assert len(micro) % 2 == 0 and all(micro[k] + 1 == micro[k + 1]
                                               for k in range(0, len(micro), 2))


# 2 and 5. Train on the sampled token ids; an unfinished completion gets no EOS.
def test_examples_are_the_sampled_ids_and_a_cut_off_completion_has_no_eos():
    rows = [_rollout("a", 0, 1.0, (5, 9, 9, EOS)),
            _rollout("a", 1, 1.0, (5, 6, 6, 6), finished=False)]
    plan = _plan("raft", rows)
    got = [encode(ex, 64)[0] for ex in plan.examples]
    assert got == [[1, 7, 8, 5, 9, 9, EOS], [1, 7, 8, 5, 6, 6, 6]]
    batch = collate([encode(ex, 64) for ex in plan.examples], [0, 1], pad_id=0)
    # The loss covers exactly the four completion tokens of each row, no appended EOS.
    assert batch.response_mask.sum(dim=1).tolist() == [4.0, 4.0]
    assert batch.input_ids[1].tolist() == [1, 7, 8, 5, 6, 6, 6]


def test_sampled_ids_are_trained_even_where_text_would_tokenise_differently():
    # A BPE tokenizer may sample "ab" as [a][b] and encode the text "ab" as [ab]: the
    # example must keep [a][b]. Ids here are arbitrary: nothing re-tokenises them.
    row = _rollout("p", 0, 1.0, (40, 41, EOS))
    ex = _plan("raft++", [row]).examples[0]
    assert ex.completion_ids == (40, 41, EOS) and ex.prompt_ids == (1, 7, 8)


# 3. DAPO filters groups on accuracy, not on the shaped reward.
def test_dapo_drops_an_all_correct_group_with_one_overlong_reply():
    overlong = (3,) * 8  # cut at max_new_tokens 8: shaped reward 1 - 1 = 0, the others 0.75
    rows = [_rollout("all", i, 1.0, (3, EOS)) for i in range(7)]
    rows.append(_rollout("all", 7, 1.0, overlong, finished=False))
    rows += [_rollout("mixed", i, float(i < 2), (3, EOS)) for i in range(4)]
    plan = _plan("dapo", rows)
    assert {ex.completion_ids for ex in plan.examples} == {(3, EOS)}
    assert plan.stats["groups_kept"] == 1 and len(plan.examples) == 4
    # Without the filter, std normalisation turns the length penalty into full advantages.
    unfiltered = _plan("dapo", rows, drop_uniform_groups=False)
    advs = [ex.advantage for ex in unfiltered.examples[:8]]
    assert advs[-1] == pytest.approx(-2.4748, abs=1e-3)
    assert advs[:7] == pytest.approx([0.35355] * 7, abs=1e-4)


def test_dapo_and_the_refill_count_the_same_groups():
    from cotflow.rollouts import mixed_prompts

    rows = [_rollout("p", i, r, (3, EOS)) for i, r in enumerate([1.0, 1.0, 0.0])]
    rows += [_rollout("q", i, 1.0, (3, EOS)) for i in range(3)]
    assert mixed_prompts(rows) == {"p"}


# 4. RAFT++ carries the k3 KL term (0.001 by default, as Minimal-RL and GVM).
def test_raft_plus_plus_has_k3_kl_at_0_001():
    s = _settings("raft++")
    assert s.kl_coef == pytest.approx(1e-3) and s.reference == "base"  # the frozen start
    plan = _plan("raft++", [_rollout("a", 0, 1.0, (3, EOS)), _rollout("a", 1, 0.0, (4, EOS))])
    assert plan.reference == "base" and [ex.advantage for ex in plan.examples] == [1.0, 0.0]
    lp = torch.tensor([[-1.0, -2.0], [-0.5, -1.5]], requires_grad=True)
    ref = torch.tensor([[-1.5, -2.0], [-0.5, -0.5]])
    mask = torch.ones(2, 2)
    loss, _ = plan.objective(TokenBatch(
        logprobs=lp, logits=torch.zeros(2, 2, 3), mask=mask,
        advantages=torch.tensor([1.0, 0.0]), step=StepSize(4, 2, 2),
        old_logprobs=lp.detach(), ref_logprobs=ref))
    d = ref - lp.detach()
    k3 = (torch.exp(d) - d - 1).sum()
    # ρ = 1: surrogate -A per token: (-1 -1 + 0 + 0) / 4, plus 0.001 · Σ k3 / 4.
    assert float(loss.detach()) == pytest.approx((-2.0 + 1e-3 * float(k3)) / 4, rel=1e-6)


# 6. Aggregation over the whole step, whatever the micro-batches (and ranks).
def _model():
    from models.policy import build_tiny_policy

    cfg = ModelConfig(name_or_path="tiny", hidden_size=32, intermediate_size=64, num_layers=2,
                      num_heads=2, max_position_embeddings=64)
    return build_tiny_policy(cfg, seed=5)[0]


def _examples() -> list[Example]:
    lengths = [1, 7, 2, 12, 3, 5, 9, 4]  # unequal: a mean of micro-batch means differs
    return [Example((1, 10 + i), (*range(20, 20 + n), EOS),
                    advantage=1.0 if i % 2 == 0 else -0.5,
                    extras={"correct": float(i % 2 == 0), "r_hat": 0.5})
            for i, n in enumerate(lengths)]


def _step_stats(objective, micro: int, *, old: bool) -> dict[str, float]:
    torch.manual_seed(0)
    model = _model()
    examples = _examples()
    olds = None
    if old:
        from models.torch_trainer import stage_start_logprobs

        olds = stage_start_logprobs(model, 0, examples, micro_batch_size=8, max_len=64)
    return train_policy(model, 0, examples, objective, old=olds, ref=None, epochs=1,
                        mini_batch_size=8, micro_batch_size=micro, lr=1e-3, warmup_steps=0,
                        betas=(0.9, 0.999), weight_decay=0.0, max_grad_norm=1e9, seed=1,
                        max_len=64)


@pytest.mark.parametrize(("name", "updates"), [
    ("dapo", {}),  # token-mean
    ("grpo", {"kl_coef": 0.0}),  # seq-mean-token-mean
    ("dr-grpo", {}),  # seq-mean-token-sum-norm
    ("nft", {}),  # Σ / 1000
    ("raft", {}),
])
def test_grad_accum_1_and_4_give_the_same_step(name, updates):
    from cotflow.recipes import grpo

    s = _settings(name, **updates)
    objective = (grpo.objective(s, 16.0) if s.kind == "grpo"
                 else _plan(name, [_rollout("a", 0, 1.0, (3, EOS))]).objective)
    one = _step_stats(objective, 8, old=s.kind != "raft")
    four = _step_stats(objective, 2, old=s.kind != "raft")
    assert one["optimizer_steps"] == four["optimizer_steps"] == 1
    assert four["micro_batches"] == 4
    assert four["loss"] == pytest.approx(one["loss"], rel=1e-5)
    assert four["grad_norm"] == pytest.approx(one["grad_norm"], rel=1e-4)


def test_dpo_pairs_step_is_a_mean_over_the_steps_pairs():
    s = _settings("dpo", nll_coef=0.0)  # plain DPO: ln 2 at the reference
    rows = [_rollout("a", 0, 1.0, (3, 4, EOS)), _rollout("a", 1, 0.0, (5, EOS)),
            _rollout("b", 0, 1.0, (6, EOS)), _rollout("b", 1, 0.0, (7, 8, 9, EOS))]
    judgements = {"prompt_id": ["a", "b"], "chosen_idx": [0, 0], "rejected_idx": [1, 1]}
    plan = recipe_for("dpo").plan(s, Inputs(rows, judgements, max_new_tokens=8, dedup=False,
                                            services=NoServices()))
    assert plan.units == [[0, 1], [2, 3]]

    def run(micro: int) -> dict[str, float]:
        from models.torch_trainer import stage_start_logprobs

        model = _model()
        olds = stage_start_logprobs(model, 0, plan.examples, micro_batch_size=4, max_len=64)
        return train_policy(model, 0, plan.examples, plan.objective, units=plan.units,
                            old=olds, ref=None, epochs=1, mini_batch_size=2,
                            micro_batch_size=micro, lr=1e-3, warmup_steps=0,
                            betas=(0.9, 0.999), weight_decay=0.0, max_grad_norm=1e9, seed=1,
                            max_len=64)

    whole, split = run(2), run(1)
    assert whole["loss"] == pytest.approx(0.6931472, rel=1e-5)  # ln 2 at π = π_ref
    assert split["grad_norm"] == pytest.approx(whole["grad_norm"], rel=1e-4)


# 7. AdamW as the specs: betas (0.9, 0.999), weight decay 0.01 (NFT 0.1), configurable.
def test_adamw_settings_follow_the_specs_and_params():
    cfg = load_params(ROOT / "params.yaml")
    assert cfg.train.betas == [0.9, 0.999] and cfg.train.weight_decay == pytest.approx(0.01)
    opt = make_optimizer(_model(), lr=1e-5, betas=cfg.train.betas,
                         weight_decay=cfg.train.weight_decay)
    group = opt.param_groups[0]
    assert group["betas"] == (0.9, 0.999) and group["weight_decay"] == pytest.approx(0.01)
    nft = iterations_for(cfg, ["nft"])["001"]["overrides"]["train"]
    assert nft["weight_decay"] == pytest.approx(0.1)
