"""mmeff models vs. their timm twins: inference throughput side by side on this machine.

    python tools/analysis/backbone_speed_vs_timm.py [--arch swin vit ...] [--all-variants]
        [--configs 'vit/vit/vit_small*' ...] [--batch-sizes 1 32] [--warmup 3] [--repeats 20] [--control]
        [--threads N] [--out results.json results.csv] [--plot ratios.png]

Every twin registered in mmeff.converters.twins (by default the smallest variant of each
architecture): same random weights, same input, eager PyTorch, re-parameterizable blocks fused on
both sides (mmeff.benchmark.twins), calls alternating. ``ratio`` = timm seconds / mmeff seconds, the median
over neighbouring pairs of calls (above 1 = mmeff faster). ``--control`` adds a copy of the timm model to the
rotation: ``control_ratio`` (timm / its copy) is what the protocol measures between identical models.
"""
import argparse
import fnmatch
import json
import os
import os.path as osp

import torch
from mmengine.logging import MMLogger

import mmeff.models  # noqa: F401  (registers the modules and their twins)
from mmeff.benchmark.report import write_csv
from mmeff.benchmark.twins import twin_throughput
from mmeff.converters.twins import TIMM_TWINS
from mmeff.utils.timing import describe_error, environment


def parse_args():
    parser = argparse.ArgumentParser(description='mmeff vs. timm throughput of the same architectures')
    parser.add_argument('--arch', nargs='+', help='architectures to run (default: all registered)')
    parser.add_argument('--all-variants', action='store_true', help='every registered size, not the smallest')
    parser.add_argument('--configs', nargs='+', help='only the twins whose config matches one of these globs '
                        '(e.g. "vit/vit/vit_small*"; overrides --arch and --all-variants)')
    parser.add_argument('--batch-sizes', type=int, nargs='+', default=[1, 32])
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--repeats', type=int, default=20, help='timed calls of each, alternating timm and mmeff')
    parser.add_argument('--control', action='store_true',
                        help='also time a copy of the timm model: the ratio two identical models get (noise floor)')
    parser.add_argument('--threads', type=int, help='torch threads (default: torch\'s choice)')
    parser.add_argument('--out', nargs='+', default=[], help='.json and/or .csv')
    parser.add_argument('--plot', help='PNG of the ratios')
    return parser.parse_args()


def selected_twins(archs, all_variants, config_globs=None):
    if config_globs:
        twins = [t for t in TIMM_TWINS.values() if any(fnmatch.fnmatch(t.config, g) for g in config_globs)]
        if not twins:
            raise SystemExit(f'no registered twin config matches {config_globs}; registered: '
                             f'{[t.config for t in TIMM_TWINS.values()]}')
        return twins
    unknown = set(archs or ()) - {t.arch for t in TIMM_TWINS.values()}
    if unknown:
        raise SystemExit(f'no timm twin registered for {sorted(unknown)}; registered: '
                         f'{sorted({t.arch for t in TIMM_TWINS.values()})}')
    twins, seen = [], set()
    for twin in TIMM_TWINS.values():  # registration order: smallest variant first
        if (archs and twin.arch not in archs) or (twin.arch in seen and not all_variants):
            continue
        seen.add(twin.arch)
        twins.append(twin)
    return twins


def plot_ratios(rows, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    names = sorted({r['config'] for r in rows})
    batch_sizes = sorted({r['batch_size'] for r in rows})
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(names) * len(batch_sizes)), 4))
    width = 0.8 / len(batch_sizes)
    for i, batch_size in enumerate(batch_sizes):
        ratio = {r['config']: r['ratio'] for r in rows if r['batch_size'] == batch_size}
        ax.bar([j + i * width for j in range(len(names))], [ratio.get(n, 0) for n in names], width,
               label=f'batch {batch_size}')
    ax.axhline(1.0, color='k', linewidth=0.8)
    ax.set_xticks([j + width * (len(batch_sizes) - 1) / 2 for j in range(len(names))])
    ax.set_xticklabels([osp.splitext(osp.basename(n))[0] for n in names], rotation=45, ha='right', fontsize=7)
    ax.set_ylabel('mmeff / timm throughput')
    ax.legend()
    fig.tight_layout()
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)


def main():
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    logger = MMLogger.get_instance('mmeff_twins', log_level='INFO')
    env = environment('cpu')
    twins = selected_twins(args.arch, args.all_variants, args.configs)
    logger.info(f"{env['cpu_name']}, torch {env['torch']}, {env['threads']} threads; {args.repeats} calls of "
                f'each, timm and mmeff alternating, after {args.warmup} warm-up; ratio = median of pair ratios')
    results, rows = [], []
    for i, twin in enumerate(twins, 1):
        logger.info(f'[{i}/{len(twins)}] {twin.config} vs timm {twin.timm_name}')
        try:
            result = twin_throughput(twin, args.batch_sizes, args.warmup, args.repeats, args.control)
        except Exception as error:  # one model's failure does not stop the others
            logger.error(f'{twin.config}: {describe_error(error)}')
            results.append(dict(config=twin.config, timm_name=twin.timm_name, error=describe_error(error)))
            continue
        results.append(dict(result, protocol=env))
        for batch_size, numbers in result['per_batch_size'].items():
            rows.append(dict(config=twin.config, timm_name=twin.timm_name, batch_size=batch_size, **numbers))
            logger.info(f"  batch {batch_size}: timm {numbers['timm_img_s']:.1f} img/s, mmeff "
                        f"{numbers['mmeff_img_s']:.1f} img/s, ratio {numbers['ratio']:.2f} "
                        f"(IQR {numbers['ratio_q1']:.2f}-{numbers['ratio_q3']:.2f}) "
                        f"(max |logit diff| {numbers['max_logit_diff']:.1e})" + (
                            f"; control, timm vs. its copy: {numbers['control_ratio']:.2f} "
                            f"(IQR {numbers['control_ratio_q1']:.2f}-{numbers['control_ratio_q3']:.2f})"
                            if args.control else ''))
    print(f"{'config':<48} {'timm':<34} {'batch':>5} {'timm img/s':>11} {'mmeff img/s':>12} {'ratio':>6}")
    for row in rows:
        print(f"{row['config']:<48} {row['timm_name']:<34} {row['batch_size']:>5} {row['timm_img_s']:>11.1f} "
              f"{row['mmeff_img_s']:>12.1f} {row['ratio']:>6.2f}")
    for path in args.out:
        if path.endswith('.json'):
            with open(path, 'w') as f:
                json.dump(results, f, indent=2)
        else:
            write_csv(rows, path)
    if args.plot and rows:
        plot_ratios(rows, args.plot)


if __name__ == '__main__':
    main()
