"""Deployment: ONNX export through mmdeploy, the backends that run the export (ONNX Runtime, OpenVINO,
TensorRT), and the deployed model beside PyTorch (latency, parity).

Importing this package registers mmeff's mmdeploy rewriters (they act only inside mmdeploy's
export context) and needs the ``deploy`` extra (``pip install -e .[deploy]``).
"""
from . import rewriters  # noqa: F401  (registers the rewriters)
from .backends import BACKENDS, Backend, backend_class
from .compare import detection_parity, match_detections, pytorch_outputs
from .compat import TESTED_DEPLOY_STACK, check_deploy_stack, torchscript_onnx_export
from .deployed import DeployedModel, export_for
from .evaluate import DeployedClassifier, DeployedDetector, evaluate
from .export import build_deploy_model, export_onnx, load_configs

__all__ = [
    'BACKENDS', 'Backend', 'backend_class', 'detection_parity', 'match_detections', 'pytorch_outputs',
    'TESTED_DEPLOY_STACK', 'check_deploy_stack', 'torchscript_onnx_export', 'DeployedModel', 'export_for',
    'DeployedClassifier', 'DeployedDetector', 'evaluate',
    'build_deploy_model', 'export_onnx', 'load_configs'
]
