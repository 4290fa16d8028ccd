"""Decoding helpers any recipe can use: video frames (PyAV), still images (Pillow), audio
(soundfile) and the log-mel spectrogram, each returning float32 torch tensors.

Conventions: pixel values are in [0, 1], channels first; frames are resized with
`F.interpolate(..., mode="bilinear", antialias=True)` straight to the requested (H, W) (aspect ratio
is not kept: the encoders want a fixed grid, and the recipes' cameras do not move between samples).
Every decoder failure becomes `DataError(path, "what is wrong")`; no decoder traceback reaches the
user.
"""

from __future__ import annotations

import functools
import logging
import math
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F
from av.video.reformatter import VideoReformatter
from PIL import Image, UnidentifiedImageError
from scipy.signal import resample_poly

from sensorium.errors import DataError

log = logging.getLogger("sensorium.data")

# What PyAV / Pillow / libsndfile raise for unreadable input. Anything else is a bug in our code and
# must keep its traceback.
_AV_ERRORS = (av.FFmpegError, OSError, ValueError, EOFError)
_IMAGE_ERRORS = (UnidentifiedImageError, OSError, ValueError, SyntaxError)
_AUDIO_ERRORS = (sf.SoundFileError, OSError, ValueError)


# --- resizing ------------------------------------------------------------------------------------


def resize_uint8(pixels: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """(..., H0, W0, 3) uint8 -> (..., 3, H, W) float32 in [0, 1], antialiased bilinear resize."""
    lead = pixels.shape[:-3]
    x = torch.from_numpy(np.ascontiguousarray(pixels)).reshape(-1, *pixels.shape[-3:])  # (N, H0, W0, 3)
    x = x.permute(0, 3, 1, 2).float().div_(255.0)  # (N, 3, H0, W0)
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        x = x.clamp_(0.0, 1.0)  # bilinear with antialias can overshoot by a hair
    return x.reshape(*lead, 3, *size)


# --- video ---------------------------------------------------------------------------------------


def sample_indices(num_available: int, num: int) -> np.ndarray:
    """`num` indices spread uniformly over [0, num_available - 1] (repeats when num > available)."""
    return np.linspace(0, num_available - 1, num).round().astype(np.int64)


def read_video(path: str | Path, num_frames: int, size: tuple[int, int]) -> torch.Tensor:
    """T frames sampled uniformly over the whole video, resized: float32 (T, 3, H, W) in [0, 1].

    Decodes only what is needed: frames after the last wanted one are never decoded, and where the
    next wanted frame is more than a GOP away the demuxer seeks to the keyframe before it instead of
    decoding the gap. The frame count comes from the container (avi and mp4 record it); when the
    stream ends early (a truncated file) the missing frames repeat the last decoded one and a
    warning is logged.
    """
    path = Path(path)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DataError(path, "no video stream in file")
            stream = container.streams.video[0]
            frames = _decode_frames(container, stream, num_frames, path)
    except DataError:
        raise
    except _AV_ERRORS as e:
        raise DataError(path, f"cannot decode video ({type(e).__name__}: {e})") from None
    return resize_uint8(frames, size)


def _frame_count(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> int:
    if stream.frames > 0:
        return stream.frames
    rate = stream.average_rate or stream.guessed_rate
    if rate and container.duration:  # container.duration is in microseconds
        return max(1, int(round(container.duration / 1e6 * float(rate))))
    return 0


def _decode_frames(container, stream, num_frames: int, path: Path) -> np.ndarray:
    """(T, H0, W0, 3) uint8 for the T uniformly spaced frame indices."""
    total = _frame_count(container, stream)
    rate = stream.average_rate or stream.guessed_rate
    # One reformatter for the whole clip: it keeps its swscale context (3x faster than to_ndarray's).
    reformatter = VideoReformatter()

    def rgb(frame: av.VideoFrame) -> np.ndarray:
        return reformatter.reformat(frame, format="rgb24").to_ndarray()  # (H0, W0, 3) uint8

    if total == 0 or not rate:
        # No frame count or rate in the header: decode the whole stream once, then pick.
        every = [rgb(f) for f in container.decode(stream)]
        if not every:
            raise DataError(path, "video has no decodable frames")
        return np.stack(every)[sample_indices(len(every), num_frames)]

    wanted = sample_indices(total, num_frames)
    time_base = stream.time_base or Fraction(1, int(round(float(rate))))
    start = stream.start_time or 0
    ticks_per_frame = 1 / (float(rate) * float(time_base))
    # Seeking pays off only across more than a GOP of frames; guess 2 s when the codec doesn't say.
    seek_gap = 2 * float(rate)

    out: list[np.ndarray | None] = [None] * num_frames
    decoder = container.decode(stream)
    position = -1  # index of the last decoded frame
    last = None
    k = 0
    sought = -1  # the target we last seeked for: seek at most once per target
    while k < num_frames:
        target = int(wanted[k])
        if target - position > seek_gap and sought != target:
            container.seek(start + int(target * ticks_per_frame), stream=stream, backward=True)
            decoder = container.decode(stream)
            sought = target
        frame = next(decoder, None)
        if frame is None:
            break
        position = (int(round((frame.pts - start) / ticks_per_frame)) if frame.pts is not None
                    else position + 1)
        if position < target:
            continue
        last = rgb(frame)
        while k < num_frames and wanted[k] <= position:  # one decoded frame may serve repeats
            out[k] = last
            k += 1
    if last is None:
        raise DataError(path, "video has no decodable frames")
    if k < num_frames:
        log.warning("%s: video ended at frame %d of %d; repeating the last frame", path, position, total)
        out[k:] = [last] * (num_frames - k)
    return np.stack(out)


# --- still images --------------------------------------------------------------------------------


def read_image(path: str | Path, size: tuple[int, int]) -> torch.Tensor:
    """An image file (jpg, png, ...) as float32 (3, H, W) in [0, 1], resized.

    JPEGs are decoded at the smallest power-of-two reduction that is still at least (H, W)
    (`Image.draft`), so a 2000x900 photo resized to 224 px never decodes at full resolution.
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            image.draft("RGB", (size[1], size[0]))  # no-op for formats other than JPEG
            pixels = np.array(image.convert("RGB"))  # (H0, W0, 3) uint8, writable for torch
    except _IMAGE_ERRORS as e:
        raise DataError(path, f"cannot decode image ({type(e).__name__}: {e})") from None
    return resize_uint8(pixels, size)


# --- audio ---------------------------------------------------------------------------------------


def read_audio(path: str | Path, sample_rate: int, max_seconds: float | None = None) -> np.ndarray:
    """A mono float32 waveform (N,) at `sample_rate`.

    Channels are averaged; resampling is polyphase (`scipy.signal.resample_poly`). With
    `max_seconds`, only a centred window of that length is read from the file (the weld sits in
    the middle of a recording; its start and end are silence).
    """
    path = Path(path)
    try:
        with sf.SoundFile(path) as f:
            source_rate, length = f.samplerate, f.frames
            count = length
            if max_seconds is not None:
                count = min(length, int(math.ceil(max_seconds * source_rate)))
                f.seek((length - count) // 2)
            wave = f.read(count, dtype="float32", always_2d=True)  # (N, channels)
    except _AUDIO_ERRORS as e:
        raise DataError(path, f"cannot decode audio ({type(e).__name__}: {e})") from None
    if wave.shape[0] == 0:
        raise DataError(path, "audio file holds no samples")
    wave = wave.mean(axis=1)
    if not np.isfinite(wave).all():
        raise DataError(path, "audio holds NaN or infinite samples")
    if source_rate != sample_rate:
        g = math.gcd(source_rate, sample_rate)
        wave = resample_poly(wave, sample_rate // g, source_rate // g).astype(np.float32)
    return wave


@functools.lru_cache(maxsize=8)
def _mel_basis(n_fft: int, n_mels: int, sample_rate: int) -> torch.Tensor:
    from transformers.audio_utils import mel_filter_bank

    fb = mel_filter_bank(num_frequency_bins=n_fft // 2 + 1, num_mel_filters=n_mels, min_frequency=20.0,
                         max_frequency=sample_rate / 2, sampling_rate=sample_rate, norm=None, mel_scale="htk")
    return torch.from_numpy(fb.T.astype(np.float32))  # (n_mels, n_fft // 2 + 1)


def log_mel(wave: np.ndarray | torch.Tensor, sample_rate: int, n_mels: int, win_ms: float, hop_ms: float,
            num_frames: int | None = None, floor: float = 1e-6) -> torch.Tensor:
    """Log-mel spectrogram float32 (1, n_mels, frames) of a mono waveform (N,).

    Hann window of `win_ms`, hop `hop_ms`, FFT size the next power of two (AST: 16 kHz, 128 mel,
    25 ms, 10 ms). Value = log(max(mel power, floor)), power of a waveform in [-1, 1]. With
    `num_frames`, frames are cropped (centred) or padded at the end with log(floor) to that count.
    """
    x = torch.as_tensor(wave, dtype=torch.float32)
    win = int(round(sample_rate * win_ms / 1000))
    hop = int(round(sample_rate * hop_ms / 1000))
    n_fft = 1 << (win - 1).bit_length()
    if x.numel() < n_fft:
        x = F.pad(x, (0, n_fft - x.numel()))
    spec = torch.stft(x, n_fft=n_fft, hop_length=hop, win_length=win, window=torch.hann_window(win),
                      center=True, return_complex=True)  # (n_fft // 2 + 1, frames)
    mel = _mel_basis(n_fft, n_mels, sample_rate) @ spec.abs().square()  # (n_mels, frames)
    out = mel.clamp_min(floor).log()
    if num_frames is not None:
        have = out.shape[1]
        if have > num_frames:
            start = (have - num_frames) // 2
            out = out[:, start:start + num_frames]
        elif have < num_frames:
            out = F.pad(out, (0, num_frames - have), value=math.log(floor))
    return out.unsqueeze(0)  # (1, n_mels, frames)


def audio_seconds_for(num_frames: int, win_ms: float, hop_ms: float) -> float:
    """Seconds of audio that `num_frames` spectrogram frames cover (what `read_audio` needs to read)."""
    return ((num_frames - 1) * hop_ms + win_ms) / 1000.0
