"""Per-sample gradient norms for GVM's G_i (specs/algorithms-a.md §1.3).

g(y) = ‖∂/∂W [−Σ_{t∈response} log π(y_t | x, y_<t)]‖₂ for each sample, where W is the set of
parameter tensors whose names contain one of `param_names` (default `embed_tokens`: the
paper's choice). The loss is a sum over the sampled completion tokens (not
length-normalised), the <eos> included when the model produced one, as training sees them.

Fast path, when W is exactly the input-embedding matrix: one batched forward/backward of the
summed per-sample losses. Samples in a batch do not interact (padding is masked), so the
gradient at each sample's embedding outputs and logits is that sample's own:
- input side: ∂L/∂E[v] = Σ_{t: x_t=v} g_t, with g_t = ∂L/∂(embedding output at t);
- output side, if the head is tied to the embedding: ∂L/∂W_out = Σ_s d_sᵀ h_s, with
  d_s = ∂L/∂logits_s and h_s the head's input.
Their squared norm comes from T×T Gram matrices, never a per-sample V×d matrix:
  ‖A‖² = Σ_{t,t'} [x_t = x_t'] g_t·g_t',  ‖B‖² = Σ_{s,s'} (d_s·d_s')(h_s·h_s'),
  ⟨A, B⟩ = Σ_{t,s} d_s[x_t] (g_t·h_s).
Any other subset: one backward per sample (exact, slower).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from cotflow.recipes.base import Example
from models.torch_trainer import batch_logprobs, collate, encode

log = logging.getLogger(__name__)


def selected_params(model, param_names: Sequence[str]) -> list[tuple[str, torch.nn.Parameter]]:
    """(name, tensor) of every parameter whose name contains one of `param_names`."""
    if not param_names:
        raise ValueError("allocate.gvm.grad_params: name at least one parameter (substring)")
    chosen = [(n, p) for n, p in model.named_parameters()
              if any(s in n for s in param_names)]
    if not chosen:
        names = [n for n, _ in model.named_parameters()][:8]
        raise ValueError(f"allocate.gvm.grad_params {list(param_names)} match no parameter "
                         f"(the model has e.g. {names})")
    return chosen


def _is_input_embedding(model, chosen: list[tuple[str, torch.nn.Parameter]]) -> bool:
    emb = model.get_input_embeddings()
    return len(chosen) == 1 and emb is not None and chosen[0][1] is emb.weight


def sample_grad_norms(model, pad_id: int, examples: Sequence[Example], *,
                      param_names: Sequence[str] = ("embed_tokens",), batch_size: int = 16,
                      max_len: int) -> list[float]:
    """‖∇_W (−Σ log π(response))‖₂ for each example, in order. The model is left unchanged
    (its gradients are cleared and its mode restored)."""
    chosen = selected_params(model, param_names)
    was_training = model.training
    model.train(False)  # dropout off: the norm of the policy as it samples
    try:
        encoded = [encode(ex, max_len) for ex in examples]
        if _is_input_embedding(model, chosen):
            out: list[float] = []
            for s in range(0, len(encoded), batch_size):
                idx = list(range(s, min(s + batch_size, len(encoded))))
                batch = collate([encoded[i] for i in idx], idx, pad_id)
                out.extend(_embedding_batch(model, batch))
            return out
        return _one_by_one(model, encoded, [p for _, p in chosen], pad_id)
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)


def _embedding_batch(model, batch) -> list[float]:
    emb = model.get_input_embeddings()
    head = model.get_output_embeddings()
    tied = head is not None and head.weight is emb.weight
    saved: dict[str, torch.Tensor] = {}

    def keep_emb(_m, _inp, out):
        saved["emb_out"] = out

    def keep_head(_m, inp, out):
        saved["head_in"], saved["head_out"] = inp[0].detach(), out

    hooks = [emb.register_forward_hook(keep_emb)]
    if tied:
        hooks.append(head.register_forward_hook(keep_head))
    try:
        with torch.enable_grad():
            logprobs = batch_logprobs(model, batch)
            loss = -(logprobs * batch.response_mask).sum()
            # Gradients at activations only: no parameter gradient is computed or stored.
            wrt = [saved["emb_out"]] + ([saved["head_out"]] if tied else [])
            grads = torch.autograd.grad(loss, wrt)
    finally:
        for h in hooks:
            h.remove()
    g = grads[0].float()  # (B, L, d)
    ids = batch.input_ids
    same = (ids.unsqueeze(2) == ids.unsqueeze(1)).float()  # (B, L, L)
    sq = (same * torch.bmm(g, g.transpose(1, 2))).sum((1, 2))
    if tied:
        d = grads[1].float()  # (B, L, V)
        h = saved["head_in"].float()  # (B, L, d)
        sq = sq + (torch.bmm(d, d.transpose(1, 2)) * torch.bmm(h, h.transpose(1, 2))).sum((1, 2))
        # d_s[x_t] for every (s, t): gather the columns of the input tokens.
        d_at_x = torch.gather(d, 2, ids.unsqueeze(1).expand(-1, d.shape[1], -1))  # (B, s, t)
        cross = (d_at_x * torch.bmm(h, g.transpose(1, 2))).sum((1, 2))
        sq = sq + 2 * cross
    return sq.clamp(min=0).sqrt().tolist()


def _one_by_one(model, encoded, params: list[torch.nn.Parameter], pad_id: int) -> list[float]:
    out = []
    for i, enc in enumerate(encoded):
        batch = collate([enc], [i], pad_id)
        with torch.enable_grad():
            loss = -(batch_logprobs(model, batch) * batch.response_mask).sum()
            grads = torch.autograd.grad(loss, params, allow_unused=True)
        sq = sum(float(gr.float().pow(2).sum()) for gr in grads if gr is not None)
        out.append(sq ** 0.5)
    return out
