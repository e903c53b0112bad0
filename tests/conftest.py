"""Shared test setup.

napari's pytest plugin provides ``make_napari_viewer``; pytest-xvfb provides the X server, so the
viewer renders with the real xcb platform (offscreen Qt alone crashes vispy).
"""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "xcb")
