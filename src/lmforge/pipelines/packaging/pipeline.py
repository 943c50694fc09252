"""packaging pipeline wiring."""

from kedro.pipeline import Node, Pipeline

from .nodes import package_chat_model


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        Node(package_chat_model, ["sft_checkpoint", "tokenizer", "data_processing_metrics", "tokenizer_metrics",
                                  "pretrain_metrics", "sft_metrics", "evaluation_metrics",
                                  "params:packaging", "params:gate", "params:pretrain", "params:sft"],
             ["packaged_model", "packaging_metrics"], name="package_chat_model"),
    ])
