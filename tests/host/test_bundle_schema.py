"""docs/bundle-schema.md mirrors edgepack/bundle/schema.py: every dataclass of the manifest has
a section there, and the section's keys are exactly the class's fields, in order."""

from __future__ import annotations

import dataclasses
import re

import pytest

from edgepack.bundle import schema
from tests.conftest import REPO

DOC = REPO / "docs" / "bundle-schema.md"
CLASSES = [schema.Manifest, schema.ModelInfo, schema.TensorSpec, schema.OutputSpec,
           schema.Tolerance, schema.TestSet, schema.TensorFile, schema.FileEntry,
           schema.Provenance, schema.Rewrite, schema.RuleRun, schema.Quantization,
           schema.AccuracyCost, schema.ImagePreprocess]


def _sections() -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    current = None
    for line in DOC.read_text().splitlines():
        heading = re.fullmatch(r"## `(\w+)`", line)
        if heading:
            current = sections.setdefault(heading.group(1), [])
            continue
        if line.startswith("## "):
            current = None
        row = re.match(r"\| `(\w+)` \|", line)
        if current is not None and row:
            current.append(row.group(1))
    return sections


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_the_document_lists_every_field_of_the_schema(cls):
    assert _sections().get(cls.__name__) == [f.name for f in dataclasses.fields(cls)]


def test_every_documented_class_is_in_the_schema():
    documented = set(_sections())
    assert documented == {c.__name__ for c in CLASSES}
    # ...and every dataclass the manifest is made of is among CLASSES.
    reachable: set[type] = set()
    todo = [schema.Manifest]
    while todo:
        cls = todo.pop()
        reachable.add(cls)
        for f in dataclasses.fields(cls):
            for name in re.findall(r"[A-Z]\w+", str(f.type)):
                found = getattr(schema, name, None)
                if dataclasses.is_dataclass(found) and found not in reachable:
                    todo.append(found)
    assert reachable == set(CLASSES)


def test_the_document_names_the_schema_version():
    assert f"version {schema.SCHEMA_VERSION}" in DOC.read_text().splitlines()[0]
