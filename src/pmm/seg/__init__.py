"""The segmenter (SMP), its LightningModule and datamodule, inference, and the cyclic pseudo-mask callback."""
