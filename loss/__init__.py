"""TSD losses: identity CE, batch-hard (part) triplet, visibility focal, distillation, parsing CE,
part diversity. :func:`make_loss` assembles them into the named, weighted terms of one batch."""
from .diverse_loss import diverse_loss
from .make_loss import accuracy, make_loss, mimic_loss
from .parsing_loss import parsing_loss
from .triplet_loss import PartTripletLoss, TripletLoss, euclidean_dist, hard_example_mining, part_euclidean_dist

__all__ = [
    "make_loss",
    "accuracy",
    "mimic_loss",
    "diverse_loss",
    "parsing_loss",
    "TripletLoss",
    "PartTripletLoss",
    "euclidean_dist",
    "part_euclidean_dist",
    "hard_example_mining",
]
