"""How long does `minictr pull` take, next to `skopeo copy` + `minictr image import`?

    sudo .venv/bin/python bench/pull.py              # 3 rounds, print
    sudo .venv/bin/python bench/pull.py --write      # ... and update bench/README.md

    1 an image of ~100 MB in 11 layers      busybox, then 10 commits of 9 MB each: 200 files of
                                            random bytes (gzip cannot shrink them) and a text
                                            file (it can), as real layers mix both
    2 a registry on 127.0.0.1               Debian's docker-registry, storage under /var/tmp
    3 the image into it                     minictr image export, skopeo copy to docker://
    4 the rounds, in turns, each after a    a. minictr pull into an empty store
      sync(2)
                                            b. skopeo copy docker:// oci:DIR, then minictr image
                                               import DIR into an empty store: the same work
                                               done by two tools, with the blobs on disk between
                                            c. minictr pull again: the image is there
    5 the medians; with --write, README     between the pull-results markers

Both sides download the same blobs from the same registry over loopback, check every digest
and extract every layer with minictr's import rules; what differs is the path between: a pull
streams each blob from the socket through sha256, gunzip and the tar reader into the layer,
while skopeo writes the blobs to a layout first, and the import reads them back.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from tests.registries import DockerRegistry  # noqa: E402  (the tests' registry, started alike)

README = HERE / "README.md"
BEGIN, END = "<!-- pull-results:begin -->", "<!-- pull-results:end -->"
MINICTR = str(Path(sys.executable).parent / "minictr")
LAYERS = 10


def sh(*argv: str | Path, root: Path | None = None, quiet: bool = True) -> float:
    """Run, and return the wall time in seconds."""
    env = {**os.environ, **({"MINICTR_ROOT": str(root)} if root else {})}
    os.sync()  # what the one before wrote goes to disk now, not during this one's time
    start = time.perf_counter()
    done = subprocess.run([str(a) for a in argv], env=env, stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL if quiet else None, stderr=subprocess.PIPE,
                          text=True)
    took = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"bench/pull.py: {' '.join(map(str, argv))} failed:\n{done.stderr}")
    return took


def make_image(work: Path) -> tuple[Path, int]:
    """~100 MB in 11 layers, exported as an OCI archive. Returns it and its layer bytes."""
    store = work / "maker"
    sh(MINICTR, "image", "build", "busybox", root=store)
    image = "busybox"
    for n in range(1, LAYERS + 1):
        script = (f"mkdir /l{n} && for i in $(seq 200); do head -c 30000 /dev/urandom > "
                  f"/l{n}/f$i; done; seq {n} 500000 > /l{n}/numbers")
        sh(MINICTR, "run", "--name", f"c{n}", image, "sh", "-c", script, root=store)
        sh(MINICTR, "commit", f"c{n}", f"big{n}", root=store)
        image = f"big{n}"
    archive = work / "big.tar"
    sh(MINICTR, "image", "export", image, archive, root=store)
    import json

    size = sum(json.loads(p.read_text())["size"] for p in (store / "layers").glob("*.json"))
    shutil.rmtree(store)
    return archive, size


def fresh(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir()
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write", action="store_true", help="update bench/README.md")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/pull.py: needs root (sudo .venv/bin/python bench/pull.py)", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="minictr-bench-pull-"))
    registry = None
    try:
        archive, unpacked = make_image(work)
        registry = DockerRegistry(work / "registry")
        ref = f"{registry.host}/bench/big:1"
        sh("skopeo", "copy", "-q", "--dest-tls-verify=false", f"oci-archive:{archive}:big{LAYERS}",
           f"docker://{ref}")
        blobs = sum(p.stat().st_size for p in (work / "registry/storage").rglob("data"))
        times: dict[str, list[float]] = {"pull": [], "skopeo+import": [], "again": []}
        for round_ in range(args.rounds):
            a, b = fresh(work / "a"), fresh(work / "b")
            order = ["pull", "skopeo+import"] if round_ % 2 == 0 else ["skopeo+import", "pull"]
            for who in order:
                if who == "pull":
                    times["pull"].append(sh(MINICTR, "pull", ref, root=a))
                else:
                    layout = work / "layout"
                    if layout.exists():
                        shutil.rmtree(layout)
                    t = sh("skopeo", "copy", "-q", "--src-tls-verify=false", f"docker://{ref}",
                           f"oci:{layout}:big")
                    t += sh(MINICTR, "image", "import", layout, "big", root=b)
                    times["skopeo+import"].append(t)
            times["again"].append(sh(MINICTR, "pull", ref, root=a))
        median = {k: statistics.median(v) for k, v in times.items()}
        ratio = median["pull"] / median["skopeo+import"]
        lines = [
            f"{datetime.date.today()}, {platform.node() or 'this machine'}: "
            f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
            f"an image of {LAYERS + 1} layers, {unpacked / 2**20:.0f} MiB unpacked, "
            f"{blobs / 2**20:.0f} MiB of blobs in the registry; median of {args.rounds} rounds",
            "",
            "| | seconds | |",
            "|---|---:|---|",
            f"| `minictr pull` into an empty store | {median['pull']:.2f} | |",
            f"| `skopeo copy docker:// oci:` + `minictr image import` | "
            f"{median['skopeo+import']:.2f} | |",
            f"| ratio pull / (skopeo + import) | {ratio:.2f} | goal ≤ 1.2 |",
            f"| `minictr pull` again (nothing to download) | {median['again']:.3f} | "
            f"goal ≤ 0.2 |",
        ]
        print("\n".join(lines))
        if args.write:
            text = README.read_text()
            block = f"{BEGIN}\n" + "\n".join(lines) + f"\n{END}"
            text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, text,
                          flags=re.S)
            README.write_text(text)
        return 0
    finally:
        if registry is not None:
            registry.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
