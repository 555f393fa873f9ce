"""The option table and its converters (``wsgipool.options``): text to values, the same for
every source. The sources themselves are tested in test_settings.py (command line,
environment, pyproject.toml) and test_integrations.py (Paste, flask serve)."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any

import pytest

from wsgipool import Config, ConfigError
from wsgipool.config import PYTHON_ONLY_FIELDS
from wsgipool.options import (
    BY_FIELD,
    FALSE_WORDS,
    TRUE_WORDS,
    convert,
    env_flag,
    parse_addresses,
    parse_boolean,
    parse_count,
    parse_seconds,
    parse_size,
)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("0", 0),
        ("1048576", 1048576),
        ("512K", 512 * 1024),
        ("10M", 10 * 1024**2),
        ("10m", 10 * 1024**2),
        ("10MB", 10 * 1024**2),
        ("10MiB", 10 * 1024**2),
        ("1G", 1024**3),
        (" 2k ", 2048),
    ],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    "text",
    [
        "",
        "10X",
        "-1",
        "1.5M",
        "M",
        "10 M B",
        "ten",
        "1_024",
        "+1K",
        "\u0661\u0660K",  # Arabic-Indic digits
        "10\u212a",  # KELVIN SIGN, which IGNORECASE matches as K
        "9" * 30,
    ],
)
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_size(text)


@pytest.mark.parametrize(("text", "number"), [("0", 0), ("16", 16), (" 12 ", 12), ("007", 7)])
def test_parse_count(text: str, number: int) -> None:
    assert parse_count(text) == number


@pytest.mark.parametrize(
    "text",
    ["", "1_000", "+5", "-5", "\u0661\u0662", "\uff15", "1.0", "1e3", "0x10", "ten", "9" * 30],
)
def test_parse_count_refuses_what_int_takes(text: str) -> None:
    """int() takes most of these; an option's whole number is plain ASCII digits."""
    with pytest.raises(ValueError) as info:
        parse_count(text)
    assert isinstance(info.value, argparse.ArgumentTypeError)  # argparse shows the message
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30", 30.0), ("2.5", 2.5), (".5", 0.5), ("5.", 5.0), (" 1 ", 1.0), ("1e-06", 0.000001)],
)
def test_parse_seconds(text: str, seconds: float) -> None:
    assert parse_seconds(text) == seconds


@pytest.mark.parametrize(
    "text", ["", "nan", "inf", "-inf", "Infinity", "1_0", "\u0661", "+1", "-1", "1e999", ".", "1s"]
)
def test_parse_seconds_refuses_what_float_takes(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_seconds(text)


@pytest.mark.parametrize("word", sorted(TRUE_WORDS | {"TRUE", " Yes ", "On"}))
def test_parse_boolean_true(word: str) -> None:
    assert parse_boolean(word) is True


@pytest.mark.parametrize("word", sorted(FALSE_WORDS | {"FALSE", " No ", "Off"}))
def test_parse_boolean_false(word: str) -> None:
    assert parse_boolean(word) is False


@pytest.mark.parametrize("text", ["", "maybe", "2", "truee", "yes please", "\u0661"])
def test_parse_boolean_refuses(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="expected true or false"):
        parse_boolean(text)


@pytest.mark.parametrize(
    ("text", "addresses"),
    [
        ("127.0.0.1:1", ("127.0.0.1:1",)),
        ("127.0.0.1:1,unix:/tmp/a.sock", ("127.0.0.1:1", "unix:/tmp/a.sock")),
        (" 127.0.0.1:1 , [::1]:2 ", ("127.0.0.1:1", "[::1]:2")),
        ("127.0.0.1:1 fd://3\n systemd", ("127.0.0.1:1", "fd://3", "systemd")),
        ("", ()),
    ],
)
def test_parse_addresses(text: str, addresses: tuple[str, ...]) -> None:
    assert parse_addresses(text) == addresses


def test_table_covers_every_option_text_can_set() -> None:
    """Every Config field has a converter, but those only Python can set (objects); each
    converter fits the field's type."""
    hints = typing.get_type_hints(Config)
    fields = {field.name for field in dataclasses.fields(Config) if field.init}
    assert set(BY_FIELD) == fields - set(PYTHON_ONLY_FIELDS)
    kinds: dict[Any, set[Any]] = {
        int: {parse_count, parse_size},
        float: {parse_seconds},
        bool: {parse_boolean},
        str: {str, BY_FIELD["log_level"].parse, BY_FIELD["worker_class"].parse},
        tuple[str, ...]: {parse_addresses},
        str | int: {str},  # a file mode: Config reads the text as octal
    }
    for field, option in BY_FIELD.items():
        assert option.parse in kinds[hints[field]], field


def test_choices_are_checked_with_one_message() -> None:
    with pytest.raises(ConfigError) as info:
        convert("poller", "kqueue", "WSGIPOOL_POLLER='kqueue'")
    assert str(info.value) == (
        "WSGIPOOL_POLLER='kqueue': expected one of auto, epoll, selectors, not 'kqueue'"
    )


def test_log_level_in_any_case() -> None:
    """Config takes DEBUG; so does every source of text."""
    assert convert("log_level", "DEBUG", "") == "debug"


def test_values_that_are_not_text_are_left_to_config() -> None:
    assert convert("threads", 7, "") == 7
    assert convert("bind", ["a:1"], "") == ["a:1"]
    assert convert("app", "x:app", "") == "x:app"  # a setting, not a Config option


@pytest.mark.parametrize(
    ("text", "flag"), [("", False), (" ", False), ("1", True), ("no", False), ("Y", True)]
)
def test_env_flag(text: str, flag: bool) -> None:
    assert env_flag("WSGIPOOL_RELOAD_POLL", {"WSGIPOOL_RELOAD_POLL": text}) is flag
    assert env_flag("WSGIPOOL_RELOAD_POLL", {}) is False


def test_env_flag_refuses_other_words() -> None:
    with pytest.raises(ConfigError, match=r"^WSGIPOOL_RELOAD_POLL='2': expected true or false"):
        env_flag("WSGIPOOL_RELOAD_POLL", {"WSGIPOOL_RELOAD_POLL": "2"})
