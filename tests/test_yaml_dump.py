"""``dump_yaml`` (io/results.py) writes resolved configs through libyaml's emitter only where it
gives ``yaml.safe_dump``'s bytes: checked on every bundled config and on random documents full of
strings YAML treats specially (issue 29: the Python emitter was 25 ms of a one-point run)."""

from __future__ import annotations

import json
import math
import random
import string
from pathlib import Path

import pytest
import yaml

from scaling.io.config import load_experiment
from scaling.io.results import _plain_yaml, dump_yaml

ROOT = Path(__file__).resolve().parents[1]
TRICKY = [
    "plain", "a: b", "- x", "#c", "yes", "No", "null", "~", "1e3", "0x1F", "12:30", "", " lead",
    "trail ", "quote'\"s", "@at", "`bt", "%p", "!bang", "*star", "&amp", "{b}", "[s]", "a,b",
    "?q", ">g", "|p", "-", "--- doc", "...", "\\back", "a" * 200, "word " * 40, "x" * 90 + " y",
    "a  b", " ", "a #b", "a:b", "- ", "0o17", "1_000", ".5", "+1", "=", "<<", "True", "off",
    "2024-01-01", "1:2:3", "'", '"', "a'b", "x" * 79 + " z", "x" * 81, "  ", "a   " * 30,
]  # fmt: skip
KEYS = ["1", "0x1", "yes", "null", "-", "--", "...", "1.5", "e", "-a", "a-", "_", "True"]
FLOATS = [0.0, -0.0, 1.0, 1e20, 1e-20, math.inf, -math.inf, math.nan, 0.1 + 0.2, 5e-324]


def _doc(rnd: random.Random) -> dict:
    printable = "".join(chr(c) for c in range(32, 127))

    def text() -> str:
        if rnd.random() < 0.4:
            return rnd.choice(TRICKY)
        alphabet = rnd.choice([printable, "ab :#'\"-", "a b", "xy '", printable + "     "])
        return "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 200)))

    def key() -> str:
        if rnd.random() < 0.3:
            return rnd.choice(KEYS)
        chars = string.ascii_letters + string.digits + "_.-"
        return "".join(rnd.choice(chars) for _ in range(rnd.randint(1, 40)))

    def value(depth: int = 0) -> object:
        r = rnd.random()
        if depth > 4 or r < 0.3:
            return text()
        if r < 0.45:
            return rnd.choice(FLOATS)
        if r < 0.55:
            return rnd.choice([0, -1, 2**70, True, False, None, 7])
        if r < 0.75:
            return [value(depth + 1) for _ in range(rnd.randint(0, 4))]
        return {key(): value(depth + 1) for _ in range(rnd.randint(0, 4))}

    return {key(): value() for _ in range(5)}


def test_random_plain_documents_are_safe_dumps_bytes() -> None:
    rnd = random.Random(0)
    for _ in range(1500):
        doc = _doc(rnd)
        assert _plain_yaml(doc)
        assert dump_yaml(doc) == yaml.safe_dump(doc, sort_keys=False)


@pytest.mark.parametrize("config", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_resolved_configs_take_the_fast_emitter_and_match(config) -> None:
    exp = load_experiment(config, [])
    doc = json.loads(json.dumps(exp.resolved()))
    assert _plain_yaml(doc)  # the bundled configs are all plain: the fast path is the one used
    assert dump_yaml(doc) == yaml.safe_dump(doc, sort_keys=False)


@pytest.mark.parametrize(
    "doc",
    [{"k": "ünï"}, {"k": "two\nlines"}, {"k": "tab\tx"}, {"": 1}, {"a b": 1}, {"k" * 41: 1},
     {1: "int key"}, {"k": ("tuple",)}],
    ids=["unicode", "newline", "tab", "empty key", "spaced key", "long key", "int key", "tuple"],
)  # fmt: skip
def test_what_the_emitters_write_differently_takes_the_python_one(doc) -> None:
    assert not _plain_yaml(doc)
    assert dump_yaml(doc) == yaml.safe_dump(doc, sort_keys=False)
