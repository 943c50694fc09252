"""sft pipeline wiring: ``params:sft`` becomes one typed ``sft_config`` that every later node takes."""

from kedro.pipeline import Node, Pipeline

from .nodes import build_conversations, build_sft_config, finetune_model, tokenize_conversations


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        Node(build_sft_config, "params:sft", "sft_config", name="build_sft_config"),
        Node(build_conversations, ["clean_documents", "params:data_processing.source_cache", "sft_config"],
             ["sft_train_conversations", "sft_validation_conversations", "sft_quarantine",
              "sft_conversation_stats"], name="build_conversations"),
        Node(tokenize_conversations, ["sft_train_conversations", "pretrain_checkpoint", "tokenizer",
                                      "sft_conversation_stats", "sft_config"],
             ["sft_train_examples", "sft_data_stats", "template_audit_sft"], name="tokenize_conversations"),
        Node(finetune_model, ["sft_train_examples", "sft_validation_conversations", "pretrain_checkpoint", "tokenizer",
                              "deepspeed_templates", "sft_data_stats", "sft_config"],
             ["sft_checkpoint", "sft_metrics", "sft_loss_curve"], name="finetune_model"),
    ])
