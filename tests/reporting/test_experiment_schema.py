"""The experiment endpoints in the OpenAPI schema: paths, the run parameter, each arm's fields."""

import pytest

pytestmark = pytest.mark.django_db


def test_schema_documents_the_arms_and_their_export(client, analyst_user):
    client.force_login(analyst_user)
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    arms = schema["paths"]["/api/v1/reporting/campaigns/{id}/arms/"]["get"]
    assert {p["name"] for p in arms["parameters"]} >= {"id", "run"}
    assert (
        "text/csv"
        in schema["paths"]["/api/v1/reporting/campaigns/{id}/arms/export/"]["get"]["responses"]["200"]["content"]
    )
    components = schema["components"]["schemas"]
    arm = components["Arm"]["properties"]
    for field in ("recipients", "sent", "delivered", "replies", "clicks", "conversions", "revenue", "cost"):
        assert field in arm, field
    assert {"versus_control", "versus_best", "rates"} <= set(arm)
    assert {"estimate", "low", "high", "significant", "sentence"} <= set(components["Difference"]["properties"])
    assert "winner" in components["CampaignArms"]["properties"]
