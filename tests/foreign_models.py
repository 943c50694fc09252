"""Build "foreign" Hugging Face causal LMs locally for the tests: random weights, locally trained tokenizers.

Issue 14 ("bring your own model") needs models whose tokenizer, special tokens and chat template are NOT
lmforge's, without downloading anything. Each family here mimics one real model's conventions closely
enough that the classic template bugs show up (a model that never stops because its end-of-turn token is
not its EOS, a BOS written by the template AND added by the tokenizer, a model with no pad token, a model
with no chat template at all, a logits width larger than the tokenizer):

=========  ====================  =========================================================================
family     architecture          tokenizer conventions mimicked
=========  ====================  =========================================================================
qwen2      Qwen2ForCausalLM      no BOS; eos <|im_end|>, pad <|endoftext|>; Qwen2.5-Instruct's template with
                                 its default system message; vocab padded past len(tokenizer)
gemma      GemmaForCausalLM      <pad>/<eos>/<bos>/<unk> at ids 0-3; BOS added on encode AND written by the
                                 template (doubled-BOS trap); roles user/model, system folded into the
                                 first user turn (Gemma 3's template)
bloom      BloomForCausalLM      <unk>/<s>/</s>/<pad> at ids 0-3, ChatML markers reserved as additional
                                 special tokens, NO chat template (the user must name one)
internlm2  LlamaForCausalLM      InternLM2 converted to Llama format; BOS added on encode AND written by the
                                 template; pad is </s> (= eos, as in the real config); InternLM2-chat's
                                 ChatML-like template; turns end with <|im_end|>, not with eos
llama3     LlamaForCausalLM      Llama-3-Instruct's header template, BOS written by the template and added
                                 on encode (as the real tokenizer.json's post-processor does); NO pad token
=========  ====================  =========================================================================

One byte-level BPE (vocab ~1,200) is trained once per process on a small built-in text of English prose,
Python code, Chinese and Japanese (``functools.lru_cache``; well under a second), then each family lays its
special tokens around it. Everything is deterministic: the same family and seed give the same files.
``build_remote_code_model`` writes the case lmforge must refuse unless the user opts into remote code.

What transformers 5.23 does with these directories (measured; code that loads them should know):

- ``AutoTokenizer`` loads qwen2 as ``Qwen2Tokenizer`` (it maps the model type, whatever the file says) and
  the others as ``TokenizersBackend``; the ids are the same as the tokenizer this module returns (tested).
- ``tokenizer.add_bos_token`` reads False for gemma/internlm2/llama3 although they add BOS on encode:
  v5 drops the key when tokenizer.json exists and its post-processor decides. Detect BOS by encoding.
- Loading the remote-code directory with ``trust_remote_code`` left unset prints an interactive
  "Do you wish to run the custom code? [y/N]" prompt before raising ValueError: pass
  ``trust_remote_code=False`` explicitly, or read config.json's ``auto_map`` before calling transformers.

Timing on the 2-core CPU: the first build in a process costs ~4 s (transformers' lazy imports), each later
one 0.02-0.05 s; training the shared BPE 0.06 s once.

Long because it holds the built-in training text and five templates verbatim; the code is ~150 lines.
Heavy imports (torch, transformers) are inside the functions, as in the library.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FAMILIES = ("qwen2", "gemma", "bloom", "internlm2", "llama3")

#: The token that ends an assistant turn in each family's chat template (for bloom: in the built-in
#: "chatml" template the user must name, since BLOOM has no template of its own).
END_OF_TURN = {
    "qwen2": "<|im_end|>",
    "gemma": "<end_of_turn>",
    "bloom": "<|im_end|>",
    "internlm2": "<|im_end|>",
    "llama3": "<|eot_id|>",
}

BPE_VOCAB_SIZE = 1200

# Qwen2's / Llama 3's pre-tokenizer split (single digits, contractions, letters runs incl. CJK): a real
# modern byte-level BPE, so whitespace and code indentation survive a round trip.
_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

_TRAINING_TEXT = """\
The quick brown fox jumps over the lazy dog. A language model predicts the next token from the tokens before it.
Most people who fine-tune a model do not pretrain one: they take an open model and adapt it to their own data.
The weather was cold that morning, so she took the long way to the station and read a book on the train.
When the assistant answers a question, it should be helpful, honest and brief. Thank you for your help!
He asked whether the results could be reproduced, and the team wrote down every setting they had used.
Training data is cleaned, deduplicated and tokenized before the first step; evaluation uses held-out text.
What is the capital of France? The capital of France is Paris. How many legs does a spider have? Eight.
Please write a function that returns the sum of two numbers, and explain how it works in one sentence.
Our village library opens at nine, closes at six, and lends children's books, maps, newspapers and music.
Remember: every experiment should be logged, every result checked twice, and every mistake written up.

def add(a, b):
    \"\"\"Return the sum of a and b.\"\"\"
    return a + b


class Counter:
    def __init__(self, start: int = 0) -> None:
        self.value = start

    def increment(self, step: int = 1) -> int:
        self.value += step
        return self.value


for i in range(10):
    if i % 2 == 0:
        print(f"{i} is even")
    else:
        print(f"{i} is odd")

import json
from pathlib import Path

with open(Path("data.json"), encoding="utf-8") as handle:
    records = [json.loads(line) for line in handle if line.strip()]
result = {"count": len(records), "keys": sorted({key for record in records for key in record})}


async def fetch_all(urls: list[str], timeout: float = 3.5) -> dict[str, bytes]:
    try:
        pages = await gather(*(download(url, timeout=timeout) for url in urls))
    except TimeoutError as error:
        raise RuntimeError(f"download failed: {error}") from error
    return dict(zip(urls, pages, strict=True))

今天天气很好，我们一起去公园散步吧。机器学习是人工智能的一个重要分支。
这个模型可以回答问题，也可以写代码。请用中文回答下面的问题。谢谢你的帮助！
北京是中国的首都。语言模型根据前面的词预测下一个词。我们需要更多的训练数据。
今日はいい天気ですね。私は毎朝コーヒーを飲みます。東京は日本の首都です。
この質問に日本語で答えてください。機械学習はとても面白いです。ありがとうございます。
"""


@dataclass(frozen=True)
class _FamilySpec:
    """How one family lays out its special tokens, templates and model config."""

    front_specials: tuple[str, ...]  # given ids 0..n-1, before the BPE vocabulary (Gemma, BLOOM)
    back_specials: tuple[str, ...]  # appended after the BPE vocabulary (Qwen2, Llama 3)
    bos: str | None
    eos: str
    pad: str | None
    unk: str | None
    add_bos_on_encode: bool
    chat_template: str | None
    generation_eos: tuple[str, ...]
    vocab_multiple: int  # config.vocab_size is len(tokenizer) rounded up to this (real checkpoints pad)
    nfc: bool = False  # Qwen2's tokenizer.json normalizes to NFC (so "e" + U+0301 comes back as U+00E9)
    tokenizer_class: str = "TokenizersBackend"  # what tokenizer_config.json declares
    declare_add_bos: bool = False  # tokenizer_config.json says "add_bos_token": true (Gemma, InternLM2)


# Qwen2.5-Instruct's template without the tools branches (its default system message included).
_QWEN2_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if (message.role == 'user') or (message.role == 'system' and not loop.first) "
    "or (message.role == 'assistant') %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- endif %}\n"
)

# Gemma 3's template (string contents only): BOS written here, system folded into the first user turn.
_GEMMA_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}"
    "{%- set first_user_prefix = '' -%}"
    "{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{%- endif -%}"
    "{%- if (message['role'] == 'assistant') -%}{%- set role = 'model' -%}"
    "{%- else -%}{%- set role = message['role'] -%}{%- endif -%}"
    "{{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else '') }}"
    "{{ message['content'] | trim }}"
    "{{ '<end_of_turn>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\\n' }}{%- endif -%}"
)

# InternLM2-chat's template.
_INTERNLM2_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Llama-3-Instruct's template.
_LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)

_SPECS = {
    "qwen2": _FamilySpec(
        front_specials=(),
        back_specials=("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
        bos=None,
        eos="<|im_end|>",
        pad="<|endoftext|>",
        unk=None,
        add_bos_on_encode=False,
        chat_template=_QWEN2_TEMPLATE,
        generation_eos=("<|im_end|>", "<|endoftext|>"),
        vocab_multiple=64,
        nfc=True,
        # AutoTokenizer maps model_type qwen2 to Qwen2Tokenizer whatever the file says; declare it as Qwen does.
        tokenizer_class="Qwen2Tokenizer",
    ),
    "gemma": _FamilySpec(
        front_specials=("<pad>", "<eos>", "<bos>", "<unk>"),
        back_specials=("<start_of_turn>", "<end_of_turn>"),
        bos="<bos>",
        eos="<eos>",
        pad="<pad>",
        unk="<unk>",
        add_bos_on_encode=True,
        chat_template=_GEMMA_TEMPLATE,
        generation_eos=("<eos>", "<end_of_turn>"),
        vocab_multiple=1,
        declare_add_bos=True,
    ),
    "bloom": _FamilySpec(
        front_specials=("<unk>", "<s>", "</s>", "<pad>"),
        back_specials=("<|im_start|>", "<|im_end|>"),
        bos="<s>",
        eos="</s>",
        pad="<pad>",
        unk="<unk>",
        add_bos_on_encode=False,
        chat_template=None,
        generation_eos=("</s>",),
        vocab_multiple=64,
    ),
    "internlm2": _FamilySpec(
        front_specials=("<unk>", "<s>", "</s>"),
        back_specials=("<|im_start|>", "<|im_end|>"),
        bos="<s>",
        eos="</s>",
        pad="</s>",
        unk="<unk>",
        add_bos_on_encode=True,
        chat_template=_INTERNLM2_TEMPLATE,
        generation_eos=("</s>", "<|im_end|>"),
        vocab_multiple=1,
        declare_add_bos=True,
    ),
    "llama3": _FamilySpec(
        front_specials=(),
        back_specials=(
            "<|begin_of_text|>",
            "<|end_of_text|>",
            "<|start_header_id|>",
            "<|end_header_id|>",
            "<|eot_id|>",
        ),
        bos="<|begin_of_text|>",
        eos="<|end_of_text|>",
        pad=None,
        unk=None,
        add_bos_on_encode=True,
        chat_template=_LLAMA3_TEMPLATE,
        generation_eos=("<|end_of_text|>", "<|eot_id|>"),
        vocab_multiple=1,
    ),
}


def _spec(family: str) -> _FamilySpec:
    if family not in _SPECS:
        raise ValueError(f"unknown foreign family {family!r}; known: {', '.join(FAMILIES)}")
    return _SPECS[family]


@functools.lru_cache(maxsize=1)
def _train_base_bpe() -> tuple[tuple[tuple[str, int], ...], tuple[tuple[str, str], ...]]:
    """Train the shared byte-level BPE once per process: (vocab items, merges), no special tokens."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB_SIZE,
        min_frequency=1,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_TRAINING_TEXT.splitlines(keepends=True), trainer=trainer)
    model = json.loads(tokenizer.to_str())["model"]
    merges = tuple(tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"])
    vocab = tuple(sorted(model["vocab"].items(), key=lambda item: item[1]))
    return vocab, merges


def _build_backend(spec: _FamilySpec) -> Any:
    """The `tokenizers.Tokenizer` of one family: the shared BPE with the family's specials around it."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    base_vocab, merges = _train_base_bpe()
    offset = len(spec.front_specials)
    vocab = {token: index for index, token in enumerate(spec.front_specials)}
    vocab.update({token: index + offset for token, index in base_vocab})
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=list(merges), unk_token=spec.unk))
    if spec.nfc:
        tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    # Front specials already have ids in the vocabulary; registering them marks them special. Back specials
    # get the next free ids, in order.
    specials = spec.front_specials + spec.back_specials
    tokenizer.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in specials])
    if spec.add_bos_on_encode:
        bos_id = tokenizer.token_to_id(spec.bos)
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{spec.bos}:0 $A:0",
            pair=f"{spec.bos}:0 $A:0 {spec.bos}:1 $B:1",
            special_tokens=[(spec.bos, bos_id)],
        )
    return tokenizer


def build_foreign_tokenizer(family: str, out_dir: str | Path, *, chat_template: bool = True) -> Any:
    """Build one family's tokenizer, save it to ``out_dir`` and return it (a ``PreTrainedTokenizerFast``).

    ``chat_template=False`` leaves the template out (bloom never has one). The template is written into
    tokenizer_config.json, where most checkpoints on the Hub keep it, not into chat_template.jinja.
    """
    from transformers import PreTrainedTokenizerFast

    spec = _spec(family)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    backend = _build_backend(spec)
    named = {"bos_token": spec.bos, "eos_token": spec.eos, "pad_token": spec.pad, "unk_token": spec.unk}
    special_kwargs = {key: value for key, value in named.items() if value is not None}
    extra = [token for token in spec.front_specials + spec.back_specials if token not in named.values()]
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        additional_special_tokens=extra,
        add_bos_token=spec.add_bos_on_encode,
        add_eos_token=False,
        clean_up_tokenization_spaces=False,
        model_max_length=512,
        chat_template=spec.chat_template if chat_template else None,
        **special_kwargs,
    )
    tokenizer.save_pretrained(out_dir, save_jinja_files=False)
    # Declare what the real tokenizer_config.json declares. Llama 3 adds BOS through tokenizer.json's
    # post-processor only (no add_bos_token key), as the real one does: "add_bos_token" cannot be trusted.
    config_path = out_dir / "tokenizer_config.json"
    tokenizer_config = json.loads(config_path.read_text(encoding="utf-8"))
    tokenizer_config["tokenizer_class"] = spec.tokenizer_class
    if tokenizer_config.get("chat_template") is None:  # a model without a template has no key at all
        tokenizer_config.pop("chat_template", None)
    if spec.declare_add_bos:
        tokenizer_config["add_bos_token"] = True
    config_path.write_text(json.dumps(tokenizer_config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return tokenizer


def _padded(size: int, multiple: int) -> int:
    return -(-size // multiple) * multiple


def _model_config(family: str, *, vocab_size: int, hidden_size: int, num_layers: int, ids: dict[str, Any]) -> Any:
    """The tiny transformers config of one family (4 heads, MLP 2x hidden, 512 positions)."""
    from transformers import BloomConfig, GemmaConfig, LlamaConfig, Qwen2Config

    heads = 4
    common = {"vocab_size": vocab_size, "hidden_size": hidden_size, **ids}
    if family == "bloom":  # ALiBi: no position table; its own names for layers and heads
        return BloomConfig(n_layer=num_layers, n_head=heads, **common)
    attention = {
        "num_hidden_layers": num_layers,
        "num_attention_heads": heads,
        "num_key_value_heads": heads,
        "intermediate_size": 2 * hidden_size,
        "max_position_embeddings": 512,
    }
    if family == "qwen2":
        return Qwen2Config(**attention, **common)
    if family == "gemma":  # Gemma's default head_dim is 256 whatever the width: set it to hidden / heads
        return GemmaConfig(head_dim=hidden_size // heads, **attention, **common)
    return LlamaConfig(**attention, **common)  # internlm2 (converted to Llama format) and llama3


def build_foreign_model(
    family: str,
    out_dir: str | Path,
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    seed: int = 0,
    chat_template: bool = True,
) -> Path:
    """Save a random-weight model of ``family`` with its tokenizer and generation config in ``out_dir``.

    config.json's bos/eos/pad ids are the tokenizer's (None where the tokenizer has none); the generation
    config lists every stop token of the family (eos and end-of-turn). Returns ``out_dir``.
    """
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    spec = _spec(family)
    out_dir = Path(out_dir)
    tokenizer = build_foreign_tokenizer(family, out_dir, chat_template=chat_template)
    ids = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    config = _model_config(
        family,
        vocab_size=_padded(len(tokenizer), spec.vocab_multiple),
        hidden_size=hidden_size,
        num_layers=num_layers,
        ids=ids,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    stop_ids = [tokenizer.convert_tokens_to_ids(token) for token in spec.generation_eos]
    model.generation_config = GenerationConfig(
        bos_token_id=ids["bos_token_id"],
        eos_token_id=stop_ids if len(stop_ids) > 1 else stop_ids[0],
        pad_token_id=ids["pad_token_id"],
    )
    model.save_pretrained(out_dir)
    return out_dir


_REMOTE_CODE_STUB = '''"""lmforge test stub standing in for InternLM2's remote code: it must never be imported."""

raise ImportError("lmforge test stub: {name} is remote code and must not be imported without opting in")
'''


_REMOTE_CODE_WORKING = {
    "configuration_internlm2.py": '''"""lmforge test remote code: InternLM2 as a Llama (what a user opts into with trust_remote_code)."""

from transformers import LlamaConfig


class InternLM2Config(LlamaConfig):
    model_type = "internlm2"
''',
    "modeling_internlm2.py": '''"""lmforge test remote code: InternLM2 as a Llama (what a user opts into with trust_remote_code)."""

from transformers import LlamaForCausalLM

from .configuration_internlm2 import InternLM2Config


class InternLM2ForCausalLM(LlamaForCausalLM):
    config_class = InternLM2Config
''',
}


def build_remote_code_model(out_dir: str | Path, *, working: bool = False) -> Path:
    """A directory that only loads with remote code: config.json has model_type "internlm2" and an auto_map.

    The weights and tokenizer are an internlm2-family model's (so nothing else is missing); the
    configuration/modeling .py files are stubs that raise ImportError if anything ever imports them,
    or, with ``working``, a real (Llama-based) implementation: what a user who opts in runs.
    """
    out_dir = build_foreign_model("internlm2", out_dir)
    config_path = out_dir / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config.update(
        {
            "model_type": "internlm2",
            "architectures": ["InternLM2ForCausalLM"],
            "auto_map": {
                "AutoConfig": "configuration_internlm2.InternLM2Config",
                "AutoModel": "modeling_internlm2.InternLM2ForCausalLM",
                "AutoModelForCausalLM": "modeling_internlm2.InternLM2ForCausalLM",
            },
        }
    )
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    for name in ("configuration_internlm2.py", "modeling_internlm2.py"):
        code = _REMOTE_CODE_WORKING[name] if working else _REMOTE_CODE_STUB.format(name=name)
        (out_dir / name).write_text(code, encoding="utf-8")
    return out_dir


def upper_case_user_turns(checkpoint: str | Path) -> None:
    """Edit the ChatML-style chat template saved in ``checkpoint`` (``chat_template.jinja``) so that user turns
    render upper-cased: still a valid, self-consistent template, so only a template audit can tell."""
    path = Path(checkpoint) / "chat_template.jinja"
    template = path.read_text(encoding="utf-8")
    altered = template.replace("message.content + '<|im_end|>'",
                               "(message.content | upper if message.role == 'user' else message.content) + '<|im_end|>'")
    if altered == template:
        raise ValueError(f"{path}: no ChatML user turn to alter")
    path.write_text(altered, encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    """``python tests/foreign_models.py gemma /tmp/my-gemma``: a foreign model to try lmforge on, offline."""
    import argparse

    parser = argparse.ArgumentParser(description="Build a random-weight foreign HF causal LM with its own tokenizer "
                                                 "and chat template (for trying 'bring your own model' offline).")
    parser.add_argument("family", choices=FAMILIES, help="which real model's conventions to mimic")
    parser.add_argument("out_dir", help="directory to write (config.json, weights, tokenizer, generation config)")
    parser.add_argument("--hidden-size", type=int, default=64, help="model width (default 64)")
    parser.add_argument("--layers", type=int, default=2, help="transformer layers (default 2)")
    parser.add_argument("--no-chat-template", action="store_true", help="leave the tokenizer without a template")
    args = parser.parse_args(argv)
    path = build_foreign_model(args.family, args.out_dir, hidden_size=args.hidden_size, num_layers=args.layers,
                               chat_template=not args.no_chat_template)
    print(path)  # noqa: T201  (the command's output: the directory, for scripts)


if __name__ == "__main__":
    main()
