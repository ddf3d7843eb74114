# ONNX export of an mmeff detector with mmdeploy (mmeff.deploy.export_onnx / tools/deploy.py).
# Opset 16: RT-DETR's deformable attention is GridSample, an ONNX op from opset 16 on.
onnx_config = dict(
    type='onnx',
    export_params=True,
    keep_initializers_as_inputs=False,
    opset_version=16,
    save_file='end2end.onnx',
    input_names=['input'],
    output_names=['dets', 'labels'],
    input_shape=[640, 640],  # [width, height], mmdeploy's order
    optimize=False)
codebase_config = dict(
    type='mmdet',
    task='ObjectDetection',
    model_type='end2end',
    # RT-DETR's last decoder layer at inference (speed tuning without retraining); None keeps the
    # model config's test_cfg.eval_idx.
    eval_idx=None,
    # Unused by RT-DETR (top-K in the graph, no NMS); mmdeploy's ObjectDetection task reads it.
    post_processing=dict(score_threshold=0.0, confidence_threshold=0.0, iou_threshold=0.5,
                         max_output_boxes_per_class=300, pre_top_k=-1, keep_top_k=300,
                         background_label_id=-1))
