"""Synthetic demo data, demo-model training and sample-image generation for cnnvis."""
