"""The descriptor `imagebatch local up` writes and `--stack local` reads
(imagebatch_local/stack_descriptor.py): where it lives, what it holds, when it is refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from imagebatch_local.stack_descriptor import (
    RUN_DIR_VARIABLE,
    LocalStackDescriptor,
    LocalStackDescriptorError,
    default_run_dir,
    descriptor_path,
    now,
    read_descriptor,
    remove_descriptor,
    write_descriptor,
)


def descriptor(pid: int | None = None) -> LocalStackDescriptor:
    return LocalStackDescriptor(
        region="eu-west-1",
        endpoint_url="http://127.0.0.1:45123",
        data_bucket="imagebatch-123456789012-local",
        ledger_table="imagebatch-local-LedgerTable",
        query_api_url="http://127.0.0.1:45124",
        state_machine_arn="arn:aws:states:eu-west-1:123456789012:stateMachine:batch",
        parameters={"ChunkSize": "50"},
        pid=os.getpid() if pid is None else pid,
        started_at=now(),
    )


def gone_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(child.stdout)


def test_the_run_dir_is_the_variable_else_the_home_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(RUN_DIR_VARIABLE, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_run_dir() == tmp_path / "home" / ".imagebatch"
    monkeypatch.setenv(RUN_DIR_VARIABLE, str(tmp_path / "runs"))
    assert descriptor_path() == tmp_path / "runs" / "local-stack.json"


def test_a_written_descriptor_reads_back_whole(tmp_path: Path) -> None:
    written = descriptor()
    path = write_descriptor(written, tmp_path)
    assert path == tmp_path / "local-stack.json"
    assert read_descriptor(tmp_path) == written
    # nothing half-written is left beside it
    assert [p.name for p in tmp_path.iterdir()] == ["local-stack.json"]
    assert json.loads(path.read_text())["access_key_id"] == "local"


def test_no_descriptor_says_how_to_start_one(tmp_path: Path) -> None:
    with pytest.raises(LocalStackDescriptorError, match="imagebatch local up"):
        read_descriptor(tmp_path)


def test_a_descriptor_whose_process_has_gone_is_stale(tmp_path: Path) -> None:
    write_descriptor(descriptor(pid=gone_pid()), tmp_path)
    with pytest.raises(LocalStackDescriptorError, match="not running"):
        read_descriptor(tmp_path)


def test_a_file_that_is_not_a_descriptor_is_refused(tmp_path: Path) -> None:
    (tmp_path / "local-stack.json").write_text('{"endpoint_url": 3}')
    with pytest.raises(LocalStackDescriptorError, match="not a local stack descriptor"):
        read_descriptor(tmp_path)


def test_a_running_stack_is_not_replaced_by_another(tmp_path: Path) -> None:
    # GIVEN a descriptor of a live process that is not this one (our parent)
    write_descriptor(descriptor(pid=os.getppid()), tmp_path)
    # THEN a second stack cannot write over it
    with pytest.raises(LocalStackDescriptorError, match="already up"):
        write_descriptor(descriptor(), tmp_path)


def test_a_stale_descriptor_is_replaced(tmp_path: Path) -> None:
    write_descriptor(descriptor(pid=gone_pid()), tmp_path)
    write_descriptor(descriptor(), tmp_path)
    assert read_descriptor(tmp_path).pid == os.getpid()


def test_only_its_own_descriptor_is_removed(tmp_path: Path) -> None:
    write_descriptor(descriptor(pid=os.getppid()), tmp_path)
    assert not remove_descriptor(tmp_path)
    assert descriptor_path(tmp_path).exists()
    assert remove_descriptor(tmp_path, pid=os.getppid())
    assert not descriptor_path(tmp_path).exists()
    assert not remove_descriptor(tmp_path)
