"""The masking policy of config.privacy in the admin: lists, change pages and inlines.

A model admin (or inline) names its personal fields and their kind in ``personal_fields``. For a
user without the permission to see them whole, each is swapped, wherever the admin would show
it, for a read-only twin that shows it masked: list columns, the fields of the change page,
inlines. A masked field is never editable (its value is not on the page to edit).
"""

from __future__ import annotations

import json
from contextvars import ContextVar

from django.contrib import admin

from config import privacy

MASKED_SUFFIX = "_shown"
# Whether the user of the admin view being rendered sees personal data whole: read-only displays
# get only the object, not the request. Unset (outside such a view) means masked.
_viewer_full: ContextVar[bool] = ContextVar("admin_viewer_sees_full", default=False)


def viewer_sees_full() -> bool:
    return _viewer_full.get()


class PersonalFieldsMixin:
    # field name -> kind (privacy.shown: phone, name, email, text, json)
    personal_fields: dict[str, str] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name, kind in cls.personal_fields.items():
            setattr(cls, name + MASKED_SUFFIX, _masked_display(name, kind))

    def changeform_view(self, request, *args, **kwargs):
        token = _viewer_full.set(privacy.request_sees_full(request))
        try:
            response = super().changeform_view(request, *args, **kwargs)
            if hasattr(response, "render"):
                response.render()  # while the context variable is set: displays read it
            return response
        finally:
            _viewer_full.reset(token)

    def _masks(self, request) -> bool:
        return bool(self.personal_fields) and not privacy.request_sees_full(request)

    def _swap(self, names):
        """The names with each personal field's masked twin instead (once); rows of a fieldset (tuples) too."""
        swapped = []
        for name in names:
            name = tuple(self._swap(name)) if isinstance(name, list | tuple) else self._twin(name)
            if name not in swapped:
                swapped.append(name)
        return swapped

    def _twin(self, name):
        return name + MASKED_SUFFIX if isinstance(name, str) and name in self.personal_fields else name

    def get_list_display(self, request):
        names = super().get_list_display(request)
        return self._swap(names) if self._masks(request) else names

    def get_list_display_links(self, request, list_display):
        links = super().get_list_display_links(request, list_display)
        return self._swap(links) if links and self._masks(request) else links

    def get_fields(self, request, obj=None):
        fields = super().get_fields(request, obj)
        return self._swap(fields) if self._masks(request) else fields

    def get_fieldsets(self, request, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        if not self._masks(request):
            return fieldsets
        return [(title, {**options, "fields": self._swap(options["fields"])}) for title, options in fieldsets]

    def get_readonly_fields(self, request, obj=None):
        # The personal fields themselves stay listed: read-only fields are left out of the form.
        readonly = list(super().get_readonly_fields(request, obj))
        if not self._masks(request):
            return readonly
        twins = [name + MASKED_SUFFIX for name in self.personal_fields]
        return readonly + [name for name in [*self.personal_fields, *twins] if name not in readonly]


def _masked_display(name: str, kind: str):
    def display(self, obj):
        value = privacy.shown(kind, getattr(obj, name, ""), False)
        if kind == "json":
            return json.dumps(value, ensure_ascii=False, sort_keys=True)
        return value or "—"

    display.__name__ = name + MASKED_SUFFIX
    return admin.display(description=name.replace("_", " "), ordering=name)(display)
