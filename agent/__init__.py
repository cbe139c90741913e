"""autoshrink.agent: who picks the actions (SB3 algorithms and non-learning baselines)."""
