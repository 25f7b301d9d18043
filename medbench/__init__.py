"""medbench: a medical-imaging robustness and transferability workbench.

The shared core: DICOM/PNG ingestion, datasets and splits, pretrained sources, the training
engine, evaluation and reports. Sibling packages ``confounders``, ``transferability`` and
``harmonization`` build on it.
"""

from __future__ import annotations

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
