"""The offline HTML gallery: links resolve, text is escaped, sorting controls exist."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import cv2
import numpy as np

from cnnvis_cli.output.report import write_report
from tests.conftest import random_rgb, write_image


class Collector(HTMLParser):
    """Every start tag with its attributes, plus the page's visible text (no CSS / script)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self.hidden += tag in ("style", "script")

    def handle_endtag(self, tag: str) -> None:
        self.hidden -= tag in ("style", "script")

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.text.append(data)

    def find(self, tag: str, **attrs: str) -> list[dict[str, str | None]]:
        return [
            a
            for t, a in self.tags
            if t == tag and all(attrs[k] in (a.get(k) or "").split() for k in attrs)
        ]


def parse(path: Path) -> Collector:
    collector = Collector()
    collector.feed(path.read_text(encoding="utf-8"))
    collector.close()
    return collector


def png(path: Path, seed: int = 0) -> str:
    write_image(path, random_rgb(12, 16, seed))
    return str(path)


def target(index, name, score, overlay):
    return {"class_index": index, "class_name": name, "score": score, "outputs": overlay}


def build_summary(tmp_path: Path) -> tuple[dict, Path]:
    inputs, out = tmp_path / "inputs", tmp_path / "out dir"
    cafe = png(inputs / "café au lait #1.png", 1)
    plain = png(inputs / "sub" / "plain.png", 2)
    tops = png(inputs / "tops.png", 3)
    broken = inputs / "broken.png"
    broken.write_bytes(b"not a png")
    cafe_overlay = {"overlay": png(out / "café au lait #1_gradcam.png", 4)}
    raw = out / "plain_gradcam.npy"
    raw.parent.mkdir(parents=True, exist_ok=True)
    np.save(raw, np.zeros((2, 2), np.float32))
    plain_overlay = {"overlay": png(out / "sub" / "plain_gradcam.png", 5), "raw": str(raw)}
    top_overlays = [{"overlay": png(out / f"tops_gradcam_top{k}.png", 6 + k)} for k in (1, 2, 3)]
    results = [
        {
            "input": cafe,
            "outputs": cafe_overlay,
            "class_index": 1,
            "class_name": "<b>bold</b> & co",
            "score": 0.9123,
            "targets": [target(1, "<b>bold</b> & co", 0.9123, cafe_overlay)],
            "check": {"region": [0, 0, 4, 4], "energy": 0.8125, "hit": True, "passed": True},
            "metrics": {"deletion_auc": 0.1234, "insertion_auc": 0.8765},
            "error": None,
        },
        {
            "input": str(broken),
            "outputs": {},
            "error": "cannot decode image <corrupt> (not a PNG)",
        },
        {
            "input": plain,
            "outputs": plain_overlay,
            "class_index": 0,
            "class_name": None,
            "score": 0.4567,
            "targets": [target(0, None, 0.4567, plain_overlay)],
            "check": {"region": [0, 0, 2, 2], "energy": 0.25, "hit": False, "passed": False},
            "metrics": {"deletion_auc": 0.3456, "insertion_auc": 0.5432},
            "error": None,
        },
        {
            "input": tops,
            "outputs": top_overlays[0],
            "class_index": 2,
            "class_name": "bird",
            "score": 0.6,
            "targets": [
                target(2, "bird", 0.6, top_overlays[0]),
                target(0, "cat", 0.3, top_overlays[1]),
                target(1, "dog", 0.1, top_overlays[2]),
            ],
            "check": {"region": None, "skipped": "no region for this image"},
            "error": None,
        },
    ]
    summary = {
        "version": 1,
        "tool": {"name": "cnnvis", "version": "9.9"},
        "model": {"source": "models/tiny.keras", "name": "tiny"},
        "method": "gradcam",
        "params": {"layer": "conv2", "top_k": 3},
        "output_dir": str(out),
        "results": results,
        "totals": {
            "inputs": 4,
            "processed": 3,
            "failed": 1,
            "seconds": 2.5,
            "images_per_second": 1.2,
            "classes": {"bird": 1},
            "interrupted": False,
        },
        "check": {
            "images": 2,
            "mean_energy": 0.53125,
            "hit_rate": 0.5,
            "min_energy": 0.5,
            "min_hit_rate": 0.9,
            "tolerance": 15,
            "passed": False,
        },
    }
    return summary, out


def test_full_report(tmp_path):
    summary, out = build_summary(tmp_path)
    path = write_report(summary, out)
    assert path == out / "index.html"
    page = parse(path)
    text = " ".join(page.text)

    cards = page.find("article", **{"class": "card"})
    assert len(cards) == len(summary["results"])
    assert len(page.find("article", **{"class": "failed"})) == 1

    sources = [a["src"] for t, a in page.tags if t == "img"]
    assert len(sources) == 3 + 1 + 1 + 3  # 3 inputs, one overlay each, 3 for the top-k card
    for src in sources:
        assert (path.parent / unquote(src)).resolve().is_file(), src
    hrefs = [a["href"] for t, a in page.tags if t == "a"]
    for href in hrefs:
        assert (path.parent / unquote(href)).resolve().is_file(), href
    assert any(unquote(h).endswith("plain_gradcam.npy") for h in hrefs)
    # spaces, '#' and non-ASCII are URL-quoted, not left raw
    assert any("caf%C3%A9%20au%20lait%20%231_gradcam.png" in s for s in sources)
    # inputs are shown as thumbnails inside the report's folder, never linked outside it
    assert sum(s.startswith("thumbs/") for s in sources) == 3
    assert not any(s.startswith("..") for s in sources + hrefs)

    for _tag, attrs in page.tags:
        for name in ("src", "href"):
            value = attrs.get(name) or ""
            assert not value.startswith(("http://", "https://", "//")), value
    assert not page.find("link") and all(not a.get("src") for t, a in page.tags if t == "script")
    raw_html = path.read_text(encoding="utf-8")
    assert "http://" not in raw_html and "https://" not in raw_html

    # errors, figures, verdict
    assert "cannot decode image <corrupt> (not a PNG)" in text
    for value in ("0.9123", "0.4567", "0.6000", "0.3000", "0.1000"):
        assert value in text
    for value in ("0.1234", "0.8765", "0.3456", "0.5432", "0.812", "0.250"):
        assert value in text
    assert "no region for this image" in text
    assert "check FAILED" in text and "0.531" in text and "(min 0.90)" in text
    assert "tiny" in text and "gradcam" in text and "2.5" in text

    # sorting: one option per sortable figure, and the inline script that does it
    select = page.find("select")
    assert len(select) == 1 and select[0]["id"] == "sort-key"
    values = [a["value"] for t, a in page.tags if t == "option"]
    assert {"score", "deletion_auc", "insertion_auc", "energy", "index"} <= set(values)
    assert page.find("button", id="sort-order")
    assert 'data-sort-deletion_auc="0.1234"' in raw_html
    assert 'getAttribute("data-sort-" + key)' in raw_html

    # escaping: the class name's <b> is text, never a tag
    assert not [t for t, _ in page.tags if t == "b"]
    assert "<b>bold</b> & co" in text
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; co" in raw_html


def test_minimal_summary_and_missing_files(tmp_path, monkeypatch):
    """No check, metrics, totals or targets; relative paths; a vanished overlay."""
    monkeypatch.chdir(tmp_path)
    png(tmp_path / "a b.png")
    summary = {
        "method": "occlusion",
        "results": [
            {
                "input": "a b.png",
                "outputs": {"overlay": "out/gone.png"},
                "class_index": 3,
                "class_name": None,
                "score": 0.25,
                "error": None,
            },
            {"input": "c.tif", "outputs": {}, "error": "unreadable"},
        ],
    }
    path = write_report(summary, Path("out"))
    page = parse(tmp_path / "out" / "index.html")
    assert path == Path("out") / "index.html"
    text = " ".join(page.text)
    assert len(page.find("article", **{"class": "card"})) == 2
    sources = [a["src"] for t, a in page.tags if t == "img"]
    assert len(sources) == 1 and sources[0].startswith("thumbs/a_b-")  # the input's thumbnail
    thumb = cv2.imread(str(tmp_path / "out" / unquote(sources[0])))
    assert thumb.shape == (12, 16, 3)  # small inputs are not enlarged
    # the missing overlay is a placeholder, not a broken img
    assert "file not found" in text and "gone.png" in text
    assert "class 3" in text and "0.2500" in text and "unreadable" in text
    values = [a["value"] for t, a in page.tags if t == "option"]
    assert values == ["index", "score", "name"]
    assert "check" not in text.lower()


def test_empty_run(tmp_path):
    path = write_report({"results": []}, tmp_path)
    page = parse(path)
    assert not page.find("article")
    assert "No inputs" in " ".join(page.text)
