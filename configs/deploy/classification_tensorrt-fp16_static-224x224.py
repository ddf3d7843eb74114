# mmpretrain classifier -> TensorRT FP16 engine, batch 1, 224x224 (build on a GPU machine).
_base_ = ['./classification_onnxruntime_static-224x224.py']
backend_config = dict(
    type='tensorrt',
    common_config=dict(fp16_mode=True, max_workspace_size=1 << 30),
    model_inputs=[dict(input_shapes=dict(input=dict(
        min_shape=[1, 3, 224, 224], opt_shape=[1, 3, 224, 224], max_shape=[1, 3, 224, 224])))])
