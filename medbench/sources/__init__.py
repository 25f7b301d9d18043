"""medbench.sources."""
