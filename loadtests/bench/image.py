"""Container image: its size against the 400 MB aim (#16), what takes the room, and the build time.

deploy/build-image runs twice: once rebuilding the Debian base with mmdebstrap (REBUILD_BASE=1: the
cold build of a fresh machine, apart from pip's and apt's download caches) and once with the base
present (what `make image` costs after a change). Each build also builds the wheels on the host and
the image with podman. Sizes are podman's (uncompressed, MB = 10^6 bytes); the breakdown is `du`
inside a container of the image.

Run from the repository root, as root: `.venv/bin/python -m loadtests.bench.image [--warm-only]`
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUILD_IMAGE = ROOT / "deploy" / "build-image"
BASE = "localhost/launchkit-base:bookworm"
AIM_MB = 400
TOP = 8  # largest site-packages entries listed
ENVIRONMENT = {**os.environ, "CONTAINERS_CONF": str(ROOT / "deploy" / "containers.conf")}


def podman(*args: str, timeout: float = 120) -> str:
    result = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, env=ENVIRONMENT)
    if result.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args)}: {result.stderr}")
    return result.stdout


def version() -> str:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def build(rebuild_base: bool) -> float:
    started = time.monotonic()
    environment = {**ENVIRONMENT, "REBUILD_BASE": "1" if rebuild_base else "0"}
    result = subprocess.run([str(BUILD_IMAGE)], capture_output=True, text=True, timeout=1800, env=environment)
    if result.returncode != 0:
        raise RuntimeError(f"deploy/build-image failed:\n{result.stdout}\n{result.stderr}")
    return time.monotonic() - started


def size_mb(image: str) -> float:
    return int(json.loads(podman("image", "inspect", image))[0]["Size"]) / 1e6


# Sizes in KiB inside the image: the venv, its compiled bytecode, its largest entries, and the base's
# main parts (Python's standard library, shared libraries).
DU = """
set -e
cd /opt/launchkit/lib/python3.*/site-packages
echo "venv $(du -sk /opt/launchkit | cut -f1)"
echo "pycache $(find /opt/launchkit -name __pycache__ -type d -prune -exec du -sk {} + | awk '{s += $1} END {print s}')"
du -sk -- * | sort -rn | head -n %d | awk '{print "package", $2, $1}'
echo "stdlib $(du -sk /usr/lib/python3.11 | cut -f1)"
echo "libs $(du -sk /usr/lib/x86_64-linux-gnu | cut -f1)"
""" % TOP


def breakdown(image: str) -> dict:
    output = podman("run", "--rm", "--network=none", "--entrypoint=sh", image, "-c", DU)
    found: dict = {"packages": []}
    for line in output.splitlines():
        kind, *rest = line.split()
        if kind == "package":
            found["packages"].append((rest[0], int(rest[1]) * 1024 / 1e6))
        else:
            found[kind] = int(rest[0]) * 1024 / 1e6
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--warm-only", action="store_true", help="skip the build with a fresh Debian base")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("the image benchmark builds a Debian base with mmdebstrap: run it as root", file=sys.stderr)
        return 2
    image = f"localhost/launchkit:{version()}"
    builds = []
    if not args.warm_only:
        builds.append(("fresh Debian base (mmdebstrap) + wheels + image", build(rebuild_base=True)))
    builds.append(("base present: wheels + image (`make image` after a change)", build(rebuild_base=False)))
    total, base = size_mb(image), size_mb(BASE)
    parts = breakdown(image)

    command = ".venv/bin/python -m loadtests.bench.image" + (" --warm-only" if args.warm_only else "")
    print(f"Command: `{command}` (deploy/build-image; pip's and apt's download caches warm). Sizes: podman's "
          "for the images, `du` inside the image for the parts (whole 4 KiB blocks: they add up to a little more).\n")
    print("| build | time (s) |\n| --- | --- |")
    for name, seconds in builds:
        print(f"| {name} | {seconds:.1f} |")
    print(f"\n| part of {image} | MB |\n| --- | --- |")
    print(f"| **whole image** (aim < {AIM_MB} MB) | **{total:.0f}** |")
    print(f"| base {BASE} (Debian 12: Python 3.11, libsrt, CA certificates, apt) | {base:.0f} |")
    print(f"| &nbsp; of which Python's standard library | {parts['stdlib']:.0f} |")
    print(f"| &nbsp; of which shared libraries (/usr/lib/x86_64-linux-gnu) | {parts['libs']:.0f} |")
    print(f"| venv /opt/launchkit (Launchkit and its dependencies) | {parts['venv']:.0f} |")
    print(f"| &nbsp; of which compiled bytecode (`__pycache__`) | {parts['pycache']:.0f} |")
    for name, mb in parts["packages"]:
        print(f"| &nbsp; site-packages/{name} | {mb:.0f} |")
    within = total < AIM_MB
    largest = ", ".join(f"{name} {mb:.0f} MB" for name, mb in parts["packages"][:4])
    warm = builds[-1][1]
    cold = f"; {builds[0][1]:.0f} s with a fresh Debian base" if len(builds) > 1 else ""
    print(f"\n**Headline:** the image is {total:.0f} MB ({'within' if within else 'over'} the {AIM_MB} MB aim by "
          f"{abs(AIM_MB - total):.0f} MB): a {base:.0f} MB Debian base and a {parts['venv']:.0f} MB venv whose "
          f"largest parts are {largest}. Build: {warm:.0f} s with the base present{cold}.")
    return 0 if within else 1


if __name__ == "__main__":
    sys.exit(main())
