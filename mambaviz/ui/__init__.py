"""The Gradio app: `build_app(AppConfig(...))` builds the page and `launch(demo)` serves it."""

from mambaviz.ui.layout import AppConfig, build_app, launch

__all__ = ["AppConfig", "build_app", "launch"]
