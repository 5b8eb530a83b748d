"""Inferentia2: images/s with one model replica vs one per NeuronCore (the serving image's
default, containers/serving/imagebatch_serving/gunicorn_conf.py).

Needs the chip: run it inside the Neuron image on an inf2 machine, with a compiled model
(`python -m imagebatch_serving.compile ... --work build/neuron --no-pack`):

    docker run --rm --device /dev/neuron0 -v "$PWD:/work" -w /work \\
      --entrypoint python3 imagebatch-neuron bench/bench_neuron.py /work/build/neuron 40

Each replica is a process of its own that sees one NeuronCore (NEURON_RT_VISIBLE_CORES), as
each gunicorn worker does, loads the whole pipeline there (data_parallel_mode "none") and runs
CALLS calls of the compiled batch size at the first bucket; the figure is all images over the
wall time from the first call to the last. Target: two replicas >= 1.8x one. Elsewhere it
says so and exits 0 (`make bench` runs every bench_*.py).
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from pathlib import Path


def replica_environments(replicas: int) -> list[dict[str, str]]:
    """The Neuron runtime's view for each replica process: one core each, 0..replicas-1."""
    return [{"NEURON_RT_VISIBLE_CORES": str(core)} for core in range(replicas)]


def _replica(model_dir: str, calls: int, env: dict[str, str], ready: object, go: object) -> None:
    os.environ.update(env)  # before torch_neuronx loads: the runtime reads it at start
    from imagebatch_serving.backends import NeuronBackend
    from imagebatch_serving.engine import CallShape

    backend = NeuronBackend.load(Path(model_dir))
    bucket = backend.buckets[0]
    shape = CallShape(width=bucket.width, height=bucket.height, steps=30, guidance=7.5)
    prompts = ["a studio photo of a ceramic mug"] * backend.max_batch
    backend.generate(shape, prompts, None, list(range(backend.max_batch)))  # warm-up
    ready.release()  # type: ignore[attr-defined]
    go.wait()  # type: ignore[attr-defined]
    for call in range(calls):
        seeds = [call * backend.max_batch + i for i in range(backend.max_batch)]
        backend.generate(shape, prompts, None, seeds)


def images_per_second(model_dir: str, replicas: int, calls: int, batch: int) -> float:
    context = multiprocessing.get_context("spawn")
    ready, go = context.Semaphore(0), context.Event()
    processes = [
        context.Process(target=_replica, args=(model_dir, calls, env, ready, go))
        for env in replica_environments(replicas)
    ]
    for process in processes:
        process.start()
    for _ in processes:
        ready.acquire()
    started = time.perf_counter()
    go.set()
    for process in processes:
        process.join()
        if process.exitcode != 0:
            raise SystemExit(f"a replica exited {process.exitcode}")
    return replicas * calls * batch / (time.perf_counter() - started)


def main(argv: list[str]) -> int:
    import importlib.util

    # Looked up, not imported: without the chip this must not load torch.
    if importlib.util.find_spec("torch_neuronx") is None:
        print("bench_neuron: no Neuron SDK here (torch_neuronx); run it on inf2, see its docstring")
        return 0
    model_dir = argv[0] if argv else "build/neuron"
    calls = int(argv[1]) if len(argv) > 1 else 40
    import json

    batch = int(json.loads((Path(model_dir) / "buckets.json").read_text())["batch_size"])
    one = images_per_second(model_dir, 1, calls, batch)
    two = images_per_second(model_dir, 2, calls, batch)
    print(f"neuron bench: {calls} calls of batch {batch} per replica")
    print(f"  1 replica (one NeuronCore): {one:.2f} images/s")
    print(
        f"  2 replicas (one per NeuronCore): {two:.2f} images/s, {two / one:.2f}x (target >= 1.8x)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
