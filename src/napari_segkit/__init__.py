"""napari-segkit: every common way of segmenting an image, one click away in napari."""

__version__ = "0.1.0"
