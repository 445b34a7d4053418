"""pointseg: land-cover segmentation from a few clicked points."""

__version__ = "0.1.0"
