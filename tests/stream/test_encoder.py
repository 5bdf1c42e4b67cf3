from fractions import Fraction

from stream.codecs.h264 import NAL_PPS, NAL_SPS, nal_type, split_annexb
from tests.support.media import FPS, encode_lavfi, seconds


def test_keyframes_exactly_on_segment_boundaries(encoded):
    _, _, packets = encoded
    video = [p for p in packets if p.kind == "video"]
    assert len(video) == round(3.2 * FPS)
    keyframes = [seconds(p) for p in video if p.keyframe]
    assert keyframes == [Fraction(0), Fraction(1), Fraction(2), Fraction(3)]


def test_keyframes_stay_aligned_when_frames_are_dropped():
    # Frames 29 and 30 (around the 1 s boundary) never reach the encoder.
    _, _, packets = encode_lavfi(2.2, skip_frames=frozenset({29, 30}))
    keyframes = [seconds(p) for p in packets if p.kind == "video" and p.keyframe]
    assert keyframes == [Fraction(0), Fraction(31, 30), Fraction(2)]


def test_no_b_frames_and_monotonic_timestamps(encoded):
    _, _, packets = encoded
    video = [p for p in packets if p.kind == "video"]
    assert all(p.pts == p.dts for p in video)
    assert all(a.dts < b.dts for a, b in zip(video, video[1:]))


def test_every_keyframe_repeats_sps_and_pps_in_band(encoded):
    _, _, packets = encoded
    for packet in (p for p in packets if p.kind == "video" and p.keyframe):
        types = {nal_type(unit) for unit in split_annexb(packet.data)}
        assert {NAL_SPS, NAL_PPS, 5} <= types


def test_audio_is_aac_lc_at_48k_with_continuous_timestamps(encoded):
    _, audio_encoder, packets = encoded
    audio = [p for p in packets if p.kind == "audio"]
    assert audio_encoder.config.codec_string == "mp4a.40.2"
    assert audio_encoder.config.sample_rate == 48000
    assert all(b.pts - a.pts == 1024 for a, b in zip(audio, audio[1:]))
    assert float(seconds(audio[-1])) > 3.0
