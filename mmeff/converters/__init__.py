"""Weight conversion into mmeff's models: every checkpoint layout mmeff reads, in one package.

- :mod:`.rename`: the rename rules every converter is written in;
- :mod:`.timm`: timm classifiers -> mmeff / MMPretrain classifiers; :mod:`.twins`: which config is the
  twin of which timm model (the parity and speed targets);
- :mod:`.hf_cvt`: HF transformers' CvT -> mmeff's CvT;
- :mod:`.rtdetr_official`: the official RT-DETR / RT-DETRv2 checkpoints -> mmeff's ``RTDETR``
  (``tools/convert_rtdetr_official.py``); :mod:`.hf_rtdetr`: HF transformers' RT-DETR, through them.

The models do not import this package: a converter depends on its model, not the other way round.
"""
