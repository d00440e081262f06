"""Every factory builds a row its model accepts: the model's own validation and the database's constraints."""

import pytest

from tests import factories

FACTORIES = [
    value
    for value in vars(factories).values()
    if isinstance(value, type)
    and issubclass(value, factories.factory.django.DjangoModelFactory)
    and value is not factories.factory.django.DjangoModelFactory
]


@pytest.mark.django_db
@pytest.mark.parametrize("factory_class", FACTORIES, ids=lambda factory_class: factory_class.__name__)
def test_each_factory_builds_a_valid_row(factory_class):
    first, second = factory_class(), factory_class()
    first.full_clean(validate_unique=False, exclude=["password"])  # users log in by tests that set one
    assert first.pk is not None and first.pk != second.pk


def test_the_factories_cover_the_models_the_tests_build():
    names = {factory_class.__name__ for factory_class in FACTORIES}
    assert {"CampaignFactory", "CampaignRunFactory", "RecipientFactory", "EventFactory", "ImportJobFactory"} <= names
