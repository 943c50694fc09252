"""evaluation pipeline wiring."""

from kedro.pipeline import Node, Pipeline

from .nodes import evaluate_models


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        Node(evaluate_models, ["pretrain_checkpoint", "sft_checkpoint", "tokenizer", "token_shards",
                               "sft_validation_conversations", "params:evaluation", "params:sft.identity"],
             ["evaluation_metrics", "generations"], name="evaluate_models"),
    ])
