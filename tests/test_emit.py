"""The YAML writer behind `topo export`: whatever it writes, topo's own loader reads back unchanged.

No broker, no files: topo.emit.dump on one side, topo.yamlload.load_yaml (with its ${VAR} expansion) on
the other.
"""

from __future__ import annotations

from typing import Any

import pytest

from topo.emit import Commented, Flow, Placeholder, dump, scalar
from topo.yamlload import load_yaml

# Names and values a broker accepts that YAML, or topo's ${VAR} expansion, would read as something else.
NASTY = [
    # YAML 1.1 booleans and null (what PyYAML, and so topo, resolves)
    "yes", "no", "on", "off", "y", "n", "Yes", "NO", "On", "OFF", "true", "False", "TRUE",
    "~", "null", "Null", "NULL",
    # numbers, dates and times in YAML 1.1 and 1.2 spellings
    "0", "1", "-1", "+1", "1.5", "-.5", "1e3", "1E-3", "1.0e+3", "0x1F", "0o17", "017", "0b101", "1_000",
    "1,000", ".inf", "-.inf", "+.INF", ".nan", ".NaN", "1:20", "190:20:30", "2024-01-01", "2024-01-01T10:00:00Z",
    "2024-01-01 10:00:00 +01:00",
    # empty and whitespace
    "", " ", "  ", " lead", "trail ", "a  b",
    # indicators YAML reads at the start, or after a space
    "a: b", "a:", ":", ":a", "a #b", "#", "#x", "a#b", "-", "--", "---", "...", "- x", "-x", "?", "? x", "?x",
    "!", "!x", "!!str", "&a", "*a", "|", "|x", ">", ">-", "%", "%YAML", "@x", "`x",
    # quotes and escapes
    "'", '"', "'q'", '"q"', "a'b", 'a"b', "it's", "\\", "a\\nb", "\\x41",
    # commas, brackets and braces: harmless in block context, structure in flow context
    "a,b", ",", "[", "]", "{", "}", "[a", "a]", "{a", "a}", "[]", "{}", "[a, b]", "{a: b}", "a, b", "a]b",
    # line breaks, tabs and other control characters
    "a\nb", "\n", "a\n", "\na", "a\r\nb", "\r", "a\tb", "\t", "\ta", "\x00", "\x01", "\x1b[0m", "\x08",
    # unicode, including what YAML forbids unescaped or reads as a line break
    "é", "日本語", "😀", "a😀b", "\u00a0", "\u00a0x", "\u2003", "\u3000", "\u200b", "\u202e", "\ufeff",
    "\x7f", "\x80", "\x85", "\x9f", "\u2028", "\u2029", "\ufffe",
    # topo's ${VAR} expansion
    "${HOME}", "$${x}", "$", "$$", "${", "$${", "${X:-5}", "${X-5}", "pre-${X}-post", "a$b", "${}", "$$${x}",
    # merge key and value key
    "<<", "=",
]  # fmt: skip


def plain(value: Any) -> Any:
    """The data a document stands for, without the writer's Flow wrappers."""
    if isinstance(value, Flow):
        return plain(value.value)
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value


def round_trip(document: dict[str, Any]) -> Any:
    text = dump(document)
    data, problems = load_yaml(text, "t.yaml", env={})
    assert problems == [], f"{problems}\n{text}"
    return data


def uses(text: str) -> dict[str, Any]:
    """`text` as key and value in every place the writer puts scalars: block and flow, mapping and list."""
    return {
        text: text,
        "block_mapping": {text: text, "other": text},
        "block_list": [text, text],
        "block_nested": {text: [text, {text: text}]},
        "flow_mapping": Flow({text: text, "other": text}),
        "flow_list": Flow([text, text]),
        "flow_nested": Flow({text: [text, {text: text}]}),
        "list_of_flows": [Flow({text: text}), Flow([text]), {text: text}],
    }


@pytest.mark.parametrize("text", NASTY)
def test_nasty_string_survives_as_key_and_value(text: str) -> None:
    document = uses(text)
    assert round_trip(document) == plain(document), dump(document)


def test_document_of_all_nasty_strings_survives() -> None:
    # Every string beside every other: a quoting mistake may only show next to a neighbour.
    document = {
        "mapping": {text: text for text in NASTY},
        "list": list(NASTY),
        "flow_mapping": Flow({text: text for text in NASTY}),
        "flow_list": Flow(list(NASTY)),
    }
    assert round_trip(document) == plain(document)


@pytest.mark.parametrize("text", ["yes", "null", "1e3", "0x1F", "2024-01-01", "", " lead", "${HOME}", "<<"])
def test_nasty_strings_load_as_strings(text: str) -> None:
    # Equality alone would let "1" pass as 1.0 in some other loader; here the type matters too.
    data = round_trip({"value": text, "flow": Flow([text])})
    assert type(data["value"]) is str
    assert type(data["flow"][0]) is str


def test_characters_yaml_cannot_hold_raw_are_escaped() -> None:
    # YAML rejects DEL, C1 controls and non-characters in a file, and reads NEL, LS and PS as line
    # breaks even inside double quotes: only an escape sequence carries them.
    characters = ["\x7f", "\x80", "\x85", "\x9f", "\u2028", "\u2029", "\ufffe", "\uffff"]
    written = {character: scalar(f"a{character}b") for character in characters}
    assert {character: text for character, text in written.items() if character in text} == {}
    for character, text in written.items():
        assert load_yaml(f"k: {text}\n", "t.yaml", env={}) == ({"k": f"a{character}b"}, [])


def test_mapping_in_a_list_keeps_its_first_key_intact() -> None:
    # Unicode spaces are ordinary characters to YAML, so they are written plain; they must survive
    # wherever a key starts a line, including right after "- ".
    document = {"list": [{f"{space}key": 1, "other": 2} for space in ("\u00a0", "\u2003", "\u3000")]}
    assert round_trip(document) == document


@pytest.mark.parametrize(
    "text", ["amq.topic", "sensors.#", ".*", "^$", "/", "orders.created", "x-dead-letter-exchange", "a b", "café"]
)
def test_safe_strings_are_written_plain(text: str) -> None:
    assert scalar(text) == text
    assert scalar(text, flow=True) == text
    assert dump({text: text}) == f"{text}: {text}\n"
    assert dump({"k": Flow({text: [text]})}) == f"k: {{{text}: [{text}]}}\n"


@pytest.mark.parametrize("text", ["a,b", "x,y,z", "a]b", "a}", "a{b", "a[b", "?x"])
def test_flow_indicators_are_quoted_in_flow_context_only(text: str) -> None:
    # Inside a string they only end a scalar in [..] or {..}: block context keeps them readable.
    assert scalar(text) == text
    assert scalar(text, flow=True) == f"'{text}'"


@pytest.mark.parametrize(
    ("value", "written"),
    [(None, "null"), (True, "true"), (False, "false"), (0, "0"), (-7, "-7"), (1.5, "1.5"), (60000, "60000")],
)
def test_non_strings_are_written_as_yaml_values(value: Any, written: str) -> None:
    assert scalar(value) == written
    data = round_trip({"value": value, "flow": Flow([value])})
    assert data["value"] == value and type(data["value"]) is type(value)
    assert data["flow"][0] == value and type(data["flow"][0]) is type(value)


def test_strings_that_look_like_other_types_are_single_quoted() -> None:
    assert [scalar(text) for text in ("true", "null", "60000", "", "it's true")] == [
        "'true'",
        "'null'",
        "'60000'",
        "''",
        "it's true",
    ]
    assert scalar("it's: true") == "'it''s: true'"


def test_dollar_brace_is_escaped_but_placeholder_is_written_as_is() -> None:
    assert scalar("${HOME}") == "$${HOME}"
    # Quoted, so that a value such as 123456 stays a string when the placeholder is expanded.
    assert scalar(Placeholder("${TOPO_USER_APP_PASSWORD}")) == '"${TOPO_USER_APP_PASSWORD}"'
    assert scalar(Placeholder("${P}"), flow=True) == '"${P}"'
    # Export composes placeholders from escaped URI parts: a second escape would double the `$$`.
    uri = Placeholder("amqp://app:${TOPO_SHOVEL_P}@host/$${literal}")
    assert scalar(uri) == '"amqp://app:${TOPO_SHOVEL_P}@host/$${literal}"'


def test_placeholder_is_expanded_on_load_and_a_plain_string_is_not() -> None:
    document = {
        "secret": Placeholder("${SECRET}"),
        "uri": Placeholder("amqp://app:${SECRET}@host"),
        "flow": Flow({"p": Placeholder("${SECRET}")}),
        "literal": "${SECRET}",
    }
    data, problems = load_yaml(dump(document), "t.yaml", env={"SECRET": "s3cret"})
    assert problems == []
    assert data == {
        "secret": "s3cret",
        "uri": "amqp://app:s3cret@host",
        "flow": {"p": "s3cret"},
        "literal": "${SECRET}",
    }


def test_comments_are_written_above_their_key_or_item() -> None:
    document = {
        "version": 1,
        "users": {
            "app": Commented({"tags": Flow(["monitoring"])}, "No password.\n\nCertificates only."),
            "ops": {},
        },
        "list": [Commented("first", "why the first"), Commented({"a": 1, "b": [2]}, "a mapping item")],
    }
    text = dump(document, header="Exported by topo.")
    assert text == (
        "# Exported by topo.\n"
        "\n"
        "version: 1\n"
        "\n"
        "users:\n"
        "  # No password.\n"
        "  #\n"
        "  # Certificates only.\n"
        "  app:\n"
        "    tags: [monitoring]\n"
        "  ops: {}\n"
        "\n"
        "list:\n"
        "  # why the first\n"
        "  - first\n"
        "  # a mapping item\n"
        "  - a: 1\n"
        "    b:\n"
        "      - 2\n"
    )
    data, problems = load_yaml(text, "t.yaml", env={})
    assert problems == []
    assert data == {
        "version": 1,
        "users": {"app": {"tags": ["monitoring"]}, "ops": {}},
        "list": ["first", {"a": 1, "b": [2]}],
    }


def test_comment_on_a_top_level_key() -> None:
    assert dump({"a": 1, "b": Commented(2, "about b")}) == "a: 1\n\n# about b\nb: 2\n"


def test_empty_containers_are_written_inline() -> None:
    text = dump({"mapping": {}, "list": [], "nested": {"m": {}, "l": []}})
    assert text == "mapping: {}\n\nlist: []\n\nnested:\n  m: {}\n  l: []\n"
    assert round_trip({"mapping": {}, "list": [], "nested": {"m": {}, "l": []}}) == {
        "mapping": {},
        "list": [],
        "nested": {"m": {}, "l": []},
    }
