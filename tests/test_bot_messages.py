"""What users read: option parsing, the buttons' packed settings, and friendly error lines."""

from __future__ import annotations

import logging
import re

import pytest
from discord.ext import commands

from bot.buttons import ResultButton, changed
from bot.errors import SORRY, friendly
from bot.options import PACKED, Options, pack, parse_words, unpack
from nst_engine.api import Cancelled, EngineError, InputError, JobTimeout


def test_prefix_words_parse_into_options() -> None:
    words = ["Starry_Night", "strength=2", "size=512", "quality=HIGH", "keep-colours", "seed=7"]
    assert parse_words(words) == Options(
        style="starry-night", strength=2.0, size=512, quality="high", keep_colors=True, seed=7
    )
    assert parse_words([]) == Options()


@pytest.mark.parametrize(
    ("words", "message"),
    [
        (["stary-night"], "Did you mean 'starry-night'"),
        (["udnie", "extra"], "I don't understand `extra`"),
        (["size=big"], "`size` needs a whole number"),
        (["quality=ultra"], "Quality must be one of"),
        (["colour=red"], "Unknown option `colour`"),
    ],
)
def test_prefix_words_refused_with_a_reason(words: list[str], message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_words(words)


def test_resolved_caps_the_size_and_fills_defaults() -> None:
    resolved = Options(size=4000).resolved(
        default_size=512, max_size=1024, default_quality="standard"
    )
    assert (resolved.size, resolved.quality) == (1024, "standard")
    with pytest.raises(InputError, match="Strength"):
        Options(strength=30).resolved(default_size=512, max_size=1024, default_quality="draft")


@pytest.mark.parametrize(
    "options",
    [
        Options("woman-with-hat", 0.0667, 2048, "high", True, 2**31 - 1),
        Options("~", 20.0, 32, "draft", False, 0),
        Options("starry-night:2.5+udnie+~", 1.0, 512, "standard", False, 7),
    ],
)
def test_packed_options_round_trip_within_discords_limit(options: Options) -> None:
    button = ResultButton("+", 123456789012345678901, 987654321098765432109, options)
    custom_id = button.custom_id
    assert len(custom_id) <= 100
    match = re.fullmatch(r"sb:\+:\d+:\d+:" + PACKED, custom_id)
    assert match is not None and unpack(match) == options
    assert pack(options) in custom_id


def test_button_actions_change_one_thing() -> None:
    base = Options("udnie", 1.0, 512, "standard", False, 3)
    assert changed("+", base).strength == 1.5
    assert changed("-", base).strength == 0.667
    assert changed("k", base).keep_colors is True
    assert changed("n", base).seed != 3
    assert changed("+", Options("udnie", 20.0, 512, "standard")).strength == 20.0


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (InputError("No image found."), "❌ No image found."),
        (Cancelled(), "🛑 The job was cancelled."),
        (JobTimeout("The job ran past 600 s."), "⏱️ The job ran past 600 s."),
        (EngineError("The painter crashed twice."), "⚠️ The painter failed: The painter crashed"),
        (commands.CommandInvokeError(InputError("Unknown style 'x'.")), "❌ Unknown style 'x'."),
    ],
)
def test_typed_errors_become_one_line(error: Exception, expected: str) -> None:
    text = friendly(error)
    assert text.startswith(expected) and "\n" not in text


def test_unexpected_errors_are_logged_not_shown(caplog: pytest.LogCaptureFixture) -> None:
    try:
        raise RuntimeError("secret internals at 0xdeadbeef")
    except RuntimeError as exc:
        wrapped = commands.CommandInvokeError(exc)
    with caplog.at_level(logging.ERROR, logger="bot.errors"):
        assert friendly(wrapped) == SORRY
    assert "secret internals" in caplog.text and "Traceback" in caplog.text
