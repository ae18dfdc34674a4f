"""README.md and docs/*.md: every relative link leads to a file of this repository (and its heading)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: `[text](target)` and `![alt](target "title")`, and reference definitions `[name]: target`
INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.M)
CODE_BLOCK = re.compile(r"^```.*?^```", re.M | re.S)


def links(text: str) -> list[str]:
    text = CODE_BLOCK.sub("", text)
    return INLINE_LINK.findall(text) + REFERENCE.findall(text)


def anchors(markdown: str) -> set[str]:
    """GitHub's ids of a document's headings: lower case, punctuation dropped, spaces to dashes."""
    found = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", CODE_BLOCK.sub("", markdown), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        found.add(slug)
    return found


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves_inside_the_repository(document: Path) -> None:
    text = document.read_text(encoding="utf-8")
    problems = []
    for target in links(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # https:, mailto: ...
            continue
        path_part, _, fragment = target.partition("#")
        resolved = (document.parent / path_part).resolve() if path_part else document
        if not resolved.is_relative_to(ROOT):
            problems.append(f"{target}: outside the repository")
        elif not resolved.exists():
            problems.append(f"{target}: no such file")
        elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved.read_text(encoding="utf-8")):
            problems.append(f"{target}: no heading #{fragment}")
    # a path named in code (`../shared/x.md`) leads out of the repository just the same
    for path in re.findall(r"`(\.\./[^`\s]+)`", text):
        if not (document.parent / path).resolve().is_relative_to(ROOT):
            problems.append(f"{path}: outside the repository")
    assert not problems, f"{document.relative_to(ROOT)}: " + "; ".join(problems)


def test_readme_links_the_marker_reference_and_the_api():
    targets = {target.partition("#")[0] for target in links((ROOT / "README.md").read_text(encoding="utf-8"))}
    assert {"docs/markers.md", "docs/api.md"} <= targets
