"""The project's own chat format (ChatML-like), for the tokenizers lmforge trains.

The tokenizer stage writes ``DEFAULT_CHAT_TEMPLATE`` (the default the Kedro conf copies) into the
exported tokenizer's ``chat_template``; from there it is the model's template like any other model's:
rendered, masked and prompted through ``lmforge.tokenizer.chat_tokenizer.ChatTokenizer`` (training,
evaluation, serving), which works the same for a foreign model's own template.

The format (``⏎`` is a newline)::

    <s><|im_start|>system⏎{content}<|im_end|>⏎<|im_start|>user⏎{content}<|im_end|>⏎
    <|im_start|>assistant⏎{content}<|im_end|>⏎

and with ``add_generation_prompt``, ``<|im_start|>assistant⏎`` at the end. Each assistant turn's
``{content}<|im_end|>`` is wrapped in ``{% generation %}...{% endgeneration %}`` (the transformers
convention behind ``return_assistant_tokens_mask``): what is trained, and what ``ChatTokenizer``'s
prefix-by-prefix spans find too.

EOS: the chat format does not use ``</s>``. ``<|im_end|>`` ends an assistant turn and is the token
generation stops on (``ChatTokenizer.end_of_turn``); ``</s>`` stays the document separator of
pretraining. No learned piece contains a newline (training is per line) and the markers are atomic,
so the trained spans always fall between tokens.
"""

from __future__ import annotations

DEFAULT_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{% else %}"
    "{{ message['content'] + '<|im_end|>' }}"
    "{% endif %}"
    "{{ '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
