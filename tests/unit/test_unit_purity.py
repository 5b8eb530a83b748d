"""tests/unit stays pure: no file here (nor the root conftest, nor a tests/support module one
of them imports) imports moto, the AWS SDK, the local AWS or the model stack. Those tests
belong in tests/integration. conftest.py here also fails a test that loads them at run time."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
UNIT = TESTS / "unit"
FORBIDDEN = (
    "moto",
    "boto3",
    "botocore",
    "mypy_boto3",
    "torch",
    "diffusers",
    "transformers",
    "imagebatch_local.cloud",
    "imagebatch_local.fakes",
    # the integration tier's helpers
    "support.moto_fixtures",
    "support.moto_sagemaker",
)


def imports(path: Path) -> list[tuple[int, str]]:
    """Every module the file imports, anywhere in it (a lazy import inside a test counts)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found += [(node.lineno, node.module)]
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def is_forbidden(module: str) -> bool:
    return any(module == name or module.startswith(name + ".") for name in FORBIDDEN)


def checked_files() -> list[Path]:
    files = [*sorted(UNIT.glob("*.py")), TESTS / "conftest.py"]
    support = {
        module.removeprefix("support.").split(".")[0]
        for path in files
        for _, module in imports(path)
        if module.startswith("support.")
    }
    return files + sorted(TESTS / "support" / f"{name}.py" for name in support)


def test_there_are_unit_tests_to_check() -> None:
    assert len([p for p in checked_files() if p.name.startswith("test_")]) > 10


@pytest.mark.parametrize("path", checked_files(), ids=lambda p: str(p.relative_to(TESTS)))
def test_a_unit_test_file_imports_nothing_of_the_integration_tier(path: Path) -> None:
    # GIVEN a file tests/unit runs WHEN its imports are read
    bad = [
        f"{path.name}:{line}: {module}" for line, module in imports(path) if is_forbidden(module)
    ]
    # THEN none is moto, the AWS SDK, the local AWS or the model stack
    assert not bad, "move the test to tests/integration:\n" + "\n".join(bad)


@pytest.mark.parametrize("module", ["moto", "boto3.session", "imagebatch_local.cloud"])
def test_the_guard_sees_what_it_forbids(module: str) -> None:
    assert is_forbidden(module)
    assert not is_forbidden("imagebatch_cli.app") and not is_forbidden("motor")
