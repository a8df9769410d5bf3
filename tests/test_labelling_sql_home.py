"""``labelling/db.py`` is the one module of the labelling stage that writes SQL: every other module calls its
named functions. Read from the source with ``ast`` (nothing is imported): a string constant that holds an SQL
statement, or a call of a DB-API method (``execute``, ``executemany``, ``executescript``, ``cursor``), anywhere
in ``labelling/`` outside ``db.py`` fails the test.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SQL_HOME = "db.py"
SQL_STATEMENT = re.compile(
    r"\bSELECT\b[\s\S]*\bFROM\b|\bINSERT\s+(OR\s+[A-Z]+\s+)?INTO\b|\bUPDATE\s+\w+\s+SET\b|\bDELETE\s+FROM\b"
    r"|\b(CREATE|ALTER|DROP)\s+(TABLE|INDEX|VIEW|TRIGGER)\b|\bPRAGMA\s+\w+|\bBEGIN\s+(IMMEDIATE|EXCLUSIVE)\b"
    r"|\bON\s+CONFLICT\b")
"""SQL statements as written in this project: keywords in capitals (prose such as "select the sites from" in a
docstring is not SQL)."""
DB_API_CALLS = {"execute", "executemany", "executescript", "cursor"}


def sql_outside_home(package: Path) -> list[str]:
    """``file:line: what`` for every SQL string constant and DB-API call in ``package``'s modules but ``db.py``."""
    found = []
    for path in sorted(package.rglob("*.py")):
        if path.relative_to(package).as_posix() == SQL_HOME:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        where = path.relative_to(package.parent).as_posix()
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL_STATEMENT.search(node.value):
                found.append(f"{where}:{node.lineno}: SQL text {node.value[:60]!r}")
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr in DB_API_CALLS:
                found.append(f"{where}:{node.lineno}: .{node.func.attr}(...) call")
    return found


def test_sql_lives_in_db_module_only():
    found = sql_outside_home(REPO / "labelling")
    assert not found, ("SQL outside labelling/db.py (move it into a named function there):\n" + "\n".join(found))


def test_detector_finds_sql_text_and_db_api_calls(tmp_path):
    """The scanner itself: SQL in any string constant (f-strings and concatenated literals included) or a
    ``.execute`` call outside db.py is found; db.py and SQL-like prose are not."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "db.py").write_text('def q(con):\n    return con.execute("SELECT * FROM images").fetchall()\n')
    (pkg / "prose.py").write_text('"""Select the sites from the image; update the table and delete a label."""\n')
    assert sql_outside_home(pkg) == []
    (pkg / "a.py").write_text('def f(con, t):\n    return con.execute(f"SELECT id FROM {t} "\n'
                              '                       "WHERE x = ?", (1,))\n')
    (pkg / "b.py").write_text('Q = "INSERT OR IGNORE INTO finished(a) VALUES (?)"\n')
    (pkg / "c.py").write_text('def g(con):\n    return con.cursor()\n')
    found = sql_outside_home(pkg)
    assert any(f.startswith("pkg/a.py:2: SQL text") for f in found), found
    assert any(f.startswith("pkg/a.py:2: .execute") for f in found), found
    assert any(f.startswith("pkg/b.py:1: SQL text") for f in found), found
    assert any(f.startswith("pkg/c.py:2: .cursor") for f in found), found
