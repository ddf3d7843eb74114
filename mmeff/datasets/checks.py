"""Pre-flight checks of a config's data, run by ``tools/train.py`` and ``tools/test.py``.

The failures they catch otherwise show up late and obscurely: a ``KeyError`` deep in the dataset,
a missing image when its batch loads, or, worst, a run that trains fine but with wrong labels: 0
mAP when the class names or ``num_classes`` do not match the annotations, or boxes carrying each
other's names when the classes are listed in another order than the annotation file's. Each error
names the problem and the fix.
"""
import json
import os
import os.path as osp
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from mmengine.config import Config, ConfigDict
from mmengine.registry import DATASETS

COCO_KEYS = ('images', 'annotations', 'categories')
# Up to this many listed images every file is looked for; above it an evenly spread sample.
ALL_FILES_UP_TO = 10000
FILE_SAMPLE = 1000


class DataConfigError(ValueError):
    """A dataset or annotation problem that the user must fix in the data or the config."""


def load_coco_annotations(path: str) -> dict:
    """Read and validate a COCO-format annotation file."""
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
    names = [c.get('name') for c in coco['categories']]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise DataConfigError(f'annotation file {path!r} lists the categories {repeated} more than once; each '
                              'category needs a name of its own.')
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
    return coco


def check_coco_annotations(path: str) -> List[str]:
    """Validate a COCO-format annotation file and return its category names, in the file's order
    (the order in which mmdet's ``CocoDataset`` numbers the labels)."""
    return [c['name'] for c in load_coco_annotations(path)['categories']]


def check_class_names(classes: Sequence[str], file_classes: Sequence[str], path: str) -> None:
    """Every configured class must be a category of the file, in the file's order.

    mmdet's ``CocoDataset`` (and ``CocoMetric``) give label i to the i-th of the configured classes
    *in the order the file lists them*, while everything that names a label (``dataset_meta``, the
    visualizer, the inferencers, a model trained elsewhere) reads the configured order: listed in
    another order, every box carries another class's name.
    """
    absent = [name for name in classes if name not in file_classes]
    if absent:
        raise DataConfigError(
            f'the classes {absent} of the dataset metainfo are not categories of {path!r} '
            f'(its categories: {list(file_classes)}); fix `metainfo=dict(classes=...)` in the dataset config, '
            'otherwise these classes get no ground truth and evaluate to 0 AP.')
    in_file_order = [name for name in file_classes if name in classes]
    if list(classes) != in_file_order:
        raise DataConfigError(
            f'the dataset metainfo lists the classes as {tuple(classes)} but {path!r} lists them as '
            f'{tuple(in_file_order)}: mmdet numbers the labels in the file\'s order, so every box would carry '
            f'another class\'s name. Fix: `metainfo=dict(classes={tuple(in_file_order)})` (the file\'s order), or '
            'reorder "categories" in the annotation file to the configured order.')


def check_files_exist(files: Sequence[str], prefix: str, listed_in: str) -> None:
    """Every listed image must exist under ``prefix`` (for long lists: an evenly spread sample)."""
    if not files:
        return
    step = 1 if len(files) <= ALL_FILES_UP_TO else len(files) // FILE_SAMPLE
    checked = files[::step]
    missing = [name for name in checked if not osp.isfile(osp.join(prefix, name))]
    if missing:
        scope = f'{len(missing)} of the {len(checked)} checked' if step > 1 else f'{len(missing)} of the {len(files)}'
        raise DataConfigError(
            f'{scope} images listed in {listed_in!r} are missing under {prefix!r}, e.g. {missing[:5]}: check '
            '`data_root` and `data_prefix` of the dataset in your config (or the file names in the annotations).')


def check_class_folders(classes: Sequence[str], image_root: str) -> None:
    """A folder-per-class dataset numbers the labels in the folders' sorted order; configured class
    names that are folder names must be at their folder's index."""
    if not osp.isdir(image_root):
        raise FileNotFoundError(f'image folder {image_root!r} does not exist: check `data_root` and `data_prefix` '
                                'of the dataset in your config.')
    folders = sorted(entry.name for entry in os.scandir(image_root) if entry.is_dir())
    misplaced = [name for i, name in enumerate(classes) if name in folders and folders.index(name) != i]
    if misplaced:
        raise DataConfigError(
            f'the dataset metainfo lists the classes as {tuple(classes)} but the class folders of {image_root!r} '
            f'are numbered in sorted order {tuple(folders)}: {misplaced} would carry another class\'s name. Fix: '
            f'`metainfo=dict(classes={tuple(folders)})`, or an `ann_file` that lists each image with its label.')


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


def _dataset_class(dataset: ConfigDict, cfg: Config) -> Optional[type]:
    if not isinstance(dataset.get('type'), str):
        return dataset.get('type')
    with DATASETS.switch_scope_and_registry(cfg.get('default_scope')) as registry:
        return registry.get(dataset.get('type'))


def _prefix(dataset: ConfigDict, key: str) -> str:
    """The dataset's image folder, as mmengine's ``BaseDataset`` joins it with ``data_root``."""
    prefix = dataset.get('data_prefix', '')
    prefix = prefix.get(key, '') if isinstance(prefix, dict) else prefix
    return osp.join(dataset.get('data_root') or '', prefix)


def _check_classification_dataset(dataset: ConfigDict, classes: Sequence[str]) -> None:
    """mmpretrain's ``CustomDataset`` family: an annotation list (``path label`` lines) or one
    folder per class."""
    image_root = _prefix(dataset, 'img_path')
    ann_file = dataset.get('ann_file')
    if ann_file:
        path = osp.join(dataset.get('data_root') or '', ann_file)
        if not osp.isfile(path):
            raise FileNotFoundError(f'annotation file {path!r} does not exist: check `ann_file` and `data_root` '
                                    'of the dataset in your config.')
        with open(path) as f:
            files = [line.strip().rsplit(' ', 1)[0] for line in f if line.strip()]
        check_files_exist(files, image_root, path)
    elif (dataset.get('metainfo') or {}).get('classes') and 'split' not in dataset:  # ImageNet's split: own folders
        check_class_folders(classes, image_root)


def check_data_config(cfg: Config) -> None:
    """Check every dataset of ``cfg``: data root, annotation file, listed images, class names and
    their order vs. the annotations, ``num_classes``.

    A dataset without ``metainfo`` in the config has its class's default classes (e.g. the 80 COCO
    names for ``CocoDataset``): a custom annotation file then fails the class-name check.
    """
    from mmpretrain.datasets import CustomDataset

    num_classes_key, num_classes = _head_num_classes(cfg.get('model'))
    for dataset in _datasets(cfg):
        data_root = dataset.get('data_root')
        if data_root and not osp.isdir(data_root):
            raise FileNotFoundError(
                f'data root {data_root!r} of the {dataset.get("type")} in this config does not exist: put the '
                'dataset there (e.g. COCO under data/coco, ImageNet under data/imagenet) or point the config at '
                'it, e.g. --cfg-options train_dataloader.dataset.data_root=/path/to/data/ (and the val/test ones); '
                'the demo configs (configs/**/*_demo-<size>.py) use the bundled demo data.')
        dataset_cls = _dataset_class(dataset, cfg)
        ann_file = dataset.get('ann_file')
        classes = (dataset.get('metainfo') or {}).get('classes') or \
            (getattr(dataset_cls, 'METAINFO', None) or {}).get('classes') or ()
        coco = None
        if ann_file and str(ann_file).endswith('.json') and 'Coco' in str(dataset.get('type', '')):
            path = osp.join(data_root or '', ann_file)
            coco = load_coco_annotations(path)
            check_class_names(classes, [c['name'] for c in coco['categories']], path)
        if classes and num_classes is not None and num_classes != len(classes):
            raise DataConfigError(
                f'the model predicts num_classes={num_classes} but the {dataset.get("type")} has {len(classes)} '
                f'classes {list(classes)}: set {num_classes_key}={len(classes)} (or fix the dataset '
                '`metainfo=dict(classes=...)`).')
        if coco is not None:
            check_files_exist([im.get('file_name', '') for im in coco['images']], _prefix(dataset, 'img'), path)
        elif isinstance(dataset_cls, type) and issubclass(dataset_cls, CustomDataset) and data_root:
            _check_classification_dataset(dataset, classes)
