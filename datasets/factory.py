"""Data set registry: ``DATASETS.NAMES`` -> class."""
from __future__ import annotations

from utils.errors import ConfigError

from .bases import ReIDDataset
from .duke import DukeMTMC, NewOccludedDuke, OccludedDuke
from .market1501 import Market1501
from .msmt17 import MSMT17
from .occ_reid import OccludedREID

__all__ = ["DATASET_FACTORY", "build_dataset"]

DATASET_FACTORY: dict[str, type[ReIDDataset]] = {
    "occ_duke": OccludedDuke,
    "new_occ_duke": NewOccludedDuke,
    "dukemtmc": DukeMTMC,
    "market1501": Market1501,
    "msmt17": MSMT17,
    "occ_reid": OccludedREID,
}


def build_dataset(name: str, root: str) -> ReIDDataset:
    """Read the splits of data set ``name`` under the data root ``root`` (``DATASETS.ROOT_DIR``).

    Raises:
        ConfigError: unknown name. DataError: missing folders or malformed list files.
    """
    if name not in DATASET_FACTORY:
        raise ConfigError(f"DATASETS.NAMES '{name}' is not a known data set; use one of {', '.join(DATASET_FACTORY)}")
    return DATASET_FACTORY[name](root)
