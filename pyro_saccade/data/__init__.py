"""Datasets and image utilities: cluttered MNIST canvases, proxies, image files."""

from .cluttered import TASKS, TwoDigitCluttered, class_names, label_name, label_of, num_classes
from .images import ImageError, load_image, save_image
from .mnist import load_digits, read_idx
from .proxy import Proxy, make_proxy

__all__ = [
    "TASKS",
    "ImageError",
    "Proxy",
    "TwoDigitCluttered",
    "class_names",
    "label_name",
    "label_of",
    "load_digits",
    "load_image",
    "make_proxy",
    "num_classes",
    "read_idx",
    "save_image",
]
