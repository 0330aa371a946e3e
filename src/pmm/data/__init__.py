"""Datasets: dataset objects, the VOC-layout reader, the embedded synthetic dataset, torch datasets, transforms."""
