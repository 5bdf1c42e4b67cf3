import pytest

from stream.codecs.aac import AudioSpecificConfig
from stream.codecs.h264 import ParameterSets, parse_sps, split_annexb, to_length_prefixed


def test_split_annexb_handles_three_and_four_byte_start_codes():
    data = b"\x00\x00\x00\x01\x67\xaa\x00\x00\x01\x68\xbb\x00\x00\x00\x01\x65\xcc\xdd"
    assert split_annexb(data) == [b"\x67\xaa", b"\x68\xbb", b"\x65\xcc\xdd"]


def test_length_prefixed_drops_access_unit_delimiters():
    data = b"\x00\x00\x00\x01\x09\xf0\x00\x00\x00\x01\x65\xcc"
    assert to_length_prefixed(data) == b"\x00\x00\x00\x02\x65\xcc"


def test_codec_string_and_avcc_from_real_encoder(encoded):
    video, _, _ = encoded
    sets = video.parameter_sets
    sps = sets.parsed_sps
    assert sps.codec_string == f"avc1.{sets.sps[1]:02x}{sets.sps[2]:02x}{sets.sps[3]:02x}"
    assert (sps.chroma_format_idc, sps.bit_depth_luma) == (1, 8)
    record = sets.avc_decoder_configuration_record()
    assert record[0] == 1 and record[4] == 0xFF  # version 1, 4-byte NAL lengths


def test_bad_parameter_sets_are_rejected():
    with pytest.raises(ValueError):
        ParameterSets.from_annexb(b"\x00\x00\x01\x65\x88")
    with pytest.raises(ValueError):
        parse_sps(b"\x68\x01")


def test_audio_specific_config():
    config = AudioSpecificConfig.parse(bytes([0x11, 0x90]))
    assert (config.object_type, config.sample_rate, config.channels) == (2, 48000, 2)
    with pytest.raises(ValueError):
        AudioSpecificConfig.parse(b"\x11")
