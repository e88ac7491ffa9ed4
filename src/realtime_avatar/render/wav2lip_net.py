"""The Wav2Lip generator (Prajwal et al., ACM MM 2020) as the public checkpoints lay it out.

Written from the published structure so that ``wav2lip.pth`` / ``wav2lip_gan.pth`` load
key for key: a face encoder over the 6-channel 96x96 input (the masked target face
stacked on a reference face), an audio encoder over one 80 x 16 mel window, and a face
decoder that upsamples the audio embedding with a skip connection from every encoder
level, ending in a sigmoid that gives the whole 96x96 face (BGR, 0..1) with a new mouth.

Every layer is a convolution and a batch norm (``conv_block.0`` / ``conv_block.1``) and a
ReLU, optionally residual; those names are what the checkpoints' keys spell. This module
imports torch: only ``render/wav2lip.py`` imports it, and only when that renderer is used.
"""

from __future__ import annotations

import torch
from torch import nn


class ConvBlock(nn.Module):
    """Conv2d + BatchNorm2d + ReLU; ``residual`` adds the input before the ReLU."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int,
        stride: int | tuple[int, int],
        padding: int,
        residual: bool = False,
    ) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.Conv2d(cin, cout, kernel, stride, padding), nn.BatchNorm2d(cout)
        )
        self.act = nn.ReLU()
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_block(x)
        if self.residual:
            out = out + x
        return self.act(out)


class UpBlock(nn.Module):
    """ConvTranspose2d + BatchNorm2d + ReLU: one step up the decoder."""

    def __init__(
        self, cin: int, cout: int, kernel: int, stride: int, padding: int, output_padding: int = 0
    ) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ConvTranspose2d(cin, cout, kernel, stride, padding, output_padding),
            nn.BatchNorm2d(cout),
        )
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv_block(x))


def _down(cin: int, cout: int, residual_layers: int) -> nn.Sequential:
    """A stride-2 step down the face encoder and its residual refinements."""
    layers = [ConvBlock(cin, cout, 3, 2, 1)]
    layers += [ConvBlock(cout, cout, 3, 1, 1, residual=True) for _ in range(residual_layers)]
    return nn.Sequential(*layers)


def _up(cin: int, cout: int, residual_layers: int, *, first: bool = False) -> nn.Sequential:
    """A step up the face decoder (1 -> 3 px for the first, else x2) and its refinements."""
    up = UpBlock(cin, cout, 3, 1, 0) if first else UpBlock(cin, cout, 3, 2, 1, output_padding=1)
    rest = [ConvBlock(cout, cout, 3, 1, 1, residual=True) for _ in range(residual_layers)]
    return nn.Sequential(up, *rest)


class Wav2Lip(nn.Module):
    """The generator: (mel windows B x 1 x 80 x 16, faces B x 6 x 96 x 96) -> B x 3 x 96 x 96."""

    def __init__(self) -> None:
        super().__init__()
        # Spatial sizes in the comments: 96 -> 48 -> 24 -> 12 -> 6 -> 3 -> 1.
        self.face_encoder_blocks = nn.ModuleList(
            [
                nn.Sequential(ConvBlock(6, 16, 7, 1, 3)),  # 96
                _down(16, 32, 2),  # 48
                _down(32, 64, 3),  # 24
                _down(64, 128, 2),  # 12
                _down(128, 256, 2),  # 6
                _down(256, 512, 1),  # 3
                nn.Sequential(ConvBlock(512, 512, 3, 1, 0), ConvBlock(512, 512, 1, 1, 0)),  # 1
            ]
        )
        # 80 x 16 mel -> 27 x 16 -> 9 x 6 -> 3 x 3 -> 1 x 1, 512 channels.
        self.audio_encoder = nn.Sequential(
            ConvBlock(1, 32, 3, 1, 1),
            ConvBlock(32, 32, 3, 1, 1, residual=True),
            ConvBlock(32, 32, 3, 1, 1, residual=True),
            ConvBlock(32, 64, 3, (3, 1), 1),
            ConvBlock(64, 64, 3, 1, 1, residual=True),
            ConvBlock(64, 64, 3, 1, 1, residual=True),
            ConvBlock(64, 128, 3, 3, 1),
            ConvBlock(128, 128, 3, 1, 1, residual=True),
            ConvBlock(128, 128, 3, 1, 1, residual=True),
            ConvBlock(128, 256, 3, (3, 2), 1),
            ConvBlock(256, 256, 3, 1, 1, residual=True),
            ConvBlock(256, 512, 3, 1, 0),
            ConvBlock(512, 512, 1, 1, 0),
        )
        # Each decoder input is the previous output concatenated with the encoder level of
        # the same size, hence the channel counts (512 + 512, 512 + 256, ...).
        self.face_decoder_blocks = nn.ModuleList(
            [
                nn.Sequential(ConvBlock(512, 512, 1, 1, 0)),  # 1
                _up(1024, 512, 1, first=True),  # 3
                _up(1024, 512, 2),  # 6
                _up(768, 384, 2),  # 12
                _up(512, 256, 2),  # 24
                _up(320, 128, 2),  # 48
                _up(160, 64, 2),  # 96
            ]
        )
        self.output_block = nn.Sequential(
            ConvBlock(80, 32, 3, 1, 1), nn.Conv2d(32, 3, 1, 1, 0), nn.Sigmoid()
        )

    def forward(self, mels: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
        skips = []
        x = faces
        for block in self.face_encoder_blocks:
            x = block(x)
            skips.append(x)
        x = self.audio_encoder(mels)
        for block in self.face_decoder_blocks:
            x = torch.cat((block(x), skips.pop()), dim=1)
        out: torch.Tensor = self.output_block(x)
        return out


def random_weights(seed: int = 0) -> dict[str, torch.Tensor]:
    """A state_dict of random weights with batch norms calibrated on random inputs.

    For tests and benchmarks, which have no trained checkpoint: with freshly initialised
    batch norms the audio embedding is too small to move the output, so one would not
    see the mouth follow the audio. Calibrating the running statistics on random mel
    windows and faces (in their real ranges) keeps every layer at unit scale.
    """
    torch.manual_seed(seed)
    model = Wav2Lip()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None  # a plain average over the calibration batches
            module.reset_running_stats()
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.rand(8, 1, 80, 16) * 8 - 4, torch.rand(8, 6, 96, 96))
    return {key: value.clone() for key, value in model.state_dict().items()}
