"""Confounders: the MICCAT taxonomy, synthetic and sampled confounders, and the robustness audit."""
