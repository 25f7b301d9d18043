"""Low-dose CT: projection-domain dose simulation, denoisers, image-quality metrics."""
