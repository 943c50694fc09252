"""pretrain pipeline wiring."""

from kedro.pipeline import Node, Pipeline

from .nodes import pretrain_model


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        Node(pretrain_model, ["token_shards", "tokenizer", "deepspeed_templates", "params:pretrain"],
             ["pretrain_checkpoint", "pretrain_metrics", "pretrain_loss_curve"], name="pretrain_model"),
    ])
