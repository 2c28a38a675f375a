"""Each script's text: the prelude and only the parts of it that the script calls."""

from __future__ import annotations

import re
from importlib import resources

import pytest

from gateway.credits.scripts import NAMES, PARTS, source

FOLDER = resources.files("gateway.credits")
DEFINED = re.compile(r"^local function (\w+)\(", re.MULTILINE)


def defined_in(part: str) -> set[str]:
    return set(DEFINED.findall(FOLDER.joinpath(f"{part}.lua").read_text()))


def calls(text: str) -> set[str]:
    return set(re.findall(r"\b(\w+)\(", re.sub(r"--[^\n]*", "", text)))


@pytest.mark.parametrize("name", NAMES)
def test_a_script_gets_the_parts_it_calls_and_no_other(name: str) -> None:
    own = FOLDER.joinpath(f"{name}.lua").read_text()
    for part in {"gcra", "once", "spend"}:
        called = defined_in(part) & calls(own)
        assert bool(called) == (part in PARTS.get(name, ())), (name, part, called)


@pytest.mark.parametrize("name", NAMES)
def test_a_script_defines_each_prelude_function_once(name: str) -> None:
    found = DEFINED.findall(source(name))
    assert len(found) == len(set(found))
