"""The top-level README's model table, one row per architecture, from the config directories' tables.

    python tools/analysis/readme_model_summary.py configs/vit [configs/hvit ...]

Reads the rows that ``tools/analysis/model_table.py --update`` keeps in ``<dir>/README.md`` and prints

    | architecture | taxonomy class | configs (params M / GMACs at 224) |

with a link to every variant's config, for pasting into README.md.
"""
import argparse
import os.path as osp
from collections import defaultdict

from mmeff.benchmark.model_table import MEASURED_ROW, variant_label


def main():
    parser = argparse.ArgumentParser(description='README model table from the config directories\' tables')
    parser.add_argument('config_dirs', nargs='+')
    args = parser.parse_args()
    print('| architecture | taxonomy class | configs (params M / GMACs at 224) |')
    print('|---|---|---|')
    for config_dir in args.config_dirs:
        archs = defaultdict(list)
        with open(osp.join(config_dir, 'README.md')) as f:
            for match in filter(None, (MEASURED_ROW.match(line.strip()) for line in f)):
                archs[match['path'].split('/')[0]].append(match)
        for arch, rows in sorted(archs.items()):
            rows.sort(key=lambda m: float(m['params_m']))
            variants = ', '.join(
                f"[{variant_label(m['name'], arch)}]({config_dir}/{m['path']}) "
                f"{m['params_m']} / {m['gmacs']}" for m in rows)
            print(f"| {arch} | {rows[0]['taxonomy']} | {variants} |")


if __name__ == '__main__':
    main()
