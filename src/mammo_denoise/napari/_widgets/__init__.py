"""Dock widgets of the napari plugin (thin over the core; see each module)."""
