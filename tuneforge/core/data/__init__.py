"""Data sources -> decoded, cached tensors -> batches."""
from .images import ImageSet, decode_image, list_images, load_image_folder, scan_class_folders
from .loader import BatchLoader
from .split import stratified_split, subsample_per_class, write_manifest

__all__ = ["ImageSet", "BatchLoader", "decode_image", "list_images", "load_image_folder", "scan_class_folders",
           "stratified_split", "subsample_per_class", "write_manifest"]
