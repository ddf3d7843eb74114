"""The efficient-ViT paper's results as mmeff ships them (mmeff/benchmark/wttf_paper.csv).

    python tools/analysis/wttf_paper_table.py ../shared/reference/wttf_results.csv [--out OUT.csv]

The authors' table (tobna/WhatTransformerToFavor) has one row per fine-tuning run; the shipped table
has one row per model: the mmeff config that builds it, and of the run with the best top-1 at 224 px
its params, GMACs (torchprofile), GFLOPs (fvcore with the authors' op weights), A100 throughput (with
its batch size) and memory; and the best top-1 at the higher resolution (384, or 382 for
EfficientFormerV2 and FocalNet) with its resolution.
"""
import argparse
import csv
import os.path as osp

# The authors' model id -> the mmeff config of the same architecture and size.
CONFIGS = {
    'ViT-S/16': 'configs/vit/vit/vit_small_p16_in1k-224.py',
    'deit_small_patch16_LS': 'configs/vit/vit/vit_small_p16_in1k-224.py',  # the baseline: DeiT III-like ViT-S
    'ViT-B/16': 'configs/vit/vit/vit_base_p16_in1k-224.py',
    'ViT-Ti/16': 'configs/vit/vit/vit_tiny_p16_in1k-224.py',
    'resnet50': 'configs/hvit/resnet/resnet50_in1k-224.py',
    'synthesizer_fd_vit_small_patch16': 'configs/vit/synthesizer_fd/synthesizer_fd_small_p16_in1k-224.py',
    'synthesizer_fr_vit_small_patch16': 'configs/vit/synthesizer_fr/synthesizer_fr_small_p16_in1k-224.py',
    'coat_tiny': 'configs/hvit/coat/coat_tiny_in1k-224.py',
    'cvt_13': 'configs/hvit/cvt/cvt_13_in1k-224.py',
    'efficientformerv2_s0': 'configs/hvit/efficientformerv2/efficientformerv2_s0_in1k-224.py',
    'polysa_vit_small_patch16': 'configs/vit/polysa/polysa_small_p16_in1k-224.py',
    'linformer_vit_small_patch16': 'configs/vit/linformer/linformer_small_p16_in1k-224.py',
    'nystrom32_vit_small_patch16': 'configs/vit/nystromformer32/nystromformer32_small_p16_in1k-224.py',
    'nystrom64_vit_small_patch16': 'configs/vit/nystromformer64/nystromformer64_small_p16_in1k-224.py',
    'xcit_small_12_p16': 'configs/hvit/xcit/xcit_small_12_p16_in1k-224.py',
    'switch_8_vit_small_patch16': 'configs/vit/switch/switch_small_p16_in1k-224.py',
    'fnet_vit_small_patch16': 'configs/vit/fnet/fnet_small_p16_in1k-224.py',
    'focalnet_small_srf': 'configs/hvit/focalnet/focalnet_small_srf_in1k-224.py',
    'focalnet_tiny_srf': 'configs/hvit/focalnet/focalnet_tiny_srf_in1k-224.py',
    'gfnet_small_patch16': 'configs/vit/gfnet/gfnet_s_p16_in1k-224.py',
    'mixer_s16': 'configs/hvit/mixer/mixer_s16_in1k-224.py',
    'cait_s24': 'configs/vit/cait/cait_s24_p16_in1k-224.py',
    'dynamic_vit_small_patch16': 'configs/vit/dynamic_vit_90/dynamic_vit_90_small_p16_in1k-224.py',
    'evit_small_patch16_fuse': 'configs/vit/evit_fuse/evit_fuse_keep-1_small_p16_in1k-224.py',
    'evit_small_patch16': 'configs/vit/evit/evit_keep-1_small_p16_in1k-224.py',
    'stvit_swin_tiny_p4_w7': 'configs/hvit/stvit/stvit_swin_tiny_p4_w7_in1k-224.py',
    'tome_vit_small_r8_patch16': 'configs/vit/tome_r8/tome_r8_small_p16_in1k-224.py',
    'token_learner_vit_8_50_small_patch16':
    'configs/vit/token_learner_8_50/token_learner_8_50_shared-repeat_small_p16_in1k-224.py',
    'token_learner_vit_8_75_small_patch16':
    'configs/vit/token_learner_8_75/token_learner_8_75_shared-repeat_small_p16_in1k-224.py',
    'routing_vit_small_patch16': 'configs/vit/routing/routing_small_p16_in1k-224.py',
    'sinkhorn_cait_small_bmax32_patch16': 'configs/vit/sinkhorn_cait_bmax32/sinkhorn_cait_bmax32_small_p16_in1k-224.py',
    'swin_small_patch4_window7': 'configs/hvit/swin/swin_small_p4_w7_in1k-224.py',
    'swin_tiny_patch4_window7': 'configs/hvit/swin/swin_tiny_p4_w7_in1k-224.py',
    'swinv2_tiny_patch4_window7': 'configs/hvit/swinv2/swinv2_tiny_w7_in1k-224.py',
    'wavevit_s': 'configs/hvit/wavevit/wavevit_s_in1k-224.py',
}
# Taken from the best 224-px run, as the authors' column names them.
AT_224 = ('params_M', 'GMACs_torchprofile', 'GFLOPs_fvcore_custom', 'throughput_img_s', 'throughput_batch_size',
          'inference_mem_GiB_bs1', 'inference_mem_GiB_bs64', 'train_mem_GiB_single_gpu', 'eval_amp')
FIELDS = ('model_id', 'model_name', 'taxonomy_class', 'config') + AT_224 + ('top1_224', 'top1_high_res',
                                                                            'high_res')


def top1(run) -> float:
    return float(run['top1_val_acc_best'])


def paper_rows(runs):
    by_model = {}
    for run in runs:
        by_model.setdefault(run['model_id'], []).append(run)
    unmapped = set(by_model) - set(CONFIGS)
    if unmapped:
        raise SystemExit(f'no mmeff config for the paper\'s {sorted(unmapped)}: add them to CONFIGS')
    rows = []
    for model_id in [m for m in CONFIGS if m in by_model]:  # ViT-S/16 first: the row of their shared config
        model_runs = by_model[model_id]
        best = max((r for r in model_runs if r['finetune_imsize'] == '224'), key=top1)
        high = [r for r in model_runs if int(r['finetune_imsize']) > 224]
        best_high = max(high, key=top1) if high else None
        rows.append(dict(model_id=model_id, model_name=best['model_name'], taxonomy_class=best['taxonomy_class_v1'],
                         config=CONFIGS[model_id], **{k: best[k] for k in AT_224}, top1_224=best['top1_val_acc_best'],
                         top1_high_res=best_high['top1_val_acc_best'] if best_high else '',
                         high_res=best_high['finetune_imsize'] if best_high else ''))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('results', help="the authors' results table (one row per run)")
    parser.add_argument('--out', default=osp.join(osp.dirname(__file__), '../../mmeff/benchmark/wttf_paper.csv'))
    args = parser.parse_args()
    with open(args.results, newline='') as f:
        rows = paper_rows(list(csv.DictReader(f)))
    with open(args.out, 'w', newline='') as f:
        writer = csv.DictWriter(f, FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    print(f'{len(rows)} models -> {osp.normpath(args.out)}')


if __name__ == '__main__':
    main()
