"""Tiny random CLIP and CLAP models built from ``transformers`` configs and written with
``save_pretrained`` (weights, processor, a word-level tokenizer): what the foundation backbones
load as a local weights folder, with no network."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never the hub in tests

#: Side of the tiny CLIP's images (frames are decoded at this size).
CLIP_SIDE = 32
WORDS = ["a", "photo", "the", "sound", "of", "tone", "pattern", "dog", "guitar", "bell", "car"]
SPECIALS = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]


def word_tokenizer(folder: Path) -> None:
    """A word-level tokenizer over :data:`WORDS` (+ [BOS] ... [EOS]), saved into ``folder``."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(SPECIALS + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[BOS] $A [EOS]", special_tokens=[("[BOS]", 2), ("[EOS]", 3)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        bos_token="[BOS]",
        eos_token="[EOS]",
    )
    fast.save_pretrained(str(folder))


def tiny_clip(folder: Path, seed: int = 0) -> Path:
    """A random CLIP (32 x 32 images, 8 x 8 patches; 768-d embeddings, ViT-L/14's width, so the
    models read its store) saved in ``folder``."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    text = {"vocab_size": 32, "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1}
    text.update(num_attention_heads=4, max_position_embeddings=16, eos_token_id=3, bos_token_id=2)
    text.update(pad_token_id=0)
    vision = {"image_size": CLIP_SIDE, "patch_size": 8, "hidden_size": 32, "intermediate_size": 37}
    vision.update(num_hidden_layers=1, num_attention_heads=4)
    torch.manual_seed(seed)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=768))
    model.save_pretrained(str(folder))
    CLIPImageProcessor(
        size={"shortest_edge": CLIP_SIDE}, crop_size={"height": CLIP_SIDE, "width": CLIP_SIDE}
    ).save_pretrained(str(folder))
    word_tokenizer(folder)
    return folder


def tiny_clap(folder: Path, seed: int = 0) -> Path:
    """A random CLAP (a 2-stage HTS-AT; 512-d embeddings, LAION CLAP's) with LAION's unfused
    feature extractor, saved in ``folder``."""
    import torch
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel

    text = {"vocab_size": 32, "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1}
    text.update(num_attention_heads=4, pad_token_id=0, bos_token_id=2, eos_token_id=3)
    audio = {"depths": [1, 1], "num_attention_heads": [1, 2], "patch_embeds_hidden_size": 16}
    audio.update(hidden_size=32)
    torch.manual_seed(seed)
    model = ClapModel(ClapConfig(text_config=text, audio_config=audio, projection_dim=512))
    model.save_pretrained(str(folder))
    ClapFeatureExtractor(truncation="rand_trunc", padding="repeatpad").save_pretrained(str(folder))
    word_tokenizer(folder)
    return folder
