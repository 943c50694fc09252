"""Preference losses: parity with TRL 1.16's own implementations (the oracle), masking, metrics.

TRL is called for real: its trainers' loss methods on a bare instance (``object.__new__`` plus the few
attributes the method reads; building a whole trainer tokenizes datasets and starts accelerate for
nothing), and for DPO/IPO, SimPO and ORPO its full per-batch path, forward of a tiny random Llama
included. Importing TRL costs a few seconds once (module fixture); every test here then runs in well
under a second.
"""

from __future__ import annotations

from collections import defaultdict

import pytest
import torch
import torch.nn.functional as F

from lmforge.align.losses import (
    METHODS,
    REFERENCE_FREE,
    LossArgs,
    preference_loss,
    sequence_logps,
)

TOL = 1e-5
B, T, V = 4, 12, 32
PROMPT_LENS = [3, 5, 2, 4]  # prompt tokens per pair (label -100)
CHOSEN_LENS = [6, 4, 9, 5]  # answer tokens; the rest of the row is padding (label -100)
REJECTED_LENS = [5, 7, 3, 8]


@pytest.fixture(scope="module")
def trl():
    """TRL's trainer modules (imported once: ~3 s beside transformers' own import)."""
    from accelerate import Accelerator

    with pytest.MonkeyPatch.context() as mp:  # CPO and ORPO live in trl.experimental in TRL 1.x
        mp.setenv("TRL_EXPERIMENTAL_SILENCE", "1")
        from trl.experimental.cpo import cpo_trainer
        from trl.experimental.orpo import orpo_trainer
        from trl.trainer import dpo_trainer, utils

    return {"dpo": dpo_trainer, "cpo": cpo_trainer, "orpo": orpo_trainer, "utils": utils,
            "accelerator": Accelerator(cpu=True)}


def bare(cls, accelerator, **attrs):
    """A trainer instance with only the attributes its loss methods read (no dataset, no model setup)."""
    obj = object.__new__(cls)
    obj.__dict__.update(accelerator=accelerator, aux_loss_enabled=False, is_encoder_decoder=False, **attrs)
    return obj


def make_rows(answer_lens, seed):
    """input_ids and labels (B, T): prompt, answer, right padding; labels -100 outside the answer."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, V, (B, T), generator=g)
    labels = torch.full((B, T), -100)
    attention = torch.zeros(B, T, dtype=torch.long)
    for i, (p, n) in enumerate(zip(PROMPT_LENS, answer_lens, strict=True)):
        labels[i, p:p + n] = ids[i, p:p + n]
        attention[i, :p + n] = 1
        ids[i, p + n:] = 0  # pad id
    return ids, labels, attention


@pytest.fixture(scope="module")
def batch():
    chosen, rejected = make_rows(CHOSEN_LENS, 1), make_rows(REJECTED_LENS, 2)
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2 * B, T, V, generator=g, dtype=torch.float64) * 2  # rows: chosen then rejected
    return {"chosen": chosen, "rejected": rejected, "logits": logits,
            "labels": torch.cat([chosen[1], rejected[1]]),
            "ref": (torch.randn(B, generator=g, dtype=torch.float64) - 12,
                    torch.randn(B, generator=g, dtype=torch.float64) - 12)}


@pytest.fixture(scope="module")
def model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         intermediate_size=64, vocab_size=V, max_position_embeddings=64, pad_token_id=0)
    return LlamaForCausalLM(config).eval()


def ours(args, batch, with_ref=True):
    logps, n = sequence_logps(batch["logits"], batch["labels"])
    ref = batch["ref"] if with_ref else (None, None)
    return preference_loss(args, logps[:B], logps[B:], *ref, n[:B], n[B:])


def test_sequence_logps_matches_trl_get_batch_logps(trl, batch):
    logps, n = sequence_logps(batch["logits"], batch["labels"])
    get = trl["cpo"].CPOTrainer.get_batch_logps
    assert torch.equal(n, torch.tensor(CHOSEN_LENS + REJECTED_LENS))
    assert (logps - get(batch["logits"], batch["labels"].clone())).abs().max() < TOL
    avg = get(batch["logits"], batch["labels"].clone(), average_log_prob=True)
    assert (logps / n - avg).abs().max() < TOL
    # and TRL's other gathering, the one its DPO/GRPO trainers use on full logits
    per_token = trl["utils"].selective_log_softmax(batch["logits"][:, :-1], batch["labels"][:, 1:].clamp(min=0))
    assert (logps - (per_token * (batch["labels"][:, 1:] != -100)).sum(-1)).abs().max() < TOL


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_dpo_equals_trl_cpo_sigmoid_on_logratios(trl, batch, smoothing):
    """Conservative DPO is TRL's CPO sigmoid loss fed the policy-minus-reference log-ratios."""
    loss, metrics = ours(LossArgs("dpo", beta=0.2, label_smoothing=smoothing), batch)
    logps, _ = sequence_logps(batch["logits"], batch["labels"])
    cpo = bare(trl["cpo"].CPOTrainer, trl["accelerator"], alpha=0.0, loss_type="sigmoid", beta=0.2,
               label_smoothing=smoothing, simpo_gamma=0.5)
    ratio_w, ratio_l = logps[:B] - batch["ref"][0], logps[B:] - batch["ref"][1]
    losses, reward_w, reward_l = cpo.cpo_loss(ratio_w, ratio_l)
    assert abs(loss.item() - losses.mean().item()) < TOL
    assert abs(metrics["rewards_chosen"].item() - reward_w.mean().item()) < TOL
    assert abs(metrics["rewards_rejected"].item() - reward_l.mean().item()) < TOL


@pytest.fixture(scope="module")
def dpo_run(trl, model, batch):
    """TRL's DPOTrainer._compute_loss on the tiny model (fused LM head, precomputed reference), and our inputs."""
    from trl.trainer.utils import add_fused_lm_head

    (ids_w, labels_w, att_w), (ids_l, labels_l, att_l) = batch["chosen"], batch["rejected"]
    inputs = {"input_ids": torch.cat([ids_w, ids_l]), "attention_mask": torch.cat([att_w, att_l]),
              "completion_mask": (torch.cat([labels_w, labels_l]) != -100).long(),
              "ref_chosen_logps": batch["ref"][0].float(), "ref_rejected_logps": batch["ref"][1].float()}
    with torch.no_grad():
        logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
    patched = type(model)(model.config).eval()
    patched.load_state_dict(model.state_dict())
    add_fused_lm_head(patched, outputs=("log_probs", "entropy", "mean_logits", "is_top1"))

    def run(loss_type, beta):
        trainer = bare(trl["dpo"].DPOTrainer, trl["accelerator"], model=patched, beta=beta, loss_types=[loss_type],
                       loss_weights=[1.0], ld_alpha=None, precompute_ref_logps=True, f_divergence_type="reverse_kl",
                       use_weighting=False, _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
                       _total_train_tokens=0, _tp_size=1)
        with torch.no_grad():
            loss = trainer._compute_loss(patched, inputs, return_outputs=False)
        return loss.item(), {k: v[-1] for k, v in trainer._metrics["eval"].items()}

    mine = {"logits": logits, "labels": torch.cat([labels_w, labels_l]),
            "ref": (batch["ref"][0].float(), batch["ref"][1].float())}
    return run, mine


@pytest.mark.parametrize(("method", "loss_type"), [("dpo", "sigmoid"), ("ipo", "ipo")])
def test_dpo_and_ipo_equal_trl_dpo_trainer(dpo_run, method, loss_type):
    run, mine = dpo_run
    trl_loss, trl_metrics = run(loss_type, beta=0.5)
    loss, metrics = ours(LossArgs(method, beta=0.5), mine)
    assert abs(loss.item() - trl_loss) < TOL
    for name, key in [("rewards_chosen", "rewards/chosen"), ("rewards_rejected", "rewards/rejected"),
                      ("margin", "rewards/margins"), ("accuracy", "rewards/accuracies")]:
        assert abs(metrics[name].item() - trl_metrics[key]) < TOL, name


def test_simpo_equals_trl_cpo_trainer(trl, model, batch):
    """TRL's CPOTrainer(loss_type="simpo", cpo_alpha=0): its own forward, gathering and loss."""
    (ids_w, labels_w, att_w), (ids_l, labels_l, att_l) = batch["chosen"], batch["rejected"]
    cpo = bare(trl["cpo"].CPOTrainer, trl["accelerator"], alpha=0.0, loss_type="simpo", beta=2.0,
               label_smoothing=0.1, simpo_gamma=0.7, cpo_alpha=0.0, pad_token_id=0, aux_loss_coef=0.0)
    tensors = {"chosen_input_ids": ids_w, "chosen_attention_mask": att_w, "chosen_labels": labels_w,
               "rejected_input_ids": ids_l, "rejected_attention_mask": att_l, "rejected_labels": labels_l}
    with torch.no_grad():
        trl_loss, trl_metrics = cpo.get_batch_loss_metrics(model, tensors)
        logits = model(input_ids=torch.cat([ids_w, ids_l]), attention_mask=torch.cat([att_w, att_l])).logits
    args = LossArgs("simpo", beta=2.0, label_smoothing=0.1, simpo_gamma=0.7)
    loss, metrics = ours(args, {"logits": logits, "labels": torch.cat([labels_w, labels_l]), "ref": (None, None)})
    assert abs(loss.item() - trl_loss.item()) < TOL
    assert abs(metrics["rewards_chosen"].item() - trl_metrics["rewards/chosen"]) < TOL
    assert abs(metrics["margin"].item() - trl_metrics["rewards/margins"]) < TOL
    assert abs(metrics["accuracy"].item() - trl_metrics["rewards/accuracies"]) < TOL


def test_orpo_odds_ratio_term_equals_trl(trl, batch):
    """ORPO = chosen-answer NLL - beta * mean(TRL's odds_ratio_loss term), on masked prompts and padding."""
    loss, metrics = ours(LossArgs("orpo", beta=0.25), batch, with_ref=False)
    orpo = bare(trl["orpo"].ORPOTrainer, trl["accelerator"], beta=0.25)
    avg = trl["orpo"].ORPOTrainer.get_batch_logps(batch["logits"], batch["labels"], average_log_prob=True)
    ratio_losses, reward_w, reward_l, _, _ = orpo.odds_ratio_loss(avg[:B], avg[B:])
    # the NLL as TRL's cross_entropy_loss computes it, given the chosen rows' answer-only labels
    nll = F.cross_entropy(batch["logits"][:B, :-1].reshape(-1, V), batch["labels"][:B, 1:].reshape(-1))
    assert abs(loss.item() - (nll - ratio_losses.mean()).item()) < TOL
    assert abs(metrics["rewards_chosen"].item() - reward_w.mean().item()) < TOL
    assert abs(metrics["rewards_rejected"].item() - reward_l.mean().item()) < TOL


def test_orpo_equals_trl_orpo_trainer_when_there_is_no_prompt(trl, model):
    """TRL's whole ORPO step (its NLL covers every non-pad token) equals ours when only token 0 is unlabelled."""
    g = torch.Generator().manual_seed(5)
    ids_w, ids_l = torch.randint(3, V, (B, T), generator=g), torch.randint(3, V, (B, T), generator=g)
    ones = torch.ones(B, T, dtype=torch.long)
    labels_w, labels_l = ids_w.clone(), ids_l.clone()
    labels_w[:, 0] = labels_l[:, 0] = -100  # never scored anyway (nothing predicts token 0)
    orpo = bare(trl["orpo"].ORPOTrainer, trl["accelerator"], beta=0.1, padding_value=0)
    tensors = {"chosen_input_ids": ids_w, "chosen_attention_mask": ones, "chosen_labels": labels_w,
               "rejected_input_ids": ids_l, "rejected_attention_mask": ones, "rejected_labels": labels_l}
    with torch.no_grad():
        trl_loss, trl_metrics = orpo.get_batch_loss_metrics(model, tensors)
        logits = model(input_ids=torch.cat([ids_w, ids_l])).logits
    loss, metrics = ours(LossArgs("orpo", beta=0.1), {"logits": logits, "labels": torch.cat([labels_w, labels_l]),
                                                      "ref": (None, None)})
    assert abs(loss.item() - trl_loss.item()) < TOL
    assert abs(metrics["rewards_chosen"].item() - trl_metrics["rewards/chosen"]) < TOL
    assert abs(metrics["accuracy"].item() - trl_metrics["rewards/accuracies"]) < TOL


@pytest.mark.parametrize("method", METHODS)
def test_prompt_and_padding_tokens_get_no_gradient(batch, method):
    logits = batch["logits"].clone().requires_grad_(True)
    args = LossArgs(method, label_smoothing=0.1 if method in ("dpo", "simpo") else 0.0)
    loss, _ = ours(args, {**batch, "logits": logits})
    loss.backward()
    scored = torch.zeros(2 * B, T, dtype=torch.bool)
    scored[:, :-1] = batch["labels"][:, 1:] != -100  # the logits at t score the label at t + 1
    assert logits.grad[~scored].abs().max() == 0
    assert (logits.grad[scored].abs().sum(-1) > 0).all()


@pytest.mark.parametrize("method", REFERENCE_FREE)
def test_reference_free_methods_ignore_the_reference(batch, method):
    args = LossArgs(method)
    with_ref, with_ref_metrics = ours(args, batch)
    without, metrics = ours(args, batch, with_ref=False)
    assert with_ref.item() == without.item()
    for name in ("rewards_chosen", "rewards_rejected", "margin", "accuracy"):
        assert with_ref_metrics[name].item() == metrics[name].item()
    assert metrics["logratio_chosen"].item() == metrics["logratio_rejected"].item() == 0.0


def test_metrics_on_literal_numbers():
    policy_w, policy_l = torch.tensor([-10.0, -20.0, -5.0]), torch.tensor([-12.0, -15.0, -5.0])
    ref_w, ref_l = torch.tensor([-11.0, -19.0, -6.0]), torch.tensor([-11.0, -16.0, -6.0])
    n = torch.tensor([4, 5, 2])
    loss, m = preference_loss(LossArgs("dpo", beta=0.5), policy_w, policy_l, ref_w, ref_l, n, n)
    # log-ratios: chosen [1, -1, 1], rejected [-1, 1, 1]; rewards x0.5; pair 3 is a tie: not counted as right
    assert set(m) == {"rewards_chosen", "rewards_rejected", "margin", "accuracy", "logratio_chosen",
                      "logratio_rejected"}
    assert m["rewards_chosen"].item() == pytest.approx(0.5 / 3)
    assert m["rewards_rejected"].item() == pytest.approx(0.5 / 3)
    assert m["margin"].item() == pytest.approx(0.0)
    assert m["accuracy"].item() == pytest.approx(1 / 3)
    assert m["logratio_chosen"].item() == pytest.approx(1 / 3)
    assert m["logratio_rejected"].item() == pytest.approx(1 / 3)
    h = torch.tensor([2.0, -2.0, 0.0])  # chosen - rejected log-ratio
    assert loss.item() == pytest.approx(-F.logsigmoid(0.5 * h).mean().item())
    assert all(v.dim() == 0 and not v.requires_grad for v in m.values())


def test_bad_arguments_say_what_to_do():
    with pytest.raises(ValueError, match="unknown: use one of dpo, ipo, simpo, orpo"):
        LossArgs("kto")
    with pytest.raises(ValueError, match="set it to 0 for method 'ipo'"):
        LossArgs("ipo", label_smoothing=0.1)
    with pytest.raises(ValueError, match=r"\[0, 0.5\)"):
        LossArgs("dpo", label_smoothing=0.5)
    x = torch.zeros(2)
    with pytest.raises(ValueError, match="needs the reference log-probs"):
        preference_loss(LossArgs("dpo"), x, x, None, None, x, x)
