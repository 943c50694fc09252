"""tokenizer pipeline wiring."""

from kedro.pipeline import Node, Pipeline

from .nodes import build_token_shards, train_tokenizer


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        Node(train_tokenizer, ["clean_documents", "params:tokenizer"], ["tokenizer", "tokenizer_train_metrics"],
             name="train_tokenizer"),
        Node(build_token_shards, ["clean_documents", "tokenizer", "tokenizer_train_metrics", "params:tokenizer"],
             ["token_shards", "tokenizer_metrics"], name="build_token_shards"),
    ])
