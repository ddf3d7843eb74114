"""Each token mixer against a first-principles computation of its paper's formula."""
import math

import pytest
import torch
import torch.nn.functional as F

import mmeff.models  # noqa: F401  (registers the modules)
from mmeff.models.layers.switch_mlp import SwitchMlp
from mmeff.models.layers.vit_blocks import TOKEN_MIXERS, Mlp
from mmeff.models.mixers.nystromformer import iterative_pinv

pytestmark = pytest.mark.usefixtures('mmpretrain_scope')

B, N, C, HEADS = 2, 10, 16, 2


def tokens(n: int = N, c: int = C, seed: int = 0) -> torch.Tensor:
    return torch.randn(B, n, c, generator=torch.Generator().manual_seed(seed))


def same_qkv_as(mixer: torch.nn.Module, reference: torch.nn.Module) -> None:
    for name in ('qkv', 'proj'):
        getattr(mixer, name).load_state_dict(getattr(reference, name).state_dict())


def report(name: str, actual: torch.Tensor, expected: torch.Tensor, tol: float) -> None:
    diff = (actual - expected).abs().max().item()
    print(f'{name}: max abs diff = {diff:.3e} (tolerance {tol:g})')
    assert actual.shape == expected.shape and diff <= tol


def softmax_reference(embed_dim: int = C) -> torch.nn.Module:
    return TOKEN_MIXERS.build(dict(type='SoftmaxAttention', embed_dim=embed_dim, num_heads=HEADS)).eval()


def test_softmax_attention_is_explicit_softmax():
    mixer, x = softmax_reference(), tokens()
    q, k, v = mixer.split_qkv(x)
    attn = (q @ k.transpose(-1, -2) / math.sqrt(C // HEADS)).softmax(-1)
    expected = mixer.proj((attn @ v).transpose(1, 2).reshape(B, N, C))
    report('softmax attention', mixer(x, None), expected, 1e-5)


def test_linformer_with_identity_projection_is_softmax_attention():
    reference = softmax_reference()
    mixer = TOKEN_MIXERS.build(
        dict(type='LinformerAttention', embed_dim=C, num_heads=HEADS, num_tokens=N, proj_len=N)).eval()
    same_qkv_as(mixer, reference)
    with torch.no_grad():
        mixer.proj_k.copy_(torch.eye(N))
        mixer.proj_v.copy_(torch.eye(N))
    x = tokens()
    report('Linformer (E = F = I)', mixer(x, None), reference(x, None), 1e-5)
    with pytest.raises(ValueError, match='fixed sequence of 10 tokens'):
        mixer(tokens(n=12), None)


def test_linformer_projection_resized_for_another_resolution():
    def make(grid):
        return TOKEN_MIXERS.build(dict(type='LinformerAttention', embed_dim=C, num_heads=HEADS,
                                       num_tokens=1 + grid * grid, num_prefix_tokens=1, proj_len=8))
    src, dst = make(4), make(6)
    dst.load_state_dict(src.state_dict())
    assert dst.proj_k.shape == (8, 37)
    assert torch.equal(dst.proj_k[:, 0], src.proj_k[:, 0])  # class-token column kept


def test_nystrom_with_landmarks_equal_to_tokens_is_softmax_attention():
    torch.manual_seed(0)
    reference = softmax_reference().double()
    mixer = TOKEN_MIXERS.build(
        dict(type='NystromAttention', embed_dim=C, num_heads=HEADS, num_landmarks=N, pinv_iters=60,
             conv_kernel_size=None)).double().eval()
    same_qkv_as(mixer, reference)
    x = tokens().double()
    report('Nystromformer (m = N)', mixer(x, None), reference(x, None), 1e-5)


def test_iterative_pinv_converges_to_pinv():
    a = torch.randn(3, 8, 8, dtype=torch.float64).softmax(-1)
    report('iterative pinv (40 iterations)', iterative_pinv(a, 40), torch.linalg.pinv(a), 1e-6)


def test_nystrom_runs_with_fewer_landmarks_than_tokens():
    mixer = TOKEN_MIXERS.build(dict(type='NystromAttention', embed_dim=C, num_heads=HEADS, num_landmarks=4))
    out = mixer(tokens(n=47), None)
    assert out.shape == (B, 47, C) and torch.isfinite(out).all()


def test_linear_attention_equals_explicit_quadratic_kernel_attention():
    mixer = TOKEN_MIXERS.build(dict(type='LinearAttention', embed_dim=C, num_heads=HEADS))
    x = tokens()
    q, k, v = mixer.split_qkv(x)
    sim = (F.elu(q) + 1) @ (F.elu(k) + 1).transpose(-1, -2)  # B, heads, N, N
    out = (sim / sim.sum(-1, keepdim=True)) @ v
    expected = mixer.proj(out.transpose(1, 2).reshape(B, N, C))
    report('linear attention vs O(N^2)', mixer(x, None), expected, 1e-5)


def test_performer_estimates_softmax_attention():
    torch.manual_seed(0)
    errors = {}
    for m in (8, 4096):
        mixer = TOKEN_MIXERS.build(dict(type='PerformerAttention', embed_dim=C, num_heads=HEADS, num_features=m))
        reference = softmax_reference()
        same_qkv_as(mixer, reference)
        x = 0.5 * tokens()
        expected = reference(x, None)
        errors[m] = ((mixer(x, None) - expected).abs().max() / expected.abs().max()).item()
    print(f'Performer relative error: {errors}')
    assert errors[4096] < 0.05 and errors[4096] < errors[8]


def test_performer_features_are_orthogonal_within_blocks():
    mixer = TOKEN_MIXERS.build(dict(type='PerformerAttention', embed_dim=C, num_heads=HEADS, num_features=8))
    w = F.normalize(mixer.projection, dim=1)
    report('Performer feature orthogonality', w @ w.T, torch.eye(8), 1e-5)


def test_hydra_equals_explicit_per_channel_cosine_attention():
    mixer = TOKEN_MIXERS.build(dict(type='HydraAttention', embed_dim=C))
    x = tokens()
    q, k, v = (t[:, 0] for t in mixer.split_qkv(x))  # B, N, C
    q, k = q / q.norm(dim=-1, keepdim=True), k / k.norm(dim=-1, keepdim=True)
    # head c: the N x N map q[:, c] k[:, c]^T applied to v[:, c]
    attn = q.transpose(1, 2)[..., :, None] * k.transpose(1, 2)[..., None, :]  # B, C, N, N
    out = (attn @ v.transpose(1, 2)[..., None])[..., 0].transpose(1, 2)
    report('Hydra vs explicit C-head attention', mixer(x, None), mixer.proj(out), 1e-5)


def dft_matrix(n: int) -> torch.Tensor:
    idx = torch.arange(n, dtype=torch.float64)
    return torch.exp(-2j * math.pi * idx[:, None] * idx[None, :] / n)


def test_fnet_is_real_part_of_2d_dft():
    mixer = TOKEN_MIXERS.build(dict(type='FourierMixing'))
    x = tokens().double()
    expected = (dft_matrix(N) @ x.to(torch.complex128) @ dft_matrix(C)).real
    report('FNet vs Re(F_N X F_C)', mixer(x, None).double(), expected, 1e-4)


def test_global_filter_is_circular_convolution():
    h, w, c = 4, 6, 3
    mixer = TOKEN_MIXERS.build(dict(type='GlobalFilter', embed_dim=c, grid_size=(h, w), num_prefix_tokens=1))
    kernel = torch.randn(h, w, c, dtype=torch.float64)
    with torch.no_grad():  # with orthonormal FFTs, filter DFT(kernel) convolves with kernel
        mixer.complex_weight.copy_(torch.view_as_real(torch.fft.rfft2(kernel, dim=(0, 1))))
    x = torch.randn(B, 1 + h * w, c)
    grid = x[:, 1:].reshape(B, h, w, c).double()
    expected = torch.zeros_like(grid)
    for di in range(h):
        for dj in range(w):
            expected += kernel[di, dj] * torch.roll(grid, shifts=(di, dj), dims=(1, 2))
    out = mixer(x, (h, w))
    report('GFNet vs circular convolution', out[:, 1:].double(), expected.flatten(1, 2), 1e-4)
    assert torch.equal(out[:, 0], x[:, 0])
    with pytest.raises(ValueError, match='4x6 patch grid'):
        mixer(x, (6, 4))


def test_afno_with_zero_weights_is_identity_and_mixes_globally():
    c = 16
    mixer = TOKEN_MIXERS.build(dict(type='AdaptiveFourierMixing', embed_dim=c, num_blocks=4, sparsity=0.0))
    x = torch.randn(1, 16, c)
    changed = x.clone()
    changed[0, 0] += 1.0
    diff = (mixer(changed, (4, 4)) - mixer(x, (4, 4))).abs().amax(-1)[0]
    assert (diff[1:] > 0).all(), 'a change at one token must reach every token'
    with torch.no_grad():
        for p in mixer.parameters():
            p.zero_()
    report('AFNO with zero weights', mixer(x, (4, 4)), x, 1e-5)


def test_factorized_random_synthesizer_is_input_independent():
    mixer = TOKEN_MIXERS.build(dict(type='FactorizedRandomSynthesizer', embed_dim=C, num_heads=HEADS, num_tokens=N))
    x = tokens()
    v = mixer.values(x).reshape(B, N, HEADS, -1).transpose(1, 2)
    attn = (mixer.r1 @ mixer.r2.transpose(-1, -2)).softmax(-1)  # heads, N, N
    expected = mixer.proj((attn @ v).transpose(1, 2).reshape(B, N, C))
    report('Synthesizer (factorized random)', mixer(x, None), expected, 1e-5)


def test_factorized_dense_synthesizer_rows_are_outer_products():
    mixer = TOKEN_MIXERS.build(dict(type='FactorizedDenseSynthesizer', embed_dim=C, num_heads=HEADS, num_tokens=N))
    assert mixer.a * mixer.b >= N
    x = tokens()
    a = mixer.to_a(x).reshape(B, N, HEADS, mixer.a)
    b = mixer.to_b(x).reshape(B, N, HEADS, mixer.b)
    logits = torch.stack([
        torch.stack([torch.outer(a[0, i, h], b[0, i, h]).flatten()[:N] for i in range(N)])
        for h in range(HEADS)
    ])  # heads, N, N for the first image
    v = mixer.values(x).reshape(B, N, HEADS, -1).transpose(1, 2)[0]
    expected = mixer.proj((logits.softmax(-1) @ v).transpose(0, 1).reshape(N, C))
    report('Synthesizer (factorized dense)', mixer(x, None)[0], expected, 1e-5)


def test_switch_with_one_expert_is_a_plain_mlp():
    switch = SwitchMlp(C, mlp_ratio=2.0, num_experts=1, capacity_factor=None)
    mlp = Mlp(C, mlp_ratio=2.0)
    mlp.load_state_dict(switch.experts[0].state_dict())
    x = tokens()
    out, balance_loss = switch(x, return_aux_loss=True)
    report('Switch (1 expert) vs MLP', out, mlp(x), 1e-6)
    assert torch.equal(switch(x), out) and balance_loss.item() == pytest.approx(0.01)


def test_switch_routes_each_token_to_its_top_expert():
    switch = SwitchMlp(C, num_experts=4, capacity_factor=None)
    x = tokens()
    flat = x.reshape(-1, C)
    probs = switch.router(flat).softmax(-1)
    gate, expert = probs.max(-1)
    expected = torch.stack([gate[t] * switch.experts[int(expert[t])](flat[t]) for t in range(len(flat))])
    report('Switch top-1 routing', switch(x).reshape(-1, C), expected, 1e-6)


def test_probsparse_with_full_budget_is_softmax_attention():
    reference = softmax_reference()
    mixer = TOKEN_MIXERS.build(dict(type='ProbSparseAttention', embed_dim=C, num_heads=HEADS, factor=N)).eval()
    same_qkv_as(mixer, reference)
    x = tokens()
    report('ProbSparse (u = N)', mixer(x, None), reference(x, None), 1e-5)


def test_probsparse_lazy_queries_output_mean_value():
    mixer = TOKEN_MIXERS.build(dict(type='ProbSparseAttention', embed_dim=C, num_heads=HEADS, factor=1)).eval()
    n = 64  # budget = ceil(ln 64) = 5 active queries of 64
    q, k, v = mixer.split_qkv(tokens(n=n))
    out = mixer.attend(q, k, v, None)  # B, heads, n, d
    is_mean = (out - v.mean(dim=2, keepdim=True)).abs().amax(-1) < 1e-6
    active = (~is_mean).sum(-1)
    print(f'ProbSparse active queries per head: {active.tolist()} of {n}')
    assert (active <= 5).all() and (active >= 1).all()


def test_lsh_with_one_bucket_is_shared_qk_attention_without_self():
    mixer = TOKEN_MIXERS.build(
        dict(type='LSHAttention', embed_dim=C, num_heads=HEADS, bucket_size=N, num_hashes=1)).eval()
    x = tokens()
    q, k, v = mixer.split_qkv(x)
    logits = q @ k.transpose(-1, -2) * mixer.scale
    logits = logits.masked_fill(torch.eye(N, dtype=torch.bool), -1e5)
    expected = mixer.proj((logits.softmax(-1) @ v).transpose(1, 2).reshape(B, N, C))
    report('Reformer (one chunk) vs explicit', mixer(x, None), expected, 1e-5)


def test_lsh_attends_only_within_hash_chunks():
    torch.manual_seed(0)
    mixer = TOKEN_MIXERS.build(
        dict(type='LSHAttention', embed_dim=C, num_heads=1, bucket_size=4, num_hashes=2)).eval()
    x = tokens(n=23)
    x.requires_grad_(True)
    mixer(x, None)[0, 5].sum().backward()
    reached = (x.grad[0].abs().sum(-1) > 0).sum().item()
    # itself, and per round the other 7 tokens of its chunk and the previous one
    print(f'Reformer: token 5 depends on {reached} of 23 tokens (at most 1 + 2 rounds x 7)')
    assert 1 < reached <= 1 + 2 * 7


def test_sinkhorn_balancing_gives_doubly_stochastic_matrices():
    from mmeff.models.mixers.sinkhorn import sinkhorn
    perm = sinkhorn(torch.randn(3, 5, 5), 50).exp()
    report('Sinkhorn row sums', perm.sum(-1), torch.ones(3, 5), 1e-4)
    report('Sinkhorn column sums', perm.sum(-2), torch.ones(3, 5), 1e-4)


def test_sinkhorn_attention_with_a_hard_permutation_is_two_block_attention():
    mixer = TOKEN_MIXERS.build(
        dict(type='SinkhornAttention', embed_dim=C, num_heads=HEADS, num_tokens=12, max_block_size=4)).eval()
    assert (mixer.num_blocks, mixer.block_size) == (3, 4)
    q, k, v = (t.reshape(B, HEADS, 3, 4, -1) for t in mixer.split_qkv(tokens(n=12)))
    target = [2, 0, 1]  # block i attends to itself and block target[i]
    perm = torch.eye(3)[target].expand(B, HEADS, 3, 3)
    out = mixer.attend_sorted(q, k, v, perm)
    for i, j in enumerate(target):
        keys, values = torch.cat([k[:, :, i], k[:, :, j]], 2), torch.cat([v[:, :, i], v[:, :, j]], 2)
        attn = (q[:, :, i] @ keys.transpose(-1, -2) * mixer.scale).softmax(-1)
        report(f'Sinkhorn block {i} -> {j}', out[:, :, i], attn @ values, 1e-5)
    assert mixer(tokens(n=12), None).shape == (B, 12, C)
    with pytest.raises(ValueError, match='12-token'):
        mixer(tokens(n=16), None)


def test_routing_with_one_cluster_is_softmax_attention():
    reference = softmax_reference()
    mixer = TOKEN_MIXERS.build(
        dict(type='RoutingAttention', embed_dim=C, num_heads=HEADS, num_tokens=N, num_clusters=1)).eval()
    same_qkv_as(mixer, reference)
    x = tokens()
    report('Routing (1 cluster)', mixer(x, None), reference(x, None), 1e-5)


def test_routing_queries_attend_within_their_clusters():
    mixer = TOKEN_MIXERS.build(
        dict(type='RoutingAttention', embed_dim=C, num_heads=1, num_tokens=16, num_clusters=4)).eval()
    q, k, v = mixer.split_qkv(tokens(n=16))
    q_idx, k_idx = mixer.route(q, 4)[0, 0], mixer.route(k, 4)[0, 0]  # clusters, window
    expected = torch.zeros(16, C)
    for t in range(16):  # average over the clusters that picked query t of attention to their keys
        outs = [(q[0, 0, t] @ k[0, 0, k_idx[c]].T * mixer.scale).softmax(-1) @ v[0, 0, k_idx[c]]
                for c in range(4) if t in q_idx[c].tolist()]
        if outs:
            expected[t] = torch.stack(outs).mean(0)
    report('Routing vs explicit per-cluster attention', mixer.attend(q, k, v, None)[0, 0], expected, 1e-5)


def test_routing_centroids_move_towards_their_members():
    """One training step is one online k-means step on the unit sphere: every normalized query and
    key is a member of its nearest centroid (before the step), and each centroid moves towards its
    members: the mean squared distance of the members to it decreases."""
    torch.manual_seed(0)  # the initial centroids
    mixer = TOKEN_MIXERS.build(
        dict(type='RoutingAttention', embed_dim=C, num_heads=1, num_tokens=16, num_clusters=2, decay=0.5))
    x = tokens(n=16)
    before = mixer.centroids.clone()  # heads, clusters, d
    with torch.no_grad():
        q, k, _ = mixer.split_qkv(x)
        mixer.train()(x, None)
    vectors = F.normalize(torch.cat([q, k], dim=2), dim=-1)[:, 0].flatten(0, 1)  # (B * 2N, d), 1 head
    nearest = (vectors @ before[0].T).argmax(-1)
    report('Routing centroid norms', mixer.centroids.norm(dim=-1), torch.ones(1, 2), 1e-5)
    for c in range(2):
        members = vectors[nearest == c]
        assert len(members) > 0  # (both clusters have members on this input)
        old_dist = (members - before[0, c]).pow(2).sum(-1).mean().item()
        new_dist = (members - mixer.centroids[0, c]).pow(2).sum(-1).mean().item()
        mean_direction = F.normalize(members.mean(0), dim=0)
        old_cos, new_cos = before[0, c] @ mean_direction, mixer.centroids[0, c] @ mean_direction
        print(f'cluster {c}: {len(members)} members, mean squared distance {old_dist:.3f} -> {new_dist:.3f}, '
              f'cosine to their mean {old_cos:.3f} -> {new_cos:.3f}')
        assert new_dist < old_dist - 1e-3
        assert new_cos > old_cos
        # the EMA of the paper, decay 0.5: halfway to the members' mean, back onto the sphere
        expected = F.normalize(0.5 * before[0, c] + 0.5 * members.mean(0), dim=0)
        report(f'Routing centroid {c} vs EMA of its members', mixer.centroids[0, c], expected, 1e-5)
