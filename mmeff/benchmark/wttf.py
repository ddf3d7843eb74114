"""The efficient-ViT paper's results (Nauen et al., *Which Transformer to Favor*), shipped with mmeff.

``wttf_paper.csv`` has one row per model of the paper: the mmeff config that builds it, the authors'
params, GMACs (torchprofile), GFLOPs (fvcore with their op weights), A100 throughput and memory at
224 px, and the top-1 at 224 px and at the higher resolution; made from the authors' table by
``tools/analysis/wttf_paper_table.py``. Two paper models share one config (ViT-S/16 and DeiT-S/16:
mmeff's baseline); the first row of a config speaks for it.
"""
import csv
import functools
import os.path as osp
from typing import Dict, List, Optional, Tuple

PAPER_TABLE = osp.join(osp.dirname(__file__), 'wttf_paper.csv')
NUMERIC = ('params_M', 'GMACs_torchprofile', 'GFLOPs_fvcore_custom', 'throughput_img_s', 'throughput_batch_size',
           'inference_mem_GiB_bs1', 'inference_mem_GiB_bs64', 'train_mem_GiB_single_gpu', 'top1_224',
           'top1_high_res', 'high_res')


@functools.lru_cache(maxsize=None)
def _read_table() -> Tuple[Dict[str, object], ...]:
    with open(PAPER_TABLE, newline='') as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row.update({k: float(row[k]) if row[k] else None for k in NUMERIC})
    return tuple(rows)


def load_paper_table() -> List[Dict[str, object]]:
    """The rows, as fresh dicts (the file is read once)."""
    return [dict(row) for row in _read_table()]


def _config_key(config: str) -> str:
    """Configs compare by their path below ``configs/`` (wherever the checkout is)."""
    path = osp.normpath(config).replace(osp.sep, '/')
    return path[path.rindex('configs/'):] if 'configs/' in path else path


def paper_row(config: str) -> Optional[Dict[str, object]]:
    """The paper's row of the model ``config`` builds, or None."""
    return next((row for row in load_paper_table() if _config_key(row['config']) == _config_key(config)), None)


def paper_accuracy(img_size: int = 224) -> Dict[str, float]:
    """``config name -> top-1`` of the paper at ``img_size``: 224, or the higher resolution the
    models were fine-tuned at (384; 382 for EfficientFormerV2 and FocalNet, taken as 384)."""
    accuracy = {}
    for row in load_paper_table():
        if img_size == 224:
            top1 = row['top1_224']
        else:
            top1 = row['top1_high_res'] if row['high_res'] and abs(row['high_res'] - img_size) <= 2 else None
        if top1 is not None:
            accuracy.setdefault(osp.splitext(osp.basename(row['config']))[0], top1)
    return accuracy
