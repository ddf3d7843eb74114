"""The FP32 throughput this CPU reaches on the operations that dominate the detectors, in PyTorch
eager and in ONNX Runtime (same threads): a large GEMM, and 3x3 convolutions shaped like RT-DETR's
backbone and encoder layers at 640 px. It bounds what any graph optimization can gain: a model of F
GFLOPs cannot run faster than F / (peak GFLOP/s). Peak = the fastest of ``--repeats`` calls, each
runtime's calls interleaved with the other's (shared machines slow down and speed up by tens of %).

    python tools/analysis/cpu_peak_throughput.py [--threads N] [--repeats 20] [--out peak.json]
"""
import argparse
import json

import numpy as np
import torch
import torch.nn.functional as F

from mmeff.deploy.backends import create_session
from mmeff.utils.timing import environment, time_interleaved

# (name, input N C H W, output channels, kernel): GEMM as a 1x1 conv over a 2048-channel map, and
# 3x3 convs of ResNet-18's stage 2 and of the encoder's fusion blocks at 640 px
SHAPES = (
    ('gemm 2048x2048x2048 (1x1 conv)', (1, 2048, 32, 64), 2048, 1),
    ('conv3x3 128->128 @ 80x80', (1, 128, 80, 80), 128, 3),
    ('conv3x3 256->256 @ 40x40', (1, 256, 40, 40), 256, 3),
)


def onnx_conv(input_shape, out_channels, kernel, weight):
    """A one-node ONNX Conv model (padding 'same') as bytes."""
    from onnx import TensorProto, helper, numpy_helper
    pad = kernel // 2
    node = helper.make_node('Conv', ['x', 'w'], ['y'], kernel_shape=[kernel, kernel], pads=[pad] * 4)
    graph = helper.make_graph(
        [node], 'conv', [helper.make_tensor_value_info('x', TensorProto.FLOAT, list(input_shape))],
        [helper.make_tensor_value_info('y', TensorProto.FLOAT, None)], [numpy_helper.from_array(weight, 'w')])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid('', 16)]).SerializeToString()


def main():
    parser = argparse.ArgumentParser(description='FP32 GFLOP/s of PyTorch and ONNX Runtime on GEMM and 3x3 convs')
    parser.add_argument('--threads', type=int, help='threads of both (default: torch\'s choice)')
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--repeats', type=int, default=20)
    parser.add_argument('--out', help='.json of the results')
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    rows = []
    print(f"{'operation':<32} {'GFLOP':>7} {'PyTorch GFLOP/s':>16} {'ONNX Runtime GFLOP/s':>21}")
    for name, input_shape, out_channels, kernel in SHAPES:
        rng = np.random.default_rng(0)
        x = rng.standard_normal(input_shape, dtype=np.float32)
        w = rng.standard_normal((out_channels, input_shape[1], kernel, kernel), dtype=np.float32) * 0.01
        session = create_session(onnx_conv(input_shape, out_channels, kernel, w), threads)  # as the benchmark's
        tx, tw = torch.from_numpy(x), torch.from_numpy(w)
        with torch.no_grad():
            timings = time_interleaved(dict(pytorch=lambda: F.conv2d(tx, tw, padding=kernel // 2),
                                            onnxruntime=lambda: session.run(None, {'x': x})),
                                       args.warmup, args.repeats)
        gflop = 2 * np.prod(input_shape) * out_channels * kernel * kernel / 1e9
        row = dict(operation=name, gflop=float(gflop), threads=threads,
                   **{f'{impl}_gflop_s': float(gflop / timings[impl]['min']) for impl in timings})
        rows.append(row)
        print(f"{name:<32} {gflop:>7.2f} {row['pytorch_gflop_s']:>16.1f} {row['onnxruntime_gflop_s']:>21.1f}")
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(dict(environment=environment('cpu'), results=rows), f, indent=2)


if __name__ == '__main__':
    main()
