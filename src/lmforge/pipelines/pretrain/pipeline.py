"""pretrain pipeline wiring."""

from kedro.pipeline import Node, Pipeline

from .nodes import build_pretrain_config, pretrain_model, tokenize_for_base_model


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        Node(build_pretrain_config, "params:pretrain", "pretrain_config", name="build_pretrain_config"),
        Node(tokenize_for_base_model, ["clean_documents", "pretrain_config", "params:tokenizer"],
             ["pretrain_token_shards", "pretrain_token_counts"], name="tokenize_for_base_model"),
        Node(pretrain_model, ["token_shards", "pretrain_token_shards", "tokenizer", "deepspeed_templates",
                              "pretrain_token_counts", "pretrain_config"],
             ["pretrain_checkpoint", "pretrain_metrics", "pretrain_loss_curve"], name="pretrain_model"),
    ])
