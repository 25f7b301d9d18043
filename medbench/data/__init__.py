"""medbench.data: synthetic data, torch Datasets over manifests, patient-grouped splits, and the
uid-aware MONAI transform pipeline (``transforms``).

Submodules are imported on use (``from medbench.data.synthetic import make_cxr``); this package
itself imports nothing heavy.
"""
