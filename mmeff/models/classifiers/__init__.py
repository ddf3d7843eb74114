from . import aux_loss_classifier
