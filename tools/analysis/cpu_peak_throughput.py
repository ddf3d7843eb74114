"""The throughput this CPU reaches, at each precision the benchmark times, on the operations that dominate
the detectors: a large GEMM, and 3x3 convolutions shaped like RT-DETR's backbone and encoder layers at
640 px. It bounds what any graph optimization can gain: a model of F GFLOPs cannot run faster at a
precision than F / (peak GFLOP/s at that precision). Peak = the fastest of ``--repeats`` calls, the calls
of every runtime and precision on one operation interleaved (shared machines slow down and speed up by
tens of %).

    python tools/analysis/cpu_peak_throughput.py [--threads N] [--repeats 20] [--precisions fp32 bf16 int8]
                                                 [--out peak.json]

The runtimes of each precision, with the settings of the benchmark's paths of that precision:

- fp32: PyTorch eager, ONNX Runtime, OpenVINO (``INFERENCE_PRECISION_HINT`` f32);
- bf16: PyTorch under ``torch.autocast('cpu', torch.bfloat16)`` (:func:`mmeff.utils.precision.autocast`),
  and OpenVINO with ``INFERENCE_PRECISION_HINT`` bf16 on the same ONNX op;
- int8: OpenVINO running the op quantized by NNCF (``nncf.quantize`` calibrated on a few random inputs:
  int8 weights, 8-bit activations). OpenVINO after NNCF, not an ONNX Runtime QDQ model, because that is
  the INT8 path the benchmark times, so its fraction of this peak compares a runtime with itself.

A runtime that cannot run a precision here is skipped with the reason, never timed at another precision:
PyTorch bf16 without oneDNN bf16 kernels (AVX512-BF16 or AMX); OpenVINO without that capability, or whose
compiled convolution runs at another precision (OpenVINO falls back to f32 silently: the precision its
runtime model reports is checked); a runtime that is not installed.

Operations are counted as 2 per multiply-add; int8 counts its integer operations the same way, so its
GOP/s compare with the GFLOP/s of the other precisions.

JSON (``--out``):

- ``environment``: :func:`mmeff.utils.timing.environment` (CPU, threads, library versions);
- ``results``: one row per operation: ``operation``, ``gflop`` (per call), ``threads`` and
  ``<runtime>_gflop_s`` of each fp32 runtime (``pytorch``, ``onnxruntime``, ``openvino``);
- ``precisions``: ``{precision: {'<runtime>/<operation>': entry}}`` for each precision asked for; an entry
  has ``runtime``, ``operation``, ``gflop``, ``threads`` and either ``gflops`` (GFLOP/s of the fastest
  call) and ``seconds`` (that call's), or ``skipped`` (the reason). The benchmark's peak of a precision is
  its largest ``gflops`` (:func:`mmeff.benchmark.paths.peak_of`).
"""
import argparse
import json
import os.path as osp
import tempfile
from functools import partial
from typing import Callable, Dict

import numpy as np
import torch
import torch.nn.functional as F

from mmeff.deploy.backends import OpenVINO, create_session
from mmeff.deploy.backends.openvino import require_precision
from mmeff.utils.precision import PrecisionUnsupported, autocast
from mmeff.utils.timing import environment, time_interleaved

# (name, input N C H W, output channels, kernel): GEMM as a 1x1 conv over a 2048-channel map, and
# 3x3 convs of ResNet-18's stage 2 and of the encoder's fusion blocks at 640 px
SHAPES = (
    ('gemm 2048x2048x2048 (1x1 conv)', (1, 2048, 32, 64), 2048, 1),
    ('conv3x3 128->128 @ 80x80', (1, 128, 80, 80), 128, 3),
    ('conv3x3 256->256 @ 40x40', (1, 256, 40, 40), 256, 3),
)
RUNTIMES = dict(fp32=('pytorch', 'onnxruntime', 'openvino'), bf16=('pytorch', 'openvino'), int8=('openvino', ))
# the runtime precisions OpenVINO reports for a convolution that runs at each precision
OPENVINO_RUNS = dict(fp32=('f32', ), bf16=('bf16', ), int8=('u8', 'i8'))
CALIBRATION_SAMPLES = 3  # random inputs: a single op has no data distribution to learn


def onnx_conv(input_shape, out_channels, kernel, weight):
    """A one-node ONNX Conv model (padding 'same') as bytes."""
    from onnx import TensorProto, helper, numpy_helper
    pad = kernel // 2
    node = helper.make_node('Conv', ['x', 'w'], ['y'], kernel_shape=[kernel, kernel], pads=[pad] * 4)
    graph = helper.make_graph(
        [node], 'conv', [helper.make_tensor_value_info('x', TensorProto.FLOAT, list(input_shape))],
        [helper.make_tensor_value_info('y', TensorProto.FLOAT, None)], [numpy_helper.from_array(weight, 'w')])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid('', 16)]).SerializeToString()


def pytorch_call(precision: str, x: np.ndarray, w: np.ndarray, kernel: int) -> Callable[[], object]:
    """The convolution in PyTorch eager at ``precision`` (autocast; raises PrecisionUnsupported)."""
    context = autocast(precision)  # checks the precision now, not at the first timed call
    tx, tw = torch.from_numpy(x), torch.from_numpy(w)

    def call():
        with torch.no_grad(), context:
            return F.conv2d(tx, tw, padding=kernel // 2)

    return call


def quantized_ir(onnx_file: str, input_shape, out_file: str) -> str:
    """The op quantized by NNCF after calibration on random inputs, saved as an OpenVINO IR."""
    import nncf
    import openvino as ov
    rng = np.random.default_rng(1)
    samples = [rng.standard_normal(input_shape, dtype=np.float32) for _ in range(CALIBRATION_SAMPLES)]
    model = nncf.quantize(ov.convert_model(onnx_file), nncf.Dataset(samples), subset_size=len(samples))
    ov.save_model(model, out_file, compress_to_fp16=False)
    return out_file


def convolution_precision(compiled) -> str:
    """The precision an OpenVINO compiled model runs its convolution in (its runtime model's)."""
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if info['layerType'].astype(str) == 'Convolution':
            return info['runtimePrecision'].astype(str)
    raise RuntimeError('OpenVINO\'s compiled model has no convolution')


def openvino_call(precision: str, onnx_file: str, x: np.ndarray, threads: int) -> Callable[[], object]:
    """The op in OpenVINO at ``precision`` as the benchmark's openvino backend compiles it; raises
    PrecisionUnsupported when the CPU does not run its convolution at that precision."""
    require_precision(precision)
    if precision == 'int8':
        onnx_file = quantized_ir(onnx_file, x.shape, osp.join(osp.dirname(onnx_file), 'int8.xml'))
    backend = OpenVINO(onnx_file, num_threads=threads, precision=precision)
    ran = convolution_precision(backend.compiled)
    if ran not in OPENVINO_RUNS[precision]:
        raise PrecisionUnsupported(f'OpenVINO runs the {precision} convolution in {ran} on this CPU')
    infer = backend.bind(x)

    def call():
        return infer()

    call.backend = backend  # the request reads the backend's input array in place: keep both alive
    return call


def op_calls(precisions, input_shape, out_channels, kernel, threads, work_dir) -> Dict[str, object]:
    """Per ``'<precision>/<runtime>'``: the call that runs the op, or the reason it is skipped (a str)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(input_shape, dtype=np.float32)
    w = rng.standard_normal((out_channels, input_shape[1], kernel, kernel), dtype=np.float32) * 0.01
    onnx_bytes = onnx_conv(input_shape, out_channels, kernel, w)
    onnx_file = osp.join(work_dir, 'op.onnx')
    with open(onnx_file, 'wb') as f:
        f.write(onnx_bytes)
    calls = {}
    for precision in precisions:
        for runtime in RUNTIMES[precision]:
            try:
                if runtime == 'pytorch':
                    call = pytorch_call(precision, x, w, kernel)
                elif runtime == 'onnxruntime':
                    call = partial(create_session(onnx_bytes, threads).run, None, {'x': x})  # as the benchmark's
                else:
                    call = openvino_call(precision, onnx_file, x, threads)
            except RuntimeError as error:  # PrecisionUnsupported, or a runtime that is not installed
                call = str(error)
            calls[f'{precision}/{runtime}'] = call
    return calls


def main():
    parser = argparse.ArgumentParser(description='GFLOP/s of PyTorch, ONNX Runtime and OpenVINO on GEMM and 3x3 '
                                     'convs, per precision')
    parser.add_argument('--threads', type=int, help='threads of every runtime (default: torch\'s choice)')
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--repeats', type=int, default=20)
    parser.add_argument('--precisions', nargs='+', choices=tuple(RUNTIMES), default=list(RUNTIMES))
    parser.add_argument('--out', help='.json of the results')
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    paths = [f'{precision}/{runtime}' for precision in args.precisions for runtime in RUNTIMES[precision]]
    rows, precisions, reasons = [], {precision: {} for precision in args.precisions}, {}
    print(f"{'GFLOP/s':<32} {'GFLOP':>7} " + ' '.join(f'{path:>16}' for path in paths))
    for name, input_shape, out_channels, kernel in SHAPES:
        gflop = float(2 * np.prod(input_shape) * out_channels * kernel * kernel / 1e9)
        with tempfile.TemporaryDirectory() as work_dir:
            calls = op_calls(args.precisions, input_shape, out_channels, kernel, threads, work_dir)
            timings = time_interleaved({path: call for path, call in calls.items() if callable(call)},
                                       args.warmup, args.repeats)
        row = dict(operation=name, gflop=gflop, threads=threads)
        cells = []
        for path, call in calls.items():
            precision, runtime = path.split('/')
            entry = dict(runtime=runtime, operation=name, gflop=gflop, threads=threads)
            if path in timings:
                seconds = timings[path]['min']
                entry.update(gflops=gflop / seconds, seconds=seconds)
                if precision == 'fp32':
                    row[f'{runtime}_gflop_s'] = entry['gflops']
                cells.append(f"{entry['gflops']:>16.1f}")
            else:
                entry['skipped'] = reasons[path] = call
                cells.append(f"{'skipped':>16}")
            precisions[precision][f'{runtime}/{name}'] = entry
        rows.append(row)
        print(f'{name:<32} {gflop:>7.2f} ' + ' '.join(cells))
    for path, reason in reasons.items():
        print(f'{path} skipped: {reason}')
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(dict(environment=environment('cpu'), results=rows, precisions=precisions), f, indent=2)


if __name__ == '__main__':
    main()
