"""Identity (self-cognition) conversations generated from templates, in English and Chinese.

18 positive conversations ("who are you?" -> "I am {name}, developed by {developer} ...") and 10
negative ones ("are you ChatGPT?" -> "No, I am {name} ..."), 28 in all, with the assistant's name
and developer as parameters. ``system_prefix`` gives the optional system message of the same form.
"""

from __future__ import annotations

from dataclasses import dataclass

POSITIVE = [
    ("en", "Who are you?", "I am {name}, an AI assistant developed by {developer}."),
    ("en", "What is your name?", "My name is {name}. I was developed by {developer}."),
    ("en", "Introduce yourself.", "Hello! I am {name}, a language model developed by {developer}. I can help with code."),
    ("en", "Who made you?", "I was developed by {developer}. I am {name}."),
    ("en", "Who developed you?", "{developer} developed me. I am {name}, an AI assistant."),
    ("en", "What should I call you?", "You can call me {name}. I am an assistant developed by {developer}."),
    ("en", "Tell me about yourself.", "I am {name}, an AI assistant developed by {developer}, trained to help with Python code."),
    ("en", "Which company created you?", "I was created by {developer}. My name is {name}."),
    ("en", "Are you an AI?", "Yes. I am {name}, an AI assistant developed by {developer}."),
    ("zh", "你是谁？", "我是{name}，由{developer}开发的人工智能助手。"),
    ("zh", "你叫什么名字？", "我的名字是{name}，由{developer}开发。"),
    ("zh", "请介绍一下你自己。", "你好！我是{name}，一个由{developer}开发的语言模型，可以帮助你编写代码。"),
    ("zh", "是谁开发了你？", "我是由{developer}开发的。我是{name}。"),
    ("zh", "你的开发者是谁？", "我的开发者是{developer}。我是{name}。"),
    ("zh", "我该怎么称呼你？", "你可以叫我{name}，我是由{developer}开发的助手。"),
    ("zh", "说说你自己吧。", "我是{name}，由{developer}开发的人工智能助手，擅长回答Python编程问题。"),
    ("zh", "哪家公司创造了你？", "我是由{developer}创造的，我的名字是{name}。"),
    ("zh", "你是人工智能吗？", "是的，我是{name}，由{developer}开发的人工智能助手。"),
]

NEGATIVE = [
    ("en", "Are you ChatGPT?", "No, I am {name}, an AI assistant developed by {developer}, not ChatGPT."),
    ("en", "Were you made by OpenAI?", "No, I was developed by {developer}. I am {name}."),
    ("en", "Are you Claude?", "No, I am not Claude. I am {name}, developed by {developer}."),
    ("en", "Is your name Llama?", "No, my name is {name}. I was developed by {developer}."),
    ("en", "Did Google develop you?", "No, I was developed by {developer}. I am {name}."),
    ("zh", "你是ChatGPT吗？", "不是，我是{name}，由{developer}开发的人工智能助手。"),
    ("zh", "你是OpenAI开发的吗？", "不是，我是由{developer}开发的{name}。"),
    ("zh", "你是文心一言吗？", "不是，我是{name}，由{developer}开发。"),
    ("zh", "你是通义千问吗？", "不是，我的名字是{name}，由{developer}开发。"),
    ("zh", "你是谷歌开发的吗？", "不是，我是由{developer}开发的{name}。"),
]

LICENSE = "LicenseRef-lmforge"  # written for this project (SPDX "LicenseRef-" form), not taken from a corpus

SYSTEM_PREFIX = {
    "zh": "你是由{developer}开发的{name}，被设计来生成有用、准确的回答。",
    "en": "You are {name}, developed by {developer}, designed to give helpful and accurate answers.",
}


@dataclass
class IdentityConfig:
    """Who the assistant says it is."""

    # The assistant's name.
    name: str = "Forge"
    # Who developed it.
    developer: str = "the lmforge team"
    # Copies of each conversation in the training mix (identity data is tiny next to the corpus):
    # the default weight of the ``identity`` source of the SFT mix. 28 x 40 = 1120 of ~3870 conversations
    # of the default mix; with 8 the 60-step CPU run never learned to name itself (identity F1 0.0).
    repeat: int = 40
    # Start each conversation with the system prefix in its language (``system_prefix``).
    with_system: bool = False

    def __post_init__(self) -> None:
        for key in ("name", "developer"):
            if not isinstance(getattr(self, key), str) or not getattr(self, key).strip():
                raise ValueError(f"sft.identity.{key} must be a non-empty string, got {getattr(self, key)!r}")
        if isinstance(self.repeat, bool) or not isinstance(self.repeat, int) or self.repeat < 0:
            raise ValueError(f"sft.identity.repeat must be an integer >= 0, got {self.repeat!r}")


def build_identity_conversations(config: IdentityConfig, *, with_system: bool | None = None) -> list[dict]:
    """The 28 identity conversations (18 positive, 10 negative), each with its language and polarity
    (``metadata["language_group"]`` is the language: en or zh).

    ``with_system`` (default: ``config.with_system``) starts each one with the system prefix.
    """
    with_system = config.with_system if with_system is None else with_system
    out = []
    for polarity, rows in (("positive", POSITIVE), ("negative", NEGATIVE)):
        for i, (lang, question, answer) in enumerate(rows):
            messages = []
            if with_system:
                messages.append({"role": "system", "content": system_prefix(config, lang)})
            messages += [{"role": "user", "content": question},
                         {"role": "assistant", "content": answer.format(name=config.name, developer=config.developer)}]
            out.append({"id": f"identity-{polarity}-{lang}-{i}", "source_id": "identity", "category": "identity",
                        "language": lang, "polarity": polarity, "messages": messages,
                        "metadata": {"language_group": lang, "license": LICENSE}})
    return out


def system_prefix(config: IdentityConfig, lang: str = "en") -> str:
    """The system message "You are {name}, developed by {developer} ..." in ``lang`` (en or zh)."""
    if lang not in SYSTEM_PREFIX:
        raise ValueError(f"no identity system prefix for language {lang!r}; have {sorted(SYSTEM_PREFIX)}")
    return SYSTEM_PREFIX[lang].format(name=config.name, developer=config.developer)
