"""pytest only: shows which tensorflow_dcn the tests import and, under `make test`
(TFDCN_TEST_INSTALLED=1), stops unless it is the installed wheel rather than the source tree."""

import importlib.util
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _in_source_tree(path):
    source_package = os.path.realpath(os.path.join(ROOT, "tensorflow_dcn"))
    return os.path.realpath(path).startswith(source_package + os.sep)


def _check(where, path):
    if os.environ.get("TFDCN_TEST_INSTALLED") == "1" and (path is None or _in_source_tree(path)):
        pytest.exit(
            f"TFDCN_TEST_INSTALLED=1 but {where} tensorflow_dcn is {path}, not the installed "
            f"wheel: run pytest from outside {ROOT}, without PYTHONPATH",
            returncode=4,
        )


def pytest_report_header(config):
    spec = importlib.util.find_spec("tensorflow_dcn")
    path = spec.origin if spec else None
    _check("the importable", path)
    return f"tensorflow_dcn: {path}"


def pytest_collection_finish(session):
    module = sys.modules.get("tensorflow_dcn")
    if module is not None:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"tests import tensorflow_dcn from {module.__file__}")
        _check("the imported", module.__file__)
