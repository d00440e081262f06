"""Duplicate phones among the elements of a minified JSON array (all on line 1): the later one wins."""

import pytest

from audience.ingest import preview as ingest_preview
from audience.ingest import services
from audience.models import Contact, ImportSource, ImportStatus
from tests.ingest import ingest, problems, write

pytestmark = pytest.mark.django_db(transaction=True)


def test_duplicates_on_one_line_keep_the_later_element(tmp_path):
    path = write(
        tmp_path,
        "minified.json",
        '[{"phone":"+254712345678","name":"A"},{"phone":"+254712345678","name":"B"},'
        '{"phone":"+254712345679","name":"C"},{"phone":"+254712345678","name":"D"}]',
    )
    job = ingest(path)
    assert job.status == ImportStatus.SUCCEEDED, job.error
    assert dict(Contact.objects.values_list("phone", "name")) == {"+254712345678": "D", "+254712345679": "C"}
    assert (job.total_rows, job.created_count, job.duplicate_count) == (4, 2, 2)
    assert [(line, column) for line, column, _ in problems(job, "warning")] == [(1, "phone"), (1, "phone")]


def test_the_dry_run_counts_them_as_the_import_does(tmp_path):
    path = write(
        tmp_path, "preview.json", '[{"phone":"+254712345678"},{"phone":"+254712345678"},{"phone":"+254712345679"}]'
    )
    job = services.import_job_create(
        source=ImportSource.COMMAND, path=str(path), options=services.import_options_clean(default_consent="opted_in")
    )
    preview = ingest_preview.import_preview(job)
    assert (preview.counts["new"], preview.counts["duplicate"]) == (2, 1)


def test_a_second_import_of_the_file_changes_nothing(tmp_path):
    path = write(tmp_path, "again.json", '[{"phone":"+254712345678","name":"A"},{"phone":"+254712345678","name":"B"}]')
    ingest(path)
    job = ingest(path)
    assert job.status == ImportStatus.SUCCEEDED, job.error
    assert (job.unchanged_count, job.duplicate_count) == (1, 1)
    assert Contact.objects.get().name == "B"
