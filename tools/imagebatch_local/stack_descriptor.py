"""Where `imagebatch local up` says what it serves, so other commands find it as a stack.

`local up` writes one JSON file (the descriptor) once everything it serves answers, and
removes it when it stops; `--stack local` reads it where a deployed stack's outputs come
from CloudFormation. It lives in the run directory: `--run-dir`, else IMAGEBATCH_RUN_DIR,
else ~/.imagebatch (never the working directory: the CLI works from any folder, so a second
terminal elsewhere must find the same stack). A descriptor whose process has gone (killed
before it could remove it) is refused as stale rather than pointing at a dead port.

Pure file handling, no AWS: the CLI and tests/unit import it freely.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

#: The name `--stack` takes for the stack `local up` serves.
LOCAL_STACK_NAME = "local"
RUN_DIR_VARIABLE = "IMAGEBATCH_RUN_DIR"
DESCRIPTOR_FILE = "local-stack.json"
#: The access key the local AWS is given (moto takes any; the query API checks this one).
LOCAL_ACCESS_KEY = "local"
LOCAL_SECRET_KEY = "local"  # noqa: S105 - not a secret: moto's and the local API's fake key


class LocalStackDescriptorError(Exception):
    """No local stack to talk to: none running, or its descriptor is unreadable or stale."""


class LocalStackDescriptor(BaseModel):
    """What a command needs of the running local stack (a deployed stack's outputs, plus
    where its AWS answers and the fake credentials it takes)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    stack_name: str = LOCAL_STACK_NAME
    region: str
    endpoint_url: str
    data_bucket: str
    ledger_table: str
    query_api_url: str
    state_machine_arn: str
    # Where ingest's failed events wait, and ingest itself (`imagebatch redrive-ingest`).
    ingest_failure_queue_url: str | None = None
    ingest_function_name: str | None = None
    access_key_id: str = LOCAL_ACCESS_KEY
    secret_access_key: str = LOCAL_SECRET_KEY
    # The template parameters the local stack was created with (submit validates with them).
    parameters: dict[str, str] = {}
    # The `local up` process: a descriptor whose process is gone is stale.
    pid: int
    started_at: datetime


def default_run_dir() -> Path:
    """IMAGEBATCH_RUN_DIR, else ~/.imagebatch."""
    configured = os.environ.get(RUN_DIR_VARIABLE)
    return Path(configured).expanduser() if configured else Path.home() / ".imagebatch"


def descriptor_path(run_dir: Path | None = None) -> Path:
    return (run_dir or default_run_dir()) / DESCRIPTOR_FILE


def process_alive(pid: int) -> bool:
    """Whether a process with this id exists (signal 0 checks without sending anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: it exists
    return True


def write_descriptor(descriptor: LocalStackDescriptor, run_dir: Path | None = None) -> Path:
    """Write it atomically (a reader never sees half a file); refuses to replace the
    descriptor of another local stack that is still running."""
    path = descriptor_path(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        try:
            other = read_descriptor(run_dir)
        except LocalStackDescriptorError:
            other = None  # stale or unreadable: ours replaces it
        if other is not None and other.pid != descriptor.pid:
            raise LocalStackDescriptorError(
                f"a local stack is already up (pid {other.pid}, {other.endpoint_url}, "
                f"descriptor {path}): stop it, or give this one another --run-dir"
            )
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(descriptor.model_dump_json(indent=2) + "\n", encoding="utf-8")
    partial.replace(path)
    return path


def read_descriptor(run_dir: Path | None = None) -> LocalStackDescriptor:
    """The running local stack's descriptor; LocalStackDescriptorError saying what to do when
    there is none, it is not a descriptor, or its process has gone."""
    path = descriptor_path(run_dir)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LocalStackDescriptorError(
            f"no local stack is up (no {path}): start one with `imagebatch local up`"
            + (f" (or set {RUN_DIR_VARIABLE} to its --run-dir)" if run_dir is None else "")
        ) from None
    try:
        descriptor = LocalStackDescriptor.model_validate(json.loads(text))
    except (ValueError, ValidationError) as exc:
        raise LocalStackDescriptorError(f"{path} is not a local stack descriptor: {exc}") from exc
    if not process_alive(descriptor.pid):
        raise LocalStackDescriptorError(
            f"the local stack in {path} is not running (its process {descriptor.pid} has gone "
            "without removing it): start one with `imagebatch local up`"
        )
    return descriptor


def remove_descriptor(run_dir: Path | None = None, *, pid: int | None = None) -> bool:
    """Remove the descriptor if it is this process's (`pid`, default ours); True if removed.
    Another stack's descriptor is left alone."""
    path = descriptor_path(run_dir)
    owner = os.getpid() if pid is None else pid
    try:
        current = LocalStackDescriptor.model_validate_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return False
    except (ValueError, ValidationError):
        return False
    if current.pid != owner:
        return False
    path.unlink(missing_ok=True)
    return True


def now() -> datetime:
    return datetime.now(UTC)
