"""On a CUDA machine: a search, its baseline and its scoring run there, and its files do not.

Every test here is marked ``gpu`` and skipped where CUDA is not available (see
``tests/conftest.py``); run them alone with ``pytest -m gpu``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from autoshrink.agent.search.report import read_result
from autoshrink.compression.artifact import load_artifact
from autoshrink.compression.baselines import baseline
from autoshrink.compression.data import load_dataset
from autoshrink.compression.evaluate import accuracy
from autoshrink.compression.models import ModelSpec
from autoshrink.scripts.cli import main

pytestmark = pytest.mark.gpu

CPU_ONLY = """
import json, sys
from autoshrink.compression.artifact import load_artifact
from autoshrink.compression.data import load_dataset
from autoshrink.compression.evaluate import accuracy
import torch
assert not torch.cuda.is_available()
model = load_artifact(sys.argv[1])
print(json.dumps(accuracy(model, load_dataset("digits").loader("test", 256))))
"""


def _episode(env) -> dict:
    env.reset(seed=0)
    for _ in env.units:
        _, _, done, _, info = env.step(np.full(env.action_space.shape, 0.6, np.float32))
    assert done
    return info


def test_a_short_search_on_cuda_ships_files_that_load_without_cuda(
    tmp_path, smallcnn_checkpoint, capsys
):
    out = tmp_path / "run"
    argv = ["search", "--model", "smallcnn", "--checkpoint", str(smallcnn_checkpoint)]
    argv += ["--episodes", "4", "--warmup", "2", "--final-epochs", "1", "--finalists", "2"]
    assert main([*argv, "--finetune-steps", "5", "--device", "cuda", "--out", str(out)]) == 0
    assert "device cuda:0" in " ".join(capsys.readouterr().err.split())
    result = read_result(out / "result.json")
    assert result["budgets_met"] is True and result["env"]["device"] == "cuda"
    model = load_artifact(out / result["artifact"])
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    here = accuracy(model, load_dataset("digits").loader("test", 256))
    assert here == pytest.approx(result["compressed"]["accuracy"], abs=0.01)
    # a process that sees no CUDA at all loads and scores the same artifact
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    run = [sys.executable, "-c", CPU_ONLY, str(out / result["artifact"])]
    done = subprocess.run(run, env=env, capture_output=True, text=True, timeout=300, check=True)
    assert json.loads(done.stdout) == pytest.approx(here, abs=1e-9)


def test_a_baseline_trained_on_cuda_is_cached_from_the_cpu(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOSHRINK_CACHE", str(tmp_path))
    spec = ModelSpec("smallcnn", num_classes=10, in_channels=1)
    model, path = baseline(spec, "digits", epochs=1, device="cuda")
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    state = torch.load(path, weights_only=True)  # no map_location: as stored
    assert {t.device.type for t in state.values()} == {"cpu"}


def test_the_env_scores_on_cuda_with_pinned_loaders_and_a_teacher_there(make_env):
    gpu = make_env(device="cuda", finetune_steps=5, distill=True)
    assert gpu.device == torch.device("cuda", torch.cuda.current_device())
    assert gpu.data.pin_memory and gpu.evaluator.device == gpu.device
    assert next(gpu.evaluator.teacher.parameters()).device.type == "cuda"
    assert next(gpu.model.parameters()).device.type == "cpu"  # the master copy stays
    cpu = make_env(device="cpu", finetune_steps=5, distill=True)
    on_gpu, on_cpu = _episode(gpu), _episode(cpu)
    assert on_gpu["policy_dict"] == on_cpu["policy_dict"]
    assert on_gpu["accuracy"] == pytest.approx(on_cpu["accuracy"], abs=0.05)


def test_evaluate_scores_an_artifact_on_cuda_as_on_the_cpu(tmp_path, smallcnn_checkpoint, capsys):
    out = tmp_path / "run"
    argv = ["search", "--model", "smallcnn", "--checkpoint", str(smallcnn_checkpoint)]
    assert main([*argv, "--episodes", "2", "--final-epochs", "0", "--out", str(out)]) == 0
    artifact = out / read_result(out / "result.json")["artifact"]
    capsys.readouterr()
    scores = {}
    for device in ("cpu", "cuda"):
        flags = ["--dataset", "digits", "--device", device, "--json"]
        assert main(["evaluate", str(artifact), *flags]) == 0
        scores[device] = json.loads(capsys.readouterr().out)["accuracy"]
    assert scores["cuda"] == pytest.approx(scores["cpu"], abs=0.01)
