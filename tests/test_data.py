"""The bundled demo data and the pre-flight checks of data configs."""
import filecmp
import json
import os.path as osp

import pytest
from mmengine.config import Config

from mmeff.datasets import (DataConfigError, DemoClassificationDataset, DemoCocoDataset, check_coco_annotations,
                            check_data_config, ensure_demo_classification, ensure_demo_coco)
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
