"""The demo configs of CvT, Wave-ViT, ResT and HaloNet train one epoch and evaluate (tools/train.py)."""
import pytest

from conftest import train_demo

DEMOS = ['configs/hvit/cvt/cvt_13_demo-64.py', 'configs/hvit/wavevit/wavevit_s_demo-64.py',
         'configs/hvit/rest/rest_lite_demo-64.py', 'configs/hvit/halonet/halonet_h0_demo-64.py']


@pytest.mark.slow
@pytest.mark.parametrize('config', DEMOS)
def test_demo_trains_and_evaluates(config, tmp_path):
    proc = train_demo(config, tmp_path, 1)
    assert 'accuracy/top1' in proc.stdout + proc.stderr
