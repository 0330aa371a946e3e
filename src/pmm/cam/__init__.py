"""CAM networks (the plain head, SEAM), their LightningModule, and the multi-crop round's crops and data."""
