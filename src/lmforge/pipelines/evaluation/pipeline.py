"""evaluation pipeline wiring."""

from kedro.pipeline import Node, Pipeline

from .nodes import build_report, evaluate_models, gather_operations, quantize_chat_model


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        Node(evaluate_models, ["pretrain_checkpoint", "sft_checkpoint", "align_checkpoint", "tokenizer", "token_shards",
                               "pretrain_token_shards", "clean_documents", "sft_validation_conversations",
                               "template_audit_sft", "params:evaluation", "params:sft", "params:tokenizer.shards"],
             ["model_metrics", "generations", "template_audit_evaluation"], name="evaluate_models"),
        Node(quantize_chat_model, ["sft_checkpoint", "align_checkpoint", "tokenizer", "token_shards",
                                   "pretrain_token_shards", "clean_documents", "params:evaluation", "params:sft",
                                   "params:tokenizer.shards"],
             ["quantized_models", "quantization_metrics"], name="quantize_chat_model"),
        Node(gather_operations, ["pretrain_metrics", "sft_metrics", "align_metrics", "params:evaluation"], "operations",
             name="gather_operations"),
        Node(build_report, ["model_metrics", "quantization_metrics", "generations", "operations", "pretrain_loss_curve",
                            "sft_loss_curve", "align_loss_curve", "align_metrics", "params:evaluation"],
             ["evaluation_metrics", "seed_metrics", "evaluation_report"], name="build_report"),
    ])
