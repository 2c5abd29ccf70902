"""`tributary simulate`: a market of many keys over many epochs, driven through the production functions.

- `simulation.scenario`: the scenario file (TOML), validated into a `Scenario`; `ScenarioError` names file, key, rule.
- `simulation.data`: rows from scikit-learn's bundled datasets (nothing downloads): holdout, fresh rows, garbage.
- `simulation.strategies`: what each kind of contributor sends and each kind of validator weighs, per epoch.
- `simulation.market`: the driver: a fresh home, keys, submissions into drop/, `run_epoch`, the figures.
- `simulation.report`: report.md, PNG charts and the raw figures as Parquet.

Plain Python: no Dagster.
"""

from simulation.scenario import Scenario, ScenarioError, load_scenario  # noqa: F401
