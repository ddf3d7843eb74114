"""Evaluate a checkpoint with an MMDetection or MMPretrain config (the scope comes from the config).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out results.pkl] [--show-dir DIR]
                                           [--cfg-options k=v ...] [--launcher none|pytorch|slurm|mpi]
"""
import argparse

from mmengine.config import Config
from mmengine.evaluator import DumpResults

import mmeff  # noqa: F401  (registers mmeff's modules)
from mmeff.engine.tools import add_common_args, build_runner, finish_distributed, load_config


def parse_args():
    parser = argparse.ArgumentParser(description='Test (and evaluate) a checkpoint')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out', help='dump the raw predictions to this pickle file')
    parser.add_argument('--show-dir', help='save images with drawn predictions to this directory (under work-dir)')
    add_common_args(parser)
    return parser.parse_args()


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
    cfg = load_config(args)
    cfg.load_from = args.checkpoint
    if args.show_dir:
        enable_visualization(cfg, args.show_dir)
    runner = build_runner(cfg)
    if args.out:
        runner.test_evaluator.metrics.append(DumpResults(out_file_path=args.out))
    runner.test()
    finish_distributed()


if __name__ == '__main__':
    main()
