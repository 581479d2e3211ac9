"""In-process sampling with transformers' `generate` (KV cache, batched, seeded).

A prompt is text, or token ids read as they are (a prompt plus a partial completion, for
continuations: SPO's Monte Carlo values); the ids are padded like tokenized text."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from models.policy import load_policy
from models.sampler import Completion

log = logging.getLogger(__name__)


class HFSampler:
    def __init__(self, policy: Path, *, batch_size: int, threads: int) -> None:
        torch.set_num_threads(threads)
        self.model, self.tokenizer = load_policy(policy)
        # On a GPU machine `hf` samples there; on CPU nothing changes.
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device)
        self.batch_size = batch_size
        # On CPU a static KV cache writes each step in place where the default one
        # concatenates (half of the sampling time for the tiny model, measured): the same
        # tokens, 1.4x faster. Not compiled, and left to the default on GPUs, where a static
        # cache would make transformers compile the model.
        static = self.device.type == "cpu" and getattr(self.model, "_can_compile_fullgraph", False)
        self._cache = {"cache_implementation": "static", "disable_compile": True} if static else {}
        self._tokens = 0
        self._seconds = 0.0

    @property
    def tokens_per_s(self) -> float:
        return self._tokens / self._seconds if self._seconds else 0.0

    @torch.inference_mode()
    def generate(
        self, prompts: Sequence[str] | Sequence[Sequence[int]], *, max_new_tokens: int,
        temperature: float,
        top_p: float, seed: int, greedy: bool = False,
    ) -> list[Completion]:
        from tqdm import tqdm

        tok = self.tokenizer
        if len({isinstance(p, str) for p in prompts}) > 1:
            raise ValueError("prompts mix text and token ids: give one kind per call")
        torch.manual_seed(seed)
        out: list[Completion] = []
        starts = range(0, len(prompts), self.batch_size)
        for start in tqdm(starts, desc="generate", unit="batch", mininterval=5, leave=False):
            batch = list(prompts[start : start + self.batch_size])
            enc = (tok(batch, return_tensors="pt", padding=True) if isinstance(batch[0], str)
                   else tok.pad({"input_ids": [list(ids) for ids in batch]},
                                return_tensors="pt")).to(self.device)
            t0 = time.perf_counter()
            kwargs = {"do_sample": False} if greedy else {
                "do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0}
            kwargs |= self._cache
            gen = self.model.generate(
                **enc, max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id, **kwargs,
            )[:, enc["input_ids"].shape[1]:]
            self._seconds += time.perf_counter() - t0
            # The attention mask marks the real tokens: this drops the padding whichever
            # side it is on, also when <pad> and <eos> share an id.
            prompts_ids = [[i for i, m in zip(ids, mask, strict=True) if m]
                           for ids, mask in zip(enc["input_ids"].tolist(),
                                                enc["attention_mask"].tolist(), strict=True)]
            for prompt_ids, row in zip(prompts_ids, gen.tolist(), strict=True):
                out.append(self._completion(prompt_ids, row))
            self._tokens += sum(c.num_tokens for c in out[-len(batch):])
        log.info("generated %d completions at %.0f tokens/s", len(out), self.tokens_per_s)
        return out

    def _completion(self, prompt_ids: list[int], ids: list[int]) -> Completion:
        """Cut a generated row after its first <eos>: what follows is the batch's padding."""
        eos = self.tokenizer.eos_token_id
        finished = eos in ids
        n = ids.index(eos) + 1 if finished else len(ids)
        text = self.tokenizer.decode(ids[:n], skip_special_tokens=True)
        return Completion(text=text, token_ids=ids[:n], prompt_ids=prompt_ids,
                          finished=finished)
