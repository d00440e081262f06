"""Bulk contact ingestion: one engine behind the admin, the API and the import_contacts command."""
