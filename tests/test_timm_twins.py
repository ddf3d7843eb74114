"""Every registered timm twin: timm's random weights converted into mmeff give the same logits.

The default suite checks the smallest registered variant of each architecture; the slow suite the rest.
"""
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
