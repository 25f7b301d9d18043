"""Small shared helpers: seeded RNG, optional imports, atomic writes, hashing."""
