"""JUnit XML for CI dashboards: a gate's test cases and its verdict as properties.

``cnnvis check`` writes one test case per input: it fails when its gate fails (the heatmap's
maximum misses the region, or the image is misclassified against ``--labels``), errs when the
input could not be processed, and is skipped when it has nothing to be judged on. ``cnnvis
sanity`` writes one test case per method (it fails when the method's map survives the
randomisation) and one erring case per input that could not be processed. Every piece of text
goes through :func:`~cnnvis_cli.output.text.xml_safe`, so a file name holding a control
character still gives well-formed XML.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from cnnvis_cli.output.files import write_text
from cnnvis_cli.output.summary import Record, strict_json
from cnnvis_cli.output.text import xml_safe


@dataclass(frozen=True)
class Case:
    """One test case: passed unless it has a failure, an error or a skip message."""

    name: str
    classname: str
    failure: str | None = None
    error: str | None = None
    skipped: str | None = None
    output: str | None = None  # the case's system-out


def suite_xml(suite_name: str, cases: list[Case], properties: dict[str, Any]) -> str:
    """The JUnit XML text of one test suite; scalar ``properties`` become suite properties."""
    suite = ElementTree.Element(
        "testsuite",
        name=xml_safe(suite_name),
        tests=str(len(cases)),
        failures=str(sum(1 for c in cases if c.failure is not None)),
        errors=str(sum(1 for c in cases if c.error is not None)),
        skipped=str(sum(1 for c in cases if c.skipped is not None)),
    )
    for case in cases:
        element = ElementTree.SubElement(
            suite, "testcase", classname=xml_safe(case.classname), name=xml_safe(case.name)
        )
        if case.error is not None:
            ElementTree.SubElement(element, "error", message=xml_safe(case.error))
        elif case.skipped is not None:
            ElementTree.SubElement(element, "skipped", message=xml_safe(case.skipped))
        elif case.failure is not None:
            ElementTree.SubElement(element, "failure", message=xml_safe(case.failure))
        if case.output is not None:
            ElementTree.SubElement(element, "system-out").text = xml_safe(case.output)
    props = ElementTree.SubElement(suite, "properties")
    for key, value in properties.items():
        if not isinstance(value, (dict, list)):
            ElementTree.SubElement(props, "property", name=key, value=xml_safe(json.dumps(value)))
    ElementTree.indent(suite)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ElementTree.tostring(
        suite, encoding="unicode"
    )


def write_suite(path: Path, suite_name: str, cases: list[Case], properties: dict[str, Any]):
    """Write one test suite's JUnit XML atomically."""
    write_text(path, suite_xml(suite_name, cases, properties) + "\n")


def check_cases(records: list[Record]) -> list[Case]:
    """``cnnvis check``'s test cases: one per input."""
    cases = []
    for record in records:
        check = record.check or {}
        failure = skipped = None
        if not record.error and check.get("skipped"):
            skipped = check["skipped"]
        elif not record.error and not check.get("passed"):
            failure = check.get("reason") or (
                f"heatmap maximum outside the region (energy inside {check.get('energy', 0):.3f})"
            )
        cases.append(
            Case(
                record.input,
                "cnnvis.check",
                failure=failure,
                error=record.error or None,
                skipped=skipped,
                output=strict_json(check, indent=None),
            )
        )
    return cases


def junit_xml(records: list[Record], verdict: dict[str, Any], suite_name: str) -> str:
    """The JUnit XML text of a region-checked run."""
    return suite_xml(suite_name, check_cases(records), verdict)


def write_junit(path: Path, records: list[Record], verdict: dict[str, Any], suite_name: str):
    """Write the JUnit XML report of a region-checked run atomically."""
    write_suite(path, suite_name, check_cases(records), verdict)
