# TokenLearner-8-75, the authors' construction with the shared repeat (the weights of the first 9 blocks run twice).
# As Which Transformer to Favor's code builds and measures it: blocks 0-8, a TokenLearner v1.1 (8 tokens, MLP
# ratio 4, softmax), then blocks 0-8 again; blocks 9-11 are never built. The intended design, 12 distinct
# blocks, is token_learner_8_75_small_p16_in1k-224.py. ViT-Small/16 on ImageNet-1k at 224 px (summary tokens).
_base_ = '../_base_/wttf_small_in1k_224.py'
model = dict(backbone=dict(
    block_schedule=[0, 1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 2, 3, 4, 5, 6, 7, 8],
    reducers=[dict(type='TokenLearnerV11', learned_tokens=8, layer=9)]))
