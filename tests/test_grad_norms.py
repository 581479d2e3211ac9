"""Per-sample gradient norms equal a plain one-sample backward on the tiny model."""

from __future__ import annotations

import pytest
import torch

from cotflow.config import ModelConfig
from models.grad_norms import sample_grad_norms
from models.policy import build_tiny_policy
from models.torch_trainer import encode, text_example

TEXTS = [
    ("Tom has 3 apples and buys 4 more. How many?\n", "3 + 4 = 7. \\boxed{7}"),
    ("What is 12 + 5?\n", "12 + 5 = 17. \\boxed{17}"),
    ("Ann has 9 pens and gives away 2. How many are left?\n", "9 - 2 = 7. \\boxed{7}"),
    ("2 * 3?\n", "\\boxed{6}"),
    ("What is 12 + 5?\n", "12 + 5 = 18. 18 + 0 = 18. \\boxed{18}"),
]


def _examples(tok):
    return [text_example(tok, p, c) for p, c in TEXTS]


def _model(tied: bool):
    cfg = ModelConfig(name_or_path="tiny", hidden_size=32, intermediate_size=64, num_layers=2,
                      num_heads=2, max_position_embeddings=128)
    model, tok = build_tiny_policy(cfg, seed=3)
    if not tied:
        model.config.tie_word_embeddings = False
        model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())
    return model, tok


def _reference(model, tok, names: tuple[str, ...]) -> list[float]:
    """One forward/backward per sample with loss.backward(), reading .grad."""
    params = [p for n, p in model.named_parameters() if any(s in n for s in names)]
    out = []
    for ex in _examples(tok):
        ids, prompt_len = encode(ex, 128)
        x = torch.tensor([ids])
        model.zero_grad(set_to_none=True)
        logp = torch.log_softmax(model(input_ids=x).logits[0, :-1], -1)
        taken = logp.gather(-1, x[0, 1:, None]).squeeze(-1)
        (-taken[prompt_len - 1:].sum()).backward()
        out.append(sum(float(p.grad.pow(2).sum()) for p in params if p.grad is not None) ** 0.5)
    model.zero_grad(set_to_none=True)
    return out


@pytest.mark.parametrize("tied", [True, False])
def test_embedding_norms_match_one_sample_backward(tied):
    model, tok = _model(tied)
    assert (model.lm_head.weight is model.model.embed_tokens.weight) == tied
    model.train(False)
    want = _reference(model, tok, ("embed_tokens",))
    got = sample_grad_norms(model, tok.pad_token_id, _examples(tok), batch_size=3, max_len=128)
    assert got == pytest.approx(want, rel=1e-4)
    assert len(set(round(v, 4) for v in got)) == len(got)  # distinct: not a constant
    assert all(p.grad is None for p in model.parameters())


def test_other_subset_uses_one_backward_per_sample():
    model, tok = _model(True)
    model.train(False)
    names = ("layers.1.mlp", "norm.weight")
    want = _reference(model, tok, names)
    got = sample_grad_norms(model, tok.pad_token_id, _examples(tok), param_names=names,
                            max_len=128)
    assert got == pytest.approx(want, rel=1e-5)


def test_unknown_subset_is_named():
    model, tok = _model(True)
    with pytest.raises(ValueError, match="match no parameter"):
        sample_grad_norms(model, tok.pad_token_id, _examples(tok), param_names=("nope",),
                          max_len=128)
