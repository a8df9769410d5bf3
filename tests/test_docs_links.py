"""README.md and docs/*.md: every relative link, heading anchor and repository path they name exists.

Checked in each page:
* relative Markdown links ``[text](path)``, ``[text](path#anchor)``, ``[text](#anchor)`` (also images): the path
  exists relative to the page, and an anchor matches a heading of the target page (GitHub's slug: lowercase,
  punctuation except '-' and '_' dropped, spaces to '-', ``-1``, ``-2`` ... for repeated headings);
* paths in backticks that look like repository files or folders (``bench/results/x.json``, ``configs/...yaml``,
  ``docs/...md``, ``tests/test_docs_links.py::name``, globs such as ``tests/test_labelling_*.py``): they exist relative to
  the repository root (a glob matches at least one file). Placeholders (``<date>``, ``DIR/...``), outputs the
  commands write (``data/``, ``runs/``, ...), absolute paths and paths outside the repository are not files of the
  repository and are skipped;
* ``make TARGET`` names a Makefile target that ``make help`` lists (a ``## `` description).

README.md must stay short (at most 160 lines). Pure text parsing: no subprocess, well under a second.
"""
from __future__ import annotations

import glob
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 160
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# folders that commands create (outputs, data, runs) or that only stand for a user's folder: not repository files
GENERATED = {"data", "runs", "run_dir", "lightning_logs", "out", "shared", "tmp", "work"}
# a backtick path counts as a repository path when it starts in one of the repository's top-level folders
# (`clean/` inside a store, `checkpoints/last.ckpt` inside a run folder are not)
REPO_DIRS = {d.name for d in ROOT.iterdir() if d.is_dir() and not d.name.startswith(".") and d.name not in GENERATED
             and not d.name.endswith(".egg-info")}
FILE_EXT = re.compile(r"\.(md|json|ya?ml|py|png|toml|sbatch|sh|csv|txt|in|cfg|ckpt|npy|npz|tif|dm3|dm4|emd)$")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^()\s]+)(?:\s+\"[^\"]*\")?\)")
CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.S)
MAKE = re.compile(r"(?<![\w-])make ((?:[a-z][a-z0-9-]*)(?: [a-z][a-z0-9-]*)*)")


def strip_fences(text: str) -> tuple[str, list[str]]:
    """(prose with fenced code blocks blanked, the fenced blocks' lines)."""
    prose, fenced, inside = [], [], False
    for line in text.split("\n"):
        if line.lstrip().startswith("```"):
            inside = not inside
            prose.append("")
        elif inside:
            fenced.append(line)
            prose.append("")
        else:
            prose.append(line)
    return "\n".join(prose), fenced


def slug(heading: str) -> str:
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading counts by its text
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    prose, _ = strip_fences(path.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    out = set()
    for line in prose.split("\n"):
        m = re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        s = slug(m.group(2))
        n = seen.get(s, 0)
        seen[s] = n + 1
        out.add(s if n == 0 else f"{s}-{n}")
    return out


def repo_path_candidates(code: str) -> list[str]:
    """Tokens of one code span that name a repository file or folder."""
    out = []
    for tok in code.split():
        tok = tok.strip(",;:()\"'")
        tok = tok.split("::", 1)[0]
        if "/" not in tok or tok.startswith(("/", "~", "-", "..", "http:", "https:")) or "=" in tok:
            continue
        if any(c in tok for c in "<>{}$|\\[]"):
            continue
        first = tok.split("/", 1)[0]
        if first not in REPO_DIRS:  # outputs (data/, runs/), placeholders (DIR/...), folders inside a store or run
            continue
        if not re.fullmatch(r"[A-Za-z0-9_.*/-]+", tok):
            continue
        if tok.endswith("/") or FILE_EXT.search(tok):
            out.append(tok)
    return out


def make_targets(makefile: Path) -> set[str]:
    return set(re.findall(r"^([a-zA-Z0-9_-]+):[^\n]*## ", makefile.read_text(encoding="utf-8"), re.M))


def problems(page: Path, root: Path = ROOT) -> list[str]:
    """Every broken link, anchor, path or make target of one page, as readable lines."""
    text = page.read_text(encoding="utf-8")
    prose, fenced = strip_fences(text)
    found: list[str] = []
    name = page.name
    anchor_cache: dict[Path, set[str]] = {}

    def has_anchor(target: Path, anchor: str) -> bool:
        if target not in anchor_cache:
            anchor_cache[target] = anchors(target)
        return anchor in anchor_cache[target]

    # links (code spans removed first, so that `[x](y)` inside backticks is not a link)
    for m in LINK.finditer(CODE_SPAN.sub(lambda c: " " * len(c.group(0)), prose)):
        href = m.group(1)
        if re.match(r"^[a-z][a-z0-9+.-]*:", href):  # http:, https:, mailto:
            continue
        path_part, _, anchor = href.partition("#")
        target = (page.parent / path_part).resolve() if path_part else page
        if not target.exists():
            found.append(f"{name}: link {href!r}: {path_part} does not exist")
            continue
        if anchor and target.suffix == ".md" and not has_anchor(target, anchor):
            found.append(f"{name}: link {href!r}: no heading with anchor #{anchor} in {target.name}")

    # repository paths in backticks (prose code spans and fenced command lines)
    spans = [m.group(2) for m in CODE_SPAN.finditer(prose)] + fenced
    for code in spans:
        for tok in repo_path_candidates(code):
            if "*" in tok:
                if not glob.glob(str(root / tok)):
                    found.append(f"{name}: `{tok}` matches no file")
            elif not (root / tok).exists():
                found.append(f"{name}: `{tok}` does not exist")

    # make targets
    targets = make_targets(root / "Makefile")
    for code in spans:
        for m in MAKE.finditer(code):
            word = m.group(1).split()[0]
            if word not in targets:
                found.append(f"{name}: `make {word}` is not a target that `make help` lists")
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_anchors_and_paths_exist(page):
    assert problems(page) == []


def test_readme_is_short_and_starts_with_the_two_commands():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").split("\n")
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail into docs/"
    head = "\n".join(lines[:8])
    assert "make simulate" in head and "make test" in head


def test_every_docs_page_is_reachable_from_the_readme():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    linked = {(ROOT / h.partition("#")[0]).resolve() for h in LINK.findall(readme)}
    missing = [p.name for p in PAGES[1:] if p.resolve() not in linked]
    assert missing == []


def test_slug_follows_github():
    assert slug("Plane groups and symmetry maps (seed 000)") == "plane-groups-and-symmetry-maps-seed-000"
    assert slug("Held-out hosts: how far the context carries (`bench/generalise.py`)") == (
        "held-out-hosts-how-far-the-context-carries-benchgeneralisepy")
    assert slug("Training: the demo's Table 1") == "training-the-demos-table-1"
    assert slug("rVAE (`rvae/`): rotationally invariant VAE") == "rvae-rvae-rotationally-invariant-vae"


GOOD = "# Title\n\n## A section: with `code`\n\nSee [it](#a-section-with-code) and `docs/page.md`.\n"


@pytest.mark.parametrize(
    "body, expected",
    [
        ("[gone](missing.md)", "missing.md does not exist"),
        ("[page](docs/page.md#no-such-heading)", "no heading with anchor #no-such-heading"),
        ("[self](#nowhere)", "no heading with anchor #nowhere"),
        ("![figure](bench/results/nothing.png)", "nothing.png does not exist"),
        ("see `bench/results/never-20990101T000000Z.json`", "does not exist"),
        ("run `python -m simulate run --config configs/dataset/nope.yaml`", "configs/dataset/nope.yaml"),
        ("`tests/test_nothing_*.py`", "matches no file"),
        ("`docs/` then `make no-such-target`", "make no-such-target"),
        ("```bash\nmake simulate --config configs/missing.yaml\n```", "configs/missing.yaml"),
    ],
    ids=["file", "anchor-in-other-page", "anchor-in-same-page", "image", "backtick-json", "path-in-command",
         "glob", "make-target", "fenced-block"],
)
def test_a_broken_reference_is_reported(tmp_path, body, expected):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "page.md").write_text(GOOD, encoding="utf-8")
    (tmp_path / "Makefile").write_text("simulate: ## Simulate\n\ttrue\n", encoding="utf-8")
    page = tmp_path / "README.md"
    page.write_text(GOOD + "\n" + body + "\n", encoding="utf-8")
    found = problems(page, root=tmp_path)
    assert len(found) == 1 and expected in found[0], found


def test_a_good_page_has_no_problems(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "page.md").write_text(GOOD, encoding="utf-8")
    (tmp_path / "Makefile").write_text("simulate: ## Simulate\n\ttrue\n", encoding="utf-8")
    page = tmp_path / "README.md"
    page.write_text(GOOD + "\n[p](docs/page.md#a-section-with-code) `make simulate` `data/out.zarr` `DIR/x.json`"
                    " `bench/results/x-<date>.json` [web](https://example.org)\n", encoding="utf-8")
    assert problems(page, root=tmp_path) == []
