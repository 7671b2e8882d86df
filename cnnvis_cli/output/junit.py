"""JUnit XML for CI dashboards: one test case per input, the set's verdict as properties.

A test case fails when its gate fails (``check``: the heatmap's maximum misses the region, or
the image is misclassified against ``--labels``), errs
when the input could not be processed, and is skipped when it has nothing to be judged on. Every
piece of text goes through :func:`~cnnvis_cli.output.text.xml_safe`, so a file name holding a
control character still gives well-formed XML.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from cnnvis_cli.output.files import write_text
from cnnvis_cli.output.summary import Record, strict_json
from cnnvis_cli.output.text import xml_safe


def junit_xml(records: list[Record], verdict: dict[str, Any], suite_name: str) -> str:
    """The JUnit XML text of a gated run."""
    checks = [record.check or {} for record in records]
    suite = ElementTree.Element(
        "testsuite",
        name=xml_safe(suite_name),
        tests=str(len(records)),
        failures=str(sum(1 for c in checks if c.get("passed") is False)),
        errors=str(sum(1 for r in records if r.error)),
        skipped=str(
            sum(1 for r, c in zip(records, checks, strict=True) if not r.error and c.get("skipped"))
        ),
    )
    for record, check in zip(records, checks, strict=True):
        case = ElementTree.SubElement(
            suite, "testcase", classname="cnnvis.check", name=xml_safe(record.input)
        )
        if record.error:
            ElementTree.SubElement(case, "error", message=xml_safe(record.error))
        elif check.get("skipped"):
            ElementTree.SubElement(case, "skipped", message=xml_safe(check["skipped"]))
        elif not check.get("passed"):
            message = check.get("reason") or (
                f"heatmap maximum outside the region (energy inside {check.get('energy', 0):.3f})"
            )
            ElementTree.SubElement(case, "failure", message=xml_safe(message))
        ElementTree.SubElement(case, "system-out").text = xml_safe(strict_json(check, indent=None))
    props = ElementTree.SubElement(suite, "properties")
    for key, value in verdict.items():
        if not isinstance(value, (dict, list)):
            ElementTree.SubElement(props, "property", name=key, value=xml_safe(json.dumps(value)))
    ElementTree.indent(suite)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ElementTree.tostring(
        suite, encoding="unicode"
    )


def write_junit(path: Path, records: list[Record], verdict: dict[str, Any], suite_name: str):
    """Write the JUnit XML report atomically."""
    write_text(path, junit_xml(records, verdict, suite_name) + "\n")
