"""The serving container's runtime settings: its region, JSON logs, where PNGs are encoded,
torch's threads, and one worker and model replica per NeuronCore on Inferentia2 (the Neuron
parts stubbed at their boundary: optimum.neuron's pipeline class and gunicorn's hooks)."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
from imagebatch_serving import gunicorn_conf
from imagebatch_serving.app import ServingSettings, load_engine
from imagebatch_serving.backends import NeuronBackend
from imagebatch_serving.engine import CallShape, DirectorySink, ServingEngine, StopCheck
from imagebatch_serving.logs import JsonFormatter, configure_json_logging
from PIL import Image

from imagebatch.models.records import ImageJob
from imagebatch.models.sagemaker_contract import ChunkInvocation, ShapeBucket

# -- region ---------------------------------------------------------------------------------


def test_the_step_functions_client_is_built_for_the_models_region(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN the Model's environment (template.yaml sets AWS_REGION) and no region elsewhere
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.delenv("AWS_REGION", raising=False)
    settings = ServingSettings.from_env(
        {"IMAGEBATCH_ACCELERATOR": "null", "AWS_REGION": "eu-central-1"}
    )
    made: list[tuple[str, str | None]] = []
    import boto3

    def client(service: str, region_name: str | None = None, **_: Any) -> object:
        made.append((service, region_name))
        return SimpleNamespace(send_task_heartbeat=lambda **_: None)

    monkeypatch.setattr(boto3, "client", client)
    # WHEN the engine is built with its own clients
    engine = load_engine(settings)
    # THEN both are built for that region, and the heartbeat goes through that client
    assert made == [("stepfunctions", "eu-central-1"), ("s3", "eu-central-1")]
    assert engine._heartbeat is not None


def test_without_a_region_the_container_says_so_before_serving() -> None:
    settings = ServingSettings.from_env({"IMAGEBATCH_ACCELERATOR": "null"})
    with pytest.raises(ValueError, match="AWS_REGION is not set"):
        settings.aws_region()
    fallback = ServingSettings.from_env({"AWS_DEFAULT_REGION": "us-west-2"})
    assert fallback.aws_region() == "us-west-2"


# -- JSON logs ------------------------------------------------------------------------------


def test_each_log_record_is_one_json_object_per_line() -> None:
    stream = io.StringIO()
    configure_json_logging("INFO", stream)
    try:
        log = logging.getLogger("imagebatch_serving.test")
        log.info("call %d: %d image(s)", 3, 4, extra={"batch_id": "b-1"})
        try:
            raise RuntimeError("compiled graph\nmissing")
        except RuntimeError:
            log.exception("chunk failed")
        logging.getLogger("gunicorn.error").info("worker booted")
    finally:
        logging.getLogger().handlers.clear()
    lines = stream.getvalue().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 3  # the traceback's newlines stay inside one line
    first, failed, gunicorn = records
    assert first["message"] == "call 3: 4 image(s)"
    assert first["level"] == "INFO" and first["batch_id"] == "b-1"
    assert first["service"] == "imagebatch-serving" and first["timestamp"].endswith("+00:00")
    assert failed["exception_name"] == "RuntimeError" and "missing" in failed["exception"]
    assert gunicorn["logger"] == "gunicorn.error"


def test_an_extra_json_cannot_encode_is_logged_as_text() -> None:
    record = logging.makeLogRecord({"msg": "x", "path": Path("/opt/ml/model")})
    assert json.loads(JsonFormatter().format(record))["path"] == "/opt/ml/model"


# -- threads and where PNGs are encoded -----------------------------------------------------


class _RecordingBackend:
    """A pipeline of flat images, of the accelerator kind it is told."""

    max_batch = 2
    buckets: tuple[ShapeBucket, ...] = ()

    def __init__(self, accelerator: str) -> None:
        self.accelerator = accelerator

    def generate(
        self,
        shape: CallShape,
        prompts: Sequence[str],
        negative_prompts: Sequence[str] | None,
        seeds: Sequence[int],
        should_stop: StopCheck | None = None,
    ) -> list[Image.Image]:
        return [Image.new("RGB", (shape.width, shape.height), (seed % 256, 0, 0)) for seed in seeds]


def _invocation(images: int) -> ChunkInvocation:
    jobs = [
        ImageJob(
            image_id=f"i-{n}",
            item_id="i",
            index=n + 1,
            line=n + 2,
            prompt="p",
            width=8,
            height=8,
            seed=n,
            steps=1,
            guidance=0.0,
            model="m",
        )
        for n in range(images)
    ]
    return ChunkInvocation(
        batch_id="b", chunk_id="00000", bucket="bk", output_prefix="outputs/", images=jobs
    )


@pytest.mark.parametrize(
    ("accelerator", "setting", "in_worker"),
    [
        ("cpu", "auto", True),
        ("cuda", "auto", False),
        ("neuron", "auto", False),
        ("cuda", "worker", True),
        ("cpu", "request", False),
    ],
)
def test_pngs_are_encoded_under_the_inference_lock_on_the_cpu_backend(
    accelerator: str,
    setting: str,
    in_worker: bool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN an engine on a backend of that kind
    engine = ServingEngine(
        _RecordingBackend(accelerator),
        DirectorySink(tmp_path),
        encode=setting,  # type: ignore[arg-type]
    )
    held: list[bool] = []
    from imagebatch_serving import engine as engine_module

    real = engine_module.encode_png

    def encode(image: Image.Image) -> bytes:
        held.append(engine._lock.locked())
        return real(image)

    monkeypatch.setattr(engine_module, "encode_png", encode)
    # WHEN a chunk of three images runs (two calls)
    result = engine.run(_invocation(3))
    # THEN every PNG was encoded inside the lock (serial with the calls) or outside it
    assert engine.encode_in_worker is in_worker
    assert held == [in_worker] * 3
    assert [i.status for i in result.images] == ["SUCCEEDED"] * 3
    assert all((tmp_path / "bk" / "outputs" / "b" / f"i-{n}.png").is_file() for n in range(3))


def test_torch_threads_leave_one_core_to_the_request_threads() -> None:
    auto = ServingSettings.from_env({})
    assert [auto.torch_thread_count(cores) for cores in (1, 2, 4, 16)] == [1, 1, 3, 15]
    fixed = ServingSettings.from_env({"IMAGEBATCH_TORCH_THREADS": "2"})
    assert fixed.torch_thread_count(2) == 2


# -- one worker and model replica per NeuronCore --------------------------------------------


def test_one_worker_per_neuron_core_and_one_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    neuron = ServingSettings.from_env({"IMAGEBATCH_ACCELERATOR": "neuron"})
    assert gunicorn_conf.worker_count(neuron) == 2  # ml.inf2.xlarge: one chip, two cores
    four = ServingSettings.from_env(
        {"IMAGEBATCH_ACCELERATOR": "neuron", "IMAGEBATCH_NEURON_CORES": "4"}
    )
    assert gunicorn_conf.worker_count(four) == 4
    assert gunicorn_conf.worker_count(ServingSettings.from_env({})) == 1  # no torch_neuronx here
    diffusers = ServingSettings.from_env({"IMAGEBATCH_ACCELERATOR": "diffusers"})
    assert gunicorn_conf.worker_count(diffusers) == 1


def test_each_worker_sees_its_own_core_and_a_dead_workers_core_is_reused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN gunicorn's master on the Neuron image (its hooks, with gunicorn stubbed)
    settings = ServingSettings.from_env({"IMAGEBATCH_ACCELERATOR": "neuron"})
    monkeypatch.setattr(gunicorn_conf, "_settings", settings)
    server = SimpleNamespace(WORKERS={}, log=SimpleNamespace(info=lambda *a: None))

    def spawn(pid: int) -> SimpleNamespace:
        worker = SimpleNamespace(pid=pid)
        gunicorn_conf.pre_fork(server, worker)
        server.WORKERS[pid] = worker
        return worker

    # WHEN two workers start
    first, second = spawn(101), spawn(102)
    # THEN each holds its own core, and after fork its process sees only that one
    assert (first.neuron_core, second.neuron_core) == (0, 1)
    monkeypatch.delenv("NEURON_RT_VISIBLE_CORES", raising=False)
    gunicorn_conf.post_fork(server, second)
    import os

    assert os.environ["NEURON_RT_VISIBLE_CORES"] == "1"
    # AND a worker that died gives its core to its replacement
    del server.WORKERS[101]
    assert spawn(103).neuron_core == 0
    with pytest.raises(RuntimeError, match="all 2 NeuronCores"):
        spawn(104)


def test_off_neuron_the_hooks_bind_no_core(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gunicorn_conf, "_settings", ServingSettings.from_env({}))
    worker = SimpleNamespace(pid=1)
    gunicorn_conf.pre_fork(SimpleNamespace(WORKERS={}), worker)
    assert not hasattr(worker, "neuron_core")


def test_each_replica_loads_the_whole_pipeline_on_its_one_core(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a compiled archive's layout and optimum.neuron stubbed at its pipeline classes
    (tmp_path / "buckets.json").write_text(
        json.dumps({"pipeline": "sd", "batch_size": 4, "buckets": ["512x512", "768x768"]})
    )
    loads: list[tuple[str, dict[str, Any]]] = []

    class Pipeline:
        @classmethod
        def from_pretrained(cls, path: str, **options: Any) -> str:
            loads.append((Path(path).name, options))
            return path

    optimum = ModuleType("optimum")
    neuron = ModuleType("optimum.neuron")
    neuron.NeuronStableDiffusionPipeline = Pipeline  # type: ignore[attr-defined]
    neuron.NeuronStableDiffusionXLPipeline = Pipeline  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "optimum", optimum)
    monkeypatch.setitem(sys.modules, "optimum.neuron", neuron)
    # WHEN the Neuron backend loads
    backend = NeuronBackend.load(tmp_path)
    # THEN every bucket is one whole pipeline without optimum's in-process data parallelism
    # (the process sees one NeuronCore; the other core has a worker of its own)
    assert loads == [
        ("512x512", {"data_parallel_mode": "none"}),
        ("768x768", {"data_parallel_mode": "none"}),
    ]
    assert backend.max_batch == 4


def test_the_neuron_bench_gives_each_replica_its_own_core_and_skips_without_the_chip(
    capsys: pytest.CaptureFixture[str],
) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    try:
        import bench_neuron
    finally:
        sys.path.pop(0)
    assert bench_neuron.replica_environments(2) == [
        {"NEURON_RT_VISIBLE_CORES": "0"},
        {"NEURON_RT_VISIBLE_CORES": "1"},
    ]
    assert bench_neuron.main([]) == 0  # torch_neuronx is absent here
    assert "run it on inf2" in capsys.readouterr().out
