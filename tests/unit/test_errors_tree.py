"""errors.py's docstring draws the exception tree so a reader sees what each layer can raise:
it must name every exception class the module defines, under the parent it has."""

from __future__ import annotations

import inspect
import re

import pytest

from imagebatch import errors

DEFINED = sorted(
    name
    for name, value in vars(errors).items()
    if inspect.isclass(value)
    and issubclass(value, BaseException)
    and value.__module__ == errors.__name__
)
# A line of the tree: branch characters, then the class name.
DRAWN = re.compile(r"^[\s│]*(?:[├└]── )?([A-Z]\w+)\b", re.MULTILINE)
# Each level of the tree indents its branch by four columns under the root's.
INDENT = 4


def drawn_tree() -> dict[str, int]:
    """Each class the docstring's tree names, with its depth (0: the root)."""
    doc = errors.__doc__ or ""
    return {
        match.group(1): 0 if "──" not in line else (match.start(1) - INDENT) // INDENT
        for line in doc.splitlines()
        if (match := DRAWN.match(line)) and match.group(1) in DEFINED
    }


def test_there_are_exceptions_to_check() -> None:
    assert "ImageBatchError" in DEFINED and len(DEFINED) > 10


@pytest.mark.parametrize("name", DEFINED)
def test_the_drawn_tree_names_every_exception_class(name: str) -> None:
    # GIVEN an exception class errors.py defines WHEN its docstring's tree is read
    tree = drawn_tree()
    # THEN the class is drawn, at the depth of its place in the hierarchy
    assert name in tree, f"errors.py's docstring tree does not name {name}"
    parent = getattr(errors, name).__mro__[1]
    expected = 0 if parent is Exception else tree[parent.__name__] + 1
    assert tree[name] == expected, f"{name} is drawn at the wrong depth"
