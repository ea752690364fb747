"""Build the offline CLIP BPE tokenizer files in configs/tokenizer/.

Source: ``bpe_simple_vocab_16e6.txt.gz`` (the OpenAI CLIP BPE merge list), which
ships inside the ``open-clip-torch`` wheel.  Fetch it without installing:

    pip download --no-deps open-clip-torch -d /tmp/oc
    cd /tmp/oc && unzip -o -j open_clip_torch-*.whl '*bpe_simple_vocab_16e6.txt.gz'
    python tools/make_tokenizer_files.py /tmp/oc/bpe_simple_vocab_16e6.txt.gz

Vocabulary layout (49408 entries, the one every SD text encoder was trained on):
  ids 0..255      the 256 byte-level unicode symbols, in byte-to-unicode order
  ids 256..511    the same symbols with the end-of-word marker ``</w>``
  ids 512..49405  the first 48894 merges, each pair concatenated
  49406           <|startoftext|>
  49407           <|endoftext|>
"""
from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

N_MERGES = 49152 - 256 - 2  # 48894
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def byte_symbols() -> list[str]:
    """The reversible byte -> printable unicode char table used by GPT-2/CLIP BPE.

    Printable latin-1 bytes map to themselves; the remaining bytes are assigned
    code points 256, 257, ... in increasing byte order.  The returned list is in
    the vocabulary order: printable bytes first, then the remapped ones.
    """
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    order = list(printable)
    chars = [chr(b) for b in printable]
    extra = 0
    for b in range(256):
        if b not in printable:
            order.append(b)
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def build(bpe_gz: Path) -> tuple[dict[str, int], list[str]]:
    with gzip.open(bpe_gz, "rt", encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    merges = lines[1 : N_MERGES + 1]  # line 0 is a version header
    assert len(merges) == N_MERGES, len(merges)
    symbols = byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols]
    tokens += ["".join(m.split()) for m in merges]
    tokens += [BOS, EOS]
    assert len(tokens) == 49408, len(tokens)
    vocab = {t: i for i, t in enumerate(tokens)}
    assert len(vocab) == 49408, "duplicate tokens"
    return vocab, merges


def write(out_dir: Path, vocab: dict[str, int], merges: list[str]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (out_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    special = {
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": EOS,
        "pad_token": EOS,
    }
    cfg = dict(special, tokenizer_class="CLIPTokenizer", model_max_length=77,
               do_lower_case=True, clean_up_tokenization_spaces=False)
    (out_dir / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
    (out_dir / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bpe_gz", type=Path)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "configs" / "tokenizer")
    args = ap.parse_args()
    vocab, merges = build(args.bpe_gz)
    write(args.out, vocab, merges)
    print(f"wrote {len(vocab)} tokens, {len(merges)} merges to {args.out}")


if __name__ == "__main__":
    main()
