"""Pre-flight checks of a config's data, run by ``tools/train.py`` and ``tools/test.py``.

The failures they catch otherwise show up late and obscurely: a ``KeyError`` deep in the dataset,
or, worst, a run that trains fine and evaluates to 0 mAP because the class names or ``num_classes``
do not match the annotations. Each error names the problem and the fix.
"""
import json
import os.path as osp
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from mmengine.config import Config, ConfigDict
from mmengine.registry import DATASETS

COCO_KEYS = ('images', 'annotations', 'categories')


class DataConfigError(ValueError):
    """A dataset or annotation problem that the user must fix in the data or the config."""


def check_coco_annotations(path: str) -> List[str]:
    """Validate a COCO-format annotation file and return its category names (in id order)."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'annotation file {path!r} does not exist: check `ann_file` and `data_root` '
                                'of the dataset in your config.')
    try:
        with open(path) as f:
            coco = json.load(f)
    except json.JSONDecodeError as e:
        raise DataConfigError(f'annotation file {path!r} is not valid JSON ({e}); re-export it in COCO '
                              'format.') from e
    missing = [key for key in COCO_KEYS if not isinstance(coco, dict) or not isinstance(coco.get(key), list)]
    if missing:
        raise DataConfigError(f'annotation file {path!r} is not in COCO format: it lacks the list(s) '
                              f'{missing}; a COCO file has "images", "annotations" and "categories".')
    category_ids = {c.get('id') for c in coco['categories']}
    image_ids = {im.get('id') for im in coco['images']}
    for ann in coco['annotations']:
        bbox = ann.get('bbox')
        problem = None
        if ann.get('image_id') not in image_ids:
            problem = f'its image_id {ann.get("image_id")!r} is not in "images"'
        elif ann.get('category_id') not in category_ids:
            problem = f'its category_id {ann.get("category_id")!r} is not in "categories" {sorted(category_ids)}'
        elif not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
            problem = f'its bbox {bbox!r} is not [x, y, width, height]'
        if problem:
            raise DataConfigError(f'annotation file {path!r}: annotation id {ann.get("id")!r} is malformed: '
                                  f'{problem}.')
    return [c['name'] for c in sorted(coco['categories'], key=lambda c: c['id'])]


def check_class_names(classes: Sequence[str], file_classes: Sequence[str], path: str) -> None:
    """Every configured class must exist in the annotation file, or it silently gets no boxes."""
    absent = [name for name in classes if name not in file_classes]
    if absent:
        raise DataConfigError(
            f'the classes {absent} of the dataset metainfo are not categories of {path!r} '
            f'(its categories: {list(file_classes)}); fix `metainfo=dict(classes=...)` in the dataset config, '
            'otherwise these classes get no ground truth and evaluate to 0 AP.')


def _datasets(cfg: Config) -> Iterator[ConfigDict]:
    """The innermost dataset configs of every dataloader (through wrappers such as RepeatDataset)."""
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg.get(key)
        dataset = loader.get('dataset') if loader else None
        while dataset is not None:
            if 'dataset' in dataset:
                dataset = dataset['dataset']
            elif 'datasets' in dataset:
                yield from dataset['datasets']
                break
            else:
                yield dataset
                break


def _head_num_classes(model: Optional[Dict]) -> Tuple[Optional[str], Optional[int]]:
    """``('model.bbox_head.num_classes', 80)`` for the model's classification head, if it has one."""
    for key in ('bbox_head', 'head', 'roi_head'):
        head = (model or {}).get(key)
        if isinstance(head, dict) and 'num_classes' in head:
            return f'model.{key}.num_classes', head['num_classes']
        if isinstance(head, dict) and isinstance(head.get('bbox_head'), dict):
            return f'model.{key}.bbox_head.num_classes', head['bbox_head'].get('num_classes')
    return None, None


def _default_classes(dataset: ConfigDict, cfg: Config) -> Sequence[str]:
    with DATASETS.switch_scope_and_registry(cfg.get('default_scope')) as registry:
        dataset_cls = registry.get(dataset.get('type')) if isinstance(dataset.get('type'), str) else dataset.get('type')
    return (getattr(dataset_cls, 'METAINFO', None) or {}).get('classes') or ()


def check_data_config(cfg: Config) -> None:
    """Check every dataset of ``cfg``: data root, annotation file, class names vs. ``num_classes``.

    A dataset without ``metainfo`` in the config has its class's default classes (e.g. the 80 COCO
    names for ``CocoDataset``): a custom annotation file then fails the class-name check.
    """
    num_classes_key, num_classes = _head_num_classes(cfg.get('model'))
    for dataset in _datasets(cfg):
        data_root = dataset.get('data_root')
        if data_root and not osp.isdir(data_root):
            raise FileNotFoundError(
                f'data root {data_root!r} of the {dataset.get("type")} in this config does not exist: put the '
                'dataset there (e.g. COCO under data/coco, ImageNet under data/imagenet) or point the config at '
                'it, e.g. --cfg-options train_dataloader.dataset.data_root=/path/to/data/ (and the val/test ones); '
                'the configs under configs/demo/ use the bundled demo data.')
        ann_file = dataset.get('ann_file')
        classes = (dataset.get('metainfo') or {}).get('classes') or _default_classes(dataset, cfg)
        if ann_file and str(ann_file).endswith('.json') and 'Coco' in str(dataset.get('type', '')):
            path = osp.join(data_root or '', ann_file)
            check_class_names(classes, check_coco_annotations(path), path)
        if classes and num_classes is not None and num_classes != len(classes):
            raise DataConfigError(
                f'the model predicts num_classes={num_classes} but the {dataset.get("type")} has {len(classes)} '
                f'classes {list(classes)}: set {num_classes_key}={len(classes)} (or fix the dataset '
                '`metainfo=dict(classes=...)`).')
