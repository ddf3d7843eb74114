"""mmeff: efficient vision transformers and real-time DETRs for OpenMMLab.

``import mmeff`` (or ``custom_imports = dict(imports=['mmeff'])`` in a config) registers every
mmeff module in the MMDetection and MMPretrain registries.
"""
from . import datasets, engine, models  # noqa: F401

__version__ = '0.1.0'
