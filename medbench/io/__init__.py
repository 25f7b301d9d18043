"""medbench.io."""
