"""Efficiency benchmark of OpenMMLab configs (protocol: docs/benchmark.md).

    python tools/benchmark.py CONFIG [CONFIG ...]    # paths, globs ('configs/vit/*.py') or list files (.txt)
        [--metrics params flops latency throughput train memory] [--img-size 224 [W]]
        [--device cpu|cuda] [--threads N] [--backend pytorch|onnxruntime|tensorrt] [--deploy-cfg CFG]
        [--batch-sizes 1 8 32 64]
        [--train-batch-size 8] [--dataset-size 1281167] [--warmup 5] [--repeats 20]
        [--sweep model.test_cfg.eval_idx=0,1,2] [--cfg-options k=v ...]
        [--out results.json results.csv] [--accuracy acc.csv] [--plot-dir DIR]
        [--end2end] [--score-thrs 0.001 0.05] [--iou-thrs 0.5 0.7] [--num-images 50] [--keep-going]

Prints one row per config; a model (or one of its metrics) that fails is reported with its reason
and the others go on; the exit status is then 1, unless --keep-going.
"""
import argparse
import glob
import logging
import os.path as osp
import sys

import torch
from mmengine.config import DictAction
from mmengine.logging import MMLogger

from mmeff.benchmark import (
    METRICS,
    analyse,
    benchmark_config,
    check_backend,
    flat_row,
    format_table,
    load_accuracy,
    save_results,
)
from mmeff.benchmark.end2end import detection_end2end, format_end2end, plot_end2end
from mmeff.benchmark.sweep import expand_sweep


def parse_args():
    parser = argparse.ArgumentParser(description='Efficiency benchmark of OpenMMLab configs')
    parser.add_argument('configs', nargs='+', help='config files, globs, or .txt files listing configs')
    parser.add_argument('--metrics', nargs='+', choices=METRICS, default=list(METRICS))
    parser.add_argument('--img-size', type=int, nargs='+', default=[224], help='H [W] of the input')
    parser.add_argument('--device', default='cpu', help='cpu, cuda or cuda:N')
    parser.add_argument('--threads', type=int, help='CPU threads for torch (default: torch\'s choice)')
    parser.add_argument('--backend', choices=['pytorch', 'onnxruntime', 'tensorrt'], default='pytorch',
                        help='onnxruntime/tensorrt: the model exported by mmeff.deploy, timed beside PyTorch eager')
    parser.add_argument('--deploy-cfg', help='mmdeploy config of the onnxruntime/tensorrt export (default: the '
                        'task\'s config in configs/deploy/, input size set to --img-size)')
    parser.add_argument('--batch-sizes', type=int, nargs='+', default=[1, 8, 32, 64],
                        help='searched for the best throughput')
    parser.add_argument('--train-batch-size', type=int, default=8)
    parser.add_argument('--dataset-size', type=int, default=None,
                        help='images per epoch, for the extrapolated epoch time (ImageNet-1k: 1281167)')
    parser.add_argument('--warmup', type=int, default=5, help='untimed calls before each timing')
    parser.add_argument('--repeats', type=int, default=20, help='timed calls of each timing')
    parser.add_argument('--sweep', action='append', default=[],
                        help='KEY=V1,V2,...: one run per value of a config key (e.g. model.test_cfg.eval_idx=0,1,2)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config settings')
    parser.add_argument('--out', nargs='+', default=[], help='.json (full results) and/or .csv (one row each)')
    parser.add_argument('--accuracy', help='table of config,accuracy (CSV or JSON) for the Pareto fronts')
    parser.add_argument('--plot-dir', help='Pareto plots, pareto.csv and correlations.json go here (with '
                        '--end2end also NMS time vs. thresholds and latency vs. a swept setting)')
    parser.add_argument('--end2end', action='store_true',
                        help='detectors: model vs. post-processing (NMS / top-K) time over dataset images')
    parser.add_argument('--score-thrs', type=float, nargs='+', default=None, help='--end2end: NMS score thresholds')
    parser.add_argument('--iou-thrs', type=float, nargs='+', default=None, help='--end2end: NMS IoU thresholds')
    parser.add_argument('--num-images', type=int, default=20, help='--end2end: images of the test set')
    parser.add_argument('--checkpoint', help='--end2end: weights (random weights keep few boxes)')
    parser.add_argument('--trust-checkpoint', action='store_true',
                        help='load a --checkpoint that holds arbitrary pickled objects (only from a trusted source)')
    parser.add_argument('--keep-going', action='store_true',
                        help='exit 0 even when a model or metric failed (failures are still reported)')
    return parser.parse_args()


def expand_configs(patterns):
    """Paths, globs and list files (one config per line, # comments) -> config paths."""
    configs = []
    for pattern in patterns:
        if pattern.endswith('.txt'):
            with open(pattern) as f:
                configs += [line.strip() for line in f if line.strip() and not line.startswith('#')]
        elif glob.has_magic(pattern):
            configs += sorted(glob.glob(pattern, recursive=True))
        else:
            configs.append(pattern)
    if not configs:
        raise SystemExit(f'no config matches {patterns}')
    return configs


def main():
    args = parse_args()
    try:
        check_backend(args.backend)
    except RuntimeError as error:
        raise SystemExit(f'--backend {args.backend}: {error}')
    if args.threads:
        torch.set_num_threads(args.threads)
    logger = MMLogger.get_instance('mmeff_benchmark', log_level='INFO')
    for handler in logger.handlers:  # stdout is for the table
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(sys.stderr)
    runs = [(config, name, dict(args.cfg_options or {}, **options))
            for config in expand_configs(args.configs) for name, options in expand_sweep(config, args.sweep)]
    results = []
    for i, (config, name, options) in enumerate(runs, 1):
        logger.info(f'[{i}/{len(runs)}] {name}')
        result = benchmark_config(config, args.metrics, args.img_size, args.device, args.backend, args.batch_sizes,
                                  args.train_batch_size, args.dataset_size, args.warmup, args.repeats, options,
                                  args.deploy_cfg)
        result['name'] = name
        if args.end2end:
            result['end2end'] = detection_end2end(config, options, args.device, args.num_images, args.warmup,
                                                  args.score_thrs, args.iou_thrs, args.checkpoint,
                                                  args.trust_checkpoint)
        results.append(result)

    if args.accuracy:
        accuracy = load_accuracy(args.accuracy)
        for result in results:
            if osp.splitext(osp.basename(result['name']))[0] in accuracy:
                result['accuracy'] = accuracy[osp.splitext(osp.basename(result['name']))[0]]
    print(format_table(results))
    if args.end2end:
        print(format_end2end(results))
    for path in args.out:
        save_results(results, path)
    if args.plot_dir:
        rows = [flat_row(result) for result in results]
        analysis = analyse(rows, args.plot_dir)
        if args.end2end:
            plot_end2end(results, args.plot_dir)
        if not analysis['pareto']:
            logger.warning('no accuracy given (--accuracy): correlations only, no Pareto fronts')
        logger.info(f'plots and tables in {args.plot_dir}')
    failed = {result['name']: result['errors'] for result in results if result['errors']}
    if failed:
        for name, errors in failed.items():
            logger.error(f'{name} failed: ' + '; '.join(f'{metric}: {reason}' for metric, reason in errors.items()))
        if not args.keep_going:
            raise SystemExit(f'{len(failed)} of {len(results)} benchmark runs failed (above); --keep-going to exit 0')


if __name__ == '__main__':
    main()
