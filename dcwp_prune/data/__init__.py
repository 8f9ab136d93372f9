"""Bias-labelled datasets: one sample contract, a registry, generators and loaders."""

from . import cmnist as _cmnist  # noqa: F401  (registers cmnist-generated)
from . import folders as _folders  # noqa: F401  (registers cmnist, cifar10c, bffhq)
from . import metadata as _metadata  # noqa: F401  (registers csv, celeba, waterbirds)
from .base import BiasDataset as BiasDataset
from .base import BiasSample as BiasSample
from .base import DatasetError as DatasetError
from .base import DatasetSpec as DatasetSpec
from .base import create_dataset as create_dataset
from .base import dataset_spec as dataset_spec
from .base import list_datasets as list_datasets
from .base import register_dataset as register_dataset
from .cmnist import generate_cmnist as generate_cmnist
from .cmnist import write_cmnist as write_cmnist
from .folders import parse_label_name as parse_label_name
from .transforms import default_transform as default_transform

__all__ = [
    "BiasDataset",
    "BiasSample",
    "DatasetError",
    "DatasetSpec",
    "create_dataset",
    "dataset_spec",
    "default_transform",
    "generate_cmnist",
    "list_datasets",
    "parse_label_name",
    "register_dataset",
    "write_cmnist",
]
