"""Preference-optimisation losses (DPO, IPO, SimPO, ORPO) from per-sequence log-probabilities.

A preference pair is a prompt x with a chosen answer y_w and a rejected answer y_l. The policy is
scored by the summed log-probability of each answer's tokens given the prompt (``sequence_logps``:
prompt tokens carry label -100 and no loss), so every loss below is a function of a few numbers per
pair: the policy's and the frozen reference's summed log-probs of y_w and y_l, and the answers' token
counts. Notation, per pair (shapes ``(B,)``):

    logratio_w = log pi(y_w|x) - log ref(y_w|x)      (sums over the answer's tokens)
    logratio_l = log pi(y_l|x) - log ref(y_l|x)
    avg_w      = log pi(y_w|x) / |y_w|               (per-token average; reference-free methods)
    b = beta, e = label_smoothing, g = simpo_gamma

- ``dpo`` (Rafailov et al. 2023), sigmoid loss with label smoothing (conservative DPO, Mitchell 2023:
  the preference label is wrong with probability e):
      h = logratio_w - logratio_l;    loss = -(1 - e) log sigmoid(b h) - e log sigmoid(-b h)
  rewards = b * logratio. With e = 0 this is TRL's DPOTrainer ``loss_type="sigmoid"``; the smoothed
  form is TRL's CPOTrainer ``"sigmoid"`` on log-ratios (TRL 1.16's DPO sigmoid has no smoothing term).
- ``ipo`` (Azar et al. 2023, Eq. 17), on per-token averaged log-ratios as TRL does (the IPO authors'
  normalisation: the squared loss otherwise grows with the answer's length):
      h = logratio_w / |y_w| - logratio_l / |y_l|;    loss = (h - 1 / (2 b))^2
  rewards = b * logratio (sums), as TRL logs them.
- ``simpo`` (Meng et al. 2024), reference-free, length-normalised, with a target margin g:
      h = avg_w - avg_l - g / b;    loss = -(1 - e) log sigmoid(b h) - e log sigmoid(-b h)
  rewards = b * avg. TRL's CPOTrainer ``loss_type="simpo"`` with ``cpo_alpha=0``.
- ``orpo`` (Hong et al. 2024, Eqs. 4-7), reference-free; the odds of an answer are p / (1 - p) with
  p = exp(avg):
      log_odds = (avg_w - avg_l) - (log(1 - exp(avg_w)) - log(1 - exp(avg_l)))
      loss = NLL(y_w) - b * mean(log sigmoid(log_odds))
  NLL(y_w) = -(sum of chosen answer log-probs) / (number of chosen answer tokens), over the whole batch
  (the token mean of ``nn.CrossEntropyLoss``). rewards = b * avg. The odds-ratio term is TRL's
  ORPOTrainer ``odds_ratio_loss``. One difference, on purpose: TRL's NLL term also covers the PROMPT
  tokens (it follows the ORPO authors' code); here prompt tokens never carry loss, so NLL(y_w) is over
  the answer only. On a pair without prompt tokens the two are the same (tested).

The loss of a batch is the mean over its pairs (ORPO's NLL term: the token mean over the batch). Token counts of 0 (an answer cut away entirely) are
clamped to 1 in the averages, so a degenerate row gives a finite loss rather than NaN.

Metrics (batch means, detached): ``rewards_chosen``, ``rewards_rejected``, ``margin`` (chosen - rejected
reward), ``accuracy`` (share of pairs with reward_chosen > reward_rejected, strictly),
``logratio_chosen``/``logratio_rejected`` (policy - reference summed log-prob: the per-sequence KL
estimate to the reference; 0.0 when no reference is given). The reference-free methods ignore a given
reference everywhere else: their loss and rewards never read it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lmforge.align.loss_args import METHODS, REFERENCE_FREE, SMOOTHED, LossArgs

if TYPE_CHECKING:
    import torch

__all__ = ["IGNORE_INDEX", "METHODS", "REFERENCE_FREE", "SMOOTHED", "LossArgs", "preference_loss", "sequence_logps"]

IGNORE_INDEX = -100


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probability of each row's labelled tokens, and how many there are.

    logits (B, T, V), labels (B, T) -> (sum_logps (B,), n_tokens (B,) int64). Next-token shift: the
    logits at position t score the label at t + 1; a label of -100 (prompt, padding) scores nothing and
    gets no gradient. Half-precision logits are scored in float32.
    """
    import torch

    if logits.shape[:2] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} differ in (B, T)")
    logits = logits[:, :-1, :]  # (B, T-1, V): position t predicts token t+1
    labels = labels[:, 1:]  # (B, T-1)
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    mask = labels != IGNORE_INDEX
    index = labels.masked_fill(~mask, 0).unsqueeze(-1)  # (B, T-1, 1); any valid id where masked
    # log softmax at the label only: logit - logsumexp, without a second (B, T-1, V) tensor of log-probs
    per_token = logits.gather(-1, index).squeeze(-1) - torch.logsumexp(logits, dim=-1)  # (B, T-1)
    per_token = torch.where(mask, per_token, torch.zeros_like(per_token))
    return per_token.sum(-1), mask.sum(-1)


def preference_loss(args: LossArgs, policy_chosen: torch.Tensor, policy_rejected: torch.Tensor,
                    ref_chosen: torch.Tensor | None, ref_rejected: torch.Tensor | None,
                    chosen_tokens: torch.Tensor, rejected_tokens: torch.Tensor,
                    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The batch-mean loss of ``args.method`` and its metrics, from per-pair summed log-probs.

    policy_*/ref_* (B,): summed answer log-probs (``sequence_logps``) of the policy and the frozen
    reference (None for none; the reference-free methods ignore it). *_tokens (B,): the answers' token
    counts. Returns (loss (), metrics: name -> detached scalar).
    """
    import torch
    import torch.nn.functional as F

    reference_free = args.method in REFERENCE_FREE
    has_ref = ref_chosen is not None and ref_rejected is not None
    if not reference_free and not has_ref:
        raise ValueError(f"align loss {args.method!r} needs the reference log-probs: pass ref_chosen and "
                         f"ref_rejected, or choose a reference-free method ({', '.join(REFERENCE_FREE)})")
    n_w = chosen_tokens.clamp(min=1).to(policy_chosen.dtype)  # (B,)
    n_l = rejected_tokens.clamp(min=1).to(policy_rejected.dtype)
    b, e = args.beta, args.label_smoothing

    def smoothed_sigmoid(h: torch.Tensor) -> torch.Tensor:
        return -(1 - e) * F.logsigmoid(b * h) - e * F.logsigmoid(-b * h)

    if reference_free:
        avg_w, avg_l = policy_chosen / n_w, policy_rejected / n_l  # (B,) per-token average log-probs
        reward_w, reward_l = b * avg_w, b * avg_l
        if args.method == "simpo":
            loss = smoothed_sigmoid(avg_w - avg_l - args.simpo_gamma / b).mean()
        else:  # orpo
            log_odds = (avg_w - avg_l) - (_log1mexp(avg_w) - _log1mexp(avg_l))
            nll = -policy_chosen.sum() / chosen_tokens.sum().clamp(min=1)
            loss = nll - b * F.logsigmoid(log_odds).mean()
    else:
        logratio_w, logratio_l = policy_chosen - ref_chosen, policy_rejected - ref_rejected  # (B,)
        reward_w, reward_l = b * logratio_w, b * logratio_l
        if args.method == "dpo":
            loss = smoothed_sigmoid(logratio_w - logratio_l).mean()
        else:  # ipo
            loss = ((logratio_w / n_w - logratio_l / n_l - 1 / (2 * b)) ** 2).mean()

    with torch.no_grad():
        reward_w, reward_l = reward_w.detach(), reward_l.detach()
        zero = policy_chosen.new_zeros(())
        metrics = {
            "rewards_chosen": reward_w.mean(),
            "rewards_rejected": reward_l.mean(),
            "margin": (reward_w - reward_l).mean(),
            "accuracy": (reward_w > reward_l).to(reward_w.dtype).mean(),
            "logratio_chosen": (policy_chosen - ref_chosen).mean() if has_ref else zero,
            "logratio_rejected": (policy_rejected - ref_rejected).mean() if has_ref else zero,
        }
    return loss, metrics


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, stable on both sides of -ln 2 (Maechler 2012)."""
    import torch

    return torch.where(x < -0.6931471805599453, torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))
