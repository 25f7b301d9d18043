"""medbench.eval."""
