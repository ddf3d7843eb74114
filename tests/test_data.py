"""The bundled demo data and the pre-flight checks of data configs."""
import filecmp
import json
import os.path as osp

import pytest
from mmengine.config import Config

from mmeff.datasets import (
    DataConfigError,
    DemoClassificationDataset,
    DemoCocoDataset,
    check_coco_annotations,
    check_data_config,
    ensure_demo_classification,
    ensure_demo_coco,
)
from mmeff.datasets.demo import COCO_SPLITS, SHAPES


def test_demo_coco_is_deterministic_and_valid(tmp_path):
    a = ensure_demo_coco(str(tmp_path / 'a'))
    b = ensure_demo_coco(str(tmp_path / 'b'))
    for split, count in COCO_SPLITS.items():
        ann = osp.join('annotations', f'{split}.json')
        assert filecmp.cmp(osp.join(a, ann), osp.join(b, ann), shallow=False)
        assert check_coco_annotations(osp.join(a, ann)) == list(SHAPES)
        coco = json.load(open(osp.join(a, ann)))
        assert len(coco['images']) == count
        with_boxes = {ann['image_id'] for ann in coco['annotations']}
        # images without boxes are part of the set on purpose (they must train fine)
        assert 0 < len(with_boxes) < count
        assert {ann['category_id'] for ann in coco['annotations']} == {1, 2, 3, 4}
    assert filecmp.cmp(osp.join(a, 'val', '000007.jpg'), osp.join(b, 'val', '000007.jpg'), shallow=False)


def test_demo_datasets_load():
    det = DemoCocoDataset(split='val', pipeline=[])
    assert len(det) == COCO_SPLITS['val'] and det.metainfo['classes'] == SHAPES
    assert osp.isfile(det[0]['img_path'])
    cls = DemoClassificationDataset(split='train', pipeline=[])
    labels = {cls.get_gt_labels()[i] for i in range(len(cls))}
    assert labels == set(range(len(SHAPES))) and cls.metainfo['classes'] == SHAPES
    assert osp.isdir(ensure_demo_classification())
    with pytest.raises(ValueError, match="splits 'train' and 'val'"):
        DemoCocoDataset(split='test')


def _coco_cfg(data_root, ann_file='ann.json', classes=None, num_classes=2):
    dataset = dict(type='CocoDataset', data_root=str(data_root), ann_file=ann_file, data_prefix=dict(img=''))
    if classes:
        dataset['metainfo'] = dict(classes=classes)
    return Config(dict(default_scope='mmdet', model=dict(bbox_head=dict(num_classes=num_classes)),
                       train_dataloader=dict(dataset=dataset)))


def _write(path, obj):
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))


GOOD = dict(images=[dict(id=1, file_name='a.jpg', width=8, height=8)],
            annotations=[dict(id=1, image_id=1, category_id=1, bbox=[0, 0, 4, 4], area=16, iscrowd=0)],
            categories=[dict(id=1, name='cat'), dict(id=2, name='dog')])


def test_good_custom_dataset_passes(tmp_path):
    _write(tmp_path / 'ann.json', GOOD)
    (tmp_path / 'a.jpg').write_bytes(b'')
    check_data_config(_coco_cfg(tmp_path, classes=('cat', 'dog')))


def test_missing_data_root_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"data root .*nowhere.* does not exist.*data_root="):
        check_data_config(_coco_cfg(tmp_path / 'nowhere'))


@pytest.mark.parametrize('content, match', [
    ('{"images": [', 'not valid JSON'),
    (dict(images=[], annotations=[]), r"lacks the list\(s\) \['categories'\]"),
    (dict(GOOD, annotations=[dict(id=7, image_id=1, category_id=9, bbox=[0, 0, 1, 1])]), 'category_id 9'),
    (dict(GOOD, annotations=[dict(id=7, image_id=3, category_id=1, bbox=[0, 0, 1, 1])]), 'image_id 3'),
    (dict(GOOD, annotations=[dict(id=7, image_id=1, category_id=1, bbox=[0, 0, 1])]), r'not \[x, y, width'),
])
def test_malformed_annotation_file(tmp_path, content, match):
    _write(tmp_path / 'ann.json', content)
    with pytest.raises(DataConfigError, match=match):
        check_data_config(_coco_cfg(tmp_path, classes=('cat', 'dog')))


def test_class_names_and_num_classes_mismatch(tmp_path):
    _write(tmp_path / 'ann.json', GOOD)
    # no metainfo: CocoDataset's 80 COCO names, none of which are in this file -> 0 mAP otherwise
    with pytest.raises(DataConfigError, match=r"classes \['person'.* are not categories"):
        check_data_config(_coco_cfg(tmp_path))
    with pytest.raises(DataConfigError, match=r"num_classes=3 .* has 2 classes .*: set model.bbox_head.num_classes=2"):
        check_data_config(_coco_cfg(tmp_path, classes=('cat', 'dog'), num_classes=3))
    demo = Config(dict(default_scope='mmdet', model=dict(bbox_head=dict(num_classes=80)),
                       val_dataloader=dict(dataset=dict(type='DemoCocoDataset', split='val'))))
    with pytest.raises(DataConfigError, match='num_classes=80 .* 4 classes'):
        check_data_config(demo)


# The example of the reliability issue: the file lists triangle (id 7), circle (id 1), square (id 3).
SHUFFLED = [dict(id=7, name='triangle'), dict(id=1, name='circle'), dict(id=3, name='square')]


def _shapes_file(tmp_path, categories):
    """One image with one box of every category; the image file exists."""
    (tmp_path / 'a.jpg').write_bytes(b'')
    annotations = [dict(id=i + 1, image_id=1, category_id=c['id'], bbox=[4 * i, 0, 4, 4], area=16, iscrowd=0)
                   for i, c in enumerate(categories)]
    _write(tmp_path / 'ann.json', dict(images=[dict(id=1, file_name='a.jpg', width=64, height=64)],
                                       annotations=annotations, categories=categories))


def _labels_named(tmp_path, classes):
    """What mmdet's CocoDataset makes of the file: the configured name of each box's label, next
    to the category name the file gives the box."""
    from mmdet.datasets import CocoDataset
    dataset = CocoDataset(data_root=str(tmp_path), ann_file='ann.json', data_prefix=dict(img=''),
                          metainfo=dict(classes=classes), pipeline=[], filter_cfg=None)
    names = {c['id']: c['name'] for c in json.loads((tmp_path / 'ann.json').read_text())['categories']}
    coco = json.loads((tmp_path / 'ann.json').read_text())
    by_box = {tuple(a['bbox']): names[a['category_id']] for a in coco['annotations']}
    return [(classes[inst['bbox_label']], by_box[(inst['bbox'][0], inst['bbox'][1], inst['bbox'][2] - inst['bbox'][0],
                                                   inst['bbox'][3] - inst['bbox'][1])])
            for inst in dataset.get_data_info(0)['instances']]


@pytest.mark.parametrize('categories, classes, accepted', [
    (SHUFFLED, ('circle', 'square', 'triangle'), False),  # sorted names, file in another order
    (SHUFFLED, ('triangle', 'circle', 'square'), True),  # the file's order
    (SHUFFLED, ('circle', 'triangle'), False),  # a subset, out of the file's order
    (SHUFFLED, ('triangle', 'square'), True),  # a subset in the file's order
    ([dict(id=2, name='dog'), dict(id=40, name='cat'), dict(id=9, name='bird')], ('dog', 'cat', 'bird'), True),  # gaps
    ([dict(id=2, name='dog'), dict(id=40, name='cat'), dict(id=9, name='bird')], ('bird', 'cat', 'dog'), False),
])
def test_class_order_is_checked_against_the_labels_mmdet_gives(tmp_path, categories, classes, accepted):
    """The check accepts exactly the configs under which every box carries its own name."""
    _shapes_file(tmp_path, categories)
    pairs = _labels_named(tmp_path, classes)
    assert all(named == true for named, true in pairs) == accepted, pairs
    cfg = _coco_cfg(tmp_path, classes=classes, num_classes=len(classes))
    if accepted:
        check_data_config(cfg)
    else:
        with pytest.raises(DataConfigError, match=r"but .* lists them as \(.*Fix: `metainfo=dict\(classes=") as e:
            check_data_config(cfg)
        print(e.value)


def test_repeated_category_names_are_refused(tmp_path):
    _shapes_file(tmp_path, [dict(id=1, name='cat'), dict(id=2, name='cat')])
    with pytest.raises(DataConfigError, match=r"categories \['cat'\] more than once"):
        check_data_config(_coco_cfg(tmp_path, classes=('cat', ), num_classes=1))


def test_missing_images_are_named_before_the_run(tmp_path, monkeypatch):
    images = [dict(id=i, file_name=f'{i}.jpg', width=8, height=8) for i in range(1, 6)]
    for image in images[:3]:
        (tmp_path / image['file_name']).write_bytes(b'')
    _write(tmp_path / 'ann.json', dict(GOOD, images=images))
    with pytest.raises(DataConfigError, match=r"2 of the 5 images listed in .* missing under .*\['4.jpg', '5.jpg'\]"):
        check_data_config(_coco_cfg(tmp_path, classes=('cat', 'dog')))
    import mmeff.datasets.checks as checks
    monkeypatch.setattr(checks, 'ALL_FILES_UP_TO', 2)  # a large set: an evenly spread sample is checked
    monkeypatch.setattr(checks, 'FILE_SAMPLE', 2)
    with pytest.raises(DataConfigError, match=r"1 of the 3 checked images .*\['5.jpg'\]"):
        check_data_config(_coco_cfg(tmp_path, classes=('cat', 'dog')))


def _folders_cfg(root, classes, ann_file=None):
    dataset = dict(type='CustomDataset', data_root=str(root), data_prefix='', metainfo=dict(classes=classes))
    if ann_file:
        dataset['ann_file'] = ann_file
    return Config(dict(default_scope='mmpretrain', model=dict(head=dict(num_classes=len(classes))),
                       train_dataloader=dict(dataset=dataset)))


def test_classification_folders_and_lists(tmp_path):
    """mmpretrain numbers class folders in sorted order: configured names must agree with it."""
    for name in ('cat', 'dog'):
        (tmp_path / name).mkdir()
        (tmp_path / name / '0.png').write_bytes(b'')
    check_data_config(_folders_cfg(tmp_path, ('cat', 'dog')))
    with pytest.raises(DataConfigError, match=r"numbered in sorted order \('cat', 'dog'\).*\['dog', 'cat'\]"):
        check_data_config(_folders_cfg(tmp_path, ('dog', 'cat')))
    # an annotation list gives each image its label: the order is the user's; the files must exist
    (tmp_path / 'list.txt').write_text('dog/0.png 0\ncat/0.png 1\ncat/1.png 1\n')
    with pytest.raises(DataConfigError, match=r"1 of the 3 images .*\['cat/1.png'\]"):
        check_data_config(_folders_cfg(tmp_path, ('dog', 'cat'), 'list.txt'))
