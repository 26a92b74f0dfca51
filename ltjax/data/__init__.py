"""Long-tailed datasets in their real formats, literature splits, samplers, augmentation and the input pipeline.

Loaders return an `ImageSource` (`ArraySource` in memory or `FileSource` on disk). `prepare_split` checks a split
before training and turns a file split into its decoded uint8 cache; `TrainPipeline` and `eval_batches` turn a
source into host-local batches, `device_prefetch` puts them on the devices ahead of the step, and
`ltjax.data.device_augment` and `ltjax.data.device_crops` augment them there. CIFAR (`ltjax.data.cifar`) is imported
on demand, since it pulls in tensorflow-datasets.
"""
from ltjax._extras import require_train_extra

require_train_extra(__name__)

from ltjax.data.digits import load_digits_lt
from ltjax.data.ictext import load_ictext_lt
from ltjax.data.longtail import longtail_counts
from ltjax.data.pipeline import Batch, TrainPipeline, eval_batches
from ltjax.data.prefetch import device_prefetch
from ltjax.data.prepare import default_cache_dir, prepare_split
from ltjax.data.samplers import make_sampler
from ltjax.data.source import ArraySource, FileSource, ImageSource
from ltjax.data.split_files import load_split, read_split_file, verify_split_file
from ltjax.data.splits import LongTailSplits, SplitManifest, held_out_validation_indices, select_longtail_indices
from ltjax.data.tiny_imagenet import load_tiny_imagenet
from ltjax.data.verify import DataError

__all__ = [
    "ArraySource",
    "Batch",
    "DataError",
    "FileSource",
    "ImageSource",
    "LongTailSplits",
    "SplitManifest",
    "TrainPipeline",
    "default_cache_dir",
    "device_prefetch",
    "eval_batches",
    "held_out_validation_indices",
    "load_digits_lt",
    "load_ictext_lt",
    "load_split",
    "load_tiny_imagenet",
    "longtail_counts",
    "make_sampler",
    "prepare_split",
    "read_split_file",
    "select_longtail_indices",
    "verify_split_file",
]
