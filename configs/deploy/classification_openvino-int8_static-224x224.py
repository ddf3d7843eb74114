# mmpretrain classifier -> OpenVINO INT8 (NNCF post-training quantization, mmeff/deploy/quantize.py),
# calibrated on images of the model config's own test pipeline.
_base_ = ['./classification_openvino_static-224x224.py']
backend_config = dict(
    precision='int8',
    calibration=dict(
        dataset=None,  # None: the model config's test_dataloader.dataset; or a dataset config / config file
        num_images=300,
        model_type='transformer',  # nncf.ModelType.TRANSFORMER: the efficient-ViTs' attention blocks
        ignored_scope=None))
