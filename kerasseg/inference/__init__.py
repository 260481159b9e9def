"""Prediction: semantic and instance inference, post-processing, overlays, test-time
augmentation."""
