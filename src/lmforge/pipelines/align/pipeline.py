"""align pipeline wiring: ``params:align`` becomes one typed ``align_config`` that every later node takes."""

from kedro.pipeline import Node, Pipeline

from .nodes import align_model, build_align_config, build_preference_pairs


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        Node(build_align_config, "params:align", "align_config", name="build_align_config"),
        Node(build_preference_pairs, ["align_config", "params:sft"],
             ["align_offline_pairs", "align_source_quarantine", "align_data_stats"], name="build_preference_pairs"),
        Node(align_model, ["align_offline_pairs", "align_source_quarantine", "sft_train_conversations", "sft_validation_conversations",
                           "sft_checkpoint", "tokenizer", "deepspeed_templates", "align_data_stats", "params:sft",
                           "align_config"],
             ["align_checkpoint", "align_metrics", "align_loss_curve", "align_pairs", "align_samples",
              "align_quarantine"],
             name="align_model"),
    ])
