"""Evaluate a checkpoint with an MMDetection or MMPretrain config (the scope comes from the config):
the PyTorch model, at a precision, or the model deployed on a backend (the accuracy gate: what a
backend and a precision cost in COCO mAP / top-1, measured by the config's own evaluator).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out results.pkl] [--show-dir DIR]
                                           [--cfg-options k=v ...] [--launcher none|pytorch|slurm|mpi]
                                           [--precision fp32|bf16|fp16]
    python tools/test.py CONFIG CHECKPOINT --backend onnxruntime|openvino|tensorrt
                                           --deploy-cfg configs/deploy/DEPLOY.py [--deploy-file end2end.onnx|.xml]
                                           [--deploy-cfg-options k=v ...] [--device cpu]

``--precision``: PyTorch under autocast (bf16 on CPUs with AVX512-BF16 / AMX, bf16 or fp16 on CUDA;
refused with the reason elsewhere). ``--backend``: the deploy config's export of CHECKPOINT, made into
WORK_DIR/deploy/ unless ``--deploy-file`` gives one, at the deploy config's precision; a static graph
needs the test pipeline to produce its input size (``--deploy-cfg-options
"onnx_config.input_shape=[256, 256]"`` exports at another one).
"""
import argparse

from mmengine.config import Config, DictAction
from mmengine.device import get_device
from mmengine.evaluator import DumpResults

import mmeff  # noqa: F401  (registers mmeff's modules)
from mmeff.engine import test_at_precision
from mmeff.engine.tools import add_common_args, build_runner, finish_distributed, load_config
from mmeff.utils.precision import PRECISIONS, check_precision


def parse_args():
    parser = argparse.ArgumentParser(description='Test (and evaluate) a checkpoint')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out', help='dump the raw predictions to this pickle file')
    parser.add_argument('--show-dir', help='save images with drawn predictions to this directory (under work-dir)')
    parser.add_argument('--precision', choices=PRECISIONS, default='fp32',
                        help='run the PyTorch model under autocast at this precision')
    parser.add_argument('--backend', choices=('onnxruntime', 'openvino', 'tensorrt'),
                        help='evaluate the model deployed on this backend (needs --deploy-cfg)')
    parser.add_argument('--deploy-cfg', help='the mmdeploy deploy config of the backend (configs/deploy/)')
    parser.add_argument('--deploy-file', help='an export made with --deploy-cfg, reused (exported when omitted)')
    parser.add_argument('--deploy-cfg-options', nargs='+', action=DictAction,
                        help='override settings of the deploy config, e.g. "onnx_config.input_shape=[256, 256]"')
    parser.add_argument('--device', default='cpu', help='where the backend runs (tensorrt: cuda:0)')
    add_common_args(parser)
    args = parser.parse_args()
    if args.backend is None and (args.deploy_cfg or args.deploy_file or args.deploy_cfg_options):
        parser.error('--deploy-cfg, --deploy-file and --deploy-cfg-options go with --backend')
    if args.backend is not None:
        if args.deploy_cfg is None:
            parser.error(f'--backend {args.backend} needs --deploy-cfg (configs/deploy/)')
        if args.precision != 'fp32':
            parser.error('--precision is the PyTorch model\'s; a backend runs at its deploy config\'s precision '
                         '(e.g. configs/deploy/*openvino-bf16*)')
        if args.launcher != 'none':
            parser.error('a deployed model is evaluated in one process: --launcher none')
    return args


def enable_visualization(cfg: Config, show_dir: str) -> None:
    """Turn on the scope's visualization hook (mmdet: ``draw``, mmpretrain: ``enable``)."""
    hook = cfg.default_hooks.get('visualization')
    if hook is None:
        raise RuntimeError('--show-dir needs a `visualization` hook in `default_hooks` of the config.')
    if 'Det' in hook['type']:
        hook.update(draw=True, test_out_dir=show_dir)
    else:
        hook.update(enable=True, out_dir=show_dir)


def main():
    args = parse_args()
    if args.out and not args.out.endswith(('.pkl', '.pickle')):
        raise ValueError(f'--out must be a .pkl or .pickle file, got {args.out!r}')
    check_precision(args.precision, get_device())  # refused before anything is built
    cfg = load_config(args)
    if args.backend is not None:
        from mmeff.deploy.evaluate import deployed_test_config  # the deploy extra
        deploy_cfg = Config.fromfile(args.deploy_cfg)
        if args.deploy_cfg_options:
            deploy_cfg.merge_from_dict(args.deploy_cfg_options)
        cfg = deployed_test_config(cfg, args.backend, deploy_cfg, args.deploy_file, args.checkpoint, args.device,
                                   args.trust_checkpoint)
    else:
        cfg.load_from = args.checkpoint
        if args.precision != 'fp32':
            test_at_precision(cfg, args.precision)
    if args.show_dir:
        enable_visualization(cfg, args.show_dir)
    runner = build_runner(cfg)
    if args.out:
        runner.test_evaluator.metrics.append(DumpResults(out_file_path=args.out))
    runner.test()
    finish_distributed()


if __name__ == '__main__':
    main()
