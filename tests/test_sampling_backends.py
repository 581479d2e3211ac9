"""The openai and vllm sampling backends against a real OpenAI-compatible server here:
`transformers serve` (extra `serving`) on the warm-started tiny model, started through the
same managed launcher that starts `vllm serve` on GPU nodes."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import httpx
import psutil
import pytest
import yaml

from cotflow.config import ConfigError, load_params
from cotflow.records import read_table
from cotflow.workspace import make_workspace
from models.openai_sampler import OpenAISampler, SamplerError, prompt_runs, request_seed
from models.policy import load_policy
from models.server import ManagedServer, ServerError, free_port, render_command
from tasks.common import iteration_layout, run_base, run_stage
from tests.conftest import micro_params

pytest.importorskip("openai", reason="transformers serve needs the `serving` extra")
pytest.importorskip("accelerate", reason="transformers serve needs the `serving` extra")

SERVE = f"{sys.executable} -m transformers.cli.transformers serve"
# transformers serve samples only when told to; top_k 0 = no top-k cut, as the hf backend.
SAMPLE_ON = {"generation_config": json.dumps({"do_sample": True, "top_k": 0})}


def _serving(**kw):
    base = micro_params()["serving"]
    base.update(extra_body=SAMPLE_ON, concurrency=4, timeout_s=60, max_retries=2)
    base.update(kw)
    return SimpleNamespace(**base)


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    root = make_workspace(tmp_path_factory.mktemp("ws"),
                          micro_params(tracking={"enabled": False}))
    run_base(root, root / "params.yaml")
    run_stage("allocate", "1", root, root / "params.yaml")
    return root


@pytest.fixture(scope="module")
def server(ws):
    """transformers serve with no model pinned: it loads whatever path a request names."""
    port = free_port()
    argv = render_command(SERVE + " --host {host} --port {port} --device cpu",
                          {"host": "127.0.0.1", "port": port})
    with ManagedServer(argv, host="127.0.0.1", port=port, startup_timeout_s=120,
                       log_path=ws / "logs" / "serve.log",
                       env={**os.environ, "OMP_NUM_THREADS": "1"}) as url:
        yield url


def _set_params(ws: Path, **sections) -> None:
    raw = yaml.safe_load((ws / "params.yaml").read_text())
    for name, values in sections.items():
        raw[name].update(values)
    (ws / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


def _sample_and_verify(ws: Path) -> tuple[dict, dict]:
    run_stage("sample", "1", ws, ws / "params.yaml")
    run_stage("verify", "1", ws, ws / "params.yaml")
    it = iteration_layout(load_params(ws / "params.yaml"), ws, "001")
    return read_table(it.samples, "samples"), read_table(it.verdicts, "verdicts")


def test_openai_and_vllm_backends_feed_verify_like_hf(ws, server):
    _set_params(ws, sample={"backend": "hf"})
    hf, hf_verdicts = _sample_and_verify(ws)
    _set_params(ws, sample={"backend": "openai"},
                serving={"url": server, "extra_body": SAMPLE_ON, "concurrency": 4})
    oa, oa_verdicts = _sample_and_verify(ws)
    command = SERVE + " {model} --host {host} --port {port} --device cpu"
    _set_params(ws, sample={"backend": "vllm"},
                serving={"launch": {**micro_params()["serving"]["launch"], "command": command,
                                    "startup_timeout_s": 120}})
    vl, vl_verdicts = _sample_and_verify(ws)
    tok = load_policy(ws / "artifacts" / "base" / "policy")[1]
    for samples in (hf, oa, vl):
        _assert_ids_match_text(tok, samples)
    for samples, verdicts in ((oa, oa_verdicts), (vl, vl_verdicts)):
        assert samples["prompt_ids"] == hf["prompt_ids"]
        # Same prompts, same number of completions per prompt, in the same order.
        for col in ("prompt_id", "sample_idx", "prompt"):
            assert samples[col] == hf[col]
        assert all(0 < n <= 32 for n in samples["num_tokens"])
        assert verdicts["prompt_id"] == samples["prompt_id"]
        assert set(verdicts["verdict"]) <= {"correct", "incorrect", "unparseable", "timeout"}
        # The warm-started model answers in the trained format through the server too.
        assert sum(v != "unparseable" for v in verdicts["verdict"]) > len(hf["prompt"]) // 2
        assert sum(samples["finished"]) > len(hf["prompt"]) // 2
    # Sampled, not greedy: a prompt's four completions are not all the same.
    assert len({(p, c) for p, c in zip(oa["prompt_id"], oa["completion"], strict=True)}) > 16
    assert sum(v == "correct" for v in hf_verdicts["verdict"]) > 0
    # The managed server is gone once the stage has ended.
    (log,) = (ws / "logs" / "base").glob("server-*.log")
    port = int(log.stem.split("-")[1])
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
    _set_params(ws, sample={"backend": "hf"})


def test_continuations_from_token_ids_through_the_server(ws, server):
    """SPO's continuations: a prompt given as token ids (the prompt plus a partial
    completion) goes to the completions API as an array of ids; `transformers serve` takes
    text only (HTTP 400), so it gets the ids decoded, and greedy decoding goes on exactly as
    in-process."""
    from models.hf_sampler import HFSampler

    policy = ws / "artifacts" / "base" / "policy"
    (full,) = HFSampler(policy, batch_size=1, threads=1).generate(
        ["What is 2 plus 3?\n"], max_new_tokens=24, temperature=1.0, top_p=1.0, seed=0,
        greedy=True)
    prefix = full.prompt_ids + full.token_ids[:3]
    sampler = OpenAISampler(policy, batch_size=1, threads=1, serving=_serving(concurrency=1),
                            base_url=server)
    try:
        (cont,) = sampler.generate([prefix], max_new_tokens=21, temperature=1.0, top_p=1.0,
                                   seed=0, greedy=True)
    finally:
        sampler.close()
    assert sampler.ids_prompts is False
    assert cont.prompt_ids == prefix
    assert full.token_ids[:3] + cont.token_ids == full.token_ids


def _assert_ids_match_text(tok, samples: dict) -> None:
    """Each row's ids are its prompt and completion: <bos> then the prompt unpadded, the
    completion's characters, <eos> last exactly when it finished."""
    rows = zip(samples["prompt"], samples["prompt_ids"], samples["completion"],
               samples["completion_ids"], samples["num_tokens"], samples["finished"], strict=True)
    for prompt, prompt_ids, text, ids, num, finished in rows:
        assert prompt_ids == [tok.bos_token_id, *tok(prompt, add_special_tokens=False)["input_ids"]]
        assert tok.pad_token_id not in prompt_ids
        assert tok.decode(ids, skip_special_tokens=True) == text
        assert len(ids) == num and (ids[-1] == tok.eos_token_id) == finished
        assert tok.eos_token_id not in ids[:-1]


def test_n_per_prompt_without_server_n_support_and_seeded(ws, server):
    policy = ws / "artifacts" / "base" / "policy"
    prompts = [q for q in ("What is 2 plus 3?\n", "What is 7 minus 4?\n") for _ in range(3)]
    # One request at a time: transformers serve seeds its global RNG per request, so
    # concurrent requests interleave draws (vLLM seeds each request's own generator).
    sampler = OpenAISampler(policy, batch_size=1, threads=1, serving=_serving(concurrency=1),
                            base_url=server)
    try:
        first = sampler.generate(prompts, max_new_tokens=24, temperature=1.0, top_p=1.0, seed=5)
        assert sampler.supports_n is False  # transformers serve answers one choice per request
        assert sampler.ask_ids is False  # it refuses return_token_ids (HTTP 422), once
        # The refused ask for ids, the probe again without it, one request per other copy.
        assert sampler.requests == 1 + len(prompts)
        again = sampler.generate(prompts, max_new_tokens=24, temperature=1.0, top_p=1.0, seed=5)
        greedy = sampler.generate(prompts[::3], max_new_tokens=24, temperature=1.0, top_p=1.0,
                                  seed=0, greedy=True)
    finally:
        sampler.close()
    assert len(first) == 6 and [c.text for c in again] == [c.text for c in first]
    assert all(c.num_tokens <= 24 for c in first) and sampler.tokens_per_s > 0
    from models.hf_sampler import HFSampler

    hf = HFSampler(policy, batch_size=2, threads=1).generate(
        prompts[::3], max_new_tokens=24, temperature=1.0, top_p=1.0, seed=0, greedy=True)
    assert [c.text for c in greedy] == [c.text for c in hf]  # greedy agrees with in-process
    assert [c.num_tokens for c in greedy] == [c.num_tokens for c in hf]
    # Prompts of different lengths in one batch: left padding is not part of the ids.
    assert [c.prompt_ids for c in greedy] == [c.prompt_ids for c in hf]
    assert len(hf[0].prompt_ids) != len(hf[1].prompt_ids)
    assert [c.token_ids for c in greedy] == [c.token_ids for c in hf]


def test_prompt_runs_and_request_seeds():
    assert prompt_runs(["a", "a", "b", "a", "a", "a"]) == [(0, "a", 2), (2, "b", 1),
                                                           (3, "a", 3)]
    assert request_seed(1, 2, 3) == request_seed(1, 2, 3) != request_seed(1, 2, 4)


class _Double(BaseHTTPRequestHandler):
    """A protocol double for what no server here does: fail on demand and honour n."""

    script: list[int] = []
    bodies: list[dict] = []
    ids: dict = {}  # fields added to each choice: token ids, as vLLM answers when asked

    def do_POST(self):  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).bodies.append(body)
        status = type(self).script.pop(0) if type(self).script else 200
        if status == 200:
            n = body.get("n", 1)
            out = {"choices": [{"index": i, "text": f"{i}+1=2", "finish_reason": "stop"}
                               for i in reversed(range(n))]}
            for ch in out["choices"]:
                ch.update(type(self).ids)
        else:
            out = {"error": f"status {status}"}
        data = json.dumps(out).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def double():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Double)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    _Double.script, _Double.bodies, _Double.ids = [], [], {}
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()


def test_retries_then_uses_server_n(ws, double):
    _Double.script = [503, 429]
    sampler = OpenAISampler(ws / "artifacts/base/policy", batch_size=1, threads=1,
                            serving=_serving(max_retries=2), base_url=double, backoff_s=0.01)
    out = sampler.generate(["p\n"] * 3 + ["q\n"] * 2, max_new_tokens=8, temperature=1.0,
                           top_p=1.0, seed=0)
    assert sampler.supports_n is True
    assert [b.get("n") for b in _Double.bodies] == [3, 3, 3, 2]  # 2 retries, then n honoured
    assert [c.text for c in out] == ["0+1=2", "1+1=2", "2+1=2", "0+1=2", "1+1=2"]
    # No ids in the answer: the policy's tokenizer re-tokenises, <eos> appended.
    tok = load_policy(ws / "artifacts/base/policy")[1]
    assert all(c.num_tokens == 6 and c.finished for c in out)
    assert all(c.token_ids == tok(c.text, add_special_tokens=False)["input_ids"]
               + [tok.eos_token_id] for c in out)
    p, q = (tok(prompt)["input_ids"] for prompt in ("p\n", "q\n"))
    assert [c.prompt_ids for c in out] == [p, p, p, q, q]
    assert _Double.bodies[0]["generation_config"] == SAMPLE_ON["generation_config"]
    assert all(b["return_token_ids"] is True for b in _Double.bodies)


def test_token_id_prompts_go_as_arrays_and_repeats_as_n(ws, double):
    """A server that takes ids (vLLM) gets the array; identical id prompts become one
    request with n, as text prompts do."""
    sampler = OpenAISampler(ws / "artifacts/base/policy", batch_size=1, threads=1,
                            serving=_serving(), base_url=double)
    out = sampler.generate([[1, 5, 6], [1, 5, 6], [1, 7]], max_new_tokens=8, temperature=1.0,
                           top_p=1.0, seed=0)
    assert [b["prompt"] for b in _Double.bodies] == [[1, 5, 6], [1, 7]]
    assert [b.get("n") for b in _Double.bodies] == [2, None]
    assert [c.prompt_ids for c in out] == [[1, 5, 6], [1, 5, 6], [1, 7]]
    assert sampler.ids_prompts is True


def test_server_token_ids_are_kept_as_sampled(ws, double):
    # Not what the tiny tokenizer would give for the text: the server's ids win.
    _Double.ids = {"token_ids": [90, 91, 2], "prompt_token_ids": [1, 80]}
    sampler = OpenAISampler(ws / "artifacts/base/policy", batch_size=1, threads=1,
                            serving=_serving(), base_url=double)
    out = sampler.generate(["p\n"] * 2, max_new_tokens=8, temperature=1.0, top_p=1.0, seed=0)
    assert [(c.token_ids, c.prompt_ids, c.num_tokens) for c in out] == [
        ([90, 91, 2], [1, 80], 3)] * 2
    _Double.ids = {"token_ids": "90 91 2"}
    with pytest.raises(SamplerError, match="token_ids is not a list of token ids"):
        sampler.generate(["p\n"], max_new_tokens=8, temperature=1.0, top_p=1.0, seed=0)


def test_client_errors_fail_at_once_and_retries_run_out(ws, double):
    sampler = OpenAISampler(ws / "artifacts/base/policy", batch_size=1, threads=1,
                            serving=_serving(max_retries=1), base_url=double, backoff_s=0.01)
    _Double.script = [400]
    with pytest.raises(SamplerError, match="HTTP 400"):
        sampler.generate(["p\n"], max_new_tokens=8, temperature=1.0, top_p=1.0, seed=0)
    assert len(_Double.bodies) == 1
    _Double.script = [500, 500]
    with pytest.raises(SamplerError, match=r"failed after 2 attempts.*HTTP 500"):
        sampler.generate(["p\n"], max_new_tokens=8, temperature=1.0, top_p=1.0, seed=0)
    gone = OpenAISampler(ws / "artifacts/base/policy", batch_size=1, threads=1,
                         serving=_serving(max_retries=0),
                         base_url=f"http://127.0.0.1:{free_port()}/v1")
    with pytest.raises(SamplerError, match="ConnectError"):
        gone.generate(["p\n"], max_new_tokens=8, temperature=1.0, top_p=1.0, seed=0)


def test_launcher_reports_early_exit_and_missing_command(tmp_path):
    argv = render_command('{python} -c "import sys; print(\'bad flag\'); sys.exit(3)"',
                          {"python": sys.executable})
    with pytest.raises(ServerError, match=r"(?s)exited with code 3.*bad flag"):
        ManagedServer(argv, host="127.0.0.1", port=free_port(), startup_timeout_s=30,
                      log_path=tmp_path / "a.log").start()
    with pytest.raises(ServerError, match="cannot start '/nonexistent/vllm'"):
        ManagedServer(["/nonexistent/vllm", "serve"], host="127.0.0.1", port=free_port(),
                      startup_timeout_s=30, log_path=tmp_path / "b.log").start()


def test_launcher_timeout_kills_the_whole_process_group(tmp_path):
    pids = tmp_path / "pids"
    code = ("import os, subprocess, sys, time; "
            "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)']); "
            f"open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{c.pid}}'); time.sleep(300)")
    server = ManagedServer([sys.executable, "-c", code], host="127.0.0.1", port=free_port(),
                           startup_timeout_s=4, log_path=tmp_path / "c.log")
    t0 = time.monotonic()
    with pytest.raises(ServerError, match="did not answer"):
        server.start()
    assert time.monotonic() - t0 < 40
    procs = [int(p) for p in pids.read_text().split()]
    assert len(procs) == 2
    def alive(pid: int) -> bool:
        try:
            return psutil.Process(pid).status() != "zombie"
        except psutil.NoSuchProcess:
            return False

    # The signal is sent; on a busy machine the forked worker may take a moment to die.
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in procs) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in procs if alive(pid)]  # the server and the worker it forked


def test_launch_command_and_backend_params_are_checked(tmp_path):
    with pytest.raises(ValueError, match=r"unknown placeholder \{gpus\}"):
        render_command("vllm serve {model} --tp {gpus}", {"model": "m"})
    assert render_command("{python} serve '{model}' --port {port}",
                          {"python": "/x/py", "model": "/a b/policy", "port": 9}) == [
        "/x/py", "serve", "/a b/policy", "--port", "9"]
    raw = micro_params()
    raw["serving"]["launch"]["command"] = "vllm serve {model} --tp {gpus}"
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"serving.launch.command: .*unknown placeholder"):
        load_params(path)
    raw = micro_params(sample={"backend": "openai"})
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="needs serving.url"):
        load_params(path)
