"""A batch's device and threads: what each job runs with, and what is refused up front."""

from __future__ import annotations

import pytest
import torch

from autoshrink.agent.batch import runner
from autoshrink.agent.batch.runner import BatchOptions, check_devices, placed
from autoshrink.agent.batch.spec import parse_spec
from autoshrink.compression.device import DeviceError
from autoshrink.compression.errors import AutoshrinkError

SPEC = """
[[jobs]]
model = "smallcnn"

[[jobs]]
model = "smallcnn"
cpus = 3
device = "cpu"
"""


def test_jobs_take_the_batchs_device_and_threads_where_their_spec_gives_none(monkeypatch):
    monkeypatch.setattr(runner, "default_threads", lambda workers: 12 // workers)
    plain, own = parse_spec(SPEC).jobs
    job = placed(plain, BatchOptions(device="cuda:1"), workers=4)
    assert job.settings["device"] == "cuda:1" and job.cpus == 3  # 12 cores / 4 workers
    assert job.id == plain.id  # where a job runs is not what it is: a rerun skips it
    assert job.search_config().env.device == "cuda:1"
    job = placed(plain, BatchOptions(threads=2), workers=4)
    assert "device" not in job.settings and job.cpus == 2
    assert job.search_config().env.device == "auto"
    kept = placed(own, BatchOptions(device="cuda:1", threads=2), workers=4)
    assert kept.settings["device"] == "cpu" and kept.cpus == 3
    assert placed(plain, BatchOptions(backend="ray"), workers=None).cpus == 1


def test_bad_batch_options_are_refused():
    with pytest.raises(DeviceError, match="device must be"):
        BatchOptions(device="tpu")
    with pytest.raises(AutoshrinkError, match="threads must be between 1 and 1,024, got 0"):
        BatchOptions(threads=0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_a_device_this_machine_lacks_is_refused_before_the_batch():
    spec = parse_spec(SPEC)
    check_devices(spec, BatchOptions(device="cpu"))
    with pytest.raises(DeviceError, match="needs CUDA"):
        check_devices(spec, BatchOptions(device="cuda"))
    check_devices(spec, BatchOptions(backend="ray", device="cuda"))  # Ray's workers may have one
