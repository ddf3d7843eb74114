"""OpenVINO on the CPU: the ONNX export converted to an OpenVINO IR, run in FP32, BF16 or INT8.

Written on OpenVINO's current API (``openvino.convert_model``/``save_model``, ``Core.compile_model``)
rather than through mmdeploy 1.3.1's OpenVINO wrapper, which needs ``openvino-dev==2022.3``, the
removed ``IECore`` runtime and the removed Model Optimizer (``mo``). The deploy config's
``backend_config.precision`` chooses:

- ``fp32``: the IR with FP32 weights, compiled with ``INFERENCE_PRECISION_HINT=f32``;
- ``bf16``: the same IR compiled with ``INFERENCE_PRECISION_HINT=bf16`` (CPUs with AVX512-BF16 or AMX);
- ``int8``: the IR quantized by NNCF after calibration (:mod:`mmeff.deploy.quantize`); the layers it
  leaves unquantized run in f32.

The precision is saved in the IR (``rt_info``), so an IR written once loads later, in another
process, with the precision it was built for: ``OpenVINO('end2end.xml').run(inputs)``.
"""
import os.path as osp
from typing import Callable, Dict, Optional

import mmengine
import numpy as np

from mmeff.utils.precision import PrecisionUnsupported

from .base import Backend, import_runtime

PRECISIONS = ('fp32', 'bf16', 'int8')
# What the layers that are not quantized run in; int8 keeps them in f32: the ignored scope exists
# for accuracy, which bf16 would give away.
INFERENCE_PRECISION = dict(fp32='f32', bf16='bf16', int8='f32')
PRECISION_RT_INFO = ['mmeff', 'precision']  # where the IR keeps the precision it was built for
# OpenVINO FP32 vs PyTorch FP32, RT-DETR detections matched one to one (tests/test_deploy_openvino.py
# prints the differences with -s): ~10x the largest measured, the same bounds as ONNX Runtime's.
FP32_BOX_TOLERANCE_320 = 1.5e-3  # px at 320x320; box rounding scales with the input size
FP32_SCORE_TOLERANCE = 1e-5


def backend_precision(deploy_cfg: mmengine.Config) -> str:
    """``deploy_cfg.backend_config.precision`` ('fp32' when unset), checked against :data:`PRECISIONS`."""
    precision = deploy_cfg.backend_config.get('precision', 'fp32')
    if precision not in PRECISIONS:
        raise ValueError(f'backend_config.precision={precision!r}; the openvino backend runs {PRECISIONS}')
    return precision


def cpu_capabilities() -> tuple:
    """OpenVINO's CPU plugin ``OPTIMIZATION_CAPABILITIES`` (e.g. 'FP32', 'BF16', 'INT8')."""
    import openvino as ov
    return tuple(ov.Core().get_property('CPU', 'OPTIMIZATION_CAPABILITIES'))


def require_precision(precision: str) -> None:
    """Raise unless this machine runs ``precision`` in OpenVINO (see :meth:`OpenVINO.require`)."""
    if precision not in PRECISIONS:
        raise ValueError(f'precision={precision!r}; the openvino backend runs {PRECISIONS}')
    if precision == 'int8':
        import_runtime('nncf', 'NNCF is not installed (INT8 quantization): install the deploy extra '
                       '(pip install -e .[deploy] -c requirements/constraints.txt)')
    if precision == 'bf16' and 'BF16' not in cpu_capabilities():
        raise PrecisionUnsupported(f'OpenVINO has no bf16 kernels on this CPU (OPTIMIZATION_CAPABILITIES '
                                   f'{cpu_capabilities()}; needs AVX512-BF16 or AMX): use fp32 or int8')


class OpenVINO(Backend):
    """An OpenVINO IR (``.xml`` + ``.bin``) compiled for the CPU at the precision it was built for.

    Args:
        file: the IR's ``.xml`` from :meth:`build` (an ONNX file also loads, in FP32).
        device: 'cpu' only.
        num_threads (int, optional): ``INFERENCE_NUM_THREADS``; OpenVINO's default (every core) when None.
        precision (str, optional): overrides the precision saved in the IR (e.g. bf16 of an FP32 IR).
    """
    name = 'openvino'
    suffix = '.xml'

    @classmethod
    def require(cls, device: str = 'cpu', deploy_cfg: Optional[mmengine.Config] = None) -> None:
        """Raise ``RuntimeError`` without openvino (or nncf for int8), :class:`PrecisionUnsupported`
        for bf16 on a CPU OpenVINO has no bf16 kernels for (the precision of ``deploy_cfg``, fp32 without)."""
        import_runtime('openvino', 'OpenVINO is not installed: install the deploy extra (pip install -e .[deploy] '
                       '-c requirements/constraints.txt)')
        if device != 'cpu':
            raise ValueError(f'the openvino backend runs on the CPU here; got device {device}')
        require_precision(backend_precision(deploy_cfg) if deploy_cfg is not None else 'fp32')

    @classmethod
    def build(cls, onnx_file: str, deploy_cfg: mmengine.Config, out_file: str, device: str = 'cpu',
              model_cfg: Optional[mmengine.Config] = None) -> str:
        """``onnx_file`` converted to the IR ``out_file`` (.xml, weights in the .bin beside it), FP32
        weights; for int8 quantized with calibration images from ``model_cfg``'s test pipeline
        (:func:`mmeff.deploy.quantize.quantize_openvino`, options in ``backend_config.calibration``)."""
        cls.require(device, deploy_cfg)
        precision = backend_precision(deploy_cfg)
        if precision == 'int8' and model_cfg is None:
            raise ValueError('the int8 openvino build calibrates on images of the model config\'s test '
                             'pipeline: pass model_cfg (export_for / DeployedModel pass it)')
        import openvino as ov
        model = ov.convert_model(onnx_file)
        if precision == 'int8':
            from ..quantize import quantize_openvino
            model = quantize_openvino(model, deploy_cfg, model_cfg)
        model.set_rt_info(precision, PRECISION_RT_INFO)
        mmengine.mkdir_or_exist(osp.dirname(osp.abspath(out_file)))
        # save_model compresses the weights to fp16 by default: keep the FP32 weights of the export.
        ov.save_model(model, out_file, compress_to_fp16=False)
        return out_file

    def __init__(self, file: str, device: str = 'cpu', num_threads: Optional[int] = None,
                 precision: Optional[str] = None):
        super().__init__(file, device, num_threads)
        import openvino as ov
        core = ov.Core()
        model = core.read_model(file)
        if precision is None:
            has_precision = model.has_rt_info(PRECISION_RT_INFO)
            precision = model.get_rt_info(PRECISION_RT_INFO).astype(str) if has_precision else 'fp32'
        require_precision(precision)
        self.precision = precision
        config = {'INFERENCE_PRECISION_HINT': INFERENCE_PRECISION[precision], 'PERFORMANCE_HINT': 'LATENCY'}
        if num_threads is not None:
            config['INFERENCE_NUM_THREADS'] = num_threads
        self.compiled = core.compile_model(model, 'CPU', config)
        self.request = self.compiled.create_infer_request()
        self.output_names = [output.get_any_name() for output in self.compiled.outputs]
        batch = self.compiled.input(0).get_partial_shape()[0]
        self.batch_size: Optional[int] = batch.get_length() if batch.is_static else None  # None: any

    def bind(self, inputs: np.ndarray) -> Callable[[], object]:
        import openvino as ov
        inputs = np.ascontiguousarray(inputs, dtype=np.float32)
        # Shares the array's memory: nothing is copied at each call.
        self.request.set_input_tensor(ov.Tensor(inputs, shared_memory=True))
        # Keep the array alive as long as the request reads it.
        self._bound = inputs
        return self.request.infer

    def run(self, inputs: np.ndarray) -> Dict[str, np.ndarray]:
        """A static graph runs ``inputs`` in chunks of its batch size, concatenated along the batch axis."""
        inputs = np.asarray(inputs, dtype=np.float32)
        step = self.batch_size or len(inputs)
        outputs = []
        for start in range(0, len(inputs), step):
            self.bind(inputs[start:start + step])()
            outputs.append([self.request.get_output_tensor(i).data.copy() for i in range(len(self.output_names))])
        return {name: np.concatenate([out[i] for out in outputs]) for i, name in enumerate(self.output_names)}
