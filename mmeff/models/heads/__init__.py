from . import rtdetr_head
