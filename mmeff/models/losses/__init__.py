from . import varifocal_loss
