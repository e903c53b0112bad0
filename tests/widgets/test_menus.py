"""napari shows every widget in the menus the manifest names (Layers > Segment, Layers > Measure,
File > IO Utilities), and the menu entries open the widgets."""

import pytest
from app_model.types import MenuItem
from napari._app_model import get_app_model

MENUS = {
    "napari/layers/segment": {
        "napari-segkit.make_threshold_widget",
        "napari-segkit.make_edges_widget",
        "napari-segkit.make_kmeans_widget",
        "napari-segkit.make_maskrcnn_widget",
        "napari-segkit.make_cnn_widget",
        "napari-segkit.make_train_widget",
    },
    "napari/layers/measure": {"napari-segkit.make_evaluate_widget"},
    "napari/file/io_utilities": {"napari-segkit.make_batch_widget"},
}


def _menu_commands(menu_id: str) -> set[str]:
    return {
        item.command.id
        for item in get_app_model().menus.get_menu(menu_id)
        if isinstance(item, MenuItem) and item.command.id.startswith("napari-segkit.")
    }


@pytest.mark.parametrize("menu_id", sorted(MENUS))
def test_napari_menus_list_the_widgets(viewer, menu_id):
    assert _menu_commands(menu_id) == MENUS[menu_id]


def test_the_io_utilities_entry_opens_batch(viewer):
    get_app_model().commands.execute_command("napari-segkit.make_batch_widget").result()
    assert any("Batch" in name for name in viewer.window.dock_widgets)
