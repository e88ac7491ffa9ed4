"""Which torch device a model adapter may use: checked once, with a line naming the setting."""

from __future__ import annotations

from .errors import ConfigurationError


def check_torch_device(device: str, setting: str) -> str:
    """``cpu``, ``cuda`` or ``cuda:N`` (normalised), refusing a GPU that torch cannot see;
    ``setting`` (e.g. ``AVATAR_RENDERER_DEVICE``) is the name the error tells the user."""
    import torch

    name = device.strip().lower()
    if name == "cpu":
        return name
    if name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit()):
        if not torch.cuda.is_available():
            raise ConfigurationError(
                f"{setting}={device} but this machine has no CUDA GPU that torch can use "
                f"(or torch is the CPU build); set {setting}=cpu"
            )
        if ":" in name and int(name[5:]) >= torch.cuda.device_count():
            raise ConfigurationError(
                f"{setting}={device} but only {torch.cuda.device_count()} CUDA device(s) "
                "are visible; use cuda:0"
            )
        return name
    raise ConfigurationError(f"{setting}={device!r} is not cpu, cuda or cuda:N")
