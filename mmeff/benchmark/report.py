"""Results as rows: the printed table, CSV and JSON files."""
import csv
import json
import os
import os.path as osp
from typing import Dict, List, Sequence

from terminaltables import AsciiTable

# The columns of a model's flat row (units in their names), in table order.
COLUMNS = ('params_M', 'trainable_params_M', 'GMACs', 'GFLOPs', 'GFLOPs_wttf', 'elementwise_Gops', 'latency_ms',
           'latency_iqr_ms', 'pytorch_latency_ms', 'latency_vs_pytorch',
           'throughput_img_s', 'throughput_batch_size', 'train_step_ms', 'train_batch_size', 'epoch_min',
           'memory_infer_MiB', 'memory_train_MiB', 'paper_A100_img_s')
PROTOCOL_COLUMNS = ('device', 'device_name', 'cpu_flags', 'threads', 'torch', 'cuda', 'backend', 'dtype', 'img_size')


def flat_row(result: Dict) -> Dict[str, object]:
    """The headline numbers of one result (missing metrics are absent)."""
    row = dict(name=result['name'])
    if 'params' in result:
        row.update(params_M=result['params']['total'] / 1e6,
                   trainable_params_M=result['params']['trainable'] / 1e6)
    if 'flops' in result:
        row.update(GMACs=result['flops']['macs'] / 1e9, GFLOPs=result['flops']['flops'] / 1e9,
                   elementwise_Gops=result['flops']['elementwise_ops'] / 1e9)
        if 'wttf_flops' in result['flops']:
            row['GFLOPs_wttf'] = result['flops']['wttf_flops'] / 1e9
    if 'latency' in result:
        row.update(latency_ms=result['latency']['median'] * 1e3, latency_iqr_ms=result['latency']['iqr'] * 1e3)
        if 'pytorch' in result['latency']:  # an exported backend, timed beside PyTorch eager
            row.update(pytorch_latency_ms=result['latency']['pytorch']['median'] * 1e3,
                       latency_vs_pytorch=result['latency']['ratio'])
    if 'throughput' in result:
        row.update(throughput_img_s=result['throughput']['images_per_s'],
                   throughput_batch_size=result['throughput']['batch_size'])
    if 'train' in result:
        row.update(train_step_ms=result['train']['median'] * 1e3, train_batch_size=result['train']['batch_size'])
        if 'epoch_s' in result['train']:
            row['epoch_min'] = result['train']['epoch_s'] / 60
    for mode, memory in result.get('memory', {}).items():
        row[f'memory_{mode}_MiB'] = memory['peak_mib']
    if 'paper' in result:
        row['paper_A100_img_s'] = result['paper']['A100_img_s']
    if 'accuracy' in result:
        row['accuracy'] = result['accuracy']
    if result.get('errors'):
        row['errors'] = '; '.join(f'{metric}: {reason}' for metric, reason in result['errors'].items())
    return row


def _columns(rows: Sequence[Dict]) -> List[str]:
    present = {key for row in rows for key in row}
    ordered = ['name'] + [c for c in COLUMNS if c in present]
    return ordered + [c for c in ('accuracy', 'errors') if c in present]


def format_table(results: Sequence[Dict]) -> str:
    rows = [flat_row(r) for r in results]
    columns = _columns(rows)

    def cell(row, column):
        value = row.get(column, '')
        if isinstance(value, float):
            return f'{value:.0f}' if abs(value) >= 1000 else f'{value:.4g}'
        return str(value)

    return AsciiTable([columns] + [[cell(row, c) for c in columns] for row in rows]).table


def save_results(results: Sequence[Dict], path: str) -> None:
    """``.json``: every result in full; ``.csv``: one flat row per model plus its protocol."""
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    if path.endswith('.json'):
        with open(path, 'w') as f:
            json.dump(list(results), f, indent=2)
    elif path.endswith('.csv'):
        rows = [dict(flat_row(r), **{k: r['protocol'].get(k) for k in PROTOCOL_COLUMNS}) for r in results]
        write_csv(rows, path)
    else:
        raise ValueError(f'--out must end with .json or .csv, got {path}')


def write_csv(rows: Sequence[Dict], path: str) -> None:
    fields = list(dict.fromkeys(key for row in rows for key in row))
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, fields)
        writer.writeheader()
        writer.writerows(rows)
