"""cnnvis: see where a convolutional network looks.

Importing this package is cheap: TensorFlow is only imported when a model is loaded.
"""

__version__ = "0.1.0"
