"""Rebuild workflow/plots/offline.html: DVC's plots page with Vega, Vega-Lite and Vega-Embed inlined.

`dvc plots show` and `dvc plots diff` otherwise load these three scripts from a CDN; with this template
(the default through .dvc/config, or `--html-template workflow/plots/offline.html`) the page renders
with no network. The result is committed, so a fresh clone needs nothing of this; rerun it only to
change the versions below (needs `npm` and the npm registry):

    python workflow/plots/build_offline_template.py

The major versions are those DVC's own page uses (dvc-render: vega 5, vega-lite 5, vega-embed 6),
which the templates' Vega-Lite v5 schema needs. Each file is checked against its sha256 below.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: package -> (version, sha256 of its build/<package>.min.js), in the order the page loads them
PACKAGES = {
    "vega": ("5.33.1", "463f3db6a40b20e9747b4ed38f37ed0add508838f9141b1cf8366784b07b30c8"),
    "vega-lite": ("5.23.0", "58c27358e26f2d319cf62f45bc17a4c8362f08645001df2ec8d341eee4097c7f"),
    "vega-embed": ("6.29.0", "12d02acfbe3ec59ef9a37dd4822a2e04e2961b5bbb671bbe661d2221715b99da"),
}

PAGE = """<!DOCTYPE html>
<!-- DVC plots page that renders offline (bivrec: workflow/plots/build_offline_template.py).
     Inlined: {versions}; BSD-3-Clause, see workflow/plots/THIRD_PARTY_LICENSES.md. -->
<html>
<head>
    {{refresh_tag}}
    <meta charset="utf-8">
    <title>DVC Plot</title>
{scripts}
    <style>
        table {{
            border-spacing: 15px;
        }}
    </style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""


def minified(package: str, version: str, sha256: str, folder: Path) -> str:
    subprocess.run(["npm", "pack", "--silent", f"{package}@{version}"], cwd=folder, check=True, stdout=subprocess.DEVNULL)
    with tarfile.open(folder / f"{package}-{version}.tgz") as archive:
        data = archive.extractfile(f"package/build/{package}.min.js").read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        sys.exit(f"{package}@{version}: build/{package}.min.js has sha256 {digest}, expected {sha256}")
    text = data.decode("utf-8")
    if "</script" in text.lower():
        sys.exit(f"{package}@{version}: the script contains '</script' and cannot be inlined")
    return text


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        scripts = [
            f"    <script>/* {package}@{version} */\n{minified(package, version, sha256, Path(tmp))}\n    </script>"
            for package, (version, sha256) in PACKAGES.items()
        ]
    versions = ", ".join(f"{package}@{version}" for package, (version, _) in PACKAGES.items())
    target = HERE / "offline.html"
    tmp_target = target.with_suffix(".html.tmp")
    tmp_target.write_text(PAGE.format(versions=versions, scripts="\n".join(scripts)), encoding="utf-8")
    tmp_target.replace(target)
    print(f"wrote {target} ({target.stat().st_size:,} bytes): {versions}")


if __name__ == "__main__":
    main()
