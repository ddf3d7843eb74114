"""The benchmark's exported backends (onnxruntime, openvino, tensorrt): a config's model as
:class:`mmeff.deploy.deployed.DeployedModel` at the benchmark's input size, with the task's
default deploy config.

:mod:`mmeff.deploy` is imported only here (and by :mod:`.paths`) and only when an exported backend is asked for: the
pytorch backend needs no deploy extra.
"""
import os.path as osp
from typing import Optional, Sequence

import mmengine

from mmeff.paths import config_path

# the precisions each exported backend runs, by the deploy config that gives them
DEPLOY_CFGS = {
    ('onnxruntime', 'fp32'): '{task}_onnxruntime_static-{size}.py',
    ('openvino', 'fp32'): '{task}_openvino_static-{size}.py',
    ('openvino', 'bf16'): '{task}_openvino-bf16_static-{size}.py',
    ('openvino', 'int8'): '{task}_openvino-int8_static-{size}.py',
    ('tensorrt', 'fp16'): '{task}_tensorrt-fp16_static-{size}.py',
}
TASK_NAMES = dict(det='detection', cls='classification')
DEFAULT_SIZES = dict(det='640x640', cls='224x224')


def deploy_config_for(task: str, backend: str, precision: str) -> str:
    """The deploy config of ``configs/deploy/`` that runs ``backend`` at ``precision`` for ``task``
    ('det' or 'cls'); ``ValueError`` naming the precisions the backend has when there is none."""
    if (backend, precision) not in DEPLOY_CFGS:
        offered = sorted(p for b, p in DEPLOY_CFGS if b == backend)
        raise ValueError(f'{backend} has no {precision} path here (it runs {offered})')
    name = DEPLOY_CFGS[(backend, precision)].format(task=TASK_NAMES[task], size=DEFAULT_SIZES[task])
    return config_path(osp.join('deploy', name))


# the precision a backend runs at when one backend is benchmarked alone (--backend B)
DEFAULT_PRECISIONS = dict(onnxruntime='fp32', openvino='fp32', tensorrt='fp16')


def require_backend(backend: str) -> None:
    """Raise with the reason and the fix when ``backend`` cannot run on this machine."""
    try:
        import mmdeploy  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as error:
        raise RuntimeError(f'the {backend} backend exports through mmdeploy and ONNX: install the deploy extra '
                           f'(pip install -e .[deploy]); missing: {error.name}') from error
    from mmeff.deploy.backends import backend_class
    backend_class(backend).require()


def default_deploy_cfg(task: str, backend: str) -> str:
    return deploy_config_for(task, backend, DEFAULT_PRECISIONS[backend])


def deployed_model(model_cfg: mmengine.Config, task: str, backend: str, img_size: Sequence[int], work_dir: str,
                   deploy_cfg: Optional[str] = None, device: str = 'cpu'):
    """The :class:`~mmeff.deploy.deployed.DeployedModel` of ``model_cfg`` (loaded, overrides
    applied) at ``img_size`` (H, W): the deploy config's input size is replaced by it
    (onnxruntime) or must equal it (tensorrt, whose engine shapes are in the config)."""
    from mmdeploy.utils import load_config

    from mmeff.deploy.deployed import DeployedModel
    deploy_cfg = load_config(deploy_cfg or default_deploy_cfg(task, backend))[0]
    width_height = [img_size[1], img_size[0]]
    if backend == 'tensorrt' and list(deploy_cfg.onnx_config.input_shape) != width_height:
        raise ValueError(f'the TensorRT deploy config builds engines for {deploy_cfg.onnx_config.input_shape} '
                         f'(W, H) but --img-size is {width_height}: pass a matching --deploy-cfg')
    deploy_cfg.onnx_config.input_shape = width_height
    return DeployedModel(deploy_cfg, model_cfg, backend, work_dir, device=device)
