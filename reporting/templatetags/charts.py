"""Chart data for reporting/static/reporting/charts.js, carried in a data attribute.

Not ``json_script``: htmx (with ``allowScriptTags`` off, as base.html sets it) drops every
<script> element from swapped-in content, JSON ones included, so a refreshed part of a
page would lose its charts' data. The JSON text is returned unmarked, so autoescaping
makes it safe inside a quoted attribute; the browser unescapes it in ``dataset``.
"""

from __future__ import annotations

import json

from django import template
from django.core.serializers.json import DjangoJSONEncoder

register = template.Library()


@register.filter
def chart_json(value) -> str:
    return json.dumps(value, cls=DjangoJSONEncoder, separators=(",", ":"))
