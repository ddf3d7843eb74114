"""Convert an official RT-DETR checkpoint (lyuwenyu/RT-DETR, v1 or v2) to an mmeff checkpoint.

    python tools/convert_rtdetr_official.py rtdetr_r50vd_6x_coco_from_paddle.pth rtdetr_r50_mmeff.pth \
        [--config configs/rtdetr/rtdetr_r50vd_4xb4-72e_coco.py]
    python tools/convert_rtdetr_official.py --list    # the official release files and their configs

The result loads with ``load_from = 'rtdetr_r50_mmeff.pth'`` in the matching config. Every key is
mapped (see mmeff/converters/rtdetr_official.py) or the tool stops and lists the unmapped
ones; it also builds the config's model and checks that the converted keys and shapes are exactly
the model's: ``--config``, or for a file named as an official release (:data:`RELEASES`) its config.
"""
import argparse
import os.path as osp
import sys

import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

from mmeff.converters.rtdetr_official import UnmappedKeysError, compare_with_model, convert_checkpoint
from mmeff.registry import DET_MODELS

RELEASE_URL = 'https://github.com/lyuwenyu/storage/releases/download/v0.1/'
# The official release files (lyuwenyu/RT-DETR's model zoo tables, v1 and v2) -> the mmeff config of
# their architecture; the "coco_objects365" ones are fine-tuned on COCO from Objects365.
RELEASES = {
    'rtdetr_r18vd_dec3_6x_coco_from_paddle.pth': 'configs/rtdetr/rtdetr_r18vd_4xb4-72e_coco.py',
    'rtdetr_r34vd_dec4_6x_coco_from_paddle.pth': 'configs/rtdetr/rtdetr_r34vd_4xb4-72e_coco.py',
    'rtdetr_r50vd_m_6x_coco_from_paddle.pth': 'configs/rtdetr/rtdetr_r50vd-m_4xb4-72e_coco.py',
    'rtdetr_r50vd_6x_coco_from_paddle.pth': 'configs/rtdetr/rtdetr_r50vd_4xb4-72e_coco.py',
    'rtdetr_r101vd_6x_coco_from_paddle.pth': 'configs/rtdetr/rtdetr_r101vd_4xb4-72e_coco.py',
    'rtdetr_r18vd_5x_coco_objects365_from_paddle.pth': 'configs/rtdetr/rtdetr_r18vd_4xb4-72e_coco.py',
    'rtdetr_r50vd_2x_coco_objects365_from_paddle.pth': 'configs/rtdetr/rtdetr_r50vd_4xb4-72e_coco.py',
    'rtdetr_r101vd_2x_coco_objects365_from_paddle.pth': 'configs/rtdetr/rtdetr_r101vd_4xb4-72e_coco.py',
    'rtdetrv2_r18vd_120e_coco.pth': 'configs/rtdetr/rtdetr_r18vd_4xb4-72e_coco.py',
    'rtdetrv2_r34vd_120e_coco_ema.pth': 'configs/rtdetr/rtdetr_r34vd_4xb4-72e_coco.py',
    'rtdetrv2_r50vd_m_7x_coco_ema.pth': 'configs/rtdetr/rtdetr_r50vd-m_4xb4-72e_coco.py',
    'rtdetrv2_r50vd_6x_coco_ema.pth': 'configs/rtdetr/rtdetr_r50vd_4xb4-72e_coco.py',
    'rtdetrv2_r101vd_6x_coco_from_paddle.pth': 'configs/rtdetr/rtdetr_r101vd_4xb4-72e_coco.py',
    'rtdetrv2_hgnetv2_l_6x_coco_from_paddle.pth': 'configs/rtdetr/rtdetr_hgnetv2-l_4xb4-72e_coco.py',
    'rtdetrv2_hgnetv2_x_6x_coco_from_paddle.pth': 'configs/rtdetr/rtdetr_hgnetv2-x_4xb4-72e_coco.py',
}
REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def parse_args():
    parser = argparse.ArgumentParser(description='Official RT-DETR checkpoint -> mmeff checkpoint')
    parser.add_argument('src', nargs='?', help='official checkpoint (.pth), e.g. as downloaded from the release')
    parser.add_argument('dst', nargs='?', help='mmeff checkpoint to write')
    parser.add_argument('--config', help='mmeff config of the matching model, to check the result (default: the '
                        'config of an official release file\'s name)')
    parser.add_argument('--list', action='store_true', help='the official release files and their configs')
    args = parser.parse_args()
    if not args.list and not (args.src and args.dst):
        parser.error('SRC and DST are required (or --list)')
    return args


def list_releases():
    for name, config in RELEASES.items():
        print(f'{config}\t{RELEASE_URL}{name}')


def check_against_config(state_dict, config: str) -> list:
    """Lines describing every difference from the config's model (empty when they agree)."""
    import mmeff  # noqa: F401  (registers the modules the config names)
    cfg = Config.fromfile(config)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    model = DET_MODELS.build(cfg.model)
    diff = compare_with_model(state_dict, model.state_dict())
    return [f'{kind} ({len(items)}): {items}' for kind, items in diff.items() if items]


def main():
    args = parse_args()
    if args.list:
        return list_releases()
    if not args.config and osp.basename(args.src) in RELEASES:
        args.config = osp.join(REPO, RELEASES[osp.basename(args.src)])
        print(f'{osp.basename(args.src)} is the official release of {RELEASES[osp.basename(args.src)]}')
    try:
        checkpoint = convert_checkpoint(args.src)
    except UnmappedKeysError as error:
        sys.exit(f'error: {error.args[0]}')
    if args.config:
        problems = check_against_config(checkpoint['state_dict'], args.config)
        if problems:
            sys.exit(f'error: the converted weights do not fit the model of {args.config} (wrong '
                     'config for this checkpoint?):\n  ' + '\n  '.join(problems))
    # Save only after every check passed: a written file is a usable one.
    torch.save(checkpoint, args.dst)
    meta = checkpoint['meta']
    print(f"{args.src} ({meta['official_version']}): {len(checkpoint['state_dict'])} tensors "
          f"written to {args.dst}; dropped {len(meta['dropped_official_keys'])} recomputed/constant "
          f'entries' + (f'; matches {args.config}' if args.config else
                        '; not checked against a model (--config CONFIG checks it; --list: the official files)'))


if __name__ == '__main__':
    main()
