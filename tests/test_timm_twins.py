"""Every registered timm twin: timm's random weights converted into mmeff give the same logits.

The default suite checks the smallest registered variant of each architecture; the slow suite the rest.
"""
import json

import pytest

import mmeff.models  # noqa: F401  (registers the modules and their twins)
from helpers.timm_parity import timm_logit_diff
from mmeff.models.timm_twins import TIMM_TWINS

pytestmark = pytest.mark.usefixtures('mmpretrain_scope')
pytest.importorskip('timm')


def twin_params():
    seen = set()
    for config, twin in TIMM_TWINS.items():
        marks = [pytest.mark.slow] if twin.arch in seen else []
        seen.add(twin.arch)
        yield pytest.param(config, marks=marks, id=config)


@pytest.mark.parametrize('config', list(twin_params()))
def test_logits_match_timm(config):
    assert timm_logit_diff(TIMM_TWINS[config]) <= 1e-5


def test_speed_comparison_script(tmp_path):
    from conftest import run_tool
    out_json, out_csv, plot = tmp_path / 'twins.json', tmp_path / 'twins.csv', tmp_path / 'ratios.png'
    proc = run_tool('tools/analysis/backbone_speed_vs_timm.py', '--arch', 'vit', '--batch-sizes', '1', '2',
                    '--warmup', '0', '--repeats', '1', '--threads', '1', '--control',
                    '--out', str(out_json), str(out_csv), '--plot', str(plot))
    [result] = json.loads(out_json.read_text())
    assert result['timm_name'] == 'vit_tiny_patch16_224' and set(result['per_batch_size']) == {'1', '2'}
    for numbers in result['per_batch_size'].values():
        assert numbers['max_logit_diff'] <= 1e-5  # the timed models compute the same function
        assert numbers['ratio'] == pytest.approx(numbers['mmeff_img_s'] / numbers['timm_img_s'])
        assert numbers['control_ratio_q1'] <= numbers['control_ratio'] <= numbers['control_ratio_q3']
    assert len(out_csv.read_text().splitlines()) == 3 and plot.stat().st_size > 1000
    assert 'vit/vit/vit_tiny_p16_in1k-224.py' in proc.stdout
