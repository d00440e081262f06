"""The OpenAPI schema and its interactive docs, served without a CDN."""

import pytest

pytestmark = pytest.mark.django_db


@pytest.fixture
def analyst_client(client, analyst_user):
    client.force_login(analyst_user)
    return client


PATHS = [
    "/api/v1/reporting/messages/status/",
    "/api/v1/reporting/messages/export/",
    "/api/v1/reporting/campaigns/{id}/summary/",
    "/api/v1/reporting/campaigns/{id}/export/",
    "/api/v1/monitoring/inbound/",
    "/api/v1/monitoring/dashboard/",
]


def test_schema_documents_every_reporting_endpoint_with_parameters(analyst_client):
    response = analyst_client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema = response.json()
    for path in PATHS:
        assert path in schema["paths"], path
    status = schema["paths"]["/api/v1/reporting/messages/status/"]["get"]
    names = {p["name"] for p in status["parameters"]}
    assert {"campaign", "run", "sender", "channel", "status", "contact", "created_after", "created_before"} <= names
    assert "cursor" in names
    summary = schema["paths"]["/api/v1/reporting/campaigns/{id}/summary/"]["get"]
    assert {"run", "bucket"} <= {p["name"] for p in summary["parameters"]}
    assert "CampaignSummary" in schema["components"]["schemas"]
    inbound = schema["paths"]["/api/v1/monitoring/inbound/"]["get"]
    assert {"since", "kind", "channel", "limit"} <= {p["name"] for p in inbound["parameters"]}


def test_docs_page_loads_its_scripts_from_the_project_not_a_cdn(analyst_client):
    response = analyst_client.get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "swagger-ui" in html
    assert "cdn.jsdelivr" not in html and "unpkg" not in html
    assert "/static/drf_spectacular_sidecar/" in html


def test_reporting_paths_answer_without_the_trailing_slash(analyst_api):
    assert analyst_api.get("/api/v1/monitoring/inbound").status_code == 200
    assert analyst_api.get("/api/v1/monitoring/inbound/").status_code == 200


def test_the_schema_and_its_pages_need_a_signed_in_user(client):
    for path in ("/api/schema/", "/api/docs/"):
        assert client.get(path).status_code in (401, 403), path


def test_the_import_file_is_a_binary_upload_in_the_schema(analyst_client):
    """Generated clients send a file, not a URI: multipart/form-data with a binary ``file``."""
    schema = analyst_client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()

    def resolved(node: dict) -> dict:
        ref = node.get("$ref", "")
        return schema["components"]["schemas"][ref.rsplit("/", 1)[-1]] if ref else node

    body = schema["paths"]["/api/v1/contacts/import/"]["post"]["requestBody"]
    assert list(body["content"]) == ["multipart/form-data"] and body["required"] is True
    upload = resolved(body["content"]["multipart/form-data"]["schema"])
    assert upload["properties"]["file"]["type"] == "string"
    assert upload["properties"]["file"]["format"] == "binary"
    assert "file" in upload["required"]
    # No multipart request anywhere types a field as a URI.
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            multipart = operation.get("requestBody", {}).get("content", {}).get("multipart/form-data")
            if multipart:
                fields = resolved(multipart["schema"]).get("properties", {})
                assert all(f.get("format") != "uri" for f in fields.values()), (method, path)
