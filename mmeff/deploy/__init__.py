"""Deployment: ONNX export through mmdeploy, ONNX Runtime inference and latency, TensorRT engines.

Importing this package registers mmeff's mmdeploy rewriters (they act only inside mmdeploy's
export context) and needs the ``deploy`` extra (``pip install -e .[deploy]``).
"""
from . import rewriters  # noqa: F401  (registers the rewriters)
from .compat import TESTED_DEPLOY_STACK, check_deploy_stack, torchscript_onnx_export
from .export import build_deploy_model, export_onnx, load_configs

__all__ = [
    'TESTED_DEPLOY_STACK', 'check_deploy_stack', 'torchscript_onnx_export', 'build_deploy_model',
    'export_onnx', 'load_configs'
]
