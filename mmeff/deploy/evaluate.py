"""The accuracy gate: a deployed model (ONNX Runtime, OpenVINO, TensorRT) or the PyTorch model at a
reduced precision, evaluated by mmdet's / mmpretrain's own test loop and evaluator (COCO mAP, top-1),
so that what a backend and a precision cost is measured on a dataset rather than inferred from output
differences::

    evaluate(model_cfg, checkpoint=None, backend='pytorch', precision='fp32', deploy_cfg=None,
             deploy_file=None, work_dir=None, cfg_options=None, device='cpu',
             trust_checkpoint=False) -> Dict[str, float]

returns the evaluator's metrics (``coco/bbox_mAP``, ``accuracy/top1``, ...). ``tools/test.py``
(``--precision``, ``--backend``) and ``tools/benchmark.py`` evaluate through it.

The deployed model is mmdeploy's own ``End2EndModel`` of mmdet or mmpretrain (the conversion of
``dets`` / ``labels`` or class scores into data samples, with the boxes rescaled to the original image
as mmdet's ``predict`` does), with mmeff's :class:`~mmeff.deploy.backends.Backend` in place of the
backend wrapper: mmdeploy builds its wrappers through its backend managers, whose OpenVINO one needs
the removed ``IECore`` API of openvino-dev 2022.3.
"""
import copy
import os.path as osp
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
from mmdeploy.codebase.mmdet.deploy.object_detection_model import End2EndModel as DetEnd2EndModel
from mmdeploy.codebase.mmpretrain.deploy.classification_model import End2EndModel as ClsEnd2EndModel
from mmengine.config import Config, ConfigDict
from mmengine.registry import DefaultScope

from mmeff.engine import test_at_precision
from mmeff.engine.tools import build_runner
from mmeff.registry import CLS_MODELS, DET_MODELS

from .backends import backend_class
from .deployed import export_for
from .export import ConfigLike, build_deploy_model, load_configs, model_data_preprocessor

# The model wrapper (this module) of each codebase.
DEPLOYED_MODELS = dict(mmdet='DeployedDetector', mmpretrain='DeployedClassifier')


def graph_input_shape(deploy_cfg: Config) -> Tuple[Optional[int], int, int]:
    """(batch, height, width) of the exported graph's input; batch None when its axis is dynamic
    (``onnx_config.dynamic_axes``), otherwise 1 (mmeff exports static graphs at batch 1)."""
    onnx_cfg = deploy_cfg.onnx_config
    width, height = onnx_cfg.input_shape
    input_axes = (onnx_cfg.get('dynamic_axes') or {}).get(onnx_cfg.input_names[0], ())
    return (None if 0 in input_axes else 1), height, width


def check_input_fits(shape: Sequence[int], graph_shape: Tuple[Optional[int], int, int]) -> None:
    """Raise ``ValueError`` saying what to change when preprocessed inputs of ``shape`` (N, 3, H, W)
    do not fit a graph of :func:`graph_input_shape` ``graph_shape``."""
    batch, height, width = graph_shape
    if tuple(shape[2:]) != (height, width):
        raise ValueError(
            f'the test pipeline and the data preprocessor give {shape[2]}x{shape[3]} (HxW) inputs; the graph takes '
            f'{height}x{width} (deploy config onnx_config.input_shape=[{width}, {height}], [W, H]): export at the '
            f'pipeline\'s size (e.g. tools/test.py --deploy-cfg-options "onnx_config.input_shape=[{shape[3]}, '
            f'{shape[2]}]") or resize every image to the graph\'s (Resize with keep_ratio=False, as RT-DETR does)')
    if batch is not None and shape[0] != batch:
        raise ValueError(f'a batch of {shape[0]} images for a static graph of batch {batch}: set '
                         f'test_dataloader.batch_size={batch} or export with a dynamic batch axis')


class BackendWrapper:
    """An mmeff backend behind the call mmdeploy's ``End2EndModel`` makes of its backend wrapper:
    ``{input name: (N, 3, H, W) tensor}`` -> ``{output name: tensor}`` (+ ``output_to_list``), the
    inputs checked against the graph's static shape first (:func:`check_input_fits`).

    Args:
        backend: a name of :data:`~mmeff.deploy.backends.BACKENDS`.
        file: the backend's file, exported with ``deploy_cfg``.
        deploy_cfg: its input shape and output names.
        device: where the backend runs; it gets as many threads as torch has.
    """

    def __init__(self, backend: str, file: str, deploy_cfg: Config, device: str = 'cpu'):
        self.backend = backend_class(backend)(file, device, torch.get_num_threads())
        self.output_names = list(deploy_cfg.onnx_config.output_names)
        self.graph_shape = graph_input_shape(deploy_cfg)

    def __call__(self, inputs: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        (images, ) = inputs.values()
        check_input_fits(images.shape, self.graph_shape)
        outputs = self.backend.run(images.detach().float().cpu().numpy())
        return {name: torch.from_numpy(outputs[name]).to(images.device) for name in self.output_names}

    def output_to_list(self, outputs: Dict[str, torch.Tensor]):
        return [outputs[name] for name in self.output_names]


def _config(cfg: Union[dict, Config, None]) -> Optional[Config]:
    return cfg if cfg is None or isinstance(cfg, Config) else Config(copy.deepcopy(dict(cfg)))


@DET_MODELS.register_module()
class DeployedDetector(DetEnd2EndModel):
    """An exported detector in mmdet's test loop: the config's data preprocessor, the graph on an mmeff
    backend (:class:`BackendWrapper`), then mmdeploy's conversion of ``dets`` (N, K, 5: x1, y1, x2, y2
    in the input's pixels, score) and ``labels`` (N, K) into ``pred_instances``: rows of score <= 0
    dropped, boxes divided by the sample's ``scale_factor`` (i.e. in the original image's pixels).

    Args:
        backend: a name of :data:`~mmeff.deploy.backends.BACKENDS`.
        backend_file: the backend's file, exported with ``deploy_cfg``.
        deploy_cfg: the deploy config of the export (input shape, input and output names).
        model_cfg: ``dict(model=...)``, the model's config (mmdeploy reads the model type).
        data_preprocessor: the model config's, so that the graph sees what the PyTorch model sees.
        device: where the backend runs.
    """

    def __init__(self, backend: str, backend_file: str, deploy_cfg: Union[dict, Config],
                 model_cfg: Optional[dict] = None, data_preprocessor: Optional[dict] = None, device: str = 'cpu'):
        super().__init__(backend, [backend_file], device, _config(deploy_cfg), _config(model_cfg), data_preprocessor)

    def _init_wrapper(self, backend: str, backend_files: Sequence[str], device: str) -> None:
        self.wrapper = BackendWrapper(backend, backend_files[0], self.deploy_cfg, device)


@CLS_MODELS.register_module()
class DeployedClassifier(ClsEnd2EndModel):
    """An exported classifier in mmpretrain's test loop: the config's data preprocessor, the graph on
    an mmeff backend (:class:`BackendWrapper`), its ``output`` (N, num_classes) class probabilities
    set as each sample's ``pred_score`` (and the arg-max as ``pred_label``) by mmdeploy's conversion.

    Args: as :class:`DeployedDetector`; mmdeploy builds ``model_cfg``'s head to tell multi-label
    heads apart.
    """

    def __init__(self, backend: str, backend_file: str, deploy_cfg: Union[dict, Config],
                 model_cfg: Optional[dict] = None, data_preprocessor: Optional[dict] = None, device: str = 'cpu'):
        super().__init__(backend, [backend_file], device, _config(model_cfg), _config(deploy_cfg), data_preprocessor)

    def _init_wrapper(self, backend: str, backend_files: Sequence[str], device: str, **kwargs) -> None:
        self.wrapper = BackendWrapper(backend, backend_files[0], self.deploy_cfg, device)


def deployed_model_cfg(model_cfg: Config, backend: str, deploy_cfg: Config, backend_file: str,
                       device: str = 'cpu') -> dict:
    """The config of the :class:`DeployedDetector` / :class:`DeployedClassifier` that runs
    ``backend_file`` in place of ``model_cfg.model``. Its data preprocessor is the one the runner
    gives the PyTorch model: ``model.data_preprocessor``, else the config's top-level one."""
    task = deploy_cfg.codebase_config.type
    if task not in DEPLOYED_MODELS:
        raise ValueError(f'codebase_config.type={task!r}: mmeff evaluates mmdet and mmpretrain deployments only')
    return dict(type=DEPLOYED_MODELS[task], backend=backend, backend_file=osp.abspath(backend_file),
                deploy_cfg=deploy_cfg.to_dict(), model_cfg=dict(model=ConfigDict(model_cfg.model).to_dict()),
                data_preprocessor=model_data_preprocessor(model_cfg, task), device=device)


def build_deployed_model(model_cfg: ConfigLike, backend: str, deploy_cfg: ConfigLike, backend_file: str,
                         device: str = 'cpu') -> Union[DeployedDetector, DeployedClassifier]:
    """:func:`deployed_model_cfg` built, in the scope of ``model_cfg``."""
    deploy_cfg, model_cfg = load_configs(deploy_cfg, model_cfg)
    with DefaultScope.overwrite_default_scope(model_cfg.get('default_scope', deploy_cfg.codebase_config.type)):
        registry = DET_MODELS if deploy_cfg.codebase_config.type == 'mmdet' else CLS_MODELS
        return registry.build(deployed_model_cfg(model_cfg, backend, deploy_cfg, backend_file, device))


def deployed_test_config(cfg: Config, backend: str, deploy_cfg: ConfigLike, deploy_file: Optional[str] = None,
                         checkpoint: Optional[str] = None, device: str = 'cpu',
                         trust_checkpoint: bool = False) -> Config:
    """``cfg`` (a model config, command-line options applied) rewritten so that its runner tests the
    model deployed with ``deploy_cfg`` on ``backend``: the model is the deployed one
    (:func:`deployed_model_cfg`), nothing is loaded into it, no custom hooks, and a static graph gets
    batches of 1.

    ``deploy_file`` is reused when given; otherwise ``cfg`` with ``checkpoint`` is exported
    (:func:`~mmeff.deploy.export_for`) into ``<cfg.work_dir>/deploy/``. The backend is checked first
    (:meth:`~mmeff.deploy.backends.Backend.require`), so a machine without it fails before the export.
    """
    if isinstance(deploy_cfg, str):
        deploy_cfg = Config.fromfile(deploy_cfg)
    backend_cls = backend_class(backend)
    backend_cls.require(device, deploy_cfg)
    if deploy_file is None:
        model, deploy_cfg, cfg = build_deploy_model(deploy_cfg, cfg, checkpoint, trust_checkpoint=trust_checkpoint)
        out_file = osp.join(cfg.work_dir, 'deploy', 'end2end' + backend_cls.suffix)
        deploy_file = export_for(backend, model, deploy_cfg, out_file, device=device, model_cfg=cfg)
    elif osp.isfile(deploy_file):
        deploy_cfg, cfg = load_configs(deploy_cfg, cfg)
    else:
        raise FileNotFoundError(f'the deploy file {deploy_file} does not exist')
    cfg.model = deployed_model_cfg(cfg, backend, deploy_cfg, deploy_file, device)
    cfg.load_from = None
    # The config's custom hooks act on the PyTorch model (EMAHook copies and swaps its weights; the
    # checkpoint's state_dict, which was exported, already holds the EMA weights).
    cfg.custom_hooks = []
    batch = graph_input_shape(deploy_cfg)[0]
    if batch is not None:
        cfg.test_dataloader.batch_size = batch
    # The config the runner saves in its work dir then builds the deployed model again.
    imports = list(cfg.get('custom_imports', {}).get('imports', []))
    cfg.custom_imports = dict(imports=imports + ['mmeff.deploy.evaluate'], allow_failed_imports=False)
    return cfg


def evaluate(model_cfg: ConfigLike, checkpoint: Optional[str] = None, backend: str = 'pytorch',
             precision: str = 'fp32', deploy_cfg: Optional[ConfigLike] = None, deploy_file: Optional[str] = None,
             work_dir: Optional[str] = None, cfg_options: Optional[dict] = None, device: str = 'cpu',
             trust_checkpoint: bool = False) -> Dict[str, float]:
    """The metrics of ``model_cfg``'s test evaluator on its test dataloader, for the model with
    ``checkpoint`` run by ``backend``.

    Args:
        model_cfg: an mmdet or mmpretrain config (path or loaded).
        checkpoint: the weights; for a backend, those exported when no ``deploy_file`` is given.
        backend: 'pytorch' or a name of :data:`~mmeff.deploy.backends.BACKENDS`.
        precision: PyTorch's (:class:`~mmeff.engine.PrecisionTestLoop`); a backend runs at its deploy
            config's precision, so it must be 'fp32' with one.
        deploy_cfg, deploy_file: the deploy config and an export made with it
            (:func:`deployed_test_config`); a backend needs ``deploy_cfg``.
        work_dir: the runner's (logs, the export); ``./work_dirs/<config name>/evaluate`` by default.
        cfg_options: overrides of ``model_cfg`` (``--cfg-options``), applied before the export.
        device: where a backend runs (the PyTorch model runs where mmengine's runner puts it).
        trust_checkpoint: load a checkpoint that holds pickled code (only from a trusted source).
    """
    cfg = Config.fromfile(model_cfg) if isinstance(model_cfg, str) else copy.deepcopy(model_cfg)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    name = osp.splitext(osp.basename(cfg.filename or 'model'))[0]
    cfg.work_dir = work_dir or osp.join('work_dirs', name, 'evaluate')
    cfg.trust_checkpoint = trust_checkpoint
    if backend == 'pytorch':
        cfg.load_from = checkpoint
        if precision != 'fp32':
            test_at_precision(cfg, precision)
    else:
        if precision != 'fp32':
            raise ValueError(f'precision={precision!r} with backend={backend!r}: a backend runs at the precision of '
                             'its deploy config (e.g. configs/deploy/*openvino-bf16*); precision is PyTorch\'s')
        if deploy_cfg is None:
            raise ValueError(f'backend={backend!r} needs a deploy config (configs/deploy/)')
        cfg = deployed_test_config(cfg, backend, deploy_cfg, deploy_file, checkpoint, device, trust_checkpoint)
    return build_runner(cfg).test()
