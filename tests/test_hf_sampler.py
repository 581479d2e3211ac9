"""models/hf_sampler.py's static KV cache on CPU: the tokens the default cache gives, greedy
and sampled, for text prompts and for token-id prompts of unequal lengths (left padding)."""

from __future__ import annotations

from cotflow.config import ModelConfig
from models.hf_sampler import HFSampler
from models.policy import build_tiny_policy, save_policy
from tests.conftest import micro_params


def test_the_static_cache_gives_the_default_caches_tokens(tmp_path):
    model, tokenizer = build_tiny_policy(ModelConfig(**micro_params()["model"]), seed=0)
    save_policy(model, tokenizer, tmp_path / "policy")
    sampler = HFSampler(tmp_path / "policy", batch_size=8, threads=1)
    assert sampler._cache == {"cache_implementation": "static", "disable_compile": True}
    prompts = [f"What is {i} plus {3 * i}?\n" for i in range(12)]
    ids = [tokenizer(p)["input_ids"][: 5 + i] for i, p in enumerate(prompts)]
    drawn = {}
    for name, cache in (("static", dict(sampler._cache)), ("default", {})):
        sampler._cache = cache
        drawn[name] = [[c.token_ids for c in sampler.generate(
            batch, max_new_tokens=12, temperature=1.0, top_p=1.0, seed=3, greedy=greedy)]
            for batch in (prompts, ids) for greedy in (True, False)]
    assert drawn["static"] == drawn["default"]
    assert any(len(t) == 12 for runs in drawn["static"] for t in runs)  # some ran to the cap
