"""run_search on a toy env with the real env's API: fast, every learning alias."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from stable_baselines3.common.callbacks import BaseCallback

from autoshrink.agent.algorithms import ALGORITHMS, build_agent
from autoshrink.agent.config import AgentConfig
from autoshrink.agent.search.loop import run_search
from autoshrink.agent.search.run_folder import RunFolder
from autoshrink.compression.errors import AutoshrinkError
from tests.agent.toy_env import ToyCompressionEnv

TOY_ALIASES = ["ddpg", "td3", "sac", "ppo", "random"]


def tiny(algorithm: str, episodes: int = 6, seed: int = 0) -> AgentConfig:
    return AgentConfig(
        algorithm=algorithm,
        episodes=episodes,
        warmup_episodes=2,
        batch_size=8,
        seed=seed,
        policy_kwargs={"net_arch": [16, 16]},
    )


class Interrupt(BaseCallback):
    """Raises (like a kill) at the end of episode ``after`` of this run."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.after, self.seen = after, 0

    def _on_step(self) -> bool:
        if self.locals["dones"][0]:
            self.seen += 1
            if self.seen == self.after:
                raise KeyboardInterrupt("simulated kill")
        return True


def lines(folder) -> list[dict]:
    return [json.loads(x) for x in (folder / "episodes.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("algorithm", TOY_ALIASES)
def test_every_alias_writes_a_run_folder(tmp_path, algorithm):
    env = ToyCompressionEnv()
    result = run_search(env, tiny(algorithm), tmp_path / "run")
    rows = lines(tmp_path / "run")
    assert [r["episode"] for r in rows] == list(range(6))
    assert env.evaluations == 6 and result.episodes == 6
    assert result.best_reward == pytest.approx(max(r["reward"] for r in rows))
    assert rows[result.best_episode]["is_best"]
    assert result.best_policy is not None and len(result.best_policy.units) == 4
    for name in ("policy.json", "agent.zip", "config.json"):
        assert (tmp_path / "run" / name).is_file()
    assert list((tmp_path / "run" / "tb" / "search").glob("events.out.tfevents.*"))
    assert 0 < rows[0]["macs_ratio"] <= 0.5 + 1e-9


@pytest.mark.parametrize("algorithm", ["ddpg", "ppo", "random"])
def test_resume_after_a_kill_continues_without_duplicates(tmp_path, algorithm):
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run_search(ToyCompressionEnv(), tiny(algorithm, episodes=7), out, callbacks=[Interrupt(4)])
    assert len(lines(out)) == 4
    with pytest.raises(AutoshrinkError, match="already holds a search"):
        run_search(ToyCompressionEnv(), tiny(algorithm, episodes=7), out)
    env = ToyCompressionEnv()
    result = run_search(env, tiny(algorithm, episodes=7), out, resume=True)
    rows = lines(out)
    assert [r["episode"] for r in rows] == list(range(7))
    assert result.episodes == 7
    # off-policy checkpoints lag one episode (written once it is fully stored): that one is redone
    assert env.evaluations in (3, 4)
    # a finished search resumes to nothing
    again = ToyCompressionEnv()
    assert run_search(again, tiny(algorithm, episodes=7), out, resume=True).episodes == 7
    assert again.evaluations == 0


def test_resume_restores_learning_state(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run_search(ToyCompressionEnv(), tiny("ddpg", episodes=8), out, callbacks=[Interrupt(5)])
    ckpt_dir, state = RunFolder(out).latest_checkpoint()
    assert state.episodes == 4  # the 5th was in flight (not yet fully stored) at the kill
    from autoshrink.agent.replay_file import load_replay_buffer

    env = ToyCompressionEnv()
    model = ALGORITHMS["ddpg"].load(ckpt_dir / "agent.zip", env, tiny("ddpg"), env.n_units)
    assert model.num_timesteps == 4 * 4
    assert model.action_noise.episodes == 4
    load_replay_buffer(model.replay_buffer, ckpt_dir)
    assert model.replay_buffer.size() == 16
    run_search(ToyCompressionEnv(), tiny("ddpg", episodes=8), out, resume=True)
    assert len(lines(out)) == 8


@pytest.mark.parametrize("algorithm", ["ddpg", "sac", "random"])
def test_same_seed_same_policy(tmp_path, algorithm):
    results = [
        run_search(ToyCompressionEnv(), tiny(algorithm, seed=s), tmp_path / f"r{i}")
        for i, s in enumerate((3, 3, 4))
    ]
    a, b, _ = results
    assert a.best_policy == b.best_policy
    assert [r["reward"] for r in lines(tmp_path / "r0")] == [
        r["reward"] for r in lines(tmp_path / "r1")
    ]
    assert [r["reward"] for r in lines(tmp_path / "r0")] != [
        r["reward"] for r in lines(tmp_path / "r2")
    ]


def test_ddpg_has_amc_settings():
    model = build_agent(ToyCompressionEnv(n_units=5), AgentConfig(warmup_episodes=3), 5)
    assert model.gamma == 1.0 and model.tau == 0.01 and model.batch_size == 64
    assert model.learning_starts == 15 and model.replay_buffer.buffer_size == 500
    assert model.policy.net_arch == [300, 300]
    assert model.action_noise.sigma == 0.5 and model.action_noise.decay == 0.95
    assert model.critic.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)


def test_actor_learns_at_its_own_rate():
    model = build_agent(ToyCompressionEnv(), AgentConfig(actor_lr=1e-4, critic_lr=1e-3), 4)
    for opt, rate in ((model.actor.optimizer, 1e-4), (model.critic.optimizer, 1e-3)):
        params = [p for g in opt.param_groups for p in g["params"]]
        before = [p.detach().clone() for p in params]
        for p in params:
            p.grad = torch.ones_like(p)
        opt.step()
        step = max(float((p.detach() - q).abs().max()) for p, q in zip(params, before, strict=True))
        # Adam's first step moves every weight by lr
        assert step == pytest.approx(rate, rel=1e-3)
        assert opt.param_groups[0]["lr"] == pytest.approx(1e-3)  # the schedule's rate is kept


def test_noise_is_applied_after_warmup_only(tmp_path):
    run_search(ToyCompressionEnv(), tiny("ddpg", episodes=5), tmp_path / "r")
    sigmas = [r["noise_sigma"] for r in lines(tmp_path / "r")]
    assert sigmas[:2] == [0.0, 0.0]
    assert sigmas[2:] == pytest.approx([0.5, 0.5 * 0.95, 0.5 * 0.95**2])


def test_registry_lists_the_nine_aliases():
    assert set(ALGORITHMS) == {
        "ddpg",
        "td3",
        "sac",
        "ppo",
        "random",
        "uniform",
        "global",
        "deep-compression",
        "solver",
    }
    assert [a for a, s in ALGORITHMS.items() if s.learning] == ["ddpg", "td3", "sac", "ppo"]
    assert np.isfinite(0.0)


def test_agent_trains_on_one_thread_and_restores_the_count(tmp_path):
    from autoshrink.agent.search.callbacks import AgentThreadsCallback

    seen = []

    class Spy(BaseCallback):
        def _on_step(self) -> bool:
            seen.append(torch.get_num_threads())
            return True

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        run_search(ToyCompressionEnv(), tiny("ddpg"), tmp_path / "r", callbacks=[Spy()])
        assert torch.get_num_threads() == 2 and set(seen) == {2}  # the env keeps its threads
        cb = AgentThreadsCallback(1)
        cb._on_rollout_end()
        assert torch.get_num_threads() == 1
        cb._on_rollout_start()
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_tensorboard_has_namespaced_scalars_and_the_policy_figure(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_search(ToyCompressionEnv(), tiny("random", episodes=5), tmp_path / "r")
    acc = EventAccumulator(
        str(tmp_path / "r" / "tb" / "search"), size_guidance={"images": 0}
    ).Reload()
    tags = acc.Tags()
    for tag in ("episode/reward", "episode/accuracy", "budget/macs_ratio", "search/best_reward"):
        assert tag in tags["scalars"], tag
        assert [e.step for e in acc.Scalars(tag)] == [0, 1, 2, 3, 4]
    best = [e.value for e in acc.Scalars("search/best_reward")]
    assert best == sorted(best)
    assert "search/best_policy" in tags["images"]
