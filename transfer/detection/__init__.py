"""Detection transfer through Detectron2: exporter, backbones, width-aware configs, the ``detectron2`` protocol.

Only ``export`` is free of Detectron2 imports; every other module imports it through ``compat``.
"""
