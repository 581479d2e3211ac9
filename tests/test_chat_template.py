"""Prompts and chat templates (models/prompts.py): with a BPE tokenizer and its ChatML
template, the ids the hf sampler conditions on are the ids the warm start and the train
stage train on; the plain template is today's text; validation refuses what cannot work.
Everything is built here, offline: a BPE trained on a few sentences and a tiny Llama."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cotflow.config import ConfigError, PipelineConfig, load_params
from tests.conftest import micro_params

CHATML = ("{{ bos_token }}{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
          "{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
SYSTEM = "You are a careful solver."
BOXED = "{question}\nPlease reason step by step, and put your final answer within \\boxed{}."
QUESTION = "Tom has 3 apples and buys 4 more. How many apples does he have?"


def bpe_tokenizer(chat_template: str | None):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        [QUESTION, SYSTEM, BOXED, "The answer is 7.", "Please reason step by step.",
         "user assistant system"] * 4,
        trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    # Plain text gets its <s> from the tokenizer, as the tiny model's does.
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", unk_token="<unk>", padding_side="left")
    fast.chat_template = chat_template
    return fast


def save_policy(path: Path, chat_template: str | None = CHATML) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = bpe_tokenizer(chat_template)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                         max_position_embeddings=256, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def chat_config(tmp_path: Path, policy: Path, **data) -> PipelineConfig:
    raw = micro_params(
        model={"name_or_path": str(policy)},
        data={"chat_template": True, "system_prompt": SYSTEM, "prompt_template": BOXED,
              **data})
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_params(path)


@pytest.fixture(scope="module")
def policy(tmp_path_factory) -> Path:
    return save_policy(tmp_path_factory.mktemp("chat") / "policy")


def test_training_ids_are_the_sampled_ids(tmp_path, policy):
    from cotflow.recipes.base import rollout_example
    from cotflow.rollouts import rollouts
    from models.drawing import draw
    from models.policy import load_policy
    from models.prompts import PromptFormat
    from tasks.warmstart import question_examples

    cfg = chat_config(tmp_path, policy)
    cfg = cfg.model_copy(update={"sample": cfg.sample.model_copy(update={"max_new_tokens": 3})})
    rows, _ = draw(cfg, {"p0": {"question": QUESTION}}, policy, [("p0", 2)], seed=0,
                   where=tmp_path / "allocation.parquet")
    sampled = [r["prompt_ids"] for r in rows]
    _, tokenizer = load_policy(policy, for_training=True)  # as the warm start loads it
    warm = question_examples(cfg, tokenizer, [(QUESTION, "The answer is 7.")])[0]
    samples = {k: [r[k] for r in rows] for k in rows[0]}
    verdicts = {"prompt_id": samples["prompt_id"], "sample_idx": samples["sample_idx"],
                "reward": [1.0, 0.0], "extracted": ["7", None]}
    trained = [rollout_example(r).prompt_ids for r in rollouts(samples, verdicts)]
    want = PromptFormat(cfg.data, tokenizer).ids(QUESTION)
    assert sampled == [want, want]
    assert list(warm.prompt_ids) == want and [list(t) for t in trained] == [want, want]
    # The template wrote <s> itself: tokenizing the rendered text added no second one.
    assert want.count(tokenizer.bos_token_id) == 1 and want[0] == tokenizer.bos_token_id
    assert rows[0]["prompt"] == tokenizer.decode(want)


def test_the_rendered_prompt_has_the_system_turn_and_the_generation_prompt(tmp_path, policy):
    from models.prompts import policy_prompts

    cfg = chat_config(tmp_path, policy)
    text = policy_prompts(cfg.data, policy).text(QUESTION)
    assert text == (f"<s><|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{QUESTION}\n"
                    "Please reason step by step, and put your final answer within \\boxed{}."
                    "<|im_end|>\n<|im_start|>assistant\n")
    no_system = policy_prompts(chat_config(tmp_path, policy, system_prompt=None).data, policy)
    assert "system" not in no_system.text(QUESTION)


def test_the_plain_template_is_todays_text(tmp_path):
    from models.prompts import PromptFormat
    from models.tokenizer import build_char_tokenizer

    cfg = load_params(Path(__file__).parent / "data" / "params.micro.yaml")
    tok = build_char_tokenizer()
    fmt = PromptFormat(cfg.data, tok)
    assert fmt.text("1+2?") == "1+2?\n" and fmt.for_sampler(["1+2?\n"]) == ["1+2?\n"]
    assert fmt.ids("1+2?") == tok("1+2?\n")["input_ids"]  # <bos> added by the tokenizer
    # The paper's instruction as written in params.yaml: its braces need no escaping.
    raw = yaml.safe_load('t: "{question}\\nPlease reason step by step, and put your final '
                         'answer within \\\\boxed{}."')["t"]
    boxed = PromptFormat(cfg.data.model_copy(update={"prompt_template": raw}))
    assert raw == BOXED and boxed.text("{x}?") == BOXED.replace("{question}", "{x}?")


@pytest.mark.parametrize(
    ("data", "model", "needle"),
    [({"chat_template": True}, {}, "data.chat_template: the tiny model"),
     ({"system_prompt": SYSTEM}, {}, "data.system_prompt needs data.chat_template: true")])
def test_params_refuse_what_has_no_chat(tmp_path, data, model, needle):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(micro_params(data=data, model=model), sort_keys=False))
    with pytest.raises(ConfigError, match=needle):
        load_params(path)


def test_validate_refuses_a_tokenizer_without_a_chat_template(tmp_path, capsys, monkeypatch):
    from cotflow.cli import main

    save_policy(tmp_path / "plain-model", chat_template=None)
    raw = micro_params(model={"name_or_path": "plain-model"}, data={"chat_template": True})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    monkeypatch.delenv("COTFLOW_DEBUG", raising=False)
    assert main(["--root", str(tmp_path), "validate"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "data.chat_template: the tokenizer of model.name_or_path 'plain-model' has no " \
           "chat template" in last, last


def test_critique_prompts_are_user_messages_counted_in_ids(tmp_path, policy):
    from models.critic import check_prompt_room
    from models.prompts import policy_prompts

    fmt = policy_prompts(chat_config(tmp_path, policy).data, policy)
    rendered = [fmt.render("Question: 3+4? Your answer: 8. Critique: Wrong. Try again.")]
    inputs = fmt.for_sampler(rendered)
    assert rendered[0].endswith("<|im_start|>assistant\n") and inputs == fmt.encode(rendered)
    assert check_prompt_room(policy, inputs, ["r0"], new_tokens=8, what="w") == [len(inputs[0])]
    with pytest.raises(ValueError, match="the refinement prompt of r0 is"):
        check_prompt_room(policy, inputs, ["r0"], new_tokens=256, what="the refinement prompt")
