"""k8s/ runs the image the build produces: every Launchkit container of every rendered kustomization
(overlays, rehearsal) is `localhost/launchkit:<version>` as deploy/build-image tags it, as the image's
own user; the `kustomize edit set image` line of k8s/README.md retargets them to one's own registry."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest
import yaml

from tests.support.containers import IMAGE, VERSION
from tests.support.k8s import K8S, OVERLAYS, ROOT, kustomize

KUSTOMIZATIONS = {**{f"overlays/{name}": K8S / "overlays" / name for name in OVERLAYS},
                  "rehearsal": K8S / "rehearsal", "rehearsal/merge": K8S / "rehearsal" / "merge"}
REPOSITORY = IMAGE.rsplit(":", 1)[0]
LAUNCHKIT_COMMANDS = {"origin", "edge", "rehearse", "demo", "event", "plan"}


def image_user() -> tuple[int, int]:
    """The Containerfile's `USER uid:gid`."""
    found = re.search(r"^USER\s+(\d+):(\d+)\s*$", (ROOT / "Containerfile").read_text(), re.M)
    assert found, "Containerfile: no numeric USER uid:gid"
    return int(found[1]), int(found[2])


def pod_templates(documents: list[dict]) -> list[tuple[str, dict]]:
    return [(f"{d['kind']}/{d['metadata']['name']}", d["spec"]["template"]["spec"]) for d in documents
            if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job")]


def launchkit_containers(documents: list[dict]) -> list[tuple[str, dict, dict]]:
    """(workload, pod spec, container) for every container that runs the launchkit CLI."""
    found = []
    for workload, pod in pod_templates(documents):
        for container in pod.get("initContainers", []) + pod["containers"]:
            runs_launchkit = bool(container.get("args")) and container["args"][0] in LAUNCHKIT_COMMANDS
            if runs_launchkit or container["image"].split(":")[0].endswith("/launchkit"):
                found.append((workload, pod, container))
    return found


@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_every_launchkit_container_runs_the_built_image_as_its_user(name):
    documents = kustomize(KUSTOMIZATIONS[name])
    containers = launchkit_containers(documents)
    assert containers, name
    uid, gid = image_user()
    assert (uid, gid) == (10001, 10001)
    for workload, pod, container in containers:
        assert container["image"] == IMAGE == f"localhost/launchkit:{VERSION}", (workload, container["image"])
        assert container.get("command") is None, workload  # the image's entrypoint: launchkit
        context = pod["securityContext"]
        assert context["runAsNonRoot"] is True, workload
        assert (context["runAsUser"], context["runAsGroup"], context["fsGroup"]) == (uid, gid, gid), workload
        own = container.get("securityContext", {})
        assert own.get("runAsUser", uid) == uid and own.get("runAsGroup", gid) == gid, workload
    if name.startswith("overlays/"):
        assert {w for w, _, _ in containers} == {"Deployment/origin", "Deployment/edge"}


def test_no_manifest_names_an_image_nobody_builds():
    for path in K8S.rglob("*"):
        if path.suffix in (".yaml", ".yml", ".md"):
            assert "ghcr.io/launchkit" not in path.read_text(), path
    # Every kustomization that sets Launchkit's image sets the build's name and version.
    for path in K8S.rglob("kustomization.yaml"):
        for entry in yaml.safe_load(path.read_text()).get("images", []):
            if entry["name"] == "launchkit":
                assert (entry["newName"], str(entry["newTag"])) == (REPOSITORY, VERSION), path


def documented_set_image() -> dict:
    """The `kustomize edit set image OLD=NEW:TAG` line of k8s/README.md as the `images:` entry it writes."""
    lines = [line for line in (K8S / "README.md").read_text().splitlines() if line.startswith("kustomize edit set image ")]
    assert len(lines) == 1, lines
    argument = shlex.split(lines[0].split("kustomize edit set image", 1)[1])[0]
    old, new = argument.split("=", 1)
    new_name, new_tag = new.rsplit(":", 1)
    return {"name": old, "newName": new_name, "newTag": new_tag}


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_an_images_entry_retargets_origin_and_edges_to_ones_own_registry(overlay, tmp_path):
    entry = documented_set_image()
    assert entry["name"] == REPOSITORY and entry["newTag"] == VERSION
    before = {w: c["image"] for w, _, c in [(w, p, c) for w, p in pod_templates(kustomize(K8S / "overlays" / overlay))
                                            for c in p["containers"]]}
    # What `kustomize edit set image` leaves in an overlay of the overlay (kustomize refuses absolute paths).
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [os.path.relpath(K8S / "overlays" / overlay, tmp_path)], "images": [entry]}))
    documents = kustomize(Path(tmp_path))
    after = {w: c["image"] for w, p in pod_templates(documents) for c in p["containers"]}
    retargeted = {w for w in after if after[w] != before[w]}
    assert retargeted == {"Deployment/origin", "Deployment/edge"}
    assert {after[w] for w in retargeted} == {f"{entry['newName']}:{entry['newTag']}"}
