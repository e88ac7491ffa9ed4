"""A complete offline pipecat voice bot with the avatar's face: talk to it in Chromium.

    .venv/bin/python examples/pipecat_bot.py            # then open http://127.0.0.1:7860
    .venv/bin/python examples/pipecat_bot.py --no-face  # the same bot, voice only

Everything runs on this machine, with no key and no download: pipecat's SmallWebRTC
transport (aiortc), its Silero VAD and smart-turn end-of-turn model, Whisper ``tiny.en``
(the project's copy, run by pipecat's ``WhisperSTTService``), a tiny rule-based "LLM"
(swap in pipecat's ``OpenAILLMService`` with a ``base_url`` for a real one), Piper with the
project's voice, and ``AvatarVideoService`` between TTS and ``transport.output()``.
The page at ``/`` is a bare WebRTC client; ``POST /api/offer`` is SmallWebRTC's signalling.

The tests and the benchmark (tests/test_pipecat.py) import ``create_app`` from here.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from fastapi import FastAPI  # noqa: E402
from fastapi.responses import HTMLResponse  # noqa: E402
from pipecat.audio.vad.silero import SileroVADAnalyzer  # noqa: E402
from pipecat.audio.vad.vad_analyzer import VADParams  # noqa: E402
from pipecat.frames.frames import (  # noqa: E402
    Frame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
)
from pipecat.pipeline.pipeline import Pipeline  # noqa: E402
from pipecat.pipeline.runner import PipelineRunner  # noqa: E402
from pipecat.pipeline.task import PipelineParams, PipelineTask  # noqa: E402
from pipecat.processors.aggregators.llm_context import LLMContext  # noqa: E402
from pipecat.processors.aggregators.llm_response_universal import (  # noqa: E402
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor  # noqa: E402
from pipecat.services.piper.tts import PiperTTSService  # noqa: E402
from pipecat.services.whisper.stt import WhisperSTTService  # noqa: E402
from pipecat.transports.base_transport import TransportParams  # noqa: E402
from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection  # noqa: E402
from pipecat.transports.smallwebrtc.request_handler import (  # noqa: E402
    SmallWebRTCRequest,
    SmallWebRTCRequestHandler,
)
from pipecat.transports.smallwebrtc.transport import SmallWebRTCTransport  # noqa: E402

from realtime_avatar import rtc_loopback  # noqa: E402
from realtime_avatar.asr.whisper import default_model_dir  # noqa: E402
from realtime_avatar.integrations.pipecat import AvatarVideoService  # noqa: E402
from realtime_avatar.tts.piper import default_model_path  # noqa: E402

# A browser on this machine offers only 127.0.0.1; aiortc leaves loopback out otherwise.
rtc_loopback.enable()

SYSTEM = "You are a friendly avatar. Answer in one or two short sentences."


def reply(text: str) -> str:
    """The rule-based bot's answer to what the user said."""
    said = text.strip().rstrip(".?!")
    lower = said.lower()
    if not said:
        return "Sorry, I did not catch that."
    if re.search(r"\b(hello|hi|hey|good (morning|afternoon|evening))\b", lower):
        return "Hello! It is nice to meet you. What would you like to talk about?"
    if "your name" in lower:
        return "I am the default avatar, a face drawn on this computer while I speak."
    if re.search(r"\b(bye|goodbye)\b", lower):
        return "Goodbye! Thanks for talking with me."
    if "weather" in lower:
        return "I cannot see outside, but I hope it is sunny where you are."
    return f"You said: {said}. Tell me more about that, I am listening."


class RuleBasedLLM(FrameProcessor):
    """Stands where an LLM service goes: answers the context's last user message."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if not isinstance(frame, LLMContextFrame):
            await self.push_frame(frame, direction)
            return
        users = [m for m in frame.context.get_messages() if m.get("role") == "user"]
        content = users[-1].get("content", "") if users else ""
        text = (
            content
            if isinstance(content, str)
            else " ".join(part.get("text", "") for part in content if isinstance(part, dict))
        )
        await self.push_frame(LLMFullResponseStartFrame())
        for i, word in enumerate(reply(text).split(" ")):
            await self.push_frame(LLMTextFrame(word if i == 0 else " " + word))
        await self.push_frame(LLMFullResponseEndFrame())


def bot_task(
    connection: SmallWebRTCConnection, *, face: bool = True, avatar: str = "default"
) -> PipelineTask:
    """One call's pipeline: mic -> Whisper -> rules -> Piper -> face -> WebRTC."""
    transport = SmallWebRTCTransport(
        webrtc_connection=connection,
        params=TransportParams(
            audio_in_enabled=True,
            audio_out_enabled=True,
            video_out_enabled=face,
            video_out_is_live=True,
            video_out_width=512,
            video_out_height=512,
            video_out_framerate=25,
        ),
    )
    stt = WhisperSTTService(model=str(default_model_dir()), device="cpu", compute_type="int8")
    voice = Path(default_model_path())
    tts = PiperTTSService(
        settings=PiperTTSService.Settings(voice=voice.stem), download_dir=voice.parent
    )
    context = LLMContext([{"role": "system", "content": SYSTEM}])
    aggregators = LLMContextAggregatorPair(
        context,
        user_params=LLMUserAggregatorParams(
            vad_analyzer=SileroVADAnalyzer(params=VADParams(stop_secs=0.2))
        ),
    )
    stages: list[FrameProcessor] = [transport.input(), stt, aggregators.user(), RuleBasedLLM(), tts]
    if face:
        stages.append(AvatarVideoService(avatar=avatar))
    stages += [transport.output(), aggregators.assistant()]
    task = PipelineTask(Pipeline(stages), params=PipelineParams(), idle_timeout_secs=None)

    @transport.event_handler("on_client_disconnected")
    async def _on_disconnected(_transport: Any, _client: Any) -> None:
        await task.cancel()

    return task


PAGE = """<!doctype html>
<title>pipecat + realtime-avatar</title>
<style>body{font-family:sans-serif;margin:2em}video{width:512px;height:512px;background:#222}</style>
<h1>pipecat bot with a local face</h1>
<video id="v" autoplay playsinline></video><br>
<button id="go">Connect</button> <span id="state"></span>
<script>
document.getElementById("go").onclick = async () => {
  const pc = new RTCPeerConnection({iceServers: []});
  const mic = await navigator.mediaDevices.getUserMedia({audio: true});
  mic.getTracks().forEach(t => pc.addTrack(t, mic));
  pc.addTransceiver("video", {direction: "recvonly"});
  const stream = new MediaStream();
  pc.ontrack = e => { stream.addTrack(e.track); document.getElementById("v").srcObject = stream; };
  const state = document.getElementById("state");
  pc.onconnectionstatechange = () => state.textContent = pc.connectionState;
  await pc.setLocalDescription(await pc.createOffer());
  const gathered = () => pc.iceGatheringState === "complete";
  await new Promise(r => gathered() ? r() :
    pc.addEventListener("icegatheringstatechange", () => gathered() && r()));
  const offer = {sdp: pc.localDescription.sdp, type: pc.localDescription.type};
  const res = await fetch("/api/offer", {method: "POST",
    headers: {"Content-Type": "application/json"}, body: JSON.stringify(offer)});
  await pc.setRemoteDescription(await res.json());
};
</script>
"""


def create_app(*, face: bool = True, avatar: str = "default") -> FastAPI:
    """The bot's web app: the page, and SmallWebRTC's offer endpoint starting one bot a call."""
    app = FastAPI()
    handler = SmallWebRTCRequestHandler()
    bots: set[asyncio.Task[None]] = set()

    @app.get("/")
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE)

    @app.post("/api/offer")
    async def offer(body: dict[str, Any]) -> dict[str, str] | None:
        async def start_bot(connection: SmallWebRTCConnection) -> None:
            # Loading Whisper and Piper takes seconds: not on the loop other calls share.
            task = await asyncio.to_thread(bot_task, connection, face=face, avatar=avatar)
            bot = asyncio.create_task(PipelineRunner(handle_sigint=False).run(task))
            bots.add(bot)
            bot.add_done_callback(bots.discard)

        return await handler.handle_web_request(SmallWebRTCRequest.from_dict(body), start_bot)

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--avatar", default="default", help="a registered avatar's name")
    parser.add_argument("--no-face", action="store_true", help="voice only (no video track)")
    args = parser.parse_args()
    app = create_app(face=not args.no_face, avatar=args.avatar)
    uvicorn.run(app, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
