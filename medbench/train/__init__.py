"""medbench.train."""
