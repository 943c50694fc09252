"""Round trip: the packaged model reproduces the training checkpoint's logits within 1e-5 on fixed inputs."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from lmforge.packaging.export import ModelCardInfo, PackageVerificationError, package_model
from lmforge.packaging.release import LOGITS_ATOL, PROBE_INPUT_IDS, check_roundtrip, compare_logits

CARD = ModelCardInfo(model_name="tiny-chat", git_commit="0123abcd")


def _trained_like_checkpoint(out_dir, base_dir, dtype=torch.float32):
    """A checkpoint whose weights are far from initialisation (as after training), saved in ``dtype``."""
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=generator))
    model.to(dtype).save_pretrained(out_dir)
    return out_dir


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_packaged_logits_match_the_checkpoint(dtype, tiny_model_dir, tiny_tokenizer_dir, tmp_path):
    checkpoint = _trained_like_checkpoint(tmp_path / "checkpoint", tiny_model_dir, dtype)
    package = package_model(checkpoint, tiny_tokenizer_dir, tmp_path / "pkg", card=CARD)

    source = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    packaged = AutoModelForCausalLM.from_pretrained(package, local_files_only=True).eval()
    ids = torch.tensor(PROBE_INPUT_IDS)
    with torch.no_grad():
        expected, actual = source(ids).logits, packaged(ids).logits
    assert packaged.dtype == torch.float32
    assert actual.shape == (2, len(PROBE_INPUT_IDS[0]), 300)
    assert expected.std() > 0.1  # the logits carry signal: a comparison of constants would prove nothing
    assert torch.allclose(actual, expected, atol=LOGITS_ATOL, rtol=0)
    assert compare_logits(checkpoint, package) <= LOGITS_ATOL
    assert check_roundtrip(checkpoint, package) <= LOGITS_ATOL


def test_roundtrip_detects_a_changed_package(tiny_model_dir, tiny_tokenizer_dir, tmp_path):
    checkpoint = _trained_like_checkpoint(tmp_path / "checkpoint", tiny_model_dir)
    package = package_model(checkpoint, tiny_tokenizer_dir, tmp_path / "pkg", card=CARD)
    model = AutoModelForCausalLM.from_pretrained(package)
    with torch.no_grad():
        model.model.norm.weight.mul_(1.001)  # a 0.1% change of one vector, e.g. a lossy re-save
    model.save_pretrained(package)

    assert compare_logits(checkpoint, package) > LOGITS_ATOL
    with pytest.raises(PackageVerificationError, match="does not reproduce checkpoint"):
        check_roundtrip(checkpoint, package)
