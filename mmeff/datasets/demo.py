"""The bundled demo data: small synthetic detection and classification sets.

Nothing is downloaded and nothing large is committed: the images are drawn deterministically
(fixed seeds) on first use into a cache directory (``$MMEFF_CACHE``, default ``~/.cache/mmeff``),
in the layouts mmdet (COCO json) and mmpretrain (one folder per class) read. Every process that
asks for them gets the same files; concurrent first uses (one per rank) are safe.
"""
import json
import os
import os.path as osp
import shutil
import tempfile
from typing import Optional

import cv2
import numpy as np
from mmdet.datasets import CocoDataset
from mmpretrain.datasets import CustomDataset

from mmeff.registry import CLS_DATASETS, DET_DATASETS

# Bump when the drawing changes, so old caches are not reused.
DEMO_VERSION = 1
SHAPES = ('circle', 'square', 'triangle', 'cross')
COCO_SPLITS = dict(train=240, val=60)
CLS_SPLITS = dict(train=320, val=80)


def cache_dir() -> str:
    return os.environ.get('MMEFF_CACHE', osp.join(osp.expanduser('~'), '.cache', 'mmeff'))


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth colour gradient plus noise, so that shapes are not found by a flat threshold."""
    top, bottom = rng.integers(0, 160, size=(2, 3))
    ramp = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    img = top * (1 - ramp) + bottom * ramp + rng.normal(0, 12, size=(h, w, 3))
    return np.broadcast_to(img, (h, w, 3)).clip(0, 255).astype(np.uint8)


def _draw(img: np.ndarray, shape: str, cx: float, cy: float, r: float, color) -> None:
    color = tuple(int(c) for c in color)
    if shape == 'circle':
        cv2.circle(img, (round(cx), round(cy)), round(r), color, -1, cv2.LINE_AA)
    elif shape == 'square':
        cv2.rectangle(img, (round(cx - r), round(cy - r)), (round(cx + r), round(cy + r)), color, -1)
    elif shape == 'triangle':
        pts = np.array([[cx, cy - r], [cx - r, cy + r], [cx + r, cy + r]], np.int32)
        cv2.fillPoly(img, [pts], color, cv2.LINE_AA)
    else:  # cross: two bars
        t = max(2, round(r / 3))
        cv2.rectangle(img, (round(cx - r), round(cy - t)), (round(cx + r), round(cy + t)), color, -1)
        cv2.rectangle(img, (round(cx - t), round(cy - r)), (round(cx + t), round(cy + r)), color, -1)


def _boxes_overlap(box, boxes, margin=2.0) -> bool:
    x0, y0, x1, y1 = box
    return any(x0 < b[2] + margin and b[0] < x1 + margin and y0 < b[3] + margin and b[1] < y1 + margin
               for b in boxes)


def _detection_image(rng: np.random.Generator, size: int, max_objects: int):
    """One image with 0..max_objects non-overlapping shapes; about 1 in 12 images has none."""
    img = _background(rng, size, size)
    objects = []
    num = 0 if rng.random() < 1 / 12 else int(rng.integers(1, max_objects + 1))
    for _ in range(num * 10):  # rejection sampling of free positions
        if len(objects) == num:
            break
        r = float(rng.uniform(size * 0.05, size * 0.18))
        cx, cy = rng.uniform(r + 1, size - r - 1, size=2)
        box = (cx - r, cy - r, cx + r, cy + r)
        if _boxes_overlap(box, [o[1] for o in objects]):
            continue
        label = int(rng.integers(len(SHAPES)))
        _draw(img, SHAPES[label], cx, cy, r, rng.integers(100, 256, size=3))
        objects.append((label, box))
    return img, objects


def _write_atomically(target: str, build) -> str:
    """Build into a temporary sibling directory and rename it into place (ranks may race)."""
    if osp.isdir(target):
        return target
    os.makedirs(osp.dirname(target), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=osp.basename(target) + '.', dir=osp.dirname(target))
    try:
        build(tmp)
        os.rename(tmp, target)
    except OSError:
        if not osp.isdir(target):  # not a lost race with another process: a real failure
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def ensure_demo_coco(root: str = None, image_size: int = 256, max_objects: int = 4) -> str:
    """Return the root of the demo COCO set, drawing it first if needed.

    Layout: ``{train,val}/*.jpg`` and ``annotations/{train,val}.json``.
    """
    root = root or osp.join(cache_dir(), f'demo_coco_v{DEMO_VERSION}')

    def build(tmp):
        categories = [dict(id=i + 1, name=name) for i, name in enumerate(SHAPES)]
        os.makedirs(osp.join(tmp, 'annotations'))
        for seed, (split, count) in enumerate(COCO_SPLITS.items()):
            rng = np.random.default_rng(seed)
            os.makedirs(osp.join(tmp, split))
            images, annotations = [], []
            for image_id in range(1, count + 1):
                img, objects = _detection_image(rng, image_size, max_objects)
                file_name = f'{image_id:06d}.jpg'
                cv2.imwrite(osp.join(tmp, split, file_name), img, [cv2.IMWRITE_JPEG_QUALITY, 92])
                images.append(dict(id=image_id, file_name=file_name, width=image_size, height=image_size))
                for label, (x0, y0, x1, y1) in objects:
                    annotations.append(
                        dict(id=len(annotations) + 1, image_id=image_id, category_id=label + 1,
                             bbox=[x0, y0, x1 - x0, y1 - y0], area=(x1 - x0) * (y1 - y0), iscrowd=0))
            with open(osp.join(tmp, 'annotations', f'{split}.json'), 'w') as f:
                json.dump(dict(images=images, annotations=annotations, categories=categories), f)

    return _write_atomically(root, build)


def ensure_demo_classification(root: str = None, image_size: int = 64) -> str:
    """Return the root of the demo classification set: ``{train,val}/<class>/*.png`` listed with
    their labels in ``{train,val}.txt``."""
    root = root or osp.join(cache_dir(), f'demo_cls_v{DEMO_VERSION}')

    def build(tmp):
        for seed, (split, count) in enumerate(CLS_SPLITS.items(), start=100):
            rng = np.random.default_rng(seed)
            lines = []
            for name in SHAPES:
                os.makedirs(osp.join(tmp, split, name))
            for i in range(count):
                label = i % len(SHAPES)
                img = _background(rng, image_size, image_size)
                r = rng.uniform(image_size * 0.2, image_size * 0.4)
                cx, cy = rng.uniform(r, image_size - r, size=2)
                _draw(img, SHAPES[label], cx, cy, r, rng.integers(100, 256, size=3))
                file_name = f'{SHAPES[label]}/{i:05d}.png'
                cv2.imwrite(osp.join(tmp, split, file_name), img)
                lines.append(f'{file_name} {label}\n')
            with open(osp.join(tmp, f'{split}.txt'), 'w') as f:
                f.writelines(lines)

    return _write_atomically(root, build)


def _check_split(split: str) -> None:
    if split not in ('train', 'val'):
        raise ValueError(f"the demo datasets have the splits 'train' and 'val', got {split!r}")


@DET_DATASETS.register_module()
class DemoCocoDataset(CocoDataset):
    """The synthetic shapes detection set (COCO format, 4 classes); ``data_root=None`` draws and
    uses the cached default."""
    METAINFO = dict(classes=SHAPES, palette=[(220, 20, 60), (0, 128, 255), (0, 200, 0), (255, 160, 0)])

    def __init__(self, split: str = 'train', data_root: Optional[str] = None, **kwargs):
        _check_split(split)
        super().__init__(
            data_root=data_root or ensure_demo_coco(),
            ann_file=f'annotations/{split}.json',
            data_prefix=dict(img=f'{split}/'),
            **kwargs)


@CLS_DATASETS.register_module()
class DemoClassificationDataset(CustomDataset):
    """The synthetic shapes classification set (4 classes); ``data_root=None`` draws and uses the
    cached default."""
    METAINFO = dict(classes=SHAPES)

    def __init__(self, split: str = 'train', data_root: Optional[str] = None, **kwargs):
        _check_split(split)
        super().__init__(
            data_root=data_root or ensure_demo_classification(), ann_file=f'{split}.txt', data_prefix=split,
            **kwargs)
