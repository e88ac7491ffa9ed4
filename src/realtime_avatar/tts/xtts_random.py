"""An XTTS-v2 model folder with random weights in the published layout, for tests,
benchmarks and the device check (no weights ship with this project).

The folder is written the way coqui/XTTS-v2 is downloaded: ``config.json`` (the published
model_args; ``reduced`` shrinks the GPT to 2 layers of 256 instead of 30 of 1024 and caps
its audio at ``max_audio_tokens``, since random weights never choose to stop), ``model.pth``
(``{"config": XttsConfig, "model": state_dict}`` with the config pickled under the module
the published file names and the HiFi-GAN's weight norm as ``weight_g``/``weight_v``, as
torch wrote it in 2023), ``vocab.json`` (a BPE tokenizer with XTTS's control and language
tokens) and ``speakers_xtts.pth`` (a studio speaker's latents and embedding). Everything is
made by coqui-tts's own classes; the HiFi-GAN decoder and speaker encoder are always full
size (coqui does not make their size configurable).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

REDUCED_MAX_AUDIO_TOKENS = 28  # 2 + 24 generated tokens: about 1.1 s of audio


def published_args(reduced: bool) -> dict[str, Any]:
    """XTTS-v2's published model_args (config.json), with a reduced GPT when asked."""
    args = {
        "gpt_batch_size": 1,
        "enable_redaction": False,
        "kv_cache": True,
        "gpt_checkpoint": None,
        "clvp_checkpoint": None,
        "decoder_checkpoint": None,
        "num_chars": 255,
        "tokenizer_file": "",
        "gpt_max_audio_tokens": 605,
        "gpt_max_text_tokens": 402,
        "gpt_max_prompt_tokens": 70,
        "gpt_layers": 30,
        "gpt_n_model_channels": 1024,
        "gpt_n_heads": 16,
        "gpt_number_text_tokens": 6681,
        "gpt_start_text_token": None,
        "gpt_stop_text_token": None,
        "gpt_num_audio_tokens": 1026,
        "gpt_start_audio_token": 1024,
        "gpt_stop_audio_token": 1025,
        "gpt_code_stride_len": 1024,
        "gpt_use_masking_gt_prompt_approach": True,
        "gpt_use_perceiver_resampler": True,
        "input_sample_rate": 22050,
        "output_sample_rate": 24000,
        "output_hop_length": 256,
        "decoder_input_dim": 1024,
        "d_vector_dim": 512,
        "cond_d_vector_in_each_upsampling_layer": True,
        "duration_const": 102400,
    }
    if reduced:
        args |= {
            "gpt_layers": 2,
            "gpt_n_model_channels": 256,
            "gpt_n_heads": 4,
            "decoder_input_dim": 256,
            "gpt_max_audio_tokens": REDUCED_MAX_AUDIO_TOKENS,
        }
    return args


def write_vocab(path: Path, size: int | None = None) -> None:
    """A BPE tokenizer like XTTS's vocab.json: control tokens first, language tokens, letters;
    padded with unused tokens to ``size`` entries (XTTS-v2 has 6681) when given."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    specials = ["[STOP]", "[UNK]", "[SPACE]", "[en]", "[es]", "[zh-cn]"]
    tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    letters = list("abcdefghijklmnopqrstuvwxyzáéíóúñü0123456789.,;:!?¡¿'\"-")
    trainer = trainers.BpeTrainer(vocab_size=200, special_tokens=specials, initial_alphabet=letters)
    tokenizer.train_from_iterator(
        ["hello there this is a test", "hola que tal esto es una prueba", "ni3 hao3 shi4 jie4"],
        trainer,
    )
    if size is not None:  # XTTS sizes its text embedding and head from the vocabulary
        missing = size - tokenizer.get_vocab_size() - 1
        tokenizer.add_special_tokens([f"[unused{i}]" for i in range(max(missing, 0))])
    tokenizer.add_special_tokens(["[START]"])
    tokenizer.save(str(path))


def write_model_dir(folder: Path, reduced: bool = True, seed: int = 0) -> Path:
    """An XTTS-v2 folder with random weights in the published layout (see the module doc)."""
    import torch
    from TTS.tts.configs.xtts_config import XttsConfig
    from TTS.tts.models.xtts import Xtts, _legacy_safe_globals

    folder.mkdir(parents=True, exist_ok=True)
    write_vocab(folder / "vocab.json", None if reduced else 6681)
    config = XttsConfig()
    config.from_dict(
        {
            "model": "xtts",
            "model_args": published_args(reduced),
            "languages": ["en", "es", "fr", "de", "it", "pt", "pl", "tr", "ru", "nl", "cs",
                          "ar", "zh-cn", "hu", "ko", "ja", "hi"],
            "temperature": 0.75,
            "length_penalty": 1.0,
            "repetition_penalty": 5.0,
            "top_k": 50,
            "top_p": 0.85,
            "gpt_cond_len": 30,
            "gpt_cond_chunk_len": 4,
            "max_ref_len": 30,
            "sound_norm_refs": False,
            "audio": {"sample_rate": 22050, "output_sample_rate": 24000},
        }
    )
    torch.manual_seed(seed)
    model = Xtts(config)
    from TTS.tts.layers.xtts.tokenizer import VoiceBpeTokenizer

    model.tokenizer = VoiceBpeTokenizer(vocab_file=str(folder / "vocab.json"))
    model.init_models()
    config.model_args.gpt_number_text_tokens = model.args.gpt_number_text_tokens
    config.save_json(str(folder / "config.json"))
    weights: dict[str, Any] = {}
    for key, value in model.state_dict().items():
        key = key.replace(".parametrizations.weight.original0", ".weight_g")
        key = key.replace(".parametrizations.weight.original1", ".weight_v")
        weights[key] = value.clone()
    with _legacy_safe_globals():  # the config pickled under its 2023 module, as published
        torch.save({"config": config, "model": weights}, folder / "model.pth")
    dim = config.model_args.gpt_n_model_channels
    torch.save(
        {
            "Claribel Dervla": {
                "gpt_cond_latent": torch.randn(1, 32, dim),
                "speaker_embedding": torch.randn(1, 512, 1),
            }
        },
        folder / "speakers_xtts.pth",
    )
    return folder
