"""sft pipeline wiring."""

from kedro.pipeline import Node, Pipeline

from .nodes import build_conversations, finetune_model, tokenize_conversations


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        Node(build_conversations, ["clean_documents", "params:sft"],
             ["sft_train_conversations", "sft_validation_conversations", "sft_quarantine",
              "sft_conversation_stats"], name="build_conversations"),
        Node(tokenize_conversations, ["sft_train_conversations", "tokenizer", "sft_conversation_stats", "params:sft"],
             ["sft_train_examples", "sft_data_stats"], name="tokenize_conversations"),
        Node(finetune_model, ["sft_train_examples", "sft_validation_conversations", "pretrain_checkpoint", "tokenizer",
                              "deepspeed_templates", "sft_data_stats", "params:sft"],
             ["sft_checkpoint", "sft_metrics", "sft_loss_curve"], name="finetune_model"),
    ])
