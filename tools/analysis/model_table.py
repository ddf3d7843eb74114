"""Parameters and GMACs of every classifier config of a directory, as the README table lists them.

    python tools/analysis/model_table.py configs/vit [--update] [--only NAME ...] [--img-size 224]
        [--pattern '*_in1k-224.py'] [--out table.json]
    python tools/analysis/model_table.py configs/vit --paper [--update]   # beside the efficient-ViT paper

For each ``<dir>/*/<pattern>`` config: the classifier is built (random weights, eval mode), its
trainable parameters counted, and the multiply-accumulates of one image of ``--img-size`` counted
with :func:`mmeff.benchmark.model_table.measure` (fvcore's convention of the efficient-ViT paper: one
multiply-add = 1 MAC; FLOPs in the RT-DETR convention are 2x). Token-reducing models are counted
for the random input given (their kept tokens may depend on it).

Prints one table row per config; ``--update`` rewrites the rows of ``<dir>/README.md`` in place as

    | [name](path) | taxonomy class | params (M) | GMACs (224) | params |

keeping each row's link and taxonomy class, and sets the table header to these five columns.
Configs without a README row are reported (their taxonomy class must be chosen by hand).

``--paper`` measures instead the directory's models of the efficient-ViT paper (mmeff/benchmark/wttf_paper.csv)
at 224 px, FLOPs also in the paper's convention (fvcore + the authors' op weights; needs fvcore), and
prints (``--update``: writes between the README's paper-table markers) each beside the authors' params,
GMACs (torchprofile) and GFLOPs (fvcore + weights), with the differences.
"""
import argparse
import glob
import json
import os.path as osp
import sys
import time
from typing import List

import torch

from mmeff.benchmark.model_table import (
    HEADER,
    PAPER_HEADER,
    PAPER_SEPARATOR,
    SEPARATOR,
    format_paper_row,
    format_row,
    measure,
    paper_models_in,
    taxonomy_of,
    update_paper_table,
    update_readme,
)


def parse_args():
    parser = argparse.ArgumentParser(description='Params and GMACs of the classifier configs of a directory')
    parser.add_argument('config_dir', help='e.g. configs/vit or configs/hvit')
    parser.add_argument('--pattern', default='*_in1k-224.py', help='config file names under <dir>/*/')
    parser.add_argument('--img-size', type=int, default=224, help='side of the square input image')
    parser.add_argument('--only', nargs='+', default=[],
                        help='measure only configs whose path (relative to the directory) contains one of these, '
                             'e.g. vit/vit_tiny')
    parser.add_argument('--update', action='store_true', help='rewrite the table rows of <dir>/README.md')
    parser.add_argument('--out', help='also write the measurements to this .json file')
    parser.add_argument('--paper', action='store_true',
                        help="the directory's models of the efficient-ViT paper beside the authors' numbers")
    return parser.parse_args()


def find_configs(config_dir: str, pattern: str, only: List[str]) -> List[str]:
    """Config paths relative to ``config_dir``, sorted."""
    paths = sorted(osp.relpath(p, config_dir) for p in glob.glob(osp.join(config_dir, '*', pattern)))
    if only:
        paths = [p for p in paths if any(word in p for word in only)]
    if not paths:
        raise SystemExit(f'no config matches {osp.join(config_dir, "*", pattern)}'
                         + (f' and --only {only}' if only else ''))
    return paths


def measure_all(config_dir: str, paths: List[str], img_size: int, wttf: bool):
    """``path -> measurement`` and ``path -> error``, with progress on stderr."""
    results, failed = {}, {}
    start = time.perf_counter()
    for i, path in enumerate(paths, 1):
        tic = time.perf_counter()
        try:
            results[path] = measure(osp.join(config_dir, path), img_size, wttf)
        except Exception as error:  # one broken config must not stop the table
            failed[path] = f'{type(error).__name__}: {error}'
            print(f'[{i}/{len(paths)}] {path}: FAILED {failed[path]}', file=sys.stderr, flush=True)
            continue
        r = results[path]
        print(f'[{i}/{len(paths)}] {path}: {r["params"]:,} params, {r["macs"] / 1e9:.2f} GMACs '
              f'({time.perf_counter() - tic:.1f} s, {time.perf_counter() - start:.0f} s total)',
              file=sys.stderr, flush=True)
    return results, failed


def paper_table(args, readme_path: str, readme: str):
    models = [m for m in paper_models_in(args.config_dir) if not args.only or any(w in m['path'] for w in args.only)]
    if not models:
        raise SystemExit(f'no model of the paper has its config in {args.config_dir}')
    results, failed = measure_all(args.config_dir, list(dict.fromkeys(m['path'] for m in models)), 224, wttf=True)
    rows = [format_paper_row(m, results[m['path']]) for m in models if m['path'] in results]
    print('\n'.join([PAPER_HEADER, PAPER_SEPARATOR] + rows))
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(dict(img_size=224, results=results, failed=failed), f, indent=1)
    if args.update:
        if failed:
            raise SystemExit(f'not updating {readme_path}: {len(failed)} config(s) failed: {", ".join(failed)}')
        with open(readme_path, 'w') as f:
            f.write(update_paper_table(readme or '', rows))
        print(f'updated the paper table of {readme_path} ({len(rows)} models)', file=sys.stderr)
    if failed:
        raise SystemExit(f'{len(failed)} config(s) failed: {", ".join(failed)}')


def main():
    args = parse_args()
    readme_path = osp.join(args.config_dir, 'README.md')
    readme = open(readme_path).read() if osp.exists(readme_path) else None
    torch.set_grad_enabled(False)
    if args.paper:
        return paper_table(args, readme_path, readme)
    paths = find_configs(args.config_dir, args.pattern, args.only)
    results, failed = measure_all(args.config_dir, paths, args.img_size, wttf=False)

    print(HEADER.format(size=args.img_size))
    print(SEPARATOR)
    for path, r in results.items():
        name = osp.splitext(osp.basename(path))[0]
        print(format_row(name, path, taxonomy_of(readme, path), r['params'], r['macs']))
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(dict(img_size=args.img_size, results=results, failed=failed), f, indent=1)
    if args.update:
        if readme is None:
            raise SystemExit(f'--update: {readme_path} does not exist')
        text, unlisted = update_readme(readme, results, args.img_size)
        with open(readme_path, 'w') as f:
            f.write(text)
        print(f'updated {len(results) - len(unlisted)} rows of {readme_path}', file=sys.stderr)
        if unlisted:
            print(f'no README row (add one with its taxonomy class): {", ".join(unlisted)}', file=sys.stderr)
    if failed:
        raise SystemExit(f'{len(failed)} config(s) failed: {", ".join(failed)}')


if __name__ == '__main__':
    main()
