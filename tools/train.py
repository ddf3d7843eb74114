"""Train a model from an MMDetection or MMPretrain config (the scope comes from the config).

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp] [--auto-scale-lr]
                                 [--cfg-options k=v ...] [--launcher none|pytorch|slurm|mpi]
"""
import argparse

from mmengine.device import get_device

import mmeff  # noqa: F401  (registers mmeff's modules)
from mmeff.engine.amp import AMP_WRAPPERS, amp_optim_wrapper
from mmeff.engine.tools import add_common_args, build_runner, finish_distributed, load_config


def parse_args():
    parser = argparse.ArgumentParser(description='Train a detector or classifier')
    parser.add_argument('config', help='train config file path')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from the given checkpoint, or without a value from the latest one in the work dir')
    parser.add_argument('--amp', action='store_true',
                        help='automatic mixed precision training: fp16 with loss scaling on a GPU, bf16 on a CPU '
                             'with AVX512-BF16 or AMX (refused on other CPUs)')
    parser.add_argument(
        '--auto-scale-lr', action='store_true',
        help='scale the learning rate by the ratio of the actual batch size to `auto_scale_lr.base_batch_size`')
    add_common_args(parser)
    return parser.parse_args()


def main():
    args = parse_args()
    cfg = load_config(args)
    if args.amp:  # before anything is built: a CPU without bf16 is refused here
        if cfg.optim_wrapper.get('type', 'OptimWrapper') in AMP_WRAPPERS:
            print('AMP is already enabled in the config.')
        else:
            cfg.optim_wrapper = amp_optim_wrapper(cfg.optim_wrapper, get_device())
    if args.auto_scale_lr:
        if 'base_batch_size' not in (cfg.get('auto_scale_lr') or {}):
            raise RuntimeError('--auto-scale-lr needs `auto_scale_lr = dict(base_batch_size=...)` in the config: '
                               'the total batch size that its learning rate was tuned for.')
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, args.resume
    build_runner(cfg).train()
    finish_distributed()


if __name__ == '__main__':
    main()
