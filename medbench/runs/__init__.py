"""The run-folder contract shared by the workflows: settings checks, resume or refuse, restart."""

from __future__ import annotations

from medbench.runs.contract import SETTINGS_FILE, changed_settings, check_settings, restart_run

__all__ = ["SETTINGS_FILE", "changed_settings", "check_settings", "restart_run"]
