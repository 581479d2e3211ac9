"""Sampling from any OpenAI-compatible completions server (vLLM, SGLang, `transformers serve`).

Requests go out `serving.concurrency` at a time. Connection errors, timeouts, 408, 429 and
5xx are retried with exponential backoff and jitter; any other 4xx means the request itself
is wrong and fails at once with the server's answer. A run of identical prompts becomes one
request with `n`; a server that ignores `n` (answers one choice) or refuses it is asked n
times instead, decided once by the first such request. Each request carries a seed derived
from (stage seed, prompt run, copy), so a server that honours seeds repeats itself.

Token ids: requests ask for `"return_token_ids": true` (vLLM >= 0.10.2), and vLLM answers
each choice with `token_ids` (the generated ids as sampled, its stop token included) and
`prompt_token_ids` (vLLM's tests/entrypoints/openai/test_return_token_ids.py). A server
that ignores the field gets the fallback: the prompt and the text are re-tokenised with the
policy's tokenizer and <eos> is appended iff the choice finished. A server that refuses the
field (`transformers serve` answers 422 naming it) is asked without it from then on, and gets
the same fallback. A re-tokenisation can differ from what was sampled (a BPE text has more
than one spelling in ids), so prefer a server that returns ids when training on them.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from models.sampler import Completion

log = logging.getLogger(__name__)
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class SamplerError(RuntimeError):
    """The server could not be reached or answered something unusable."""


def request_seed(seed: int, run: int, copy: int) -> int:
    return random.Random(f"{seed}:{run}:{copy}").randrange(2**31)


Prompt = str | tuple[int, ...]


def prompt_runs(prompts: Sequence[str] | Sequence[Sequence[int]]) -> list[tuple[int, Prompt, int]]:
    """(start index, prompt, count) for each run of consecutive identical prompts; token-id
    prompts come back as tuples."""
    runs: list[tuple[int, Prompt, int]] = []
    for i, p in enumerate(prompts):
        p = p if isinstance(p, str) else tuple(p)
        if runs and runs[-1][1] == p and runs[-1][0] + runs[-1][2] == i:
            start, _, count = runs[-1]
            runs[-1] = (start, p, count + 1)
        else:
            runs.append((i, p, 1))
    return runs


class OpenAISampler:
    def __init__(self, policy: Path, *, batch_size: int, threads: int, serving: Any,
                 base_url: str | None = None, model: str | None = None,
                 backoff_s: float = 1.0) -> None:
        import httpx

        url = base_url or serving.url
        if not url:
            raise SamplerError("the openai backend needs serving.url")
        self.url = url.rstrip("/") + "/completions"
        self.policy = Path(policy)
        # With no name given, ask for the stage's checkpoint by path: `transformers serve`
        # loads it on demand, so every stage samples its own policy.
        self.model = model or serving.model or str(self.policy.resolve())
        self.extra_body = dict(serving.extra_body)
        self.concurrency = serving.concurrency
        self.max_retries = serving.max_retries
        self.backoff_s = backoff_s
        self.supports_n: bool | None = None
        # Ask for token ids until the server refuses the field (extra_body may decide).
        self.ask_ids = "return_token_ids" not in self.extra_body
        self._client = httpx.Client(timeout=serving.timeout_s,
                                    limits=httpx.Limits(max_connections=serving.concurrency))
        # Token-id prompts go as arrays of ids until the server refuses one; then as text.
        self.ids_prompts = True
        self._tokenizer = None
        self._lock = threading.Lock()
        self._tokens = 0
        self._seconds = 0.0
        self.requests = 0

    @property
    def tokens_per_s(self) -> float:
        return self._tokens / self._seconds if self._seconds else 0.0

    def close(self) -> None:
        self._client.close()

    def generate(
        self, prompts: Sequence[str] | Sequence[Sequence[int]], *, max_new_tokens: int,
        temperature: float, top_p: float, seed: int, greedy: bool = False,
    ) -> list[Completion]:
        """Text prompts, or token-id prompts (the completions API's array-of-ids `prompt`,
        which vLLM reads as ids without re-tokenising: SPO's continuations)."""
        t0 = time.perf_counter()
        params = {"max_tokens": max_new_tokens, "temperature": 0.0 if greedy else temperature,
                  "top_p": 1.0 if greedy else top_p}
        runs = prompt_runs(prompts)
        out: list[Completion | None] = [None] * len(prompts)
        # (run index, copy index, n): one request each.
        jobs = [(r, 0, count) for r, (_, _, count) in enumerate(runs)]
        if greedy:  # identical anyway; n>1 with temperature 0 is refused by some servers
            jobs = [(r, j, 1) for r, (_, _, count) in enumerate(runs) for j in range(count)]
        if self.supports_n is None:
            probe = next((i for i, job in enumerate(jobs) if job[2] > 1), None)
            if probe is not None:
                jobs = self._probe(jobs, probe, runs, params, seed, out)
        if not self.supports_n:
            jobs = [(r, c + j, 1) for r, c, n in jobs for j in range(n)]

        def work(job: tuple[int, int, int]) -> None:
            self._fill(job, runs, params, seed, out)

        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            for _ in pool.map(work, jobs):  # re-raises the first failure
                pass
        done = [c for c in out if c is not None]
        assert len(done) == len(prompts)
        with self._lock:
            self._seconds += time.perf_counter() - t0
        log.info("%d completions in %d requests at %.0f tokens/s", len(done), self.requests,
                 self.tokens_per_s)
        return done

    def _probe(self, jobs, index, runs, params, seed, out) -> list[tuple[int, int, int]]:
        """Send one n>1 request; learn whether the server honours n; return what is left."""
        r, c, n = jobs[index]
        try:
            got = self._fill((r, c, n), runs, params, seed, out, probing=True)
        except SamplerError as err:
            if "HTTP 4" not in str(err):
                raise
            log.info("server refused n=%d (%s): asking n times", n, str(err)[:200])
            got = 0
        self.supports_n = got == n
        if not self.supports_n:
            log.info("server answered %d choice(s) for n=%d: asking once per completion", got, n)
        rest = jobs[:index] + jobs[index + 1:]
        return rest + ([(r, c + got, n - got)] if got < n else [])

    def _fill(self, job, runs, params, seed, out, probing: bool = False) -> int:
        r, copy, n = job
        start, prompt, _ = runs[r]
        body = {**self.extra_body, "model": self.model, "prompt": self._prompt(prompt),
                **params, "seed": request_seed(seed, r, copy)}
        if n > 1:
            body["n"] = n
        try:
            answer = self._post_asking_ids(body)
        except SamplerError as err:
            # A server that takes text only (`transformers serve`: "prompt must be a
            # string") gets the ids decoded, from then on.
            if isinstance(body["prompt"], str) or "HTTP 4" not in str(err) or (
                    "prompt" not in str(err)):
                raise
            log.info("server refused a token-id prompt (%s): sending decoded text",
                     str(err)[:200])
            self.ids_prompts = False
            body["prompt"] = self._prompt(prompt)
            answer = self._post_asking_ids(body)
        choices = answer.get("choices")
        if not isinstance(choices, list) or not choices:
            raise SamplerError(f"{self.url}: answer without choices: {str(answer)[:300]}")
        choices = sorted(choices, key=lambda ch: ch.get("index", 0))
        if len(choices) > n or (len(choices) < n and not probing):
            raise SamplerError(f"{self.url}: asked for n={n}, got {len(choices)} choices")
        tokens = 0
        for k, ch in enumerate(choices):
            text, reason = ch.get("text"), ch.get("finish_reason")
            if not isinstance(text, str):
                raise SamplerError(f"{self.url}: choice {k} has no text: {str(ch)[:300]}")
            finished = reason == "stop"
            ids = self._ids(ch, "token_ids")
            if ids is None:
                ids = self._encode(text, special=False)
                ids += [self._tokenizer.eos_token_id] if finished else []
            # vLLM puts the prompt's ids on each choice; accept them at the top level too.
            prompt_ids = self._ids(ch, "prompt_token_ids") or self._ids(answer,
                                                                        "prompt_token_ids")
            if prompt_ids is None:
                sent = body["prompt"]
                prompt_ids = (self._encode(sent, special=True) if isinstance(sent, str)
                              else list(sent))
            out[start + copy + k] = Completion(text=text, token_ids=ids, prompt_ids=prompt_ids,
                                               finished=finished)
            tokens += len(ids)
        with self._lock:
            self._tokens += tokens
        return len(choices)

    def _post_asking_ids(self, body: dict[str, Any]) -> dict[str, Any]:
        """`_post` with `return_token_ids` while the server takes it; once it refuses the
        field by name, without it for this request and every later one."""
        if not self.ask_ids:
            return self._post(body)
        try:
            return self._post({**body, "return_token_ids": True})
        except SamplerError as err:
            if "HTTP 4" not in str(err) or "return_token_ids" not in str(err):
                raise
            if self.ask_ids:
                log.info("server refused return_token_ids (%s): re-tokenising its text",
                         str(err)[:200])
            self.ask_ids = False
        return self._post(body)

    def _ids(self, obj: dict[str, Any], key: str) -> list[int] | None:
        """`obj[key]` when the server sent a list of ids there; None when it sent nothing."""
        ids = obj.get(key)
        if ids is None:
            return None
        if not (isinstance(ids, list) and all(type(i) is int for i in ids)):
            raise SamplerError(f"{self.url}: {key} is not a list of token ids: {str(ids)[:300]}")
        return ids

    def _prompt(self, prompt: Prompt) -> str | list[int]:
        """What a request's `prompt` holds: the text, or the ids while the server takes
        them, else the ids decoded (specials dropped: the server adds its own <bos>; a
        re-tokenisation of the text can differ from the ids for a BPE vocabulary)."""
        if isinstance(prompt, str):
            return prompt
        if self.ids_prompts:
            return list(prompt)
        with self._lock:
            self._load_tokenizer()
            return self._tokenizer.decode(list(prompt), skip_special_tokens=True)

    def _load_tokenizer(self) -> None:
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(str(self.policy))

    def _encode(self, text: str, *, special: bool) -> list[int]:
        """The policy tokenizer's ids of `text`; `special` adds what it adds to a prompt
        (<bos>). Under the lock: a fast tokenizer is not safe to share across threads."""
        with self._lock:
            self._load_tokenizer()
            return list(self._tokenizer(text, add_special_tokens=special)["input_ids"])

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        import httpx

        last = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(min(self.backoff_s * 2 ** (attempt - 1), 60) * random.uniform(0.5, 1))
            with self._lock:
                self.requests += 1
            try:
                resp = self._client.post(self.url, json=body)
            except httpx.TransportError as err:  # connection refused/reset, timeouts
                last = f"{type(err).__name__}: {err}"
                continue
            if resp.status_code == 200:
                try:
                    return resp.json()
                except ValueError:
                    raise SamplerError(f"{self.url}: answer is not JSON: "
                                       f"{resp.text[:300]!r}") from None
            last = f"HTTP {resp.status_code}: {resp.text[:500]}"
            if resp.status_code not in RETRY_STATUS:
                raise SamplerError(f"{self.url}: {last}")
        raise SamplerError(f"{self.url}: failed after {self.max_retries + 1} attempts "
                           f"(serving.max_retries={self.max_retries}); last: {last}")
