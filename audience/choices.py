"""The audience's choices, apart from its models: the import's worker processes use them without Django set up."""

from __future__ import annotations

from django.db import models


class Channel(models.TextChoices):
    WHATSAPP = "whatsapp", "WhatsApp"
    SMS = "sms", "SMS"


class ConsentStatus(models.TextChoices):
    OPTED_IN = "opted_in", "Opted in"
    OPTED_OUT = "opted_out", "Opted out"


class ConsentSource(models.TextChoices):
    IMPORT = "import", "Import"
    API = "api", "API"
    ADMIN = "admin", "Admin"
    KEYWORD = "keyword", "Keyword"
    PROVIDER = "provider", "Provider"


class ConsentEventKind(models.TextChoices):
    CHANGE = "change", "Consent change"
    SUPPRESSION_LIFTED = "suppression_lifted", "Suppression lifted"
    ERASURE = "erasure", "Personal data erased"


class RowProblemLevel(models.TextChoices):
    """How bad an import row's problem is (``ImportRowError.level``): an error drops the row, a warning keeps it."""

    ERROR = "error", "Error"
    WARNING = "warning", "Warning"
