"""`autoshrink search`, a one-job batch and the Python API run the same search.

All three build their :class:`SearchConfig` from the same flat settings, with the library's
defaults filling the rest, and run it through one function; the same seed and settings
must give the same config, the same episodes and the same shipped policy.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from autoshrink.agent.search.config import SearchConfig
from autoshrink.agent.search.run import search
from autoshrink.compression.policy import Policy
from autoshrink.scripts.cli import main
from tests.agent.conftest import smallcnn_checkpoint  # noqa: F401 (a fixture)

SETTINGS = {"model": "smallcnn", "flops": 0.5, "episodes": 5, "final_epochs": 1, "seed": 3}


def episodes(folder: Path) -> list[tuple[float, dict[str, float]]]:
    rows = [json.loads(line) for line in (folder / "episodes.jsonl").read_text().splitlines()]
    return [(row["reward"], row["keep"]) for row in rows]


def test_cli_batch_and_api_give_the_same_search(
    tmp_path: Path,
    smallcnn_checkpoint: Path,  # noqa: F811
) -> None:
    settings = {**SETTINGS, "checkpoint": str(smallcnn_checkpoint)}
    api = tmp_path / "api"
    search(SearchConfig.create(**settings), api)

    cli = tmp_path / "cli"
    argv = ["search", "--model", "smallcnn", "--checkpoint", str(smallcnn_checkpoint)]
    argv += ["--flops", "0.5", "--episodes", "5", "--final-epochs", "1", "--seed", "3"]
    assert main([*argv, "--out", str(cli), "--json"]) == 0

    spec = tmp_path / "spec.toml"
    lines = [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
    spec.write_text("[[jobs]]\n" + "\n".join(lines) + "\n")
    assert main(["batch", str(spec), "--out", str(tmp_path / "batch")]) == 0
    (batch,) = (tmp_path / "batch" / "runs").iterdir()

    configs = [SearchConfig.load(folder / "config.json") for folder in (api, cli, batch)]
    # each door records the threads it computed with (a batch shares the cores among its
    # jobs): resources of the machine, not settings of the search
    assert all(c.agent.threads and c.agent.worker_threads for c in configs)
    unthreaded = [replace(c.agent, threads=None, worker_threads=None) for c in configs]
    configs = [replace(c, agent=a) for c, a in zip(configs, unthreaded, strict=True)]
    assert configs[0] == configs[1] == configs[2]
    assert configs[0].env.finetune_steps == 0 and configs[0].final.finalists == 1  # digits
    assert episodes(api) == episodes(cli) == episodes(batch)
    policies = [Policy.load(folder / "policy.json") for folder in (api, cli, batch)]
    assert policies[0].units == policies[1].units == policies[2].units
