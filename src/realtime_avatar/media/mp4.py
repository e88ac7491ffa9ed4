"""Streaming MP4 writer (H.264 + AAC) that leaves no partial file behind on failure."""

from __future__ import annotations

import os
import queue
import tempfile
import threading
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import cv2
import numpy as np

from ..constants import FPS, OUTPUT_RATE_HZ
from ..errors import OutputPathError


def check_output_path(path: Path) -> Path:
    """Refuse an output path that cannot be written, before any work is done."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise OutputPathError(f"{path} is a folder; give a file name such as {path / 'out.mp4'}")
    if path.suffix.lower() != ".mp4":
        raise OutputPathError(f"output must be an .mp4 file, got {path.name}")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputPathError(
            f"folder {parent} does not exist; create it first or pick another path"
        )
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise OutputPathError(f"cannot write to {path}: permission denied; pick another path")
    try:  # os.access says yes to root on a read-only or special file system: really try
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as exc:
        raise OutputPathError(
            f"cannot write to {parent} ({exc.strerror or exc}); pick another path"
        ) from None
    return path


def _write_failed(path: Path, exc: OSError) -> OutputPathError:
    """A write that failed part-way (a full disk, a file size limit), in words."""
    return OutputPathError(
        f"could not write {path} ({exc.strerror or exc}); free some space or pick another "
        "place. Nothing was written."
    )


# Fragmented MP4 for a file read while it is written: the header first (empty moov), a
# fragment at each keyframe and at least every FRAGMENT_MS, each flushed to the file as
# it is muxed, so a reader sees playable video about FRAGMENT_MS after the first frame.
FRAGMENT_MS = 200
FRAGMENTED_OPTIONS = {
    "movflags": "frag_keyframe+empty_moov+default_base_moof",
    "frag_duration": str(FRAGMENT_MS * 1000),
    "flush_packets": "1",
}

_Item = tuple[np.ndarray, np.ndarray] | None  # (rgb, audio), or None: no more frames


class Mp4Writer:
    """Write RGB frames and their audio as they come; the file appears only when complete.

    With ``background_frames`` > 0 a worker thread encodes while the caller renders the next
    frames (x264 releases the GIL); up to that many frames wait in between, and the worker's
    errors come back from the next ``write`` or from ``close``.
    """

    def __init__(
        self,
        path: Path,
        width: int,
        height: int,
        crf: int = 20,
        background_frames: int = 0,
        *,
        stream_path: Path | None = None,
    ) -> None:
        self.path = check_output_path(path)
        # With a stream path the file is fragmented MP4 written there, where a reader can
        # follow it while it grows (playable from its first fragment), then renamed to
        # ``path`` when complete, like the temporary file otherwise.
        self.fragmented = stream_path is not None
        try:
            if stream_path is None:
                fd, tmp = tempfile.mkstemp(
                    prefix=f".{self.path.stem}-", suffix=".mp4.part", dir=self.path.parent
                )
            else:
                tmp = str(stream_path)
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        except OSError as exc:
            raise _write_failed(self.path, exc) from None
        os.close(fd)
        self._tmp = Path(tmp)
        self.frames = 0
        self.audio_samples = 0
        self._audio_pts = 0  # the encoder's clocks: behind the counts above while queued
        self._video_pts = 0
        self._queue: queue.Queue[_Item] | None = None
        self._worker: threading.Thread | None = None
        self._error: BaseException | None = None
        self._discard = False
        try:
            self._container = av.open(
                str(self._tmp),
                mode="w",
                format="mp4",
                options=FRAGMENTED_OPTIONS if self.fragmented else None,
            )
            video = self._container.add_stream("libx264", rate=FPS)
            video.width, video.height = width, height
            video.pix_fmt = "yuv420p"
            options: dict[str, object] = {
                "crf": str(crf),
                "preset": "veryfast",
                "tune": "stillimage",
            }
            if background_frames > 0:
                # The worker is the encoder's one thread: the caller keeps the other core
                # busy, and x264's own frame threads would only add overhead (~15% CPU).
                options["threads"] = "1"
            if self.fragmented:
                # No B-frames or lookahead: each frame leaves the encoder at once, so the
                # first fragment is out after FRAGMENT_MS of video, not half a second more.
                options["tune"] = "stillimage,zerolatency"
            video.options = options
            video.codec_context.time_base = Fraction(1, FPS)
            if self.fragmented:
                video.codec_context.gop_size = FPS  # a keyframe every second
            audio = self._container.add_stream("aac", rate=OUTPUT_RATE_HZ)
            audio.layout = "mono"
            audio.bit_rate = 96_000
            self._video, self._audio = video, audio
            if background_frames > 0:
                self._queue = queue.Queue(maxsize=background_frames)
                self._worker = threading.Thread(
                    target=self._encode_queued, name="mp4-encoder", daemon=True
                )
                self._worker.start()
        except BaseException:
            self._container_close()
            self._tmp.unlink(missing_ok=True)
            raise

    def write(self, rgb: np.ndarray, audio_int16: np.ndarray) -> None:
        """Append one video frame and exactly its audio (queued, with a background encoder).

        Queued arrays must not be changed afterwards; renderers hand out fresh frames.
        """
        if self._queue is None:
            self._encode(rgb, audio_int16)
        else:
            self._raise_worker_error()
            self._queue.put((rgb, audio_int16))
        self.frames += 1
        self.audio_samples += len(audio_int16)

    def close(self) -> Path:
        """Flush the encoders and move the finished file into place."""
        try:
            self._stop_worker()
            self._raise_worker_error()
            for stream in (self._video, self._audio):
                for packet in stream.encode(None):
                    self._container.mux(packet)
            self._container.close()
        except BaseException as exc:
            self.abort()
            if isinstance(exc, OSError):
                raise _write_failed(self.path, exc) from None
            raise
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Drop everything written so far."""
        self._discard = True  # the worker skips what is still queued
        self._stop_worker()
        self._container_close()
        self._tmp.unlink(missing_ok=True)

    # ------------------------------------------------------------------ encoding
    def _encode(self, rgb: np.ndarray, audio_int16: np.ndarray) -> None:
        # OpenCV's I420 conversion matches swscale's BT.601 limited range (within one level)
        # at about a third of the cost.
        yuv = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)
        frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        frame.pts = self._video_pts
        for packet in self._video.encode(frame):
            self._container.mux(packet)
        chunk = av.AudioFrame.from_ndarray(audio_int16.reshape(1, -1), format="s16", layout="mono")
        chunk.sample_rate = OUTPUT_RATE_HZ
        chunk.pts = self._audio_pts
        chunk.time_base = Fraction(1, OUTPUT_RATE_HZ)
        for packet in self._audio.encode(chunk):
            self._container.mux(packet)
        self._video_pts += 1
        self._audio_pts += len(audio_int16)

    def _encode_queued(self) -> None:
        """The worker: encode queued frames until the end marker; keep draining after an error
        so a caller blocked on a full queue is never stuck."""
        assert self._queue is not None
        while (item := self._queue.get()) is not None:
            if self._error is not None or self._discard:
                continue
            try:
                self._encode(*item)
            except BaseException as error:  # noqa: BLE001 - handed to the caller
                self._error = error

    def _stop_worker(self) -> None:
        """Send the end marker and wait for the worker to finish what is queued."""
        worker, self._worker = self._worker, None
        if worker is not None and self._queue is not None:
            self._queue.put(None)
            worker.join()

    def _raise_worker_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _container_close(self) -> None:
        container = getattr(self, "_container", None)
        if container is None:
            return
        try:
            container.close()
        except Exception:  # noqa: BLE001 - the file is being thrown away anyway
            pass

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()
            if isinstance(exc, OSError):
                raise _write_failed(self.path, exc) from None
