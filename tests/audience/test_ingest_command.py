"""The command door: import_contacts FILE (test_ingest_doors compares it with the admin and the API)."""

import pytest
from django.core.management import CommandError, call_command

from audience.models import Contact, ImportJob
from tests.ingest import write

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_command_imports_with_options_and_reports_problems(tmp_path, capsys):
    path = write(tmp_path, "c.csv", "phone,name,consent\n+254712345678,A,\n+254712345679,B,maybe\n")
    call_command("import_contacts", str(path), "--topic", "cli", "--default-consent", "opted_out", verbosity=1)
    out = capsys.readouterr().out
    assert "1 created" in out and "1 invalid" in out
    assert "line 3, column 'consent': error: not a consent value" in out
    contact = Contact.objects.get()
    assert contact.consent_status == "opted_out" and contact.topics.get().name == "cli"
    assert ImportJob.objects.get().source == "command"


def test_skip_existing(tmp_path):
    path = write(tmp_path, "c.csv", "phone,name\n+254712345678,A\n")
    call_command("import_contacts", str(path), "--default-consent", "opted_in", verbosity=0)
    call_command(
        "import_contacts",
        str(write(tmp_path, "d.csv", "phone,name\n+254712345678,B\n")),
        "--skip-existing",
        "--default-consent",
        "opted_in",
        verbosity=0,
    )
    assert Contact.objects.get().name == "A"
    assert ImportJob.objects.latest("id").skipped_count == 1


def test_a_csv_without_a_consent_column_needs_default_consent(tmp_path):
    path = write(tmp_path, "c.csv", "phone,name\n+254712345678,A\n")
    with pytest.raises(CommandError, match="--default-consent is required: the file has no consent column"):
        call_command("import_contacts", str(path), verbosity=0)
    assert not Contact.objects.exists() and not ImportJob.objects.exists()


def test_a_file_that_cannot_be_imported_fails_with_the_reason(tmp_path):
    with pytest.raises(CommandError, match="the file is empty"):
        call_command("import_contacts", str(write(tmp_path, "e.csv", "")), verbosity=0)
    with pytest.raises(CommandError, match="no such file"):
        call_command("import_contacts", str(tmp_path / "missing.csv"), verbosity=0)
