"""Downstream protocols and the adapters that turn an extracted sub-network into a
torchvision, Detectron2 or MMSegmentation backbone. Detectron2 and MMSeg are imported only
inside their adapter subpackages."""
