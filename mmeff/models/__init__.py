from . import backbones, classifiers, detectors, heads, layers, losses, mixers, necks
