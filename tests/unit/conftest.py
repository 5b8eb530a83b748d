"""tests/unit is pure: no network, no moto, no local AWS, no torch. Sockets are blocked here as
`pytest --disable-socket --allow-unix-socket` would block them, but for this folder only
(tests/integration runs moto servers and the fakes on localhost). Unix sockets stay allowed:
asyncio and multiprocessing make socketpairs for themselves.

Each unit test also fails if it loads a module of the integration tier (moto, torch, the
local AWS) that was not loaded before it: test_unit_purity.py checks what the files import,
this checks what running them imports (a command that reaches the moto harness lazily)."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest
from pytest_socket import disable_socket

# A fixture is found by name in a conftest's namespace: imported, not called here.
from support.cli import no_aws  # noqa: F401

# Top-level packages, and the local AWS's harness and fakes (imagebatch_local.template and
# query_api_errors read files and carry errors only: validate/estimate use them offline).
INTEGRATION_PACKAGES = ("moto", "torch", "diffusers")
LOCAL_AWS_PREFIXES = ("imagebatch_local.cloud", "imagebatch_local.fakes")


def integration_modules() -> set[str]:
    return {
        name
        for name in sys.modules
        if name.split(".")[0] in INTEGRATION_PACKAGES or _is_local_aws(name)
    }


@pytest.hookimpl(trylast=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """After pytest-socket's own setup (which leaves sockets alone unless asked), block them
    for this folder, unless a test says why it needs one with @pytest.mark.enable_socket."""
    if item.get_closest_marker("enable_socket") is None:
        disable_socket(allow_unix_socket=True)


# Tests allowed to load the local AWS's harness: none since the renovation (validate and
# estimate read the template through imagebatch_local.template, which imports no moto).
KNOWN_LOCAL_AWS_LOADERS: frozenset[str] = frozenset()


def _is_local_aws(name: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in LOCAL_AWS_PREFIXES)


@pytest.fixture(autouse=True)
def _loads_nothing_of_the_integration_tier(request: pytest.FixtureRequest) -> Iterator[None]:
    before = integration_modules()
    yield
    loaded = sorted(integration_modules() - before)
    test = f"{request.path.name}::{request.function.__name__}"
    if test in KNOWN_LOCAL_AWS_LOADERS:
        loaded = [name for name in loaded if not _is_local_aws(name)]
    assert not loaded, f"a unit test loaded {loaded[:5]}: it belongs in tests/integration"
