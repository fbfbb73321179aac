"""Images: an `image` input (a file relative to the case file, an https URL or a data: URI) is
sent as an image_url part of the user message; files go as base64 data URIs, capped in size,
and the cache key covers their bytes. The embedded text model refuses such a signature."""

from __future__ import annotations

import base64
import json
import struct
import zlib
from pathlib import Path

import pytest

from promptlab.prompting.images import MAX_IMAGE_BYTES
from tests.test_view import get, origin, viewer

EXPERIMENT = """\
project: vision
signature:
  name: caption
  inputs: [{name: photo, type: image}, question]
  outputs: [answer]
prompts:
  - name: p
    system: Describe images.
    template: "{{ question }}"
models: [fake]
cases: {file: data/cases.%s}
metrics: [exact_match]
"""


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A real, one-colour PNG."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def setup(ws, image: bytes, fmt: str = "jsonl", value: str = "img/cat.png") -> Path:
    (ws.root / "data" / "img").mkdir(parents=True, exist_ok=True)
    (ws.root / "data" / "img" / "cat.png").write_bytes(image)
    if fmt == "csv":
        ws.write("data/cases.csv", f"photo,question,answer\n{value},What is this?,a cat\n")
    else:
        ws.write("data/cases.jsonl", json.dumps({"photo": value, "question": "What is this?", "answer": "a cat"}) + "\n")
    return ws.write("exp.yaml", EXPERIMENT % fmt)


def image_parts(ws) -> list[dict]:
    return [b["messages"][-1]["content"] for b in ws.fake.stats()["bodies"]]


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_a_png_goes_as_a_data_uri_of_the_files_bytes_and_its_bytes_key_the_cache(workspace, call_path, fmt):
    picture = png(3, 2, (200, 30, 30))
    workspace.fake.configure(record_bodies=True, rules=[["What is this", "a cat"]])
    exp = setup(workspace, picture, fmt)
    first = workspace.cli("run", exp, "--json")
    assert first.code == 0, first.stderr
    (content,) = image_parts(workspace)
    assert content[0] == {"type": "text", "text": "What is this?"}
    assert content[1]["type"] == "image_url"
    head, _, data = content[1]["image_url"]["url"].partition(",")
    assert head == "data:image/png;base64" and base64.b64decode(data) == picture

    again = workspace.cli("run", exp, "--json")
    assert json.loads(again.stdout)["runs"][0]["cached"] == 1 and workspace.fake.stats()["total"] == 1

    (workspace.root / "data" / "img" / "cat.png").write_bytes(png(3, 2, (30, 200, 30)))  # same path, new picture
    edited = workspace.cli("run", exp, "--json")
    assert edited.code == 0, edited.stderr
    assert json.loads(edited.stdout)["runs"][0]["provider_calls"] == 1 and workspace.fake.stats()["total"] == 2


@pytest.mark.slow  # a batch round trip through the fake Files/Batches API
def test_batch_mode_sends_the_image_part(workspace):
    from tests.test_batch import batch_settings

    picture = png(2, 1, (9, 9, 9))
    batch_settings(workspace)
    workspace.fake.configure(record_bodies=True, rules=[["What is this", "a cat"]])
    exp = setup(workspace, picture)
    exp.write_text(exp.read_text() + "eval: {mode: batch}\n")
    result = workspace.cli("run", exp, "--json")
    assert result.code == 0, result.stderr
    assert workspace.fake.stats()["batches"]["created"] == 1
    (content,) = image_parts(workspace)
    assert base64.b64decode(content[1]["image_url"]["url"].partition(",")[2]) == picture


def test_urls_and_data_uris_are_sent_as_given(workspace):
    workspace.fake.configure(record_bodies=True)
    uri = "data:image/png;base64," + base64.b64encode(png(1, 1, (0, 0, 0))).decode()
    for value in ("https://example.com/cat.png", uri):
        result = workspace.cli("run", setup(workspace, b"", value=value), "--json")
        assert result.code in (0, 1), result.stderr
    assert [c[1]["image_url"]["url"] for c in image_parts(workspace)] == ["https://example.com/cat.png", uri]


def test_the_embedded_model_refuses_an_image_signature_before_any_call(workspace):
    exp = setup(workspace, png(1, 1, (0, 0, 0)))
    result = workspace.cli("run", exp, "--model", "local")
    assert result.code == 2
    assert "embedded text model" in result.stderr and "image input 'photo'" in result.stderr
    assert workspace.counts().get("runs", 0) == 0
    assert workspace.cli("run", exp).code in (0, 1)  # the project exists now
    tried = workspace.cli("prompt", "try", "p", "--project", "vision", "--model", "local",
                          "-i", "photo=data/img/cat.png", "-i", "question=What?")
    assert tried.code == 2 and "image input 'photo'" in tried.stderr


@pytest.mark.parametrize("image, value, problem", [
    (b"GIF", "img/missing.png", "not found; give a path relative to the case file"),
    (b"just text, not a picture", "img/cat.png", "is not a PNG, JPEG, GIF or WebP image"),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * MAX_IMAGE_BYTES, "img/cat.png", "over the 5 MiB image limit"),
    (b"", "http://example.com/cat.png", "is neither https:// nor a file"),
    (b"", "data:image/png;base64,@@@", "data:image/(png|jpeg|gif|webp);base64"),
])
def test_a_bad_image_is_bad_input_naming_the_field_and_nothing_is_written(workspace, image, value, problem):
    result = workspace.cli("run", setup(workspace, image, value=value))
    assert result.code == 2
    assert "case 1" in result.stderr and "'photo'" in result.stderr and problem in result.stderr
    assert workspace.fake.stats()["total"] == 0 and workspace.counts().get("runs", 0) == 0


def test_a_template_cannot_write_an_image_as_text(workspace):
    exp = setup(workspace, png(1, 1, (0, 0, 0)))
    exp.write_text(exp.read_text().replace('"{{ question }}"', '"{{ question }} {{ photo }}"'))
    result = workspace.cli("run", exp)
    assert result.code == 2 and "input 'photo' is an image" in result.stderr


def test_runs_show_reports_and_the_viewer_show_an_image_as_its_type_size_and_digest(workspace):
    picture = png(2, 2, (1, 2, 3))
    result = workspace.cli("run", setup(workspace, picture), "--json")
    assert result.code in (0, 1), result.stderr
    name = json.loads(result.stdout)["runs"][0]["name"]
    label = f"[image/png, {len(picture)} bytes, sha256 "
    shown = workspace.cli("runs", "show", name, "--case", "1", "--project", "vision")
    assert shown.code == 0 and label in shown.stdout and "base64" not in shown.stdout
    failed = workspace.cli("runs", "show", name, "--project", "vision")
    assert "image/png" in failed.stdout and "base64" not in failed.stdout
    listed = workspace.cli("case", "list", "--project", "vision")
    assert "image/png" in listed.stdout and "base64" not in listed.stdout
    report = workspace.cli("report", name, "--project", "vision", "--format", "md")
    assert report.code == 0 and label in report.stdout and "base64" not in report.stdout
    with viewer(workspace) as url:
        status, _, page = get(f"{origin(url)}/runs/1/results/1/0")
    assert status == 200 and label in page and "base64," not in page


def test_the_fake_server_refuses_malformed_content_parts_as_openai_does(fake_llm):
    import urllib.error
    import urllib.request

    def post(content) -> int:
        body = json.dumps({"model": "fake", "messages": [{"role": "user", "content": content}]}).encode()
        request = urllib.request.Request(fake_llm.base_url + "/chat/completions", body,
                                         {"Content-Type": "application/json"})
        try:
            return urllib.request.urlopen(request, timeout=30).status
        except urllib.error.HTTPError as exc:
            return exc.code

    good = "data:image/png;base64," + base64.b64encode(png(1, 1, (0, 0, 0))).decode()
    assert post([{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": good}}]) == 200
    assert post([{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@"}}]) == 400
    assert post([{"type": "image_url", "image_url": {"url": "ftp://x/cat.png"}}]) == 400
    assert post([{"type": "picture"}]) == 400
