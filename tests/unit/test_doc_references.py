"""Citations of the project's docs point at sections that exist, and nothing cites texts
that live outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CITED = re.compile(r"docs/([\w./-]+\.md)#([\w-]+)")
# The upstream notes the project was first written from, and their section numbers (A.7, C.4).
OUTSIDE = re.compile(r"OPENSTACK\.md|CLIENTS\.md|BEYOND\.md|(?<![\w.])[A-G]\.\d{1,2}(?![\w.])")


def anchors(markdown: Path) -> set[str]:
    """The anchors GitHub makes of a file's headings."""
    found = set()
    for line in markdown.read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return found


def sources() -> list[Path]:
    return sorted(p for top in ("src", "tests") for p in (ROOT / top).rglob("*.py"))


def test_anchors_are_made_as_github_makes_them(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n## DHCP option 121\ntext\n### Reaching the metadata address\n")
    assert anchors(page) == {"title", "dhcp-option-121", "reaching-the-metadata-address"}


def test_every_cited_section_exists() -> None:
    cited: dict[tuple[str, str], list[str]] = {}
    for path in sources():
        for match in CITED.finditer(path.read_text()):
            cited.setdefault(match.groups(), []).append(str(path.relative_to(ROOT)))
    assert ("wire-contracts.md", "ec2-tree") in cited  # the scan finds citations at all
    missing = {
        f"docs/{doc}#{anchor}": where
        for (doc, anchor), where in cited.items()
        if not (ROOT / "docs" / doc).is_file() or anchor not in anchors(ROOT / "docs" / doc)
    }
    assert missing == {}


def test_nothing_cites_notes_outside_the_repository() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in sources()
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if OUTSIDE.search(line) and path != Path(__file__).resolve()
    ]
    assert found == []


def test_readme_links_lead_to_files() -> None:
    readme = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(((?!https?:)[^)#]+)", readme)
    assert "docs/wire-contracts.md" in targets
    assert [t for t in targets if not (ROOT / t).exists()] == []
