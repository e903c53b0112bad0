"""Fixtures for widget tests: a real viewer, docking through the manifest, captured notifications."""

import pytest


@pytest.fixture
def viewer(make_napari_viewer):
    return make_napari_viewer()


@pytest.fixture
def dock(viewer, request):
    """``dock()`` docks the test module's ``WIDGET`` (its display name) through the manifest."""

    def _dock(name: str | None = None):
        _, widget = viewer.window.add_plugin_dock_widget(
            "napari-segkit", name or request.module.WIDGET
        )
        return widget

    return _dock


@pytest.fixture
def errors(monkeypatch):
    """The messages the widgets show as napari error notifications, in order."""
    import napari_segkit.widgets._base as base

    shown: list[str] = []
    monkeypatch.setattr(base, "show_error", shown.append)
    return shown
