import asyncio

from stream.bus import PacketBus


async def test_every_subscriber_gets_the_same_packet_objects(encoded):
    _, _, packets = encoded
    bus = PacketBus(asyncio.get_running_loop())
    first, second = [], []
    bus.subscribe(first.append)
    bus.subscribe(second.append)
    bus.publish(packets[:10])
    assert first == packets[:10]
    assert all(a is b for a, b in zip(first, second))  # shared, never copied


async def test_publish_threadsafe_delivers_on_the_loop(encoded):
    _, _, packets = encoded
    bus = PacketBus(asyncio.get_running_loop())
    received = []
    bus.subscribe(received.append)
    await asyncio.to_thread(bus.publish_threadsafe, packets[:5])
    await asyncio.sleep(0)
    assert received == packets[:5]


async def test_a_failing_subscriber_is_dropped_without_starving_others(encoded):
    _, _, packets = encoded
    bus = PacketBus(asyncio.get_running_loop())
    received = []

    def broken(packet):
        raise RuntimeError("consumer bug")

    bus.subscribe(broken)
    bus.subscribe(received.append)
    bus.publish(packets[:3])
    assert received == packets[:3]
    assert bus.subscriber_count == 1


async def test_closed_subscription_receives_nothing(encoded):
    _, _, packets = encoded
    bus = PacketBus(asyncio.get_running_loop())
    received = []
    bus.subscribe(received.append).close()
    bus.publish(packets[:3])
    assert received == []
