"""GPU check: training and sampling throughput of a realistic-shape model on one GPU.

    python benchmarks/gpu_check.py [--steps 20] [--layers 24]

A ~0.46 B-parameter Llama (hidden 1024, MLP 4864, 24 layers, vocabulary 32k), randomly initialised,
so nothing is downloaded. Measures, each after warm-up steps:
  torch      AdamW training step, bf16 autocast, batch 8 x 512 tokens (models/torch_trainer)
  deepspeed  the same step under DeepSpeed ZeRO-2, bf16, one rank (skipped without the extra)
  hf         `hf` backend sampling (models/hf_sampler) on CUDA: 64 prompts x 128 new tokens
and prints tokens/s and peak GPU memory for each as a table. Takes 2-5 min on an H100.
Exits with status 2 and a message where there is no CUDA device.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def model_config(layers: int, vocab: int):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab, hidden_size=1024, intermediate_size=4864,
                       num_hidden_layers=layers, num_attention_heads=16, num_key_value_heads=8,
                       max_position_embeddings=2048, tie_word_embeddings=True,
                       bos_token_id=1, eos_token_id=2, pad_token_id=0)


def big_tokenizer(vocab: int):
    """The character tokenizer padded with filler tokens to a realistic vocabulary size."""
    from models.tokenizer import build_char_tokenizer

    tok = build_char_tokenizer()
    tok.add_tokens([f"<f{i}>" for i in range(vocab - len(tok))])
    return tok


def batch(vocab: int, size: int, length: int, device):
    import torch

    ids = torch.randint(3, vocab, (size, length), device=device)
    return ids, torch.ones_like(ids)


def timed(step, steps: int, warmup: int, tokens_per_step: int) -> dict:
    """Run `warmup` then `steps` training steps; tokens/s and s/step of the latter."""
    import torch

    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step()
    torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    return {"tokens_per_s": steps * tokens_per_step / seconds, "step_s": seconds / steps,
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30, "loss": loss}


def train_torch(cfg, steps: int, warmup: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    from models.torch_trainer import make_optimizer

    torch.cuda.reset_peak_memory_stats()
    model = AutoModelForCausalLM.from_config(cfg).cuda().train()
    opt = make_optimizer(model, lr=1e-5, betas=(0.9, 0.999), weight_decay=0.0)
    ids, mask = batch(cfg.vocab_size, 8, 512, "cuda")

    def step() -> float:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(input_ids=ids, attention_mask=mask, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    return timed(step, steps, warmup, ids.numel())


def train_deepspeed(cfg, steps: int, warmup: int) -> dict:
    import torch

    try:
        import deepspeed
    except ImportError:
        return {"note": "skipped: DS_BUILD_OPS=0 pip install -e '.[deepspeed]'"}
    from transformers import AutoModelForCausalLM

    from models.deepspeed_trainer import ds_config
    from models.torch_trainer import make_optimizer

    for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1",
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29577"}.items():
        os.environ.setdefault(key, value)
    deepspeed.init_distributed(dist_backend="nccl")
    torch.cuda.reset_peak_memory_stats()
    model = AutoModelForCausalLM.from_config(cfg).train()
    config = ds_config({"zero_stage": 2, "offload_optimizer": False, "bf16": True},
                       per_rank=8, grad_accum_steps=1, max_grad_norm=1.0, lr=1e-5,
                       betas=(0.9, 0.999), weight_decay=0.0)
    engine, *_ = deepspeed.initialize(model=model, config=config,
                                      optimizer=make_optimizer(model, lr=1e-5, betas=(0.9, 0.999),
                                                                weight_decay=0))
    ids, mask = batch(cfg.vocab_size, 8, 512, engine.device)

    def step() -> float:
        loss = engine(input_ids=ids, attention_mask=mask, labels=ids).loss
        engine.backward(loss)
        engine.step()
        return loss.item()

    return timed(step, steps, warmup, ids.numel())


def sample_hf(cfg, prompts: int, new_tokens: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    from models.hf_sampler import HFSampler

    with tempfile.TemporaryDirectory() as tmp:
        AutoModelForCausalLM.from_config(cfg).save_pretrained(tmp)
        big_tokenizer(cfg.vocab_size).save_pretrained(tmp)
        torch.cuda.reset_peak_memory_stats()
        sampler = HFSampler(Path(tmp), batch_size=prompts, threads=4)
        args = dict(max_new_tokens=new_tokens, temperature=1.0, top_p=1.0, seed=0)
        sampler.generate(["What is 12 plus 35?\n"] * 8, **{**args, "max_new_tokens": 8})
        sampler._tokens, sampler._seconds = 0, 0.0  # count the measured call only
        out = sampler.generate([f"What is {i} plus {2 * i}?\n" for i in range(prompts)], **args)
    return {"tokens_per_s": sampler.tokens_per_s, "peak_gib":
            torch.cuda.max_memory_allocated() / 2**30,
            "note": f"{len(out)} completions, fp32 weights"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--vocab", type=int, default=32000)
    args = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device (torch.cuda.is_available() is False); run it on a GPU "
              "machine with a CUDA build of torch", file=sys.stderr)
        return 2
    cfg = model_config(args.layers, args.vocab)
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        params = sum(p.numel() for p in AutoModelForCausalLM.from_config(cfg).parameters())
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, model "
          f"{params / 1e9:.2f} B params ({args.layers} layers, hidden 1024, vocab {args.vocab})")
    rows = []
    for name, fn in (("torch train", lambda: train_torch(cfg, args.steps, args.warmup)),
                     ("deepspeed train (ZeRO-2)",
                      lambda: train_deepspeed(cfg, args.steps, args.warmup)),
                     ("hf sample", lambda: sample_hf(cfg, 64, 128))):
        t0 = time.perf_counter()
        try:
            res = fn()
        except Exception as err:  # noqa: BLE001 - one failing row must not hide the others
            res = {"note": f"failed: {type(err).__name__}: {str(err)[:120]}"}
        torch.cuda.empty_cache()  # the last measurement's model is gone with its function
        res["wall_s"] = time.perf_counter() - t0
        rows.append((name, res))
        print(f"  {name}: done in {res['wall_s']:.0f} s", flush=True)
    print(f"\n| {'what':26} | {'tokens/s':>10} | {'s/step':>7} | {'peak GiB':>8} | note")
    print(f"|{'-' * 28}|{'-' * 12}|{'-' * 9}|{'-' * 10}|------")
    for name, r in rows:
        tps = f"{r['tokens_per_s']:,.0f}" if "tokens_per_s" in r else "-"
        step = f"{r['step_s']:.3f}" if "step_s" in r else "-"
        mem = f"{r['peak_gib']:.1f}" if "peak_gib" in r else "-"
        print(f"| {name:26} | {tps:>10} | {step:>7} | {mem:>8} | {r.get('note', '')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
