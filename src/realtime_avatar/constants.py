"""Sample rates, frame sizes and render sizes: the numbers every stage agrees on."""

FPS = 25
FRAME_MS = 1000 // FPS  # 40 ms of audio per video frame
ASR_RATE_HZ = 16_000  # what VAD and ASR consume
OUTPUT_RATE_HZ = 48_000  # what leaves the renderer (WebRTC Opus and MP4 AAC)
SAMPLES_PER_FRAME = OUTPUT_RATE_HZ * FRAME_MS // 1000  # 1920
RENDER_SIZE_PX = 512
VIDEO_CLOCK_HZ = 90_000  # RTP's video clock: the server stamps frames, the client reads them
VIDEO_TICKS_PER_FRAME = VIDEO_CLOCK_HZ // FPS
