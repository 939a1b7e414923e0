"""Datasets and image utilities: cluttered and Megapixel MNIST canvases (dense or lazy),
proxies, image files."""

from .canvas import CanvasBatch, PatchCanvas, collate_canvases
from .cluttered import TASKS, TwoDigitCluttered, class_names, label_name, label_of, num_classes
from .images import ImageError, load_image, match_channels, save_image
from .megapixel import MEGAPIXEL_TASKS, MegapixelMNIST
from .mnist import load_digits, read_idx
from .photo import Photo, PhotoBatch, as_batch, proxies_of
from .photos import PhotoFolder, list_photos, photo_classes, synthetic_photo
from .proxy import make_proxy, proxy_shape
from .tiff import save_tiled_tiff

__all__ = [
    "MEGAPIXEL_TASKS",
    "TASKS",
    "CanvasBatch",
    "ImageError",
    "MegapixelMNIST",
    "PatchCanvas",
    "Photo",
    "PhotoBatch",
    "PhotoFolder",
    "TwoDigitCluttered",
    "as_batch",
    "class_names",
    "collate_canvases",
    "label_name",
    "label_of",
    "load_digits",
    "load_image",
    "list_photos",
    "make_proxy",
    "proxy_shape",
    "match_channels",
    "num_classes",
    "photo_classes",
    "proxies_of",
    "read_idx",
    "save_image",
    "save_tiled_tiff",
    "synthetic_photo",
]
