import importlib
import pkgutil
import re
from pathlib import Path

import helpers


def test_every_public_name_resolves():
    for name in helpers.__all__:
        assert callable(getattr(helpers, name)), name


def test_unknown_name_is_an_attribute_error():
    import pytest

    with pytest.raises(AttributeError, match="no attribute 'prune'"):
        helpers.prune


HELPERS = Path(helpers.__file__).parent


def _modules():
    return sorted(name for _, name, _ in pkgutil.walk_packages([str(HELPERS)], "helpers."))


def test_every_module_lists_its_public_names_in_all():
    for name in _modules():
        module = importlib.import_module(name)
        assert isinstance(getattr(module, "__all__", None), list), f"{name} has no __all__"
        missing = [n for n in module.__all__ if not hasattr(module, n)]
        assert not missing, f"{name}.__all__ names {missing}, which it does not define"


def test_subpackages_re_export_the_names_notebooks_use():
    from helpers import quantization, tinyml

    for package in (quantization, tinyml):
        for name in _modules():
            if name.startswith(package.__name__ + "."):
                module = importlib.import_module(name)
                assert set(module.__all__) <= set(package.__all__), name


def _sources(under=HELPERS):
    return {path: path.read_text() for path in under.rglob("*.py")}


def test_one_place_for_model_checks_and_tflite_conversion():
    sources = _sources()
    converters = [p.name for p, text in sources.items() if "TFLiteConverter" in text]
    assert converters == ["tflite.py"]
    model_checks = [p.name for p, text in sources.items()
                    if re.search(r"isinstance\(.*keras(\(\))?\.(Model|Sequential)\b", text)]
    assert model_checks == ["_validate.py"]


def test_teaching_modules_never_import_the_course_tooling():
    course = HELPERS / "course"
    for path, text in _sources().items():
        if course not in path.parents:
            assert not re.search(r"^\s*(from|import) helpers(\.course| import course)", text,
                                 re.MULTILINE), path
