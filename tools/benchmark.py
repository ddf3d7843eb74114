"""Efficiency benchmark of OpenMMLab configs (protocol: docs/benchmark.md).

    python tools/benchmark.py CONFIG [CONFIG ...]    # paths, globs ('configs/vit/*.py') or list files (.txt)
        [--metrics params flops latency throughput train memory] [--img-size 224 [W]]
        [--device cpu|cuda] [--threads N] [--backend pytorch|onnxruntime|openvino|tensorrt] [--deploy-cfg CFG]
        [--batch-sizes 1 8 32 64 | auto] [--flops-convention mmeff|wttf] [--eval-amp]
        [--train-batch-size 8] [--dataset-size 1281167] [--warmup 5] [--repeats 20]
        [--sweep model.test_cfg.eval_idx=0,1,2] [--cfg-options k=v ...]
        [--out results.json results.csv] [--accuracy acc.csv] [--plot-dir DIR]
        [--end2end] [--score-thrs 0.001 0.05] [--iou-thrs 0.5 0.7] [--num-images 50] [--keep-going]

Figure 1 of the efficient-ViT paper on this machine (the paper's top-1, this machine's efficiency):

    python tools/benchmark.py $(cut -d, -f4 mmeff/benchmark/wttf_paper.csv | tail -n +2 | sort -u) \
        --accuracy paper --metrics params flops throughput memory --flops-convention wttf \
        --batch-sizes auto --plot-dir work_dirs/figure1 --out work_dirs/figure1/results.csv

Inference paths side by side (several backends and/or a precision other than fp32):

    python tools/benchmark.py CONFIG --backend pytorch onnxruntime openvino --precision fp32 bf16 int8
        [--img-size 640] [--threads 2] [--peaks peak.json] [--checkpoint W.pth --evaluate]
        [--calib-dataset CFG] [--calib-images N]

times every (backend, precision) that exists, interleaved on the same input (mmeff.benchmark.paths),
with the ratio to PyTorch fp32, GFLOP/s, the fraction of this machine's peak and, with --evaluate, the
COCO mAP / top-1 each path reaches on the config's test set.

Prints one row per config; a model (or one of its metrics) that fails is reported with its reason
and the others go on; the exit status is then 1, unless --keep-going.
"""
import argparse
import glob
import json
import logging
import os
import os.path as osp
import sys
import tempfile

import torch
from mmengine.config import DictAction
from mmengine.logging import MMLogger

from mmeff.benchmark import (
    METRICS,
    analyse,
    benchmark_config,
    check_backend,
    flat_row,
    format_analysis,
    format_table,
    load_accuracy,
    save_results,
)
from mmeff.benchmark.end2end import detection_end2end, format_end2end, plot_end2end
from mmeff.benchmark.paths import compare_paths, evaluate_path, expand_paths, format_paths, path_rows, plot_paths
from mmeff.benchmark.report import PROTOCOL_COLUMNS, write_csv
from mmeff.benchmark.runner import BACKENDS, FLOP_CONVENTIONS
from mmeff.benchmark.subject import load_config
from mmeff.benchmark.sweep import expand_sweep
from mmeff.benchmark.wttf import paper_accuracy, paper_row
from mmeff.utils.precision import PRECISIONS
from mmeff.utils.timing import describe_error, environment

DEFAULT_BATCH_SIZES = [1, 8, 32, 64]


def batch_size_arg(value: str):
    if value == 'auto':
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f'a batch size is an integer or "auto", got {value!r}')


def parse_args():
    parser = argparse.ArgumentParser(description='Efficiency benchmark of OpenMMLab configs')
    parser.add_argument('configs', nargs='+', help='config files, globs, or .txt files listing configs')
    parser.add_argument('--metrics', nargs='+', choices=METRICS, default=list(METRICS))
    parser.add_argument('--img-size', type=int, nargs='+', default=[224], help='H [W] of the input')
    parser.add_argument('--device', default='cpu', help='cpu, cuda or cuda:N')
    parser.add_argument('--threads', type=int, help='CPU threads for torch (default: torch\'s choice)')
    parser.add_argument('--backend', nargs='+', choices=BACKENDS, default=['pytorch'],
                        help='one: the model exported by mmeff.deploy, timed beside PyTorch eager; several (or with '
                        '--precision): every inference path side by side')
    parser.add_argument('--precision', nargs='+', choices=PRECISIONS + ('int8', ), default=['fp32'],
                        help='with --backend: the precisions of the side-by-side paths (a path that does not exist '
                        'or that this machine cannot run is reported as skipped, with the reason)')
    parser.add_argument('--peaks', help='JSON of tools/analysis/cpu_peak_throughput.py: report each path\'s '
                        'fraction of this machine\'s peak GFLOP/s at its precision')
    parser.add_argument('--evaluate', action='store_true',
                        help='side-by-side paths: COCO mAP / top-1 of each on the config\'s test set '
                        '(with --checkpoint)')
    parser.add_argument('--calib-dataset', help='INT8 paths: calibrate on the test_dataloader.dataset of this config '
                        '(default: the model config\'s test set; e.g. configs/_base_/datasets/demo_coco.py)')
    parser.add_argument('--calib-images', type=int, help='INT8 paths: number of calibration images')
    parser.add_argument('--deploy-cfg', help='mmdeploy config of a single exported backend (default: the task\'s '
                        'config in configs/deploy/, input size set to --img-size)')
    parser.add_argument('--batch-sizes', type=batch_size_arg, nargs='+', default=DEFAULT_BATCH_SIZES,
                        help='searched for the best throughput ("auto": doubling from 1 while it rises, as the '
                        'efficient-ViT paper searches); side-by-side paths: the one batch size (default 1)')
    parser.add_argument('--flops-convention', choices=FLOP_CONVENTIONS, default='mmeff',
                        help='mmeff: MACs (1 per multiply-add) and FLOPs = 2 x MACs; wttf: also GFLOPs_wttf, counted '
                        'as the efficient-ViT paper (fvcore + the authors\' per-op weights; pip install fvcore)')
    parser.add_argument('--eval-amp', action='store_true',
                        help='latency and throughput under autocast (bf16 on a CPU, fp16 on CUDA), as the '
                        'efficient-ViT paper\'s eval_amp')
    parser.add_argument('--train-batch-size', type=int, default=8)
    parser.add_argument('--dataset-size', type=int, default=None,
                        help='images per epoch, for the extrapolated epoch time (ImageNet-1k: 1281167)')
    parser.add_argument('--warmup', type=int, default=5, help='untimed calls before each timing')
    parser.add_argument('--repeats', type=int, default=20, help='timed calls of each timing')
    parser.add_argument('--sweep', action='append', default=[],
                        help='KEY=V1,V2,...: one run per value of a config key (e.g. model.test_cfg.eval_idx=0,1,2)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config settings')
    parser.add_argument('--out', nargs='+', default=[], help='.json (full results) and/or .csv (one row each)')
    parser.add_argument('--accuracy', help='table of config,accuracy (CSV or JSON) for the Pareto fronts; "paper": '
                        'the efficient-ViT paper\'s top-1 at --img-size (224 or 384), and its A100 throughput beside')
    parser.add_argument('--plot-dir', help='Pareto plots, pareto.csv and correlations.json go here (with '
                        '--end2end also NMS time vs. thresholds and latency vs. a swept setting)')
    parser.add_argument('--end2end', action='store_true',
                        help='detectors: model vs. post-processing (NMS / top-K) time over dataset images')
    parser.add_argument('--score-thrs', type=float, nargs='+', default=None, help='--end2end: NMS score thresholds')
    parser.add_argument('--iou-thrs', type=float, nargs='+', default=None, help='--end2end: NMS IoU thresholds')
    parser.add_argument('--num-images', type=int, default=20, help='--end2end: images of the test set')
    parser.add_argument('--checkpoint', help='--end2end, --evaluate and INT8 calibration: trained weights (random '
                        'weights keep few boxes)')
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


def benchmark_paths(args, runs, logger):
    """Every (backend, precision) of each run side by side: table, JSON/CSV, PNG."""
    paths = expand_paths(args.backend, args.precision)
    peaks = json.load(open(args.peaks)) if args.peaks else None
    evaluate = None
    if args.evaluate:
        if not args.checkpoint:
            raise SystemExit('--evaluate needs --checkpoint: an accuracy of random weights says nothing')
        evaluate = evaluate_path
    img_size = tuple(args.img_size) * 2 if len(args.img_size) == 1 else tuple(args.img_size)
    if len(args.batch_sizes) > 1 and args.batch_sizes != DEFAULT_BATCH_SIZES:
        raise SystemExit('side-by-side paths are timed at one batch size: pass one --batch-sizes value')
    batch_size = args.batch_sizes[0] if args.batch_sizes != DEFAULT_BATCH_SIZES else 1
    calibration = {key: value for key, value in (('dataset', args.calib_dataset), ('num_images', args.calib_images))
                   if value is not None}
    results = []
    for i, (config, name, options) in enumerate(runs, 1):
        logger.info(f'[{i}/{len(runs)}] {name}: {len(paths)} paths at batch {batch_size}')
        result = dict(name=name, config=config, paths=[], errors={},
                      protocol=dict(environment(args.device), img_size=list(img_size), batch_size=batch_size,
                                    warmup=args.warmup, repeats=args.repeats))
        try:
            with tempfile.TemporaryDirectory() as work_dir:
                result.update(compare_paths(load_config(config, options), paths, img_size, work_dir, args.warmup,
                                            args.repeats, args.checkpoint, args.device, peaks, batch_size,
                                            calibration, evaluate))
        except Exception as error:  # reported with the others, as a failed model is in the table mode
            result['errors']['paths'] = describe_error(error)
        results.append(result)
    print(format_paths(results))
    for path in args.out:
        if path.endswith('.csv'):  # a row per model and path, with the protocol
            write_csv([dict(row, **{k: result['protocol'].get(k) for k in PROTOCOL_COLUMNS if k not in row})
                       for result in results for row in path_rows([result])], path)
        else:
            save_results(results, path)
    if args.plot_dir:
        os.makedirs(args.plot_dir, exist_ok=True)
        plot_paths(results, osp.join(args.plot_dir, 'paths.png'))
        logger.info(f'plot in {args.plot_dir}/paths.png')
    report_failures(results, args.keep_going, logger)


def report_failures(results, keep_going, logger):
    """Log every failed model with its reasons; exit 1 unless ``keep_going``."""
    failed = {result['name']: result['errors'] for result in results if result['errors']}
    if failed:
        for name, errors in failed.items():
            logger.error(f'{name} failed: ' + '; '.join(f'{metric}: {reason}' for metric, reason in errors.items()))
        if not keep_going:
            raise SystemExit(f'{len(failed)} of {len(results)} benchmark runs failed (above); --keep-going to exit 0')


def main():
    args = parse_args()
    for backend in args.backend:
        try:
            check_backend(backend)
        except RuntimeError as error:
            raise SystemExit(f'--backend {backend}: {error}')
    if args.threads:
        torch.set_num_threads(args.threads)
    logger = MMLogger.get_instance('mmeff_benchmark', log_level='INFO')
    for handler in logger.handlers:  # stdout is for the table
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(sys.stderr)
    runs = [(config, name, dict(args.cfg_options or {}, **options))
            for config in expand_configs(args.configs) for name, options in expand_sweep(config, args.sweep)]
    if 'auto' in args.batch_sizes and args.batch_sizes != ['auto']:
        raise SystemExit('--batch-sizes: either "auto" or a list of sizes')
    if len(args.backend) > 1 or args.precision != ['fp32']:
        if args.batch_sizes == ['auto']:
            raise SystemExit('side-by-side paths are timed at one batch size: pass one --batch-sizes value')
        return benchmark_paths(args, runs, logger)
    args.backend = args.backend[0]
    batch_sizes = 'auto' if args.batch_sizes == ['auto'] else args.batch_sizes
    eval_precision = ('fp16' if args.device.startswith('cuda') else 'bf16') if args.eval_amp else 'fp32'
    results = []
    for i, (config, name, options) in enumerate(runs, 1):
        logger.info(f'[{i}/{len(runs)}] {name}')
        result = benchmark_config(config, args.metrics, args.img_size, args.device, args.backend, batch_sizes,
                                  args.train_batch_size, args.dataset_size, args.warmup, args.repeats, options,
                                  args.deploy_cfg, args.flops_convention, eval_precision)
        result['name'] = name
        if args.end2end:
            result['end2end'] = detection_end2end(config, options, args.device, args.num_images, args.warmup,
                                                  args.score_thrs, args.iou_thrs, args.checkpoint,
                                                  args.trust_checkpoint)
        results.append(result)

    if args.accuracy:
        accuracy = paper_accuracy(args.img_size[0]) if args.accuracy == 'paper' else load_accuracy(args.accuracy)
        for result in results:
            if osp.splitext(osp.basename(result['name']))[0] in accuracy:
                result['accuracy'] = accuracy[osp.splitext(osp.basename(result['name']))[0]]
            row = paper_row(result['config']) if args.accuracy == 'paper' and args.img_size[0] == 224 else None
            if row:  # the paper's own speed beside this machine's
                result['paper'] = dict(model=row['model_name'], A100_img_s=row['throughput_img_s'],
                                       A100_batch_size=row['throughput_batch_size'])
        missing = [result['name'] for result in results if 'accuracy' not in result]
        if missing:
            logger.warning(f'no accuracy for {", ".join(missing)}: left out of the Pareto fronts')
    print(format_table(results))
    if args.end2end:
        print(format_end2end(results))
    for path in args.out:
        save_results(results, path)
    if args.plot_dir:
        rows = [flat_row(result) for result in results]
        analysis = analyse(rows, args.plot_dir)
        print(format_analysis(analysis))
        if args.end2end:
            plot_end2end(results, args.plot_dir)
        if not analysis['pareto']:
            logger.warning('no accuracy given (--accuracy): correlations only, no Pareto fronts')
        logger.info(f'plots and tables in {args.plot_dir}')
    report_failures(results, args.keep_going, logger)


if __name__ == '__main__':
    main()
