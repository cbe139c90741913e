"""TensorBoard as TensorBoard reads it: no tag of a real search loses its events."""

from __future__ import annotations

from pathlib import Path

from autoshrink.agent.search import SearchConfig, search
from tests.agent.conftest import smallcnn_checkpoint  # noqa: F401 (a fixture)


def test_a_real_search_keeps_every_tensorboard_tag(tmp_path: Path, smallcnn_checkpoint: Path):  # noqa: F811
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    config = SearchConfig.create(
        model="smallcnn",
        checkpoint=str(smallcnn_checkpoint),
        agent="ddpg",
        episodes=8,
        warmup=2,
        final_epochs=1,
        seed=0,
    )
    search(config, tmp_path / "run")
    # the reader TensorBoard's UI uses: one run per subfolder, out-of-order steps purged
    mux = EventMultiplexer().AddRunsFromDirectory(str(tmp_path / "run" / "tb")).Reload()
    runs = mux.Runs()
    assert set(runs) == {"agent", "search"}
    scalars = {run: set(tags["scalars"]) for run, tags in runs.items()}
    # SB3's own curves (stepped by timestep) are there, apart from ours (stepped by episode)
    assert {"train/actor_loss", "train/critic_loss"} <= scalars["agent"]
    assert {"episode/reward", "search/best_reward", "budget/macs_ratio"} <= scalars["search"]
    for run, tags in scalars.items():
        for tag in tags:
            assert mux.Scalars(run, tag), f"{run}/{tag} has no events left"
    assert [e.step for e in mux.Scalars("search", "episode/reward")] == list(range(8))
    assert "search/best_policy" in runs["search"]["images"]
