"""Convert an official RT-DETR checkpoint (lyuwenyu/RT-DETR, v1 or v2) to an mmeff checkpoint.

    python tools/convert_rtdetr_official.py rtdetr_r50vd_6x_coco_from_paddle.pth rtdetr_r50_mmeff.pth \
        [--config configs/rtdetr/rtdetr_r50vd_4xb4-72e_coco.py]

The result loads with ``load_from = 'rtdetr_r50_mmeff.pth'`` in the matching config. Every key is
mapped (see mmeff/converters/rtdetr_official.py) or the tool stops and lists the unmapped
ones; with ``--config`` it also builds that config's model and checks that the converted keys and
shapes are exactly the model's.
"""
import argparse
import sys

import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

from mmeff.converters.rtdetr_official import UnmappedKeysError, compare_with_model, convert_checkpoint
from mmeff.registry import DET_MODELS


def parse_args():
    parser = argparse.ArgumentParser(description='Official RT-DETR checkpoint -> mmeff checkpoint')
    parser.add_argument('src', help='official checkpoint (.pth)')
    parser.add_argument('dst', help='mmeff checkpoint to write')
    parser.add_argument('--config', help='mmeff config of the matching model, to check the result')
    return parser.parse_args()


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
          f'entries' + (f'; matches {args.config}' if args.config else ''))


if __name__ == '__main__':
    main()
