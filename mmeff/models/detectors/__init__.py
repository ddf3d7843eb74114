from . import rtdetr
