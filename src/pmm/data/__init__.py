"""Datasets: the VOC-layout reader, the embedded synthetic dataset, transforms and datamodules."""
