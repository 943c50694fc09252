"""Text generation for the whole project: chat encoding, stop tokens, pad id and ``generate``.

Evaluation (samples, HumanEval, identity probe, exact match), the HTTP server
(``lmforge.packaging.chat_model``), the MLflow pyfunc model (``lmforge.packaging.registry``) and the
speed benchmark (``lmforge.evaluation.speed``, ``bench/generation_speed.py``) all generate through this
module, so a prompt is rendered, stopped and decoded the same way everywhere:

- **Chat encoding**: a prompt is a string (one user turn) or a list of ``{"role", "content"}`` messages,
  rendered by the tokenizer's own ``chat_template`` (the project's one template, which also adds BOS)
  with the generation prompt and encoded with ``add_special_tokens=False``; ``chat=False`` encodes the
  raw text (HumanEval's code prompts).
- **Stop rule**: generation ends at the tokenizer's EOS, at ``<|im_end|>`` when the vocabulary has
  it (the end-of-turn token of ChatML-style templates) and at every ``eos_token_id`` of the model's
  ``generation_config`` (a model's own end-of-turn, e.g. Gemma's ``<end_of_turn>`` or Llama 3's
  ``<|eot_id|>``: the SFT checkpoint and the package list every stop id there). The stop token counts
  in ``new_tokens`` but is never part of the text, which is decoded with ``skip_special_tokens=True``.
- **Pad id**: the tokenizer's pad id, else the first stop id.
- **Engines**: ``"batched"``, our decode loop over left-padded batches with a preallocated KV cache
  (``generate_batched``; greedy outputs equal transformers ``generate`` token for token, tested, and
  it is faster: bench/results/generation_speed.json) and ``"transformers"``, ``model.generate`` (the
  reference). ``engine="auto"`` (the default) decodes greedily with ``"batched"`` and samples with
  ``"transformers"``: sampling then applies the model's own ``generation_config`` (top-k/top-p) and a
  seeded sample stays the one it always was (``torch.manual_seed(seed + i)`` for prompt ``i``).
- ``batch_size`` defaults to 1: each prompt alone, so a completion never depends on the other prompts
  (padding changes float rounding); a caller that wants throughput passes a larger batch.

Long because (~550 lines) it is one module, not several: one concept, and the MLflow pyfunc model
pickles it by value (cloudpickle) so that a registered model loads without lmforge installed; a
module that imports no other lmforge module is what makes that work. Only the standard library is
imported at module level (torch and transformers inside the functions).

The fast path covers decoder-only models laid out like Llama (``llama``, ``gemma``: ``model.layers[i]``
with ``self_attn.{q,k,v,o}_proj``, ``input_layernorm``, ``mlp``, ``post_attention_layernorm``); any
other model runs the same loop through its own ``forward`` with a ``DynamicCache`` (correct, not faster).
Our loop: one preallocated K/V buffer per layer (no concatenation per step), a boolean padding mask
built once per batch, no logits processors, and early exit: a row that emits a stop token is dropped
from the batch (its cache rows too). The attention call mirrors transformers' SDPA path (``enable_gqa``
without a mask, ``repeat_kv`` with one in the prefill, grouped queries per key/value head when decoding).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

END_OF_TURN_TOKEN = "<|im_end|>"
"""End-of-turn token of the chat template; generation also stops on it when it is in the vocab."""

FAST_PATH_MODEL_TYPES = ("llama", "gemma")
# Attention kernels whose numerics the fast path mirrors (the SDPA call, or eager = the same maths).
FAST_PATH_ATTENTION = frozenset({"sdpa", "eager"})
"""``config.model_type`` values our own decode loop runs natively (others use the model's forward)."""

ENGINES = ("auto", "batched", "transformers")

Prompt = str | Sequence[Mapping[str, str]]
"""A user turn as text, or a whole conversation as ``[{"role", "content"}, ...]`` (chat mode only)."""


@dataclass
class Completion:
    """One generated answer."""

    text: str
    """The decoded new tokens, stop token left out, special tokens skipped."""
    token_ids: list[int]
    """The new token ids, ending with the stop token when generation stopped on one."""
    prompt_tokens: int
    """Length of the encoded prompt."""
    stopped: bool
    """True when generation ended on a stop token, False when it ran to ``max_new_tokens``."""

    @property
    def new_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def finish_reason(self) -> str:
        """OpenAI's names: ``"stop"`` or ``"length"``."""
        return "stop" if self.stopped else "length"


# --- loading, encoding, stop and pad ids -----------------------------------------------------------


def load_model_and_tokenizer(model_dir: str | Path, tokenizer_dir: str | Path | None = None, *,
                             trust_remote_code: bool = False) -> tuple[Any, Any]:
    """Load a ``save_pretrained`` model in fp32 (eval mode) and its tokenizer, from local files only.

    ``tokenizer_dir`` defaults to ``model_dir`` (a packaged model holds both); ``trust_remote_code`` runs
    Python shipped in the directories (only when the user opted in).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = Path(model_dir)
    tokenizer_dir = model_dir if tokenizer_dir is None else Path(tokenizer_dir)
    _require_file(model_dir, "config.json", "model")
    _require_dir(tokenizer_dir, "tokenizer")

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, local_files_only=True,
                                                 trust_remote_code=trust_remote_code)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True, trust_remote_code=trust_remote_code)
    logger.info("loaded model from %s and tokenizer from %s", model_dir, tokenizer_dir)
    return model, tokenizer


def encode_chat(tokenizer: Any, messages: Sequence[Mapping[str, str]]) -> list[int]:
    """Token ids of a conversation rendered by the tokenizer's ``chat_template``, ready for the assistant."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("chat=True but the tokenizer has no chat_template")
    text = tokenizer.apply_chat_template([dict(m) for m in messages], add_generation_prompt=True, tokenize=False)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def encode_prompt(tokenizer: Any, prompt: Prompt, *, chat: bool) -> list[int]:
    """Token ids for a prompt: the chat template's rendering (a string is one user turn), or the raw text."""
    if not chat:
        if not isinstance(prompt, str):
            raise TypeError("chat=False takes text prompts, not message lists")
        return list(tokenizer(prompt)["input_ids"])
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    return encode_chat(tokenizer, messages)


def resolve_stop_token_ids(tokenizer: Any, generation_config: Any = None) -> list[int]:
    """Ids that end generation: the tokenizer's EOS, ``<|im_end|>`` if the vocab has it, then every
    ``eos_token_id`` (an int or a list) of ``generation_config`` (the model's; None: none).

    The tokenizer's come first, so the pad fallback (the first stop id) stays the tokenizer's EOS.
    """
    candidates = [tokenizer.eos_token_id, tokenizer.get_vocab().get(END_OF_TURN_TOKEN)]
    model_eos = getattr(generation_config, "eos_token_id", None)
    candidates += model_eos if isinstance(model_eos, list | tuple) else [model_eos]
    stop_ids = list(dict.fromkeys(int(i) for i in candidates if i is not None))
    if not stop_ids:
        raise ValueError(f"neither the tokenizer (eos_token, {END_OF_TURN_TOKEN}) nor the model's generation_config "
                         "(eos_token_id) names a stop token")
    return stop_ids


def resolve_pad_token_id(tokenizer: Any, stop_ids: Sequence[int] | None = None) -> int:
    """The one pad-id rule: the tokenizer's pad id, else the first stop id (EOS)."""
    if tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    return int((stop_ids or resolve_stop_token_ids(tokenizer))[0])


def decode_completion(tokenizer: Any, token_ids: Sequence[int], stop_ids: Sequence[int]) -> tuple[str, bool]:
    """(text, stopped): the stop token is not text; ``<|im_end|>`` is not "special" to every tokenizer."""
    stopped = bool(token_ids) and token_ids[-1] in stop_ids
    text_ids = list(token_ids[:-1]) if stopped else list(token_ids)
    return tokenizer.decode(text_ids, skip_special_tokens=True), stopped


# --- the one entry point ---------------------------------------------------------------------------


def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Prompt],
    *,
    max_new_tokens: int = 64,
    chat: bool = True,
    do_sample: bool = False,
    temperature: float = 1.0,
    seed: int = 0,
    engine: str = "auto",
    batch_size: int = 1,
) -> list[Completion]:
    """One `Completion` per prompt, in order.

    Greedy by default (deterministic); with ``do_sample`` prompt ``i`` samples from seed ``seed + i``
    (batches of ``batch_size`` share the seed of their first prompt), and the caller's global torch
    RNG state is left untouched. ``engine``: "auto" (batched when greedy, transformers when
    sampling), "batched" or "transformers".
    """
    prompt_ids = [encode_prompt(tokenizer, p, chat=chat) for p in prompts]
    return generate_from_ids(model, tokenizer, prompt_ids, max_new_tokens=max_new_tokens, do_sample=do_sample,
                             temperature=temperature, seed=seed, engine=engine, batch_size=batch_size)


def generate_from_ids(
    model: Any,
    tokenizer: Any,
    prompt_ids: Sequence[Sequence[int]],
    *,
    max_new_tokens: int = 64,
    do_sample: bool = False,
    temperature: float = 1.0,
    seed: int = 0,
    engine: str = "auto",
    batch_size: int = 1,
) -> list[Completion]:
    """`generate` on prompts already encoded (a server that checks the prompt length first encodes once)."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if engine == "auto":
        engine = "transformers" if do_sample else "batched"
    if not prompt_ids:
        return []
    stop_ids = resolve_stop_token_ids(tokenizer, getattr(model, "generation_config", None))
    pad_id = resolve_pad_token_id(tokenizer, stop_ids)
    run = generate_batched if engine == "batched" else generate_reference
    new_ids = run(model, prompt_ids, max_new_tokens=max_new_tokens, batch_size=batch_size, stop_ids=stop_ids,
                  pad_id=pad_id, do_sample=do_sample, temperature=temperature, seed=seed)
    completions = []
    for ids, ids_in in zip(new_ids, prompt_ids, strict=True):
        text, stopped = decode_completion(tokenizer, ids, stop_ids)
        completions.append(Completion(text=text, token_ids=list(ids), prompt_tokens=len(ids_in), stopped=stopped))
    logger.debug("generated %d completions with %s (max_new_tokens=%d)", len(completions), engine, max_new_tokens)
    return completions


def generate_samples(model: Any, tokenizer: Any, prompts: Sequence[str], **kwargs: Any) -> list[dict[str, Any]]:
    """`generate` as the records of generations.json: ``[{"prompt", "completion", "new_tokens"}, ...]``."""
    completions = generate(model, tokenizer, prompts, **kwargs)
    return [{"prompt": p, "completion": c.text, "new_tokens": c.new_tokens}
            for p, c in zip(prompts, completions, strict=True)]


# --- engine "batched": our decode loop -------------------------------------------------------------


def generate_batched(
    model: Any,
    prompt_ids: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    batch_size: int = 8,
    stop_ids: Sequence[int] = (),
    pad_id: int = 0,
    min_new_tokens: int = 0,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int = 0,
    seed: int = 0,
) -> list[list[int]]:
    """New token ids per prompt (in order), batches of ``batch_size`` in the given order.

    A completion ends with the stop token when it stopped on one (as ``generate`` returns it), else
    holds ``max_new_tokens`` ids. Sampling draws from one generator seeded with ``seed`` per batch.
    """
    check_prompts(prompt_ids, max_new_tokens, batch_size)
    out: list[list[int]] = []
    for start in range(0, len(prompt_ids), batch_size):
        out.extend(generate_batch(model, prompt_ids[start:start + batch_size], max_new_tokens=max_new_tokens,
                                  stop_ids=stop_ids, pad_id=pad_id, min_new_tokens=min_new_tokens,
                                  do_sample=do_sample, temperature=temperature, top_k=top_k, seed=seed + start))
    return out


def generate_batch(
    model: Any,
    prompt_ids: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    stop_ids: Sequence[int] = (),
    pad_id: int = 0,
    min_new_tokens: int = 0,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int = 0,
    seed: int = 0,
) -> list[list[int]]:
    """One left-padded batch through our decode loop; see ``generate_batched``."""
    import torch

    check_prompts(prompt_ids, max_new_tokens, len(prompt_ids) or 1)
    if do_sample and temperature <= 0:
        raise ValueError(f"temperature must be > 0 when sampling, got {temperature}")
    device = next(model.parameters()).device
    ids, real = _left_pad(prompt_ids, pad_id, device)  # (B, P) each
    batch, prompt_len = ids.shape
    stop = torch.tensor(sorted(set(stop_ids)), dtype=torch.long, device=device)
    gen = torch.Generator(device=device).manual_seed(seed) if do_sample else None
    step_fn = _FastDecoder(model) if _fast_path_ok(model) else _ModelForwardDecoder(model)

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            out = torch.full((batch, max_new_tokens), pad_id, dtype=torch.long, device=device)
            lengths = torch.zeros(batch, dtype=torch.long, device=device)
            rows = torch.arange(batch, device=device)  # active row -> original row
            logits = step_fn.prefill(ids, real, max_len=prompt_len + max_new_tokens)  # (B, V)
            for step in range(max_new_tokens):
                if step < min_new_tokens and stop.numel():
                    logits[:, stop] = float("-inf")
                if do_sample:
                    next_ids = _sample(logits, temperature, top_k, gen)
                else:
                    next_ids = logits.argmax(dim=-1)  # (b,)
                out[rows, step] = next_ids
                lengths[rows] = step + 1
                if step + 1 == max_new_tokens:
                    break
                done = torch.isin(next_ids, stop) if stop.numel() else None
                if done is not None and bool(done.any()):
                    keep = (~done).nonzero().squeeze(1)
                    if keep.numel() == 0:
                        break
                    rows, next_ids = rows[keep], next_ids[keep]
                    step_fn.select_rows(keep)
                logits = step_fn.decode(next_ids)
    finally:
        model.train(was_training)
    return [row[:n] for row, n in zip(out.tolist(), lengths.tolist(), strict=True)]


class _FastDecoder:
    """Llama-layout forward with a preallocated K/V buffer per layer: (B, n_kv, max_len, head_dim)."""

    def __init__(self, model: Any):
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        self.rotary = apply_rotary_pos_emb
        self.base = model.model
        self.head = model.get_output_embeddings()
        self.layers = list(self.base.layers)[: model.config.num_hidden_layers]
        attn = self.layers[0].self_attn
        self.head_dim = attn.head_dim
        self.groups = attn.num_key_value_groups
        self.scaling = attn.scaling

    def prefill(self, ids: Any, real: Any, *, max_len: int) -> Any:
        import torch

        batch, prompt_len = ids.shape
        n_kv = self.layers[0].self_attn.k_proj.out_features // self.head_dim
        dtype, device = self.head.weight.dtype, ids.device
        self.keys = [torch.empty(batch, n_kv, max_len, self.head_dim, dtype=dtype, device=device) for _ in self.layers]
        self.values = [torch.empty_like(k) for k in self.keys]
        # transformers drops the mask when no row is padded (SDPA is_causal); mirror that for equal numerics.
        self.padded = not bool(real.all())
        self.real = torch.zeros(batch, max_len, dtype=torch.bool, device=device)  # (B, T) which slots are tokens
        self.real[:, :prompt_len] = real
        self.length = prompt_len
        positions = (real.long().cumsum(-1) - 1).masked_fill(~real, 1)  # as generate: first real token at 0
        self.next_position = positions[:, -1] + 1  # (B,)
        mask = None
        if self.padded:  # causal and not a pad key; a pad query sees itself so no softmax row is empty
            causal = torch.ones(prompt_len, prompt_len, dtype=torch.bool, device=device).tril()
            eye = torch.eye(prompt_len, dtype=torch.bool, device=device)
            mask = (causal & (real[:, None, :] | eye))[:, None]  # (B, 1, P, P)
        return self._forward(ids, positions, mask, start=0)

    def decode(self, next_ids: Any) -> Any:
        self.real[:, self.length] = True
        self.length += 1
        mask = self.real[:, None, None, : self.length] if self.padded else None  # (b, 1, 1, T)
        positions = self.next_position[:, None]
        self.next_position = self.next_position + 1
        return self._forward(next_ids[:, None], positions, mask, start=self.length - 1)

    def select_rows(self, keep: Any) -> None:
        self.keys = [k.index_select(0, keep) for k in self.keys]
        self.values = [v.index_select(0, keep) for v in self.values]
        self.real = self.real.index_select(0, keep)
        self.next_position = self.next_position.index_select(0, keep)

    def _forward(self, ids: Any, positions: Any, mask: Any, *, start: int) -> Any:
        hidden = self.base.embed_tokens(ids)  # (b, q, d); gemma's embedding scales itself
        cos, sin = self.base.rotary_emb(hidden, positions)
        for i, layer in enumerate(self.layers):
            residual = hidden
            hidden = residual + self._attention(layer.self_attn, layer.input_layernorm(hidden), cos, sin, mask,
                                                i, start)
            residual = hidden
            hidden = residual + layer.mlp(layer.post_attention_layernorm(hidden))
        hidden = self.base.norm(hidden[:, -1:])  # only the last position's logits are needed
        return self.head(hidden)[:, -1].float()  # (b, V)

    def _attention(self, attn: Any, x: Any, cos: Any, sin: Any, mask: Any, i: int, start: int) -> Any:
        import torch.nn.functional as F  # noqa: N812

        b, q_len, _ = x.shape
        shape = (b, q_len, -1, self.head_dim)
        q = attn.q_proj(x).view(shape).transpose(1, 2)  # (b, nh, q, hd)
        k = attn.k_proj(x).view(shape).transpose(1, 2)  # (b, n_kv, q, hd)
        v = attn.v_proj(x).view(shape).transpose(1, 2)
        q, k = self.rotary(q, k, cos, sin)
        self.keys[i][:, :, start:start + q_len] = k
        self.values[i][:, :, start:start + q_len] = v
        keys = self.keys[i][:, :, : start + q_len]  # (b, n_kv, T, hd)
        values = self.values[i][:, :, : start + q_len]
        n_heads = q.shape[1]
        if mask is None:
            out = F.scaled_dot_product_attention(q, keys, values, scale=self.scaling, is_causal=q_len > 1,
                                                 enable_gqa=self.groups > 1)
        elif q_len == 1 and self.groups > 1:  # the n_rep query heads of a kv head as n_rep "positions"
            out = F.scaled_dot_product_attention(q.reshape(b, n_heads // self.groups, self.groups, -1), keys,
                                                 values, attn_mask=mask, scale=self.scaling)
        else:
            if self.groups > 1:
                keys = keys.repeat_interleave(self.groups, dim=1)
                values = values.repeat_interleave(self.groups, dim=1)
            out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=self.scaling)
        out = out.reshape(b, n_heads, q_len, -1).transpose(1, 2).reshape(b, q_len, -1)
        return attn.o_proj(out)


class _ModelForwardDecoder:
    """Any causal LM: the model's own forward with a ``DynamicCache`` (no preallocation, no speed-up)."""

    def __init__(self, model: Any):
        self.model = model

    def prefill(self, ids: Any, real: Any, *, max_len: int) -> Any:
        from transformers import DynamicCache

        self.cache = DynamicCache(config=self.model.config)
        self.mask = real.long()
        positions = (self.mask.cumsum(-1) - 1).masked_fill(~real, 1)
        self.next_position = positions[:, -1] + 1
        return self._forward(ids, positions)

    def decode(self, next_ids: Any) -> Any:
        import torch

        self.mask = torch.cat([self.mask, self.mask.new_ones(self.mask.shape[0], 1)], dim=1)
        positions = self.next_position[:, None]
        self.next_position = self.next_position + 1
        return self._forward(next_ids[:, None], positions)

    def select_rows(self, keep: Any) -> None:
        self.cache.batch_select_indices(keep)
        self.mask = self.mask.index_select(0, keep)
        self.next_position = self.next_position.index_select(0, keep)

    def _forward(self, ids: Any, positions: Any) -> Any:
        out = self.model(input_ids=ids, attention_mask=self.mask, position_ids=positions,
                         past_key_values=self.cache, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1].float()


def _fast_path_ok(model: Any) -> bool:
    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) not in FAST_PATH_MODEL_TYPES:
        return False
    # transformers sets the kernel on every loaded config; one it does not name cannot be mirrored.
    if getattr(config, "_attn_implementation", None) not in FAST_PATH_ATTENTION:
        return False
    rope = getattr(config, "rope_parameters", None) or {}
    return rope.get("rope_type", "default") == "default"


def _sample(logits: Any, temperature: float, top_k: int, gen: Any) -> Any:
    import torch

    logits = logits / temperature
    if top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=gen).squeeze(1)


def _left_pad(prompt_ids: Sequence[Sequence[int]], pad_id: int, device: Any) -> tuple[Any, Any]:
    import torch

    width = max(len(p) for p in prompt_ids)
    ids = torch.full((len(prompt_ids), width), pad_id, dtype=torch.long)
    real = torch.zeros((len(prompt_ids), width), dtype=torch.bool)
    for i, p in enumerate(prompt_ids):
        ids[i, width - len(p):] = torch.tensor(list(p), dtype=torch.long)
        real[i, width - len(p):] = True
    return ids.to(device), real.to(device)


def check_prompts(prompt_ids: Sequence[Sequence[int]], max_new_tokens: int, batch_size: int) -> None:
    """ValueError naming what is wrong: no room to generate, an empty batch size or an empty prompt."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    empty = [i for i, p in enumerate(prompt_ids) if len(p) == 0]
    if empty:
        raise ValueError(f"prompt(s) {empty[:5]} encode to no tokens: every prompt needs at least one token")



# --- engine "transformers": the reference ----------------------------------------------------------


def generate_reference(
    model: Any,
    prompt_ids: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    batch_size: int = 8,
    stop_ids: Sequence[int] = (),
    pad_id: int = 0,
    min_new_tokens: int = 0,
    do_sample: bool = False,
    temperature: float = 1.0,
    seed: int = 0,
) -> list[list[int]]:
    """transformers ``model.generate`` on the same left-padded batches; same output layout as ``generate_batched``.

    Sampling seeds the global torch RNG with ``seed + start`` per batch (``start``: index of its first
    prompt) inside ``fork_rng``, so the caller's RNG state is untouched; the model's
    ``generation_config`` (top-k, top-p) applies as in any ``generate`` call.
    """
    import torch

    check_prompts(prompt_ids, max_new_tokens, batch_size)
    if do_sample and temperature <= 0:
        raise ValueError(f"temperature must be > 0 when sampling, got {temperature}")
    device = next(model.parameters()).device
    rng_devices = [device.index or 0] if device.type == "cuda" else []
    sampling = {"do_sample": True, "temperature": temperature} if do_sample else {"do_sample": False}
    stops = set(stop_ids)
    out: list[list[int]] = []
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=rng_devices), torch.inference_mode():
            for start in range(0, len(prompt_ids), batch_size):
                torch.manual_seed(seed + start)
                ids, real = _left_pad(prompt_ids[start:start + batch_size], pad_id, device)  # (B, P) each
                generated = model.generate(
                    input_ids=ids, attention_mask=real.long(), max_new_tokens=max_new_tokens,
                    min_new_tokens=min_new_tokens or None, eos_token_id=list(stop_ids) or None,
                    pad_token_id=pad_id, **sampling,
                )
                for row in generated[:, ids.shape[1]:].tolist():
                    end = next((j + 1 for j, t in enumerate(row) if t in stops), len(row))
                    out.append(row[:end])
    finally:
        model.train(was_training)
    return out


def _require_dir(path: Path, what: str) -> None:
    if not path.is_dir():
        raise FileNotFoundError(f"{what} directory not found: {path}")


def _require_file(directory: Path, name: str, what: str) -> None:
    _require_dir(directory, what)
    if not (directory / name).is_file():
        raise FileNotFoundError(f"{what} directory {directory} has no {name}")
