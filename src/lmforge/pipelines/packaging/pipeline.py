"""packaging pipeline wiring."""

from kedro.pipeline import Node, Pipeline

from .nodes import package_chat_model


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        Node(package_chat_model, ["sft_checkpoint", "align_checkpoint", "tokenizer", "data_processing_metrics",
                                  "tokenizer_metrics", "pretrain_metrics", "sft_metrics", "align_metrics",
                                  "evaluation_metrics", "template_audit_sft", "quantized_models",
                                  "sft_validation_conversations", "params:packaging", "params:gate",
                                  "params:pretrain", "params:sft", "params:align"],
             ["packaged_model", "packaging_metrics", "template_audit_packaging", "packaged_gguf",
              "template_audit_engine"], name="package_chat_model"),
    ])
