"""Token-sequence reducers: the no-op settings reproduce plain ViT, the others do what the papers say."""
import pytest
import torch

import mmeff.models  # noqa: F401  (registers the modules)
from mmeff.models.backbones.vit_with_mixer import ViTWithMixer
from mmeff.models.layers.token_reducers import EViTReorganize, TokenLearner, ToMeMerge, class_attention
from mmeff.models.layers.vit_blocks import TokenState
from mmeff.models.mixers.softmax_attention import SoftmaxAttention

pytestmark = pytest.mark.usefixtures('mmpretrain_scope')

SMALL = dict(embed_dim=32, depth=4, num_heads=2, mlp_ratio=2.0)


def images(size: int = 64) -> torch.Tensor:
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))


def plain_and_reduced(reducers, **kwargs):
    torch.manual_seed(0)
    plain = ViTWithMixer(arch=SMALL, img_size=64, **kwargs).eval()
    plain.init_weights()
    reduced = ViTWithMixer(arch=SMALL, img_size=64, reducers=reducers, **kwargs).eval()
    reduced.load_state_dict(plain.state_dict(), strict=False)
    return plain, reduced


def token_counts(model: ViTWithMixer, x: torch.Tensor) -> list:
    counts = []
    hooks = [b.mlp.register_forward_hook(lambda m, args, out: counts.append(args[0].shape[1])) for b in model.blocks]
    with torch.no_grad():
        out = model(x)[0]
    for h in hooks:
        h.remove()
    assert torch.isfinite(out).all()
    return counts


@pytest.mark.parametrize('reducers', [
    [dict(type='EViTReorganize', keep_rate=1.0, layer=i) for i in (1, 2)],
    [dict(type='EViTReorganize', keep_rate=1.0, fuse_token=True, layer=1)],
    [dict(type='ToMeMerge', r=0, layer=i) for i in range(4)],
])
def test_no_op_settings_reproduce_plain_vit(reducers):
    plain, reduced = plain_and_reduced(reducers)
    with torch.no_grad():
        diff = (plain(images())[0] - reduced(images())[0]).abs().max().item()
    print(f'{reducers[0]["type"]} no-op vs ViT: max abs diff = {diff:.2e}')
    assert diff < 1e-6


def test_evit_keeps_the_rate_and_fuses_the_rest():
    _, evit = plain_and_reduced([dict(type='EViTReorganize', keep_rate=0.5, layer=1)])
    assert token_counts(evit, images()) == [17, 9, 9, 9]  # 1 + 16 -> 1 + 8
    _, fuse = plain_and_reduced([dict(type='EViTReorganize', keep_rate=0.5, fuse_token=True, layer=1)])
    assert token_counts(fuse, images()) == [17, 10, 10, 10]


def test_evit_fused_token_is_attention_weighted_average_of_inattentive_tokens():
    mixer = SoftmaxAttention(16, 2)
    x = torch.randn(1, 9, 16)
    _, query_key = mixer(x, None, return_query_key=True)
    out, _ = EViTReorganize(keep_rate=0.5, fuse_token=True)(x, TokenState((2, 4)), query_key)
    scores = class_attention(query_key)[0]
    dropped = scores.argsort(descending=True)[4:]
    expected = (scores[dropped, None] * x[0, 1:][dropped]).sum(0) / scores[dropped].sum()
    kept = x[0, 1:][scores.argsort(descending=True)[:4]]
    assert torch.allclose(out[0, -1], expected, atol=1e-6)
    assert torch.equal(out[0, 1:5], kept) and torch.equal(out[0, 0], x[0, 0])


def test_tome_merges_r_tokens_per_block_and_conserves_size():
    _, tome = plain_and_reduced([dict(type='ToMeMerge', r=3, layer=i) for i in range(4)])
    assert token_counts(tome, images()) == [14, 11, 8, 5]
    mixer = SoftmaxAttention(16, 2)
    x = torch.randn(2, 11, 16)
    _, query_key = mixer(x, None, return_query_key=True)
    out, state = ToMeMerge(r=3)(x, TokenState(None), query_key)
    assert out.shape == (2, 8, 16) and torch.equal(out[:, 0], x[:, 0])
    assert torch.equal(state.token_sizes.sum(1), torch.full((2, 1), 11.0))
    # the size-weighted mean of all tokens is unchanged by merging
    before, after = x.mean(1), (out * state.token_sizes).sum(1) / 11
    assert torch.allclose(before, after, atol=1e-6)


def test_token_learner_summarizes_patches_into_learned_tokens():
    learner = TokenLearner(16, learned_tokens=8)
    x = torch.randn(2, 17, 16)
    out, state = learner(x, TokenState((4, 4)))
    weights = learner.maps(x[:, 1:]).sigmoid()  # B, 16, 8
    expected = torch.einsum('bns,bnc->bsc', weights, x[:, 1:]) / 16
    assert state.hw is None and out.shape == (2, 9, 16)
    assert torch.allclose(out[:, 1:], expected, atol=1e-6) and torch.equal(out[:, 0], x[:, 0])
    _, model = plain_and_reduced([dict(type='TokenLearner', learned_tokens=8, layer=2)])
    assert token_counts(model, images()) == [17, 17, 9, 9]
    # the default: 8 learned tokens, not the skeleton's sequence length (its num_tokens)
    _, model = plain_and_reduced([dict(type='TokenLearner', layer=2)])
    assert token_counts(model, images()) == [17, 17, 9, 9]


def test_reducer_needs_an_attention_that_exposes_its_keys():
    with pytest.raises(ValueError, match='use SoftmaxAttention'):
        ViTWithMixer(arch=SMALL, img_size=64, mixer=dict(type='FourierMixing'),
                     reducers=[dict(type='EViTReorganize', layer=1)])


@pytest.mark.parametrize('reducer', ['DynamicViTPredictor', 'AViTHalting'])
def test_masking_reducer_needs_an_attention_that_honours_the_keep_mask(reducer):
    with pytest.raises(ValueError, match=r'supports_keep_mask\); use SoftmaxAttention'):
        ViTWithMixer(arch=SMALL, img_size=64, mixer=dict(type='LinearAttention'),
                     reducers=[dict(type=reducer, layer=1)])


def test_dynamicvit_keep_ratio_one_reproduces_plain_vit_in_eval():
    plain, dynamic = plain_and_reduced([dict(type='DynamicViTPredictor', keep_ratio=1.0, layer=i) for i in (1, 2)])
    with torch.no_grad():
        diff = (plain(images())[0] - dynamic(images())[0]).abs().max().item()
    print(f'DynamicViT keep ratio 1 vs ViT: max abs diff = {diff:.2e}')
    assert diff < 1e-6


def test_dynamicvit_removes_tokens_in_eval_and_masks_them_in_training():
    stages = ((1, 0.5), (2, 0.25))
    _, dynamic = plain_and_reduced([dict(type='DynamicViTPredictor', keep_ratio=r, layer=i) for i, r in stages])
    assert token_counts(dynamic, images()) == [17, 9, 5, 5]
    dynamic.train()
    assert token_counts(dynamic, images()) == [17, 17, 17, 17]
    _, aux_losses = dynamic(images(), return_aux_losses=True)
    assert set(aux_losses) == {'DynamicViTPredictor'}  # the two stages' ratio losses, summed
    aux_losses['DynamicViTPredictor'].backward()
    grad = dynamic.reducers['1'].score[-1].weight.grad
    assert grad is not None and grad.abs().sum() > 0, 'the ratio loss must train the predictor'


def test_masked_attention_equals_attention_over_kept_tokens():
    mixer = SoftmaxAttention(16, 2).eval()
    x = torch.randn(2, 7, 16)
    keep = torch.tensor([[1, 1, 0, 1, 0, 1, 1], [1, 0, 0, 1, 1, 1, 0]], dtype=torch.float)
    masked = mixer(x, None, keep_mask=keep)
    diffs = []
    for b in range(2):
        idx = keep[b].nonzero().flatten()
        reduced = mixer(x[b:b + 1, idx], None)[0]
        diffs.append((masked[b, idx] - reduced).abs().max().item())
    print(f'masked attention vs attention over kept tokens: max abs diff = {max(diffs):.2e}')
    assert max(diffs) < 1e-5
    diff = (mixer(x, None, keep_mask=torch.ones(2, 7)) - mixer(x, None)).abs().max().item()
    assert diff < 1e-5


def test_dynamicvit_ratio_loss_reaches_the_classifier_loss():
    from mmpretrain.structures import DataSample

    from mmeff.registry import CLS_MODELS
    model = CLS_MODELS.build(dict(
        type='AuxLossImageClassifier',
        backbone=dict(type='ViTWithMixer', arch=SMALL, img_size=64,
                      reducers=[dict(type='DynamicViTPredictor', keep_ratio=0.5, layer=2)]),
        head=dict(type='LinearClsHead', num_classes=4, in_channels=32)))
    model.train()
    samples = [DataSample().set_gt_label(i) for i in (0, 3)]
    losses = model.loss(images(), samples)
    assert set(losses) == {'loss', 'loss_aux_DynamicViTPredictor'}
    sum(losses.values()).backward()
    assert model.backbone.reducers['2'].score[0].weight.grad.abs().sum() > 0


def test_avit_never_halting_reproduces_plain_vit_and_always_halting_masks_patches():
    plain, avit = plain_and_reduced([dict(type='AViTHalting', gate_center=1e4, layer=i) for i in (1, 2, 3)])
    with torch.no_grad():
        diff = (plain(images())[0] - avit(images())[0]).abs().max().item()
    print(f'A-ViT (never halting) vs ViT: max abs diff = {diff:.2e}')
    assert diff < 1e-6
    _, halting = plain_and_reduced([dict(type='AViTHalting', gate_center=-1e4, layer=1)])
    _, state = halting.reducers['1'](torch.randn(2, 17, 32), TokenState.of_patch_grid((4, 4)))
    assert torch.equal(state.keep_mask, torch.cat([torch.ones(2, 1), torch.zeros(2, 16)], 1))
    # every patch runs one step and halts with remainder 1: ponder cost 2 per token
    assert state.aux_losses['AViTHalting'].item() == pytest.approx(5e-4 * 2)
    with torch.no_grad():
        assert torch.isfinite(halting(images())[0]).all()
