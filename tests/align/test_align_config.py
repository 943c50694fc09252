"""resolve_chat_model: the one rule for which model evaluation's third column, the gate and packaging take."""

from __future__ import annotations

import pytest

from lmforge.align.config import DISABLED_MARKER, resolve_chat_model


def test_an_align_checkpoint_with_a_model_is_the_chat_model(tmp_path):
    (tmp_path / "align").mkdir()
    (tmp_path / "align/config.json").write_text("{}")
    assert resolve_chat_model(str(tmp_path / "align"), str(tmp_path / "sft")) == (str(tmp_path / "align"), "aligned")


def test_the_disabled_marker_alone_means_the_sft_model(tmp_path):
    (tmp_path / "align").mkdir()
    (tmp_path / "align" / DISABLED_MARKER).write_text("align.enabled is false")
    assert resolve_chat_model(str(tmp_path / "align"), str(tmp_path / "sft")) == (str(tmp_path / "sft"), "sft")


def test_a_missing_align_output_names_the_command_that_makes_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"kedro run --pipeline align"):
        resolve_chat_model(str(tmp_path / "absent"), str(tmp_path / "sft"))


def test_a_directory_with_neither_is_refused(tmp_path):
    (tmp_path / "align").mkdir()
    with pytest.raises(ValueError, match=DISABLED_MARKER):
        resolve_chat_model(str(tmp_path / "align"), str(tmp_path / "sft"))
