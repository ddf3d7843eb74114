"""Batch-1 inference latency of ViT-family models at several resolutions: which mixers scale
sub-quadratically in the number of tokens.

    python tools/analysis/vit_latency_vs_resolution.py [CONFIG ...] [--sizes 224 384 512]
        [--warmup 3] [--repeats 10] [--threads N] [--out-dir work_dirs/latency_vs_resolution]

Default configs: the ViT-S size of every architecture in the repository's configs/vit
(``*[_-]small_p16_in1k-224.py``, e.g. ``gfnet_vit-small``) and CaiT-S24. Each model is built for each size
(``model.backbone.img_size``, so position embeddings and per-position weights have that grid), with
random weights, in eval mode; the latency of one image is the median of ``--repeats`` calls after
``--warmup`` (``mmeff.utils.timing.time_fn``).

Writes ``latency.csv`` (one row per model and size), ``latency.json`` (with the environment) and
``latency.png`` (latency vs. patch tokens, log-log, one line per model). The printed table gives the
growth exponent ``k`` of latency ~ tokens^k between the smallest and largest size: 1 for a cost linear
in the tokens, 2 for a cost dominated by N x N attention. At these sizes ViT-S itself is below 2 (its
projections and MLP are linear in N); a mixer scales better than softmax attention when its ``k`` is
below ViT-S's.
"""
import argparse
import glob
import json
import math
import os
import os.path as osp
import sys
import time
from typing import Dict, List

import torch

from mmeff.benchmark.report import write_csv
from mmeff.benchmark.subject import Subject, config_name
from mmeff.paths import CONFIGS_DIR
from mmeff.utils.timing import describe_error, environment, time_fn

# under the repository's configs/, wherever the script is run from
DEFAULT_CONFIGS = ('vit/*/*[_-]small_p16_in1k-224.py', 'vit/cait/cait_s24_p16_in1k-224.py')


def parse_args():
    parser = argparse.ArgumentParser(description='ViT-family batch-1 latency vs. input resolution')
    parser.add_argument('configs', nargs='*',
                        help=f'config files or globs (default, in configs/: {" ".join(DEFAULT_CONFIGS)})')
    parser.add_argument('--sizes', type=int, nargs='+', default=[224, 384, 512], help='square input sides')
    parser.add_argument('--warmup', type=int, default=3, help='untimed calls before each timing')
    parser.add_argument('--repeats', type=int, default=10, help='timed calls of each timing')
    parser.add_argument('--threads', type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument('--out-dir', default='work_dirs/latency_vs_resolution')
    return parser.parse_args()


def expand(patterns) -> List[str]:
    paths = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern))
        if not matches:
            raise SystemExit(f'no config matches {pattern!r}')
        paths += matches
    return list(dict.fromkeys(paths))


def measure(config: str, size: int, warmup: int, repeats: int) -> Dict:
    """Latency of one image of ``size`` x ``size`` through the classifier built for that size."""
    subject = Subject(config, (size, ), cfg_options={'model.backbone.img_size': size})
    patch = getattr(subject.model.backbone, 'patch_size', 16)
    timing = time_fn(subject.infer_fn(1), warmup, repeats)
    return dict(tokens=(size // patch)**2, median_ms=1e3 * timing['median'], q1_ms=1e3 * timing['q1'],
                q3_ms=1e3 * timing['q3'])


def growth_exponent(rows: List[Dict]) -> float:
    """``k`` of latency ~ tokens^k between the smallest and the largest measured size."""
    done = sorted((r for r in rows if r.get('median_ms')), key=lambda r: r['tokens'])
    if len(done) < 2:
        return float('nan')
    first, last = done[0], done[-1]
    return math.log(last['median_ms'] / first['median_ms']) / math.log(last['tokens'] / first['tokens'])


def plot(rows: List[Dict], path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')  # files only, no display
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(9, 6))
    done = [r for r in rows if r.get('median_ms')]
    if done:  # guides: linear and quadratic growth from the fastest model at the fewest tokens
        x0 = min(r['tokens'] for r in done)
        y0 = min(r['median_ms'] for r in done if r['tokens'] == x0)
        x1 = max(r['tokens'] for r in done)
        for k, style in ((1, ':'), (2, '--')):
            ax.plot([x0, x1], [y0, y0 * (x1 / x0)**k], style, color='gray', label=f'~ tokens^{k}')
    for name in dict.fromkeys(r['config'] for r in rows):
        mine = sorted((r for r in done if r['config'] == name), key=lambda r: r['tokens'])
        if mine:
            ax.plot([r['tokens'] for r in mine], [r['median_ms'] for r in mine], marker='o', label=name)
    ax.set(xscale='log', yscale='log', xlabel='patch tokens', ylabel='latency, batch 1 (ms)',
           title='Inference latency vs. number of tokens')
    ax.legend(fontsize=6, ncol=2)
    ax.grid(True, which='both', alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main():
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    configs = expand(args.configs or [osp.join(CONFIGS_DIR, pattern) for pattern in DEFAULT_CONFIGS])
    os.makedirs(args.out_dir, exist_ok=True)
    rows, total, start = [], len(configs) * len(args.sizes), time.perf_counter()
    for i, config in enumerate(configs):
        for j, size in enumerate(args.sizes):
            step = i * len(args.sizes) + j + 1
            row = dict(config=config_name(config), img_size=size)
            try:
                row.update(measure(config, size, args.warmup, args.repeats))
                status = f'{row["tokens"]} tokens, {row["median_ms"]:.1f} ms'
            except Exception as error:  # a model that fails is reported, the others go on
                row['error'] = describe_error(error)
                status = f'FAILED {row["error"]}'
            rows.append(row)
            print(f'[{step}/{total}] {row["config"]} @ {size}px: {status} ({time.perf_counter() - start:.0f} s total)',
                  file=sys.stderr, flush=True)

    exponents = {name: growth_exponent([r for r in rows if r['config'] == name])
                 for name in dict.fromkeys(r['config'] for r in rows)}
    header = ['config'] + [f'ms@{s}' for s in args.sizes] + ['k']
    print(' | '.join(header))
    for name, k in sorted(exponents.items(), key=lambda item: item[1]):
        cells = [next((f'{r["median_ms"]:.1f}' for r in rows
                       if r['config'] == name and r['img_size'] == s and r.get('median_ms')), 'failed')
                 for s in args.sizes]
        print(' | '.join([name] + cells + [f'{k:.2f}']))

    write_csv(rows, osp.join(args.out_dir, 'latency.csv'))
    with open(osp.join(args.out_dir, 'latency.json'), 'w') as f:
        json.dump(dict(environment=environment('cpu'), sizes=args.sizes, warmup=args.warmup, repeats=args.repeats,
                       results=rows, exponents=exponents), f, indent=1)
    plot(rows, osp.join(args.out_dir, 'latency.png'))
    print(f'wrote latency.csv, latency.json, latency.png to {args.out_dir}', file=sys.stderr)


if __name__ == '__main__':
    main()
