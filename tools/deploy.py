"""Export with mmdeploy and run / time the export (protocol and numbers: docs/deploy.md).

    python tools/deploy.py export DEPLOY_CFG MODEL_CFG OUT [--checkpoint CKPT] [--eval-idx I]
        [--calib-dataset CFG] [--calib-images N]      # OUT: .onnx (onnxruntime) or .xml (openvino)
    python tools/deploy.py compare DEPLOY_CFG MODEL_CFG [MODEL_CFG ...] [--work-dir DIR]
        [--warmup 3] [--repeats 10] [--threads N]     # the deploy config's backend vs PyTorch eager latency
    python tools/deploy.py tensorrt DEPLOY_CFG MODEL_CFG OUT.engine [--checkpoint CKPT]
        [--images A.npy ...]                          # GPU + TensorRT machines only

``--calib-dataset`` / ``--calib-images`` set the INT8 calibration of the openvino-int8 deploy configs
(``backend_config.calibration``: a config file whose test_dataloader.dataset is used, and the number of images).
"""
import argparse
import os.path as osp

import torch
from mmengine import Config

from mmeff.deploy import DeployedModel, build_deploy_model, export_for
from mmeff.deploy.backends import TensorRT

# Column labels of ``compare``.
SHORT_NAMES = dict(onnxruntime='ort', openvino='ov', tensorrt='trt')


def parse_args():
    parser = argparse.ArgumentParser(description='mmeff deployment (mmdeploy export; ONNX Runtime, OpenVINO, '
                                     'TensorRT)')
    sub = parser.add_subparsers(dest='command', required=True)
    for name in ('export', 'tensorrt'):
        p = sub.add_parser(name)
        p.add_argument('deploy_cfg')
        p.add_argument('model_cfg')
        p.add_argument('out', help='the backend\'s file to write: .onnx (onnxruntime), .xml (openvino), '
                       '.engine (tensorrt)')
        p.add_argument('--checkpoint')
        p.add_argument('--trust-checkpoint', action='store_true',
                       help='load a checkpoint that holds arbitrary pickled objects (only from a trusted source)')
        p.add_argument('--eval-idx', type=int, help='last RT-DETR decoder layer to run')
    sub.choices['tensorrt'].add_argument(
        '--images', nargs='*', help='pre-processed 1x3x640x640 float32 .npy inputs to average the '
        'latency over (the paper: COCO val2017); a random input when omitted')
    p = sub.add_parser('compare')
    p.add_argument('deploy_cfg')
    p.add_argument('model_cfgs', nargs='+')
    p.add_argument('--work-dir', default='work_dirs/deploy')
    p.add_argument('--eval-idx', type=int)
    p.add_argument('--warmup', type=int, default=3)
    p.add_argument('--repeats', type=int, default=10)
    p.add_argument('--threads', type=int)
    for name in ('export', 'compare'):
        sub.choices[name].add_argument('--calib-dataset', help='INT8: calibrate on the test_dataloader.dataset of '
                                       'this config (default: the model config\'s test dataset)')
        sub.choices[name].add_argument('--calib-images', type=int, help='INT8: number of calibration images')
    return parser.parse_args()


def load_deploy_cfg(args) -> Config:
    """The deploy config with the command line's calibration options."""
    deploy_cfg = Config.fromfile(args.deploy_cfg)
    calibration = {key: value for key, value in (('dataset', args.calib_dataset), ('num_images', args.calib_images))
                   if value is not None}
    if calibration:
        if deploy_cfg.backend_config.get('precision') != 'int8':
            raise SystemExit(f'--calib-dataset / --calib-images calibrate INT8 quantization; {args.deploy_cfg} is '
                             'not an int8 deploy config')
        deploy_cfg.backend_config.calibration.update(calibration)
    return deploy_cfg


def main():
    args = parse_args()
    if args.command == 'compare':
        if args.threads:
            torch.set_num_threads(args.threads)  # PyTorch's, and the backend's (DeployedModel passes it)
        deploy_cfg = load_deploy_cfg(args)
        backend = deploy_cfg.backend_config.type
        short = SHORT_NAMES.get(backend, backend)
        print(f'{"model":<24} {"input":<18} {"threads":>7} {"pytorch ms":>11} {short + " ms":>8} {short + "/pt":>7}')
        for model_cfg in args.model_cfgs:
            name = osp.splitext(osp.basename(model_cfg))[0]
            deployed = DeployedModel(deploy_cfg, model_cfg, backend, args.work_dir, name, eval_idx=args.eval_idx)
            r = deployed.latency(1, args.warmup, args.repeats)
            input_shape = (1, 3, *deployed.img_size)
            print(f'{name:<24} {"x".join(map(str, input_shape)):<18} {r["threads"]:>7} '
                  f'{1e3 * r["pytorch"]["median"]:>11.1f} {1e3 * r["median"]:>8.1f} {r["ratio"]:>7.2f}')
        return
    if args.command == 'export':
        deploy_cfg = load_deploy_cfg(args)
        backend = deploy_cfg.backend_config.type
        if backend == 'tensorrt':
            raise SystemExit('a tensorrt deploy config: use tools/deploy.py tensorrt (GPU machines)')
        model, deploy_cfg, model_cfg = build_deploy_model(deploy_cfg, args.model_cfg, args.checkpoint,
                                                          args.eval_idx, args.trust_checkpoint)
        print(export_for(backend, model, deploy_cfg, args.out, model_cfg=model_cfg))
        return
    import numpy as np
    TensorRT.require()  # before building anything, so a CPU machine fails fast with the reason
    model, deploy_cfg, _ = build_deploy_model(args.deploy_cfg, args.model_cfg, args.checkpoint,
                                              args.eval_idx, args.trust_checkpoint)
    export_for('tensorrt', model, deploy_cfg, args.out, device='cuda:0')
    width, height = deploy_cfg.onnx_config.input_shape
    images = ([np.load(path) for path in args.images] if args.images else
              [np.random.default_rng(0).random((1, 3, height, width), dtype=np.float32)])
    stats = TensorRT(args.out).latency(images, warmup=20, repeats=200)
    print(f'{args.out}: median {1e3 * stats["median"]:.2f} ms, mean {1e3 * stats["mean"]:.2f} ms '
          f'over {stats["num_images"]} input(s)')


if __name__ == '__main__':
    main()
