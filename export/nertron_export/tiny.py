"""A tiny XLM-R token classifier with random weights and a locally trained tokenizer.

Used by the tests and by ``make run`` before a trained model exists: it exercises the whole path
(export, tokenisation, windows, alignment, decoding) in seconds. Its predictions are meaningless.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import XLMRobertaConfig, XLMRobertaForTokenClassification, XLMRobertaTokenizer

CONLL_LABELS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")
SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>")  # ids 0-3 as in XLM-R; <mask> is added last

_CORPUS = """\
Angela Merkel met Emmanuel Macron in Paris on Tuesday.
EU rejects German call to boycott British lamb.
Peter Blackburn reported from Brussels for Reuters.
The European Commission said on Thursday it disagreed with German advice.
Germany's representative to the European Union's veterinary committee Werner Zwingmann said.
Der Bundestag in Berlin stimmte am Dienstag dem Gesetz zu.
El presidente de México visitó Madrid y Barcelona la semana pasada.
De minister sprak in Amsterdam met vertegenwoordigers van Philips.
Le président a rencontré des syndicats à Lyon et à Marseille.
東京で会議が開かれた。 Москва и Санкт-Петербург. القاهرة 👍 café naïve 10,000 1996-08-22 U.S.
"""


def build_tokenizer(vocab_size: int = 600) -> XLMRobertaTokenizer:
    """A unigram tokenizer with XLM-R's specials, normaliser style and ▁ word prefix."""
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), unk_token="<unk>", show_progress=False
    )
    tokenizer.train_from_iterator(_CORPUS.splitlines() * 4, trainer=trainer)
    fast = XLMRobertaTokenizer(tokenizer_object=tokenizer, model_max_length=64)
    fast.add_special_tokens({"mask_token": "<mask>"})
    return fast


def build_tiny_model(
    out: str | Path, *, seed: int = 0, max_positions: int = 64, tokenizer: XLMRobertaTokenizer | None = None
) -> Path:
    """Writes an HF checkpoint (config, weights, tokenizer: a tiny one trained here unless given) into ``out``
    and returns it."""
    out = Path(out)
    tokenizer = tokenizer or build_tokenizer()
    torch.manual_seed(seed)
    config = XLMRobertaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=max_positions + 2,
        type_vocab_size=1,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        id2label=dict(enumerate(CONLL_LABELS)),
        label2id={label: i for i, label in enumerate(CONLL_LABELS)},
    )
    model = XLMRobertaForTokenClassification(config).eval()
    with torch.no_grad():  # a spread-out head, so that random weights predict every label somewhere
        model.classifier.weight.normal_(0.0, 1.0)
        model.classifier.bias.normal_(0.0, 0.5)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"tiny model written to {build_tiny_model(args.out, seed=args.seed)}")


if __name__ == "__main__":
    main()
