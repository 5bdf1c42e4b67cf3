"""QoE beacons' fields: how a page's WebRTC attempts beside LL-HLS ended reach Prometheus, with
bounded labels (anything else is a 400 and counts nothing)."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from launchkit.qoe import parse_beacon, record
from launchkit.web.refusal import Refusal


def attempts(outcome: str) -> float:
    return REGISTRY.get_sample_value("launchkit_qoe_webrtc_attempts_total", {"outcome": outcome}) or 0.0


def test_webrtc_outcomes_are_counted_by_outcome():
    before = {outcome: attempts(outcome) for outcome in ("won", "refused", "timeout")}
    record(parse_beacon({"protocol": "webrtc", "played": 3, "webrtc": {"won": 1, "refused": 2}}))
    record(parse_beacon({"protocol": "llhls", "played": 3, "webrtc": {"timeout": 1}}))
    assert {outcome: attempts(outcome) - before[outcome] for outcome in before} == {"won": 1, "refused": 2, "timeout": 1}


@pytest.mark.parametrize("webrtc", [{"exploded": 1}, {"won": -1}, {"won": 1.5}, ["won"], {"won": 10_000}])
def test_anything_else_about_webrtc_is_refused(webrtc):
    with pytest.raises(Refusal) as refused:
        parse_beacon({"protocol": "llhls", "played": 1, "webrtc": webrtc})
    assert refused.value.status == 400 and refused.value.reason == "malformed"
