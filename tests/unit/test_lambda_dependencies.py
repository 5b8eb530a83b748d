"""The Lambda side stays small: the layer carries boto3, Powertools and pydantic, never the
laptop-only stack (torch, diffusers, transformers, moto) or the local CLI package."""

from __future__ import annotations

import ast
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from importlinter.application.use_cases import lint_imports
from importlinter.configuration import configure

ROOT = Path(__file__).resolve().parents[2]
LAYER_REQUIREMENTS = ROOT / "src" / "requirements.txt"
LAMBDA_CODE_DIRS = (ROOT / "src" / "imagebatch", ROOT / "functions")

# sagemaker: the Python SDK (no longer used: `imagebatch endpoint compile` calls boto3); the
# Lambdas must never carry it.
FORBIDDEN_REQUIREMENTS = frozenset(
    {"torch", "torchvision", "diffusers", "transformers", "moto", "sagemaker"}
)
FORBIDDEN_IMPORTS = frozenset(
    {
        "torch",
        "diffusers",
        "transformers",
        "moto",
        "imagebatch_cli",
        "imagebatch_local",
        "sagemaker",
    }
)
REQUIREMENT = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*(.*)$")


def requirement_lines(path: Path) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse(line: str) -> tuple[str, str]:
    match = REQUIREMENT.match(line)
    assert match, f"cannot parse requirement {line!r}"
    return normalise(match.group(1)), line


def test_layer_requirements_exist() -> None:
    assert LAYER_REQUIREMENTS.is_file(), "src/requirements.txt is the DomainLayer's manifest"
    assert requirement_lines(LAYER_REQUIREMENTS)


def test_layer_requirements_exclude_the_model_stack() -> None:
    names = {parse(line)[0] for line in requirement_lines(LAYER_REQUIREMENTS)}
    assert not names & FORBIDDEN_REQUIREMENTS


def test_layer_requirements_are_pinned() -> None:
    unpinned = [
        line
        for line in requirement_lines(LAYER_REQUIREMENTS)
        if not re.search(r"==\s*[0-9]", line) or line.startswith("-")
    ]
    assert not unpinned, f"pin every layer requirement exactly: {unpinned}"


def test_layer_requirements_match_the_package_dependencies() -> None:
    # pyproject's [project].dependencies are ranges; requirements.lock pins what the package
    # is tested with, and the layer must ship the same pins: every declared dependency and
    # everything it needs, at the lock's version (src/requirements.txt is produced from it).
    from requirements_from_lock import pin_line, read_lock

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {parse(line.replace(" ", ""))[0] for line in project["dependencies"]}
    lock = read_lock((ROOT / "requirements.lock").read_text())
    layer = {parse(line.replace(" ", "")) for line in requirement_lines(LAYER_REQUIREMENTS)}
    assert declared <= {name for name, _ in layer}
    assert {line for _, line in layer} == {pin_line(lock[name]) for name, _ in layer}, (
        "src/requirements.txt differs from requirements.lock: make requirements"
    )


# The one exception to "the layer carries everything": the contact sheet decodes PNGs and
# draws a grid, which needs an imaging library; only that function carries it.
FUNCTION_OWN_REQUIREMENTS = {"contact_sheet": {"pillow"}}
# Modules only the function that carries them may import (from its own code or one module).
FUNCTION_OWN_IMPORTS = {
    "PIL": {
        "functions/contact_sheet",
        "src/imagebatch/pipeline/contact_sheet.py",
        "src/imagebatch/pipeline/contact_sheet_render.py",
    }
}


def test_functions_bring_no_dependencies_of_their_own_but_the_allowed_ones() -> None:
    for path in sorted((ROOT / "functions").glob("*/requirements.txt")):
        names = {parse(line)[0] for line in requirement_lines(path)}
        allowed = FUNCTION_OWN_REQUIREMENTS.get(path.parent.name, set())
        assert names <= allowed, f"{path.relative_to(ROOT)}: use the layer for {names - allowed}"
        assert all("==" in line for line in requirement_lines(path)), f"{path}: pin exactly"
        # at the version the tests ran with (the lock's)
        from requirements_from_lock import pin_line, read_lock

        lock = read_lock((ROOT / "requirements.lock").read_text())
        for name, line in map(parse, requirement_lines(path)):
            assert normalise(line) == normalise(pin_line(lock[name])), f"{path}: {line}"


@pytest.mark.parametrize("module", sorted(FUNCTION_OWN_IMPORTS))
def test_a_function_only_dependency_is_imported_only_where_it_is_shipped(module: str) -> None:
    places = FUNCTION_OWN_IMPORTS[module]
    for path in python_files():
        relative = str(path.relative_to(ROOT))
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=relative)
        uses = [line for line, name in imported_modules(tree) if name.split(".")[0] == module]
        if uses and not any(relative.startswith(place) for place in places):
            pytest.fail(f"{relative}:{uses[0]} imports {module}, which its Lambda does not carry")


def python_files() -> list[Path]:
    files = sorted(path for base in LAMBDA_CODE_DIRS for path in base.rglob("*.py"))
    return [path for path in files if "__pycache__" not in path.parts]


def imported_modules(tree: ast.AST) -> Iterator[tuple[int, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module
        elif isinstance(node, ast.Call) and node.args:
            # importlib.import_module("torch") and __import__("torch")
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            first = node.args[0]
            if name in {"import_module", "__import__"} and isinstance(first, ast.Constant):
                yield node.lineno, str(first.value)


def test_there_is_lambda_code_to_check() -> None:
    assert any(path.parent.name == "imagebatch" for path in python_files())


@pytest.mark.parametrize("path", python_files(), ids=lambda path: str(path.relative_to(ROOT)))
def test_lambda_code_does_not_import_the_laptop_stack(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    bad = [
        f"{path.relative_to(ROOT)}:{line}: {module}"
        for line, module in imported_modules(tree)
        if module.split(".")[0] in FORBIDDEN_IMPORTS
    ]
    assert not bad, "Lambda code must not import these:\n" + "\n".join(bad)


# -- layering: the rules the package layout promises (README "Layout") ----------------------

PACKAGE = ROOT / "src" / "imagebatch"
AWS_SDK = frozenset({"boto3", "botocore", "mypy_boto3"})


def package_modules() -> list[Path]:
    return [p for p in sorted(PACKAGE.rglob("*.py")) if "__pycache__" not in p.parts]


def module_imports(path: Path) -> list[tuple[int, str]]:
    """Every module a file imports, TYPE_CHECKING imports included (a type is a dependency)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return list(imported_modules(tree))


def subpackage(path: Path) -> str:
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else parts[0].removesuffix(".py")


@pytest.mark.parametrize("path", package_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_only_the_aws_package_imports_the_aws_sdk(path: Path) -> None:
    # GIVEN a module of the domain package WHEN its imports are read
    sdk = [
        f"{path.relative_to(ROOT)}:{line}: {name}"
        for line, name in module_imports(path)
        if name.split(".")[0].split("_")[0] in {"boto3", "botocore"}
        or name.split(".")[0].startswith("mypy_boto3")
    ]
    # THEN only imagebatch/aws talks to AWS; everything else receives its adapters
    if subpackage(path) != "aws":
        assert not sdk, "boto3/botocore belong in imagebatch/aws:\n" + "\n".join(sdk)


# The layers themselves are import-linter's contracts in pyproject.toml ([tool.importlinter],
# run by `lint-imports` in `make lint` and `make check`); these tests run them and keep the
# promises the layout makes among them.
IMPORT_CONTRACTS: list[dict[str, Any]] = tomllib.loads((ROOT / "pyproject.toml").read_text())[
    "tool"
]["importlinter"]["contracts"]
[LAYERED] = [c for c in IMPORT_CONTRACTS if c.get("containers") == ["imagebatch"]]
LAYERS = [{name.strip() for name in re.split(r"[|:]", layer)} for layer in LAYERED["layers"]]


def layer_of(package: str) -> int:
    [index] = [i for i, layer in enumerate(LAYERS) if package in layer]
    return index


def test_the_import_contracts_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN the checkout's own code first on the path (an editable install may point elsewhere)
    for folder in ("tools", "src"):
        monkeypatch.syspath_prepend(str(ROOT / folder))
    monkeypatch.chdir(ROOT)
    configure()  # what the lint-imports command does first: its readers and printer
    # WHEN import-linter checks every contract of pyproject.toml, THEN all are kept
    assert lint_imports(cache_dir=None, no_logo=True), "lint-imports: a contract is broken"


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        # pure data: everything may depend on it, so it depends on nothing of ours
        ("models", "imagebatch."),
        # batches know nothing of what they are for (finalize takes hooks instead)
        ("pipeline", "imagebatch.catalog"),
        # the domain never reaches up into the handlers' wiring or the query API
        ("costs", "imagebatch.pipeline"),
        # cost math is below routing and retry: backends price with costs, not the reverse
        ("costs", "imagebatch.backends"),
        ("backends", "imagebatch.pipeline"),
        ("aws", "imagebatch.pipeline"),
        ("manifest", "imagebatch.pipeline"),
        # planning is pure: ingest and the CLI's validate/estimate run it, it calls no AWS
        ("planning", "imagebatch.aws"),
        ("planning", "imagebatch.pipeline"),
    ],
)
def test_package_layering(package: str, forbidden: str) -> None:
    # GIVEN the layers contract's order (top first)
    above = forbidden.removeprefix("imagebatch.").rstrip(".")
    if not above:
        # THEN a package that may import nothing of ours is the bottom layer, alone
        assert LAYERS[-1] == {package}, f"imagebatch/{package} must be the bottom layer alone"
    elif layer_of(above) == layer_of(package):
        # THEN siblings in one layer are independent ('|'): neither imports the other
        assert "|" in LAYERED["layers"][layer_of(package)], f"{package} and {above}: use '|'"
    else:
        # THEN the forbidden package sits in a higher layer than the importing one
        assert layer_of(above) < layer_of(package), f"imagebatch/{package} sits above {above}"


def test_environment_is_read_only_by_the_settings_module() -> None:
    readers = [
        str(path.relative_to(ROOT))
        for path in package_modules()
        if path.name != "settings.py"
        and re.search(r"\bos\.(environ|getenv)\b", path.read_text(encoding="utf-8"))
    ]
    assert not readers, f"read the environment through imagebatch.settings: {readers}"


def test_no_assert_guards_a_production_path() -> None:
    asserts = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for path in package_modules() + sorted((ROOT / "functions").rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Assert)
    ]
    assert not asserts, f"raise a domain error (imagebatch.errors) instead: {asserts}"


def test_domain_exceptions_live_in_the_errors_module() -> None:
    defined = [
        f"{path.relative_to(ROOT)}:{node.lineno}: {node.name}"
        for path in package_modules()
        if path.name != "errors.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.ClassDef)
        and any(
            isinstance(base, ast.Name) and base.id.endswith(("Error", "Exception"))
            for base in node.bases
        )
    ]
    assert not defined, f"declare domain exceptions in imagebatch/errors.py: {defined}"


def test_no_two_modules_differ_only_in_spelling() -> None:
    stems = sorted({p.stem for p in package_modules() if p.stem != "__init__"})
    close = [
        (a, b)
        for i, a in enumerate(stems)
        for b in stems[i + 1 :]
        if a != b and (a.startswith(b) or b.startswith(a)) and abs(len(a) - len(b)) <= 2
    ]
    assert not close, f"module names that differ only in spelling: {close}"


# -- the CLI: AWS only through imagebatch.aws adapters -------------------------------------

CLI = ROOT / "tools" / "imagebatch_cli"


def cli_modules() -> list[Path]:
    # The local AWS (moto's, which may use boto3) is its own package, tools/imagebatch_local.
    return [path for path in sorted(CLI.rglob("*.py")) if "__pycache__" not in path.parts]


def test_there_are_cli_modules_to_check() -> None:
    names = {path.name for path in cli_modules()}
    assert {"app.py", "query_client.py", "deployed_stack.py"} <= names


@pytest.mark.parametrize("path", cli_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_cli_reaches_aws_only_through_the_adapters(path: Path) -> None:
    # GIVEN a CLI module (the local AWS, moto's, is imagebatch_local, and may use boto3)
    # WHEN its imports are read, TYPE_CHECKING ones included
    sdk = [
        f"{path.relative_to(ROOT)}:{line}: {name}"
        for line, name in module_imports(path)
        if name.split(".")[0] in {"boto3", "botocore"} or name.startswith("mypy_boto3")
    ]
    # THEN none is the AWS SDK: CloudFormation, S3, DynamoDB, SigV4 and Bedrock calls live in
    # src/imagebatch/aws/ (session.py, deployed.py, foundation_models.py)
    assert not sdk, "use an imagebatch.aws adapter:\n" + "\n".join(sdk)
