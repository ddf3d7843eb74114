"""Pareto fronts of accuracy against each efficiency metric, and correlations between metrics.

A model is Pareto-optimal for a metric when no other model is at least as accurate and at least
as efficient with one of the two strictly better (the efficient-ViT paper's fronts).
"""
import csv
import json
import os
import os.path as osp
import re
from typing import Dict, List, Optional, Sequence

import numpy as np
from scipy import stats

# Efficiency columns of report.flat_row, and whether more is better.
HIGHER_IS_BETTER = {
    'params_M': False, 'trainable_params_M': False, 'GMACs': False, 'GFLOPs': False, 'GFLOPs_wttf': False,
    'elementwise_Gops': False,
    'latency_ms': False, 'throughput_img_s': True, 'train_step_ms': False, 'epoch_min': False,
    'memory_infer_MiB': False, 'memory_train_MiB': False,
    'paper_A100_img_s': True,  # the efficient-ViT paper's own throughput (--accuracy paper)
}
# What tools/test.py writes (mmengine's metrics json), in order of preference.
TEST_METRIC_KEYS = ('coco/bbox_mAP', 'accuracy/top1')


def pareto_front(rows: Sequence[Dict], metric: str, accuracy: str = 'accuracy') -> List[bool]:
    """For each row, whether it is Pareto-optimal in (``accuracy`` up, ``metric`` better)."""
    sign = 1 if HIGHER_IS_BETTER[metric] else -1
    points = [(row[accuracy], sign * row[metric]) for row in rows]  # both: more is better
    return [
        not any(a >= acc and e >= eff and (a > acc or e > eff) for a, e in points)
        for acc, eff in points
    ]


def correlations(rows: Sequence[Dict], columns: Sequence[str]) -> Dict[str, Dict[str, Dict[str, float]]]:
    """Pearson and Spearman coefficients of every pair of columns, over the rows having both
    (at least 3; otherwise NaN)."""
    result = dict(pearson={}, spearman={})
    for a in columns:
        for name in result:
            result[name][a] = {}
        for b in columns:
            pairs = [(row[a], row[b]) for row in rows if row.get(a) is not None and row.get(b) is not None]
            x, y = np.array(pairs, dtype=float).reshape(-1, 2).T
            enough = len(pairs) >= 3 and x.std() > 0 and y.std() > 0
            result['pearson'][a][b] = float(stats.pearsonr(x, y)[0]) if enough else float('nan')
            result['spearman'][a][b] = float(stats.spearmanr(x, y)[0]) if enough else float('nan')
    return result


def _accuracy_value(value: str, table_dir: str) -> float:
    """A number, or the path of a tools/test.py metrics json (relative to the table)."""
    try:
        return float(value)
    except ValueError:
        pass
    with open(osp.join(table_dir, value)) as f:
        metrics = json.load(f)
    for key in TEST_METRIC_KEYS:
        if key in metrics:
            return float(metrics[key])
    raise KeyError(f'{value} has none of the metrics {TEST_METRIC_KEYS}')


def load_accuracy(path: str) -> Dict[str, float]:
    """``config -> accuracy`` from a CSV with columns ``config,accuracy``, or a JSON mapping or list
    of ``{config, accuracy}``. A config is matched by its name (file name without ``.py``); an
    accuracy is a number or the path of a ``tools/test.py`` results json."""
    if path.endswith('.csv'):
        with open(path, newline='') as f:
            entries = [(row['config'], row['accuracy']) for row in csv.DictReader(f)]
    else:
        with open(path) as f:
            table = json.load(f)
        entries = table.items() if isinstance(table, dict) else [(e['config'], e['accuracy']) for e in table]
    table_dir = osp.dirname(osp.abspath(path))
    return {
        osp.splitext(osp.basename(str(config)))[0]: _accuracy_value(str(acc), table_dir)
        for config, acc in entries
    }


def analyse(rows: Sequence[Dict], out_dir: Optional[str] = None, accuracy: str = 'accuracy') -> Dict:
    """Pareto fronts against every efficiency column present, and the correlations of all columns.

    With ``out_dir``, writes ``pareto.csv``, ``correlations.json``, ``pareto_<metric>.png`` and
    ``GFLOPs_vs_<throughput|latency>.png``.
    """
    metrics = [m for m in HIGHER_IS_BETTER if any(row.get(m) is not None for row in rows)]
    fronts = {}
    if any(row.get(accuracy) is not None for row in rows):
        for metric in metrics:
            usable = [row for row in rows if row.get(metric) is not None and row.get(accuracy) is not None]
            fronts[metric] = dict(zip([row['name'] for row in usable], pareto_front(usable, metric, accuracy)))
    columns = metrics + ([accuracy] if fronts else [])
    result = dict(pareto=fronts, correlations=correlations(rows, columns))
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        with open(osp.join(out_dir, 'correlations.json'), 'w') as f:
            json.dump(result['correlations'], f, indent=2)
        by_name = {row['name']: row for row in rows}
        with open(osp.join(out_dir, 'pareto.csv'), 'w', newline='') as f:
            writer = csv.writer(f)
            writer.writerow(['metric', 'name', 'value', accuracy, 'pareto_optimal'])
            for metric, front in fronts.items():
                writer.writerows([metric, name, by_name[name][metric], by_name[name][accuracy], optimal]
                                 for name, optimal in front.items())
        for metric, front in fronts.items():
            plot_scatter([by_name[name] for name in front], metric, accuracy, osp.join(out_dir, f'pareto_{metric}.png'),
                         list(front.values()))
        # how well FLOPs predict measured speed (the efficient-ViT paper: poorly)
        for speed in ('throughput_img_s', 'latency_ms'):
            usable = [row for row in rows if row.get('GFLOPs') is not None and row.get(speed) is not None]
            if usable:
                plot_scatter(usable, 'GFLOPs', speed, osp.join(out_dir, f'GFLOPs_vs_{speed}.png'))
    return result


def format_analysis(analysis: Dict, accuracy: str = 'accuracy') -> str:
    """The Pareto-optimal models of each metric and the Spearman correlations of every metric with
    the others, as text."""
    lines = [f'Pareto-optimal ({accuracy} against):']
    for metric, front in analysis['pareto'].items():
        optimal = [name for name, is_optimal in front.items() if is_optimal]
        lines.append(f'  {metric}: {", ".join(optimal)} ({len(optimal)} of {len(front)})')
    spearman = analysis['correlations']['spearman']
    columns = list(spearman)
    width = max(len(c) for c in columns) if columns else 0
    lines.append('Spearman correlations:')
    lines.append(' ' * (width + 2) + ' '.join(f'{c[:8]:>8}' for c in columns))
    for a in columns:
        lines.append(f'  {a:<{width}}' + ' '.join(f'{spearman[a][b]:8.2f}' for b in columns))
    return '\n'.join(lines)


def short_name(name: str) -> str:
    """A plot label: the config name without its data and size suffix ('vit_small_p16_in1k-224' ->
    'vit_small_p16')."""
    return re.sub(r'_(in1k|coco)([-_]\d+)?$', '', name)


def _label(metric: str) -> str:
    if metric not in HIGHER_IS_BETTER:
        return metric
    return metric + (' (higher is better)' if HIGHER_IS_BETTER[metric] else ' (lower is better)')


def plot_scatter(rows: Sequence[Dict], x: str, y: str, path: str, highlight: Optional[Sequence[bool]] = None):
    """``y`` against ``x``, one labelled point per model; highlighted points (a Pareto front) in red,
    joined by the front's staircase."""
    import matplotlib
    matplotlib.use('Agg')  # files only, no display
    import matplotlib.pyplot as plt
    highlight = highlight or [False] * len(rows)
    fig, ax = plt.subplots(figsize=(8, 6))
    xs, ys = [row[x] for row in rows], [row[y] for row in rows]
    ax.scatter(xs, ys, c=['tab:red' if h else 'tab:blue' for h in highlight], zorder=2)
    front = sorted((px, py) for px, py, h in zip(xs, ys, highlight) if h)
    if front:
        ax.step(*zip(*front), where='pre' if HIGHER_IS_BETTER[x] else 'post', color='tab:red', zorder=1,
                label='Pareto front')
        ax.legend()
    for row, px, py in zip(rows, xs, ys):
        ax.annotate(short_name(row['name']), (px, py), textcoords='offset points', xytext=(3, 3), fontsize=6)
    ax.set_xlabel(_label(x))
    ax.set_ylabel(_label(y))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
