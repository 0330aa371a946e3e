"""Scoring: confusion matrices and mIoU, the CAM threshold sweep, mask folders, server exports."""
