# mmpretrain classifier (mmeff's ViTWithMixer backbones) -> ONNX Runtime, batch 1, 224x224.
# Opset 17: LayerNormalization is one ONNX op from opset 17 on (one fused kernel in ONNX Runtime).
onnx_config = dict(
    type='onnx',
    export_params=True,
    keep_initializers_as_inputs=False,
    opset_version=17,
    save_file='end2end.onnx',
    input_names=['input'],
    output_names=['output'],
    input_shape=[224, 224],
    optimize=False)
codebase_config = dict(type='mmpretrain', task='Classification')
backend_config = dict(type='onnxruntime')
