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

# Top-level packages, and the local AWS's package wherever it lives (today inside the CLI).
INTEGRATION_PACKAGES = ("moto", "torch", "diffusers", "imagebatch_local")
LOCAL_AWS_PREFIXES = ("imagebatch_cli.local",)


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


# Known violation being removed by issue 17's renovation: `validate` and `estimate` (and the
# local exports' reader) reach the local AWS (imagebatch_cli.local.cloud.stack,
# lambda_runtime, ledger_export) through imagebatch_cli.stack_options. These tests may load
# those modules, never moto or torch; delete each entry when planning stops importing them.
KNOWN_LOCAL_AWS_LOADERS = frozenset(
    {
        "test_cli_anywhere.py::test_validate_a_packaged_sample_from_another_directory",
        "test_cli_costs_and_estimates.py::test_a_deadline_nothing_meets_exits_non_zero_with_the_fastest",
        "test_cli_costs_and_estimates.py::test_estimate_offers_only_what_the_manifest_allows",
        "test_cli_costs_and_estimates.py::test_validate_gives_ingests_budget_verdict",
        "test_cli_errors.py::test_a_bad_input_is_one_line_and_an_exit_code",
        "test_cli_errors.py::test_validate_prints_one_whole_line_per_invalid_line",
        "test_cli_json.py::test_validate_estimate_and_models_print_json",
        "test_ingest_sagemaker.py::test_validate_cli_names_the_buckets_like_ingest",
        "test_routing.py::test_estimate_shows_what_ingest_would_do_on_the_stack",
        "test_routing.py::test_the_template_gives_ingest_everything_it_routes_with",
        "test_routing.py::test_validate_routes_like_ingest",
        "test_usage.py::test_estimate_command_prints_every_backend_and_writes_a_chart",
        "test_usage.py::test_estimate_exits_1_when_no_backend_meets_the_deadline",
    }
)


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
