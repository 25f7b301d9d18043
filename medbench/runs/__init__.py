"""The run-folder contract shared by the workflows: settings checks, resume or refuse, restart,
config/log/metrics/tables, units of work with settings hashes."""

from __future__ import annotations

from medbench.runs.contract import SETTINGS_FILE, changed_settings, check_settings, restart_run
from medbench.runs.folder import CONFIG_FILE, METRICS_FILE, Run, open_run, run_log, settings_hash

__all__ = ["CONFIG_FILE", "METRICS_FILE", "SETTINGS_FILE", "Run", "changed_settings", "check_settings",
           "open_run", "restart_run", "run_log", "settings_hash"]
