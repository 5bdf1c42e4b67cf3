"""A GStreamer WHIP publisher: webrtcbin (libnice ICE, GStreamer's DTLS/SRTP) with x264enc and
opusenc, signalled the way WHIP clients without trickle do (offer after gathering, one POST, the
DELETE at the end). Runs under Debian's /usr/bin/python3 with its GObject bindings
(python3-gst-1.0), not the project's virtualenv.

Debian's own GStreamer WHIP client (simple-whip-client) cannot start on Debian 12: it links
libsoup 2.4 while libnice pulls libsoup 3 through gupnp-igd, and libsoup aborts ("Using libsoup2
and libsoup3 in the same process is not supported"); gst-plugins-rs's whipsink is not packaged.

    python3 gstreamer_whip.py URL TOKEN SECONDS    # prints one JSON line: what happened
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.parse
import urllib.request

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstSdp", "1.0")
gi.require_version("GstWebRTC", "1.0")
from gi.repository import GLib, Gst, GstSdp, GstWebRTC  # noqa: E402

VIDEO = ("videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=180,framerate=15/1 ! videoconvert ! "
         "queue ! x264enc tune=zerolatency speed-preset=ultrafast bitrate=600 key-int-max=30 ! "
         "video/x-h264,profile=constrained-baseline ! rtph264pay config-interval=-1 pt=96 ! queue ! "
         "application/x-rtp,media=video,encoding-name=H264,payload=96")
AUDIO = ("audiotestsrc is-live=true wave=sine ! audioconvert ! audioresample ! queue ! opusenc ! rtpopuspay pt=100 ! "
         "queue ! application/x-rtp,media=audio,encoding-name=OPUS,payload=100")
GATHERING_TIMEOUT_MS = 3000  # host candidates only: gathering ends at once unless something is wrong


class Publisher:
    def __init__(self, url: str, token: str, seconds: float) -> None:
        self.url, self.token, self.seconds = url, token, seconds
        self.loop = GLib.MainLoop()
        self.pipeline = Gst.parse_launch(f"webrtcbin name=send bundle-policy=max-bundle {VIDEO} ! send. {AUDIO} ! send.")
        self.webrtc = self.pipeline.get_by_name("send")
        self.result: dict = {"post": None, "delete": None, "error": None, "connection": []}
        self.location: str | None = None
        self.offered = False

    def run(self) -> dict:
        self.webrtc.connect("on-negotiation-needed", self._create_offer)
        self.webrtc.connect("notify::ice-gathering-state", self._gathering_changed)
        self.webrtc.connect("notify::connection-state", self._connection_changed)
        bus = self.pipeline.get_bus()
        bus.add_signal_watch()
        bus.connect("message::error", self._pipeline_error)
        self.pipeline.set_state(Gst.State.PLAYING)
        GLib.timeout_add(int(self.seconds * 1000), self._finish)
        self.loop.run()
        self.pipeline.set_state(Gst.State.NULL)
        return self.result

    def _create_offer(self, element: Gst.Element) -> None:
        promise = Gst.Promise.new_with_change_func(self._offer_created, None)
        element.emit("create-offer", None, promise)

    def _offer_created(self, promise: Gst.Promise, _data: object) -> None:
        reply = promise.get_reply()
        if reply.has_field("error"):
            self._fail(f"create-offer: {reply.get_value('error').message}")
            return
        offer = reply.get_value("offer")
        self.webrtc.emit("set-local-description", offer, Gst.Promise.new())
        GLib.timeout_add(GATHERING_TIMEOUT_MS, self._send_offer)

    def _gathering_changed(self, element: Gst.Element, _spec: object) -> None:
        if element.get_property("ice-gathering-state") == GstWebRTC.WebRTCICEGatheringState.COMPLETE:
            GLib.idle_add(self._send_offer)

    def _send_offer(self) -> bool:
        if self.offered:
            return False
        self.offered = True
        offer = self.webrtc.get_property("local-description").sdp.as_text()
        request = urllib.request.Request(self.url, data=offer.encode(), method="POST", headers={
            "Content-Type": "application/sdp", "Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                answer = response.read().decode()
                self.location = response.headers["Location"]
                self.result["post"] = {"status": response.status, "location": self.location,
                                       "candidates": offer.count("a=candidate:")}
        except (urllib.error.URLError, OSError) as error:
            return self._fail(f"POST {self.url}: {error}")
        _, message = GstSdp.SDPMessage.new_from_text(answer)
        description = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, message)
        self.webrtc.emit("set-remote-description", description, Gst.Promise.new())
        return False

    def _connection_changed(self, element: Gst.Element, _spec: object) -> None:
        state = element.get_property("connection-state").value_nick
        self.result["connection"].append(state)

    def _pipeline_error(self, _bus: Gst.Bus, message: Gst.Message) -> None:
        error, _debug = message.parse_error()
        self._fail(f"pipeline: {error.message}")

    def _fail(self, error: str) -> bool:
        self.result["error"] = self.result["error"] or error
        self.loop.quit()
        return False

    def _finish(self) -> bool:
        if self.location:
            target = urllib.parse.urljoin(self.url, self.location)
            request = urllib.request.Request(target, method="DELETE", headers={"Authorization": f"Bearer {self.token}"})
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    self.result["delete"] = {"status": response.status}
            except (urllib.error.URLError, OSError) as error:
                self.result["error"] = self.result["error"] or f"DELETE {target}: {error}"
        self.loop.quit()
        return False


def main(url: str, token: str, seconds: str) -> None:
    Gst.init(None)
    print(json.dumps(Publisher(url, token, float(seconds)).run()), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
