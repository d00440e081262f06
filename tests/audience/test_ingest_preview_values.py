"""The dry run shows each value as it will be stored, whatever characters the cell holds."""

import pytest

from audience.ingest import preview as ingest_preview
from audience.ingest import services
from audience.models import ImportSource
from tests.ingest import ingest, write

pytestmark = pytest.mark.django_db(transaction=True)

CSV = (
    'phone,name,height\n+254712000901,"Multi\nLine","5\'10"""\n'
    '+254712000902,"Tab\there \\ back",x\n+254712000903,Line\u2028separator,y\n'
)


def test_the_preview_shows_stored_values_and_does_not_trip_on_line_separators(tmp_path):
    path = write(tmp_path, "odd.csv", CSV)
    job = services.import_job_create(
        source=ImportSource.COMMAND, path=str(path), options=services.import_options_clean(default_consent="opted_in")
    )
    preview = ingest_preview.import_preview(job)
    shown = {row["phone"]: (row["name"], row["attributes"]) for row in preview.rows}
    assert shown == {
        "+254712000901": ("Multi\nLine", '{"height":"5\'10\\""}'),
        "+254712000902": ("Tab\there \\ back", '{"height":"x"}'),
        "+254712000903": ("Line\u2028separator", '{"height":"y"}'),
    }
    assert preview.counts["new"] == 3
    stored = ingest(path)
    assert stored.created_count == 3
