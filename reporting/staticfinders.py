"""Serves plotly.js from the installed ``plotly`` package, so no copy of it is committed.

Only ``plotly/plotly.min.js`` is exposed (the package data also holds data sets and a widget
bundle that the pages never load). collectstatic copies it like any other static file, and
WhiteNoise finds it through this finder in development.
"""

from __future__ import annotations

from pathlib import Path

from django.contrib.staticfiles.finders import BaseFinder
from django.core.checks import Error
from django.core.files.storage import FileSystemStorage

PREFIX = "plotly"
FILE_NAME = "plotly.min.js"


def plotly_js_dir() -> Path:
    import plotly  # a large package: loaded only when static files are looked up

    return Path(plotly.__file__).resolve().parent / "package_data"


class PlotlyFinder(BaseFinder):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.storage = FileSystemStorage(location=plotly_js_dir())
        self.storage.prefix = PREFIX

    def check(self, **kwargs):
        if not (plotly_js_dir() / FILE_NAME).is_file():
            return [Error(f"{FILE_NAME} is missing from the plotly package", id="reporting.E001")]
        return []

    def find(self, path: str, find_all: bool = False, **kwargs):
        if path != f"{PREFIX}/{FILE_NAME}":
            return []  # as Django's finders answer "not here", whatever find_all says
        match = str(plotly_js_dir() / FILE_NAME)
        return [match] if find_all else match

    def list(self, ignore_patterns):
        yield FILE_NAME, self.storage
