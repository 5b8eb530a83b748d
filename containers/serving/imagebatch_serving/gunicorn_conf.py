"""gunicorn's settings for the serving images (`gunicorn -c python:<this module>`,
see containers/serving/serve), computed from the container's environment.

Workers: one per model replica. On the Neuron image that is one per NeuronCore (ml.inf2.xlarge:
one Inferentia2 chip, two NeuronCores): each worker process sees only its own core through
`NEURON_RT_VISIBLE_CORES` (set in `post_fork`, before the worker imports the app and loads the
model) and loads the pipeline with optimum-neuron's `data_parallel_mode="none"`, so each core
holds one whole replica and serves one call at a time. That is the Neuron runtime's documented
data parallelism across processes ("the same compiled model can run in parallel ... by loading
it multiple times, up to the total number of NeuronCores specified in NEURON_RT_NUM_CORES or
NEURON_RT_VISIBLE_CORES"); optimum's own `data_parallel_mode="unet"|"all"` instead splits one
call's batch over both cores, which needs a batch of twice the compiled size. Everywhere else:
one worker (one copy of the model per accelerator).

Threads per worker let /ping answer during a long call and queue a second chunk behind it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from imagebatch_serving.app import ServingSettings

# NeuronCores of one Inferentia2 chip (ml.inf2.xlarge and ml.inf2.8xlarge).
INF2_CORES_PER_CHIP = 2


def worker_count(settings: ServingSettings) -> int:
    """One worker per NeuronCore on the Neuron backend, else one."""
    return settings.neuron_cores if settings.uses_neuron() else 1


def free_core(taken: set[int], cores: int) -> int:
    """The lowest core no live worker holds: a worker that died gives its core to the next."""
    for core in range(cores):
        if core not in taken:
            return core
    raise RuntimeError(f"all {cores} NeuronCores are held by live workers")


_environ: Mapping[str, str] = os.environ
_settings = ServingSettings.from_env(_environ)

bind = "0.0.0.0:8080"
workers = worker_count(_settings)
threads = int(_environ.get("IMAGEBATCH_THREADS", "4"))
timeout = int(_environ.get("IMAGEBATCH_REQUEST_TIMEOUT", "3600"))
# The model loads in each worker after fork (no preload): a NeuronCore is bound per process.
preload_app = False


def pre_fork(server: Any, worker: Any) -> None:
    """In the master, before a worker forks: give it the lowest NeuronCore no live worker
    holds (server.WORKERS: pid -> worker, the live ones)."""
    if not _settings.uses_neuron():
        return
    taken = {getattr(w, "neuron_core", -1) for w in server.WORKERS.values()}
    worker.neuron_core = free_core(taken, _settings.neuron_cores)


def post_fork(server: Any, worker: Any) -> None:
    """In the worker, before it loads the app: the Neuron runtime sees only its core."""
    core = getattr(worker, "neuron_core", None)
    if core is not None:
        os.environ["NEURON_RT_VISIBLE_CORES"] = str(core)
        server.log.info("worker %s serves NeuronCore %s", worker.pid, core)
