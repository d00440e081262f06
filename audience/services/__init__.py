"""Writes to the audience: contacts, topics, consent, erasure and retention.

Every door (admin, API, import, keywords, provider errors) changes consent through
``consent_change`` so the ConsentEvent audit row is written in the same transaction as the
change itself, chained to the audit (audience.consent_chain).
"""

from audience.services.consent import (
    EVIDENCE_LIMITS,
    OVERRIDE_ORIGINS,
    OVERRIDE_SOURCES,
    ConsentChanges,
    ConsentEvidenceRequired,
    consent_change,
    consent_change_check,
    consent_change_many,
    consent_evidence_clean,
    consent_opt_out_origin,
    suppression_lift,
)
from audience.services.contacts import (
    ContactError,
    actor_name,
    contact_create,
    contact_set_topics,
    contact_touch_inbound,
    contact_update,
    contacts_add_topic,
    is_suppressed,
    topic_get_or_create,
)
from audience.services.erasure import contact_delete, contact_erase
from audience.services.retention import IMPORT_ERRORS_MAX_BATCHES, import_errors_purge

__all__ = [
    "EVIDENCE_LIMITS",
    "IMPORT_ERRORS_MAX_BATCHES",
    "OVERRIDE_ORIGINS",
    "OVERRIDE_SOURCES",
    "ConsentChanges",
    "ConsentEvidenceRequired",
    "ContactError",
    "actor_name",
    "consent_change",
    "consent_change_check",
    "consent_change_many",
    "consent_evidence_clean",
    "consent_opt_out_origin",
    "contact_create",
    "contact_delete",
    "contact_erase",
    "contact_set_topics",
    "contact_touch_inbound",
    "contact_update",
    "contacts_add_topic",
    "import_errors_purge",
    "is_suppressed",
    "suppression_lift",
    "topic_get_or_create",
]
