"""The digest of the extension's sources, written next to its build by build.sh.

`tests/ui/test_labextension.py` recomputes it from the committed sources and compares it
with the committed build's, so a change to `src/`, `style/`, `package.json`,
`tsconfig.json` or `install.json` without a rebuild fails the tests ("rebuild with labextension/build.sh").

    python labextension/digest.py          print the digest
    python labextension/digest.py --write  write it into the build folder
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BUILD = HERE.parent / "nbflow" / "ui" / "labextensions" / "nbflow-dashboard"
DIGEST_FILE = "sources.sha256"


def source_files(root: Path = HERE) -> list[Path]:
    """What the build is made from: the sources, the styles, the package and tsc options."""
    files = [root / "package.json", root / "tsconfig.json", root / "install.json"]
    for folder in ("src", "style"):
        files += (p for p in (root / folder).rglob("*") if p.is_file())
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def sources_digest(root: Path = HERE) -> str:
    h = hashlib.sha256()
    for path in source_files(root):
        name = path.relative_to(root).as_posix().encode()
        data = path.read_bytes()
        h.update(b"%d:%s%d:" % (len(name), name, len(data)))
        h.update(data)
    return h.hexdigest()


if __name__ == "__main__":
    digest = sources_digest()
    if sys.argv[1:] == ["--write"]:
        (BUILD / DIGEST_FILE).write_text(digest + "\n")
    print(digest)
