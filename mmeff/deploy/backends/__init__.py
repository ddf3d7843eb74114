"""The runtimes an exported model runs on, one module each (ONNX Runtime, OpenVINO, TensorRT).

A backend is a :class:`~.base.Backend` subclass: whether this machine can run it, its file from
the ONNX export, a session loaded from that file, and a run on numpy inputs. Adding one is a
module here and a line in :data:`BACKENDS`; export, timing and parity with PyTorch
(:mod:`mmeff.deploy.compare`) then work for it unchanged.
"""
from typing import Type

from .base import Backend
from .onnxruntime import ONNXRuntime, create_session
from .openvino import OpenVINO
from .tensorrt import FP16_BOX_TOLERANCE, FP16_SCORE_TOLERANCE, TensorRT

BACKENDS = {backend.name: backend for backend in (ONNXRuntime, OpenVINO, TensorRT)}


def backend_class(name: str) -> Type[Backend]:
    """The backend called ``name`` (the deploy configs' ``backend_config.type``)."""
    if name not in BACKENDS:
        raise ValueError(f'unknown deploy backend {name!r}; choose from {tuple(BACKENDS)}')
    return BACKENDS[name]


__all__ = [
    'Backend', 'ONNXRuntime', 'OpenVINO', 'TensorRT', 'BACKENDS', 'backend_class', 'create_session',
    'FP16_BOX_TOLERANCE', 'FP16_SCORE_TOLERANCE'
]
