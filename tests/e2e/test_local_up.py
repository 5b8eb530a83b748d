"""`imagebatch local up` as a person uses it from two terminals (issue 20): the stack is started
as a process of its own, every other command is another process reaching it with --stack
local, and Ctrl-C (SIGINT) stops it leaving nothing behind: its exit code 0, its port free,
its descriptor gone, no process of its session left."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
MODEL = "stability.sd3-5-large-v1:0"
# Bounds on waiting, not timings asserted: a loaded two-core machine starts the stack in
# tens of seconds; one that never answers fails with what it printed.
START_BOUND_S = 300.0
STOP_BOUND_S = 60.0
UP = [sys.executable, "-m", "imagebatch_cli.app", "local", "up"]


def _environment(run_dir: Path) -> dict[str, str]:
    """This checkout's code first (as the tests import it), the run dir every command finds."""
    paths = [str(REPO / part) for part in ("src", "tools", "containers/serving")]
    inherited = os.environ.get("PYTHONPATH")
    environment = {k: v for k, v in os.environ.items() if k != "IMAGEBATCH_STACK"}
    return {
        **environment,
        "PYTHONPATH": os.pathsep.join([*paths, *([inherited] if inherited else [])]),
        "IMAGEBATCH_RUN_DIR": str(run_dir),
    }


def imagebatch(
    run_dir: Path, *args: str, timeout_s: float = 300
) -> subprocess.CompletedProcess[str]:
    """One CLI command as another terminal runs it."""
    return subprocess.run(
        [sys.executable, "-m", "imagebatch_cli.app", *args],
        env=_environment(run_dir),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


@dataclass
class Up:
    process: subprocess.Popen[Any]
    run_dir: Path
    descriptor: dict[str, Any]
    stderr: Path

    @property
    def port(self) -> int:
        return int(str(self.descriptor["endpoint_url"]).rsplit(":", 1)[1])


def _wait_for_descriptor(
    process: subprocess.Popen[Any], path: Path, stderr: Path
) -> dict[str, Any]:
    deadline = time.monotonic() + START_BOUND_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"local up exited {process.returncode}: {stderr.read_text()}")
        if path.exists():
            loaded: dict[str, Any] = json.loads(path.read_text())
            return loaded
        time.sleep(0.2)
    process.kill()
    pytest.fail(f"local up wrote no descriptor within {START_BOUND_S:.0f} s: {stderr.read_text()}")


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    run_dir = tmp_path_factory.mktemp("run")
    stderr = run_dir / "up.stderr"
    with stderr.open("w") as errors:
        # a session of its own: after it exits, no process may be left in it
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "imagebatch_cli.app",
                "local",
                "up",
                "--renderer",
                "null",
                "--chunk-size",
                "3",
            ],
            env=_environment(run_dir),
            stdout=subprocess.DEVNULL,
            stderr=errors,
            text=True,
            start_new_session=True,
        )
    try:
        descriptor = _wait_for_descriptor(process, run_dir / "local-stack.json", stderr)
        yield Up(process, run_dir, descriptor, stderr)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _manifest(path: Path, edits: dict[str, str] | None = None) -> Path:
    header = {"batch": {"backend": "bedrock", "model": MODEL, "tags": {"team": "shop"}}}
    items = [{"id": f"lamp-{i}", "prompt": f"a desk lamp, angle {i}"} for i in range(5)]
    for item in items:
        item["prompt"] = (edits or {}).get(item["id"], item["prompt"])
    path.write_text("\n".join(json.dumps(line) for line in [header, *items]) + "\n")
    return path


def _submit_and_watch(up: Up, manifest: Path) -> dict[str, Any]:
    submitted = imagebatch(up.run_dir, "submit", str(manifest), "--stack", "local", "--json")
    assert submitted.returncode == 0, submitted.stderr
    batch_id = json.loads(submitted.stdout)["batch_id"]
    assert json.loads(submitted.stdout)["bucket"] == up.descriptor["data_bucket"]
    watched = imagebatch(
        up.run_dir, "watch", batch_id, "--stack", "local", "--interval", "0.2", "--json"
    )
    assert watched.returncode == 0, watched.stderr + up.stderr.read_text()
    batch: dict[str, Any] = json.loads(watched.stdout)["batch"]
    assert batch["batch_id"] == batch_id
    return batch


def test_the_query_api_refuses_what_api_gateway_would(up: Up) -> None:
    """AWS_IAM authorization: no signature, or a wrong one, is a 403 (this test runs first:
    the next one stops the stack)."""
    url = f"{up.descriptor['query_api_url']}/batches"
    with pytest.raises(urllib.error.HTTPError) as unsigned:
        urllib.request.urlopen(url, timeout=30)
    assert unsigned.value.code == 403
    scope = f"local/20261207/{up.descriptor['region']}/execute-api/aws4_request"
    forged = urllib.request.Request(
        url,
        headers={
            "Authorization": f"AWS4-HMAC-SHA256 Credential={scope}, "
            "SignedHeaders=host;x-amz-date, Signature=" + "0" * 64,
            "X-Amz-Date": "20261207T000000Z",
        },
    )
    with pytest.raises(urllib.error.HTTPError) as wrong:
        urllib.request.urlopen(forged, timeout=30)
    assert wrong.value.code == 403
    assert "signature" in wrong.value.read().decode()


def test_submit_watch_cost_from_other_processes_then_ctrl_c_leaves_nothing(
    up: Up, tmp_path: Path
) -> None:
    # GIVEN a local stack up in a process of its own
    # WHEN a manifest is submitted and watched from other processes
    first = _submit_and_watch(up, _manifest(tmp_path / "lamps.jsonl"))
    # THEN the pipeline ran in the stack: every image made and charged
    assert (first["status"], first["images_succeeded"]) == ("SUCCEEDED", 5)

    # WHEN the manifest comes back with one prompt fixed (reuse is on)
    fixed = _manifest(tmp_path / "lamps-fixed.jsonl", {"lamp-2": "a desk lamp, angle 2, lit"})
    second = _submit_and_watch(up, fixed)
    # THEN only the edited image is made; the four others are reused
    assert (second["images_succeeded"], second["images_reused"]) == (5, 4)

    # AND cost, batches, costs and stack answer through the stack's signed query API
    cost = imagebatch(up.run_dir, "cost", second["batch_id"], "--stack", "local", "--json")
    assert cost.returncode == 0, cost.stderr
    assert json.loads(cost.stdout)["images_reused"] == 4
    listed = imagebatch(up.run_dir, "batches", "--stack", "local", "--json")
    assert {b["batch_id"] for b in json.loads(listed.stdout)["batches"]} == {
        first["batch_id"],
        second["batch_id"],
    }
    costs = imagebatch(up.run_dir, "costs", "--stack", "local", "--group-by", "tag:team", "--json")
    assert costs.returncode == 0, costs.stderr
    assert "shop" in costs.stdout
    stack = imagebatch(up.run_dir, "stack", "--stack", "local", "--json")
    assert json.loads(stack.stdout)["query_api_url"] == up.descriptor["query_api_url"]

    # WHEN Ctrl-C reaches the stack
    up.process.send_signal(signal.SIGINT)
    try:
        code = up.process.wait(timeout=STOP_BOUND_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"local up still running {STOP_BOUND_S:.0f} s after SIGINT")
    # THEN it exits 0, its descriptor gone, its port free, no process of its session left
    assert code == 0, up.stderr.read_text()
    assert not (up.run_dir / "local-stack.json").exists()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # as a server binds (moto's does): connections closed moments ago may sit in
        # TIME_WAIT, but nothing may listen there
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", up.port))
    with pytest.raises(ProcessLookupError):
        os.killpg(up.process.pid, 0)
    # AND a command that names the stopped stack says to start one
    gone = imagebatch(up.run_dir, "stack", "--stack", "local")
    assert gone.returncode == 1 and "imagebatch local up" in gone.stderr


def test_a_busy_port_is_refused_and_sigterm_stops_the_stack_on_the_port_it_was_given(
    tmp_path: Path,
) -> None:
    run_dir = tmp_path / "run"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        # GIVEN a port something else listens on
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        # WHEN local up is asked for it THEN it says so and exits 1 (moto's server would
        # wait forever for a bind that failed on its thread)
        refused = imagebatch(run_dir, "local", "up", "--renderer", "null", "--port", str(busy))
        assert refused.returncode == 1
        assert f"port {busy} is in use" in refused.stderr
    # GIVEN the port free again WHEN local up takes it and is sent SIGTERM
    stderr = tmp_path / "up.stderr"
    with stderr.open("w") as errors:
        process = subprocess.Popen(
            [*UP, "--renderer", "null", "--port", str(busy), "--run-dir", str(run_dir)],
            env=_environment(tmp_path / "elsewhere"),
            stdout=subprocess.DEVNULL,
            stderr=errors,
            start_new_session=True,
        )
    try:
        descriptor = _wait_for_descriptor(process, run_dir / "local-stack.json", stderr)
        assert descriptor["endpoint_url"] == f"http://127.0.0.1:{busy}"
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=STOP_BOUND_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    # THEN it stops as cleanly as on Ctrl-C
    assert code == 0, stderr.read_text()
    assert not (run_dir / "local-stack.json").exists()
    with pytest.raises(ProcessLookupError):
        os.killpg(process.pid, 0)


def test_the_sagemaker_backend_serves_and_scales_in_when_no_batch_runs(tmp_path: Path) -> None:
    # GIVEN a local stack with the self-hosted endpoint (null accelerator: no model to load)
    run_dir = tmp_path / "run"
    stderr = tmp_path / "up.stderr"
    with stderr.open("w") as errors:
        process = subprocess.Popen(
            [*UP, "--renderer", "null", "--backend", "sagemaker", "--shape-buckets", "64x64"],
            env=_environment(run_dir),
            stdout=subprocess.DEVNULL,
            stderr=errors,
            start_new_session=True,
        )
    try:
        up = Up(
            process,
            run_dir,
            _wait_for_descriptor(process, run_dir / "local-stack.json", stderr),
            stderr,
        )
        assert up.descriptor["parameters"]["EnableSageMaker"] == "true"
        # WHEN a batch for the endpoint is submitted from another process
        manifest = tmp_path / "served.jsonl"
        header = {"batch": {"backend": "sagemaker", "model": "tiny-sd"}}
        item = {"id": "mug", "prompt": "a mug", "width": 64, "height": 64, "count": 3}
        manifest.write_text(f"{json.dumps(header)}\n{json.dumps(item)}\n")
        batch = _submit_and_watch(up, manifest)
        # THEN the endpoint made its images, and scales in once no batch runs
        assert (batch["status"], batch["backend"], batch["images_succeeded"]) == (
            "SUCCEEDED",
            "sagemaker",
            3,
        )
        deadline = time.monotonic() + STOP_BOUND_S
        while "endpoint scaled in" not in stderr.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "endpoint scaled in" in stderr.read_text()
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=STOP_BOUND_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert code == 0, stderr.read_text()
    assert not (run_dir / "local-stack.json").exists()
    with pytest.raises(ProcessLookupError):
        os.killpg(process.pid, 0)
