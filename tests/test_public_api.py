import helpers


def test_every_public_name_resolves():
    for name in helpers.__all__:
        assert callable(getattr(helpers, name)), name


def test_unknown_name_is_an_attribute_error():
    import pytest

    with pytest.raises(AttributeError, match="no attribute 'prune'"):
        helpers.prune
