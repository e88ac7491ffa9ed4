"""Receive buffers for aiortc that hand over a frame as soon as it is complete.

aiortc's receiver holds audio until four packets are queued (80 ms) and holds a video frame
until the first packet of the next frame arrives (one frame, 40 ms at 25 fps). Neither is
needed on the paths where we receive: the server's mic feeds a VAD, not a speaker, and the
evaluation client times arrivals like a browser, which decodes a frame once its last
packet (RTP marker bit) is in. These buffers keep aiortc's reordering for anything that
arrives out of order and only skip the wait for what is already complete.

aiortc 1.16 has no option for this, so ``use_low_latency_buffers`` swaps the private
buffer of each receiver, guarded so that another aiortc version only loses the gain.
"""

from __future__ import annotations

import logging
from typing import Any

from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtp import RtpPacket

log = logging.getLogger(__name__)

_PRIVATE = "_RTCRtpReceiver__jitter_buffer"


class ImmediateAudioBuffer(JitterBuffer):
    """Audio: a packet that arrives in order is a whole frame; hand it over at once."""

    def __init__(self, capacity: int = 16) -> None:
        super().__init__(capacity=capacity, prefetch=0)

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        pli, frame = super().add(packet)
        if frame is None and packet.sequence_number == self._origin:
            self.remove(1)
            return pli, JitterFrame(data=packet._data, timestamp=packet.timestamp)  # type: ignore[attr-defined]
        return pli, frame


class MarkerVideoBuffer(JitterBuffer):
    """Video: a frame is complete at its marker packet when every packet before it is in."""

    def __init__(self, capacity: int = 512) -> None:
        super().__init__(capacity=capacity, is_video=True)

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        pli, frame = super().add(packet)
        if frame is not None or not packet.marker or self._origin is None:
            return pli, frame
        packets: list[RtpPacket] = []
        for count in range(self.capacity):
            queued = self._packets[(self._origin + count) % self.capacity]
            if queued is None or queued.timestamp != packet.timestamp:
                return pli, None  # a packet is missing or an older frame is still open
            packets.append(queued)
            if queued.sequence_number == packet.sequence_number:
                break
        self.remove(len(packets))
        data = b"".join(p._data for p in packets)  # type: ignore[attr-defined]
        return pli, JitterFrame(data=data, timestamp=packet.timestamp)


def use_low_latency_buffers(pc: Any, *, audio: bool = True, video: bool = False) -> bool:
    """Give the peer connection's receivers the buffers above; False if aiortc changed."""
    swapped = True
    for transceiver in pc.getTransceivers():
        receiver = transceiver.receiver
        wanted = audio if transceiver.kind == "audio" else video
        if not wanted:
            continue
        if not hasattr(receiver, _PRIVATE):
            swapped = False
            continue
        buffer = ImmediateAudioBuffer() if transceiver.kind == "audio" else MarkerVideoBuffer()
        setattr(receiver, _PRIVATE, buffer)
    if not swapped:
        log.warning("aiortc internals changed; keeping its receive buffers")
    return swapped
