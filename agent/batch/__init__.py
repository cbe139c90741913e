"""autoshrink.agent.batch: many searches (or applies) from one TOML spec.

- ``spec`` and ``grid``: the spec file, checked before any job runs, and its grids;
- ``job``: one job as a worker runs it (search, apply a policy, transfer an agent);
- ``runner``: the local process pool and Ray executors, resumable from ``results.jsonl``;
- ``results``: the records, ``summary.csv`` and Pareto plots.
"""
