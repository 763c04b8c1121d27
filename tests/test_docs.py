"""The README and the docs/ site stay true: every output block is what its command prints now, the
site builds in strict mode (no broken link or anchor), and the README stays short and links into it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

README = REPO / "README.md"
README_MAX_CHARS = 15_000


def test_every_output_block_is_what_its_command_prints() -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "docs_examples.py"), "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"


def test_every_marker_is_read_and_every_output_block_marked() -> None:
    # a marker the generator's pattern misses (a typo, no fenced block after it) would never be checked,
    # and an output block without a marker would go stale unseen
    for path in [README, *sorted((REPO / "docs").rglob("*.md"))]:
        text = path.read_text()
        name = path.relative_to(REPO)
        written = len(re.findall(r"^<!-- probe-example:", text, flags=re.M))
        read = len(re.findall(r"^<!-- probe-example: [^\n]+? -->\n```[\w-]*\n", text, flags=re.M))
        assert written == read, f"{name}: a probe-example marker is not followed by a fenced block"
        outputs = len(re.findall(r"^```(?:console|text)\n", text, flags=re.M))
        marked = len(re.findall(r"^<!-- probe-example: [^\n]+? -->\n```(?:console|text)\n", text, flags=re.M))
        assert outputs == marked, f"{name}: an output block (console or text) has no probe-example marker"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site as `make docs` builds it, with --strict: a warning (a broken link or anchor) fails."""
    folder = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(folder)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}\n{done.stderr}"
    return folder


def test_the_site_builds_in_strict_mode(site: Path) -> None:
    assert (site / "index.html").is_file()
    assert (site / "commands.html").is_file()


def test_the_site_reads_from_disk(site: Path) -> None:
    """Every page's links name a file (`commands.html`), not a folder: opened with file://, a
    folder link lands on a directory listing."""
    for page in site.glob("*.html"):
        hrefs = re.findall(r'href="([^"#:]+)(?:#[^"]*)?"', page.read_text())
        pages = [h for h in hrefs if not h.startswith(("assets/", "search/")) and "." not in h.rsplit("/", 1)[-1]]
        assert not pages, f"{page.name} links to folders: {sorted(set(pages))[:5]}"


def test_the_readme_is_short() -> None:
    size = len(README.read_text())
    assert size <= README_MAX_CHARS, f"README.md has {size} characters; move detail into docs/"


def test_the_readmes_links_resolve(site: Path) -> None:
    links = re.findall(r"\]\(([^)\s]+)\)", README.read_text())
    local = [link for link in links if not re.match(r"[a-z]+:", link)]
    assert any(link.startswith("docs/") for link in local), "the README links into docs/"
    for link in local:
        target, _, anchor = link.partition("#")
        if not target:
            continue  # an anchor in the README itself
        assert (REPO / target).exists(), f"README.md links to {target}, which does not exist"
        if anchor and target.startswith("docs/") and target.endswith(".md"):
            page = target[len("docs/") : -len(".md")]
            html = site / f"{page}.html"
            assert f'id="{anchor}"' in html.read_text(), f"README.md links to {link}: no such anchor"


def _generate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "docs_examples.py"), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_generator_finds_rewrites_and_then_accepts_a_stale_block(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "Intro.\n\n<!-- probe-example: probe rules -->\n```console\n$ probe rules\nan old table\n```\n\nEnd.\n"
    )
    stale = _generate("--check", str(page))
    assert stale.returncode == 1
    assert "stale output of `probe rules`" in stale.stdout
    assert "run `make docs-examples`" in stale.stdout
    assert "-an old table" in stale.stdout  # the difference is shown

    assert _generate(str(page)).returncode == 0
    text = page.read_text()
    assert "an old table" not in text
    assert "min_std" in text and text.startswith("Intro.\n") and text.endswith("```\n\nEnd.\n")
    assert _generate("--check", str(page)).returncode == 0


def test_the_generator_refuses_an_unexpected_exit_code(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("<!-- probe-example: probe run no-such-spec.yaml -->\n```console\n```\n")
    failed = _generate("--check", str(page))
    assert failed.returncode != 0
    assert "exit code 2, expected 0" in failed.stderr
    page.write_text("<!-- probe-example: probe run no-such-spec.yaml  # exit 2 -->\n```console\n```\n")
    assert _generate(str(page)).returncode == 0
    assert "no-such-spec.yaml" in page.read_text()
