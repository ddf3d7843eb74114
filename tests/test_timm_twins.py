"""Every registered timm twin: timm's random weights converted into mmeff give the same logits.

The default suite checks the smallest registered variant of each architecture; the slow suite the rest.

The bound (``mmeff.converters.twins.RELATIVE_TOLERANCE``, shared with ``tools/convert_timm.py``) is
relative to the spread (std) of timm's logits, whose scale depends on the architecture (0.4 for MLP-Mixer,
~1e3..1e12 for FastViT, whose multi-branch blocks add up), and the logits must depend on the input: with
weights that zero the features the logits are the head's bias and any backbone would pass.
"""
import json

import numpy as np
import pytest
import torch

import mmeff.models  # noqa: F401  (registers the modules)
from mmeff.converters.twins import RELATIVE_TOLERANCE, TIMM_TWINS, parity_problems

from helpers.timm_parity import timm_logit_diff

pytestmark = pytest.mark.usefixtures('mmpretrain_scope')
pytest.importorskip('timm')


def twin_params():
    seen = set()
    for config, twin in TIMM_TWINS.items():
        marks = [pytest.mark.slow] if twin.arch in seen else []
        seen.add(twin.arch)
        yield pytest.param(config, marks=marks, id=config)


def test_every_twin_architecture_has_a_tolerance():
    assert {twin.arch for twin in TIMM_TWINS.values()} == set(RELATIVE_TOLERANCE)


@pytest.mark.parametrize('config', list(twin_params()))
def test_logits_match_timm(config):
    twin = TIMM_TWINS[config]
    result = timm_logit_diff(twin)
    # logits not ~constant, not the same for every image, and within the architecture's tolerance
    # (mmeff.converters.twins.RELATIVE_TOLERANCE, which tools/convert_timm.py applies too)
    assert not parity_problems(twin, result), (parity_problems(twin, result), result)


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
        # --repeats 1 times one pair, whose ratio is also its quartiles (fails if --repeats is lost on
        # the way); how the ratios are computed: test_control_ratio_is_timm_over_its_copy
        assert 0 < numbers['control_ratio_q1'] == numbers['control_ratio'] == numbers['control_ratio_q3'] < float('inf')
    assert len(out_csv.read_text().splitlines()) == 3 and plot.stat().st_size > 1000
    assert 'vit/vit/vit_tiny_p16_in1k-224.py' in proc.stdout


def test_control_ratio_is_timm_over_its_copy(monkeypatch):
    """``control_ratio`` and its quartiles come from the pairs (timm, timm's copy), ``ratio`` from
    (timm, mmeff): fixed call times in, the hand-computed medians and quartiles out."""
    from mmeff.benchmark import twins as bench_twins

    class Model(torch.nn.Module):
        def forward(self, x, mode='tensor'):
            return x

    times = dict(timm=[1., 2., 3., 4.], mmeff=[2., 2., 2., 2.], timm_copy=[4., 4., 1., 1.])
    monkeypatch.setattr(bench_twins, 'fused_pair', lambda twin: dict(timm=Model(), mmeff=Model()))
    monkeypatch.setattr(bench_twins, 'time_interleaved', lambda fns, warmup, repeats: {
        name: dict(median=float(np.median(times[name])), times=times[name]) for name in fns})
    [twin] = [t for t in TIMM_TWINS.values() if t.timm_name == 'vit_tiny_patch16_224']
    [numbers] = bench_twins.twin_throughput(twin, batch_sizes=[1], control=True)['per_batch_size'].values()
    # timm / mmeff: 0.5, 1, 1.5, 2; timm / copy: 0.25, 0.5, 3, 4 (numpy's linear quartiles)
    assert numbers['ratio'] == pytest.approx(1.25) and numbers['ratio_q1'] == pytest.approx(0.875)
    assert numbers['ratio_q3'] == pytest.approx(1.625)
    assert numbers['control_ratio'] == pytest.approx(1.75) and numbers['control_ratio_q1'] == pytest.approx(0.4375)
    assert numbers['control_ratio_q3'] == pytest.approx(3.25)
    assert numbers['timm_img_s'] == pytest.approx(1 / 2.5) and numbers['mmeff_img_s'] == pytest.approx(1 / 2)
