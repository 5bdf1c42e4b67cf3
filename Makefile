# The two commands of the README:
#   make demo   set up (Python venv, hls.js from npm) and run `launchkit demo`
#   make test   set up everything the tests need (apt, pip, npm) and run the whole suite, the
#               container image's (tests/deploy) included
#   make image  build the container image localhost/launchkit:<version> (deploy/build-image; root)
#   make screenshots   refresh the README's landing page screenshots (docs/screenshots/); tests
#               themselves write only under tests/artifacts/
# Setup steps are idempotent: stamps under .venv/ skip what is already done.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HLSJS := landing/static/vendor/hls.light.min.js
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: demo test image screenshots setup setup-test system-packages container-packages bench clean

demo: setup
	$(BIN)/launchkit demo --host $(HOST) --port $(PORT)

test: setup-test container-packages
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Debian-based, from this machine's apt sources: see deploy/build-image and the README's "Container image".
image: setup container-packages
	deploy/build-image

screenshots: setup-test
	SCREENSHOTS_DIR=docs/screenshots $(BIN)/python -m pytest -m browser tests/landing/test_page.py

setup: $(VENV)/.installed $(HLSJS)

setup-test: system-packages setup $(VENV)/.installed-test

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

# hls.js comes from npm (pinned in landing/package-lock.json) and is served from the Python package.
$(HLSJS): landing/package.json landing/package-lock.json
	command -v npm >/dev/null || { echo "npm is missing: run 'make system-packages' as root or install Node.js"; exit 1; }
	cd landing && npm ci --no-audit --no-fund --loglevel=error
	mkdir -p $(dir $@)
	cp landing/node_modules/hls.js/dist/hls.light.min.js $@

# Only what is missing: the base image's Node.js (another vendor's build) must not be replaced.
# ffmpeg: ffprobe checks the HLS and the CLI publishes RTMP/SRT in the tests. libsrt1.5-gnutls: the
# origin's SRT listener binds this exact library through ctypes (stream/ingest/libsrt.py), so it is
# named even though ffmpeg pulls it in. iproute2: WebRTC tests run servers and viewers in network
# namespaces joined by a veth pair (tests/support/netns.py). nftables: nft, the firewall that drops
# every UDP packet of the viewer's namespace in the tests of viewers behind UDP-blocking networks.
# redis-server: edges share the waiting room through a real Redis in the tests. nginx: the
# reference the edge is benchmarked against. prometheus: promtool checks the alert rules and a real
# Prometheus scrapes the servers in tests/k8s (kubectl, which renders the kustomize overlays, comes with
# the base image: Debian's kubernetes-client is too old for them). apache2-utils: ab, the landing
# page benchmark's load generator. coturn: turnserver, the real TURN server WebRTC viewers relay through
# in the TURN tests (as beside the edges, k8s/base/coturn.yaml); the tests start their own in a private
# network namespace, not the system service the package may enable (`systemctl disable --now coturn`).
# GStreamer (webrtcbin, x264enc, libnice) and its Python bindings: a WHIP publisher of another stack
# (tests/stream/webrtc/gstreamer_whip.py; Debian 12's simple-whip-client aborts on a libsoup 2/3 clash).
GSTREAMER_PACKAGES := python3-gst-1.0 gir1.2-gst-plugins-bad-1.0 gstreamer1.0-plugins-good \
	gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-nice

system-packages:
	@packages=""; \
	command -v ffprobe >/dev/null || packages="$$packages ffmpeg"; \
	dpkg -s libsrt1.5-gnutls >/dev/null 2>&1 || packages="$$packages libsrt1.5-gnutls"; \
	command -v chromium >/dev/null || packages="$$packages chromium"; \
	command -v npm >/dev/null || packages="$$packages nodejs npm"; \
	command -v ip >/dev/null || packages="$$packages iproute2"; \
	command -v nft >/dev/null || packages="$$packages nftables"; \
	command -v redis-server >/dev/null || packages="$$packages redis-server"; \
	command -v nginx >/dev/null || packages="$$packages nginx"; \
	command -v promtool >/dev/null || packages="$$packages prometheus"; \
	command -v ab >/dev/null || packages="$$packages apache2-utils"; \
	command -v turnserver >/dev/null || packages="$$packages coturn"; \
	for package in $(GSTREAMER_PACKAGES); do \
		dpkg -s $$package >/dev/null 2>&1 || packages="$$packages $$package"; \
	done; \
	if [ -n "$$packages" ]; then \
		echo "installing Debian packages:$$packages"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$packages; \
	fi

# What building and running the container image needs (tests/deploy, `make image`), only what is
# missing. podman + runc: the engine and the runtime deploy/containers.conf selects (Debian's crun
# refuses the hybrid cgroup layout of such hosts). slirp4netns: rootless-style user-mode networking,
# the only network that works in every container here (`--network slirp4netns`). mmdebstrap: no
# container registry is reachable, so the base image is a Debian root file system built from the
# machine's apt sources. podman-compose: the one-host deployment (deploy/compose.yaml).
container-packages:
	@packages=""; \
	command -v podman >/dev/null || packages="$$packages podman"; \
	command -v runc >/dev/null || packages="$$packages runc"; \
	command -v slirp4netns >/dev/null || packages="$$packages slirp4netns"; \
	command -v mmdebstrap >/dev/null || packages="$$packages mmdebstrap"; \
	command -v podman-compose >/dev/null || packages="$$packages podman-compose"; \
	if [ -n "$$packages" ]; then \
		echo "installing Debian packages:$$packages"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$packages; \
	fi

bench: setup-test
	$(BIN)/python -m loadtests.bench --write

clean:
	rm -rf $(VENV) landing/node_modules landing/static/vendor tests/artifacts
