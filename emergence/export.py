"""`emergence export CHECKPOINT OUT_DIR`: one of our checkpoints as a Hugging Face folder.

The folder holds `config.json`, `model.safetensors`, `generation_config.json`, a fast tokenizer (`tokenizer.json`,
`tokenizer_config.json`, ...) and `emergence.json` (where it came from: run, step, tokens, code version), so that
`AutoModelForCausalLM.from_pretrained(OUT_DIR)` gives our logits and `AutoTokenizer.from_pretrained(OUT_DIR)` our ids.

Architecture mapping (our `emergence.model.GPT`: pre-LayerNorm blocks, exact GELU, fused qkv laid out as
[all q | all k | all v], optional biases, tied or untied head):
- `pos="learned"` -> GPT-2 (`GPT2LMHeadModel`). GPT-2's `Conv1D` stores weights as (in, out), so ours are transposed;
  its qkv split is ours; `activation_function="gelu"` is the exact GELU; where our model has no biases, GPT-2 gets
  zero biases (it always has them).
- `pos="rotary"` -> GPT-NeoX (`GPTNeoXForCausalLM`, `use_parallel_residual=False`: sequential residuals as ours;
  all of each head rotated, base 10000, rotate-half as ours). Its fused `query_key_value` is interleaved per head,
  [q_h k_h v_h] for each head h, so our rows are permuted; `attention_bias` follows ours and the MLP and LayerNorms
  get zero biases where ours have none. The untied head is written as `embed_out` (the name transformers 4.x reads;
  5.x renames it on load), and the rope settings both as 5.x's `rope_parameters` and as 4.x's keys.

Tokenizer, chosen by the run's data (the resolved config stored in the checkpoint):
- `data.source=tasks`: the task character vocabulary (`emergence.tasks.VOCAB`: <pad> 0, <bos> 1, <eos> 2, newline,
  printable ASCII), one token per character; characters outside it are dropped, as our text-in-task-vocabulary reader
  drops them;
- `data.source=text`: bytes (ids 0-255 are the UTF-8 bytes, <bos> 256, <eos> 257, <pad> 258), byte-level;
- `data.tokenizer=bpe`: the run's own `tokenizer.json` (beside the checkpoint or in the run folder), copied.
The built tokenizers put <bos> before a text (`add_special_tokens=True`, the default), as `emergence generate` feeds
a prompt; `add_special_tokens=False` gives the bare ids.

The export checks itself before it is put in place: the folder is written under a temporary name beside OUT_DIR,
loaded back with the installed transformers, and renamed to OUT_DIR only if its logits match ours on a probe sequence
and its tokenizer encodes a sample text to our ids. A bad input (no checkpoint, not a checkpoint, OUT_DIR not empty)
is refused with one line and nothing is written.

transformers, tokenizers and safetensors are the optional `hf` extra: they are imported inside the functions here.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from emergence import checkpoint as ckpt
from emergence.data import TEXT_SPECIALS
from emergence.files import pid_alive
from emergence.model import GPT, GPTConfig, n_params
from emergence.tasks import get_task
from emergence.tasks.vocab import CHARS, SPECIALS, VOCAB

HF_EXTRA = "emergence export needs the Hugging Face extra: pip install 'emergence[hf]' (transformers, tokenizers, " \
           "safetensors)"
ROPE_BASE = 10000.0  # emergence.model.rotary_tables' default base
LN_EPS = 1e-5  # torch.nn.LayerNorm's default eps, which our model uses
SPECIAL_NAMES = {"pad": "<pad>", "bos": "<bos>", "eos": "<eos>"}
BPE_SPECIALS = {  # names a learned tokenizer's special tokens may go by, most likely first
    "bos": ("<bos>", "<|bos|>", "<s>", "<|endoftext|>"),
    "eos": ("<eos>", "<|eos|>", "</s>", "<|endoftext|>"),
    "pad": ("<pad>", "<|pad|>"),
}
CHECK_TOKENS = 64  # length of the probe sequence the export is checked on


def _require_hf() -> None:
    from importlib.util import find_spec

    if any(find_spec(name) is None for name in ("transformers", "tokenizers", "safetensors")):
        raise ValueError(HF_EXTRA)


# ---------------------------------------------------------------------------------------------------------------------
# Weights and config.

def _zeros_if_none(t, n: int) -> torch.Tensor:
    return torch.zeros(n) if t is None else t.detach().float()


def _gpt2(model: GPT, special: dict[str, int | None]) -> tuple[object, dict[str, torch.Tensor]]:
    """GPT2Config and GPT2LMHeadModel tensors for a model with learned positions."""
    from transformers import GPT2Config  # optional dependency (the hf extra)

    c = model.config
    d = c.d_model
    config = GPT2Config(vocab_size=c.vocab_size, n_positions=c.block_size, n_embd=d, n_layer=c.n_layer,
                        n_head=c.n_head, n_inner=c.d_mlp, activation_function="gelu", resid_pdrop=0.0,
                        embd_pdrop=0.0, attn_pdrop=0.0, layer_norm_epsilon=LN_EPS, scale_attn_weights=True,
                        tie_word_embeddings=c.tie_embeddings, architectures=["GPT2LMHeadModel"],
                        bos_token_id=special["bos"], eos_token_id=special["eos"], pad_token_id=special["pad"])
    t = {"transformer.wte.weight": model.tok.weight, "transformer.wpe.weight": model.pos.weight}
    for i, b in enumerate(model.blocks):
        p = f"transformer.h.{i}."
        t[p + "ln_1.weight"], t[p + "ln_1.bias"] = b.ln1.weight, _zeros_if_none(b.ln1.bias, d)
        t[p + "attn.c_attn.weight"] = b.attn.qkv.weight.t()  # Conv1D: (in, out)
        t[p + "attn.c_attn.bias"] = _zeros_if_none(b.attn.qkv.bias, 3 * d)
        t[p + "attn.c_proj.weight"] = b.attn.proj.weight.t()
        t[p + "attn.c_proj.bias"] = _zeros_if_none(b.attn.proj.bias, d)
        t[p + "ln_2.weight"], t[p + "ln_2.bias"] = b.ln2.weight, _zeros_if_none(b.ln2.bias, d)
        t[p + "mlp.c_fc.weight"], t[p + "mlp.c_fc.bias"] = b.fc.weight.t(), _zeros_if_none(b.fc.bias, c.d_mlp)
        t[p + "mlp.c_proj.weight"], t[p + "mlp.c_proj.bias"] = b.out.weight.t(), _zeros_if_none(b.out.bias, d)
    t["transformer.ln_f.weight"] = model.ln_f.weight
    t["transformer.ln_f.bias"] = _zeros_if_none(model.ln_f.bias, d)
    if not c.tie_embeddings:
        t["lm_head.weight"] = model.head.weight
    return config, t


def _per_head_qkv(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """Rows (or entries) [all q | all k | all v] of our fused qkv reordered as GPT-NeoX's [q_h k_h v_h] per head."""
    head = w.shape[0] // (3 * n_head)
    return w.reshape(3, n_head, head, *w.shape[1:]).transpose(0, 1).reshape(w.shape)


def _gpt_neox(model: GPT, special: dict[str, int | None]) -> tuple[object, dict[str, torch.Tensor]]:
    """GPTNeoXConfig and GPTNeoXForCausalLM tensors for a model with rotary positions."""
    from transformers import GPTNeoXConfig  # optional dependency (the hf extra)

    c = model.config
    d = c.d_model
    config = GPTNeoXConfig(vocab_size=c.vocab_size, hidden_size=d, num_hidden_layers=c.n_layer,
                           num_attention_heads=c.n_head, intermediate_size=c.d_mlp, hidden_act="gelu",
                           rotary_pct=1.0, rotary_emb_base=ROPE_BASE, max_position_embeddings=c.block_size,
                           layer_norm_eps=LN_EPS, use_parallel_residual=False, tie_word_embeddings=c.tie_embeddings,
                           attention_bias=c.bias, hidden_dropout=0.0, attention_dropout=0.0,
                           architectures=["GPTNeoXForCausalLM"], bos_token_id=special["bos"],
                           eos_token_id=special["eos"], pad_token_id=special["pad"])
    t = {"gpt_neox.embed_in.weight": model.tok.weight}
    for i, b in enumerate(model.blocks):
        p = f"gpt_neox.layers.{i}."
        t[p + "input_layernorm.weight"] = b.ln1.weight
        t[p + "input_layernorm.bias"] = _zeros_if_none(b.ln1.bias, d)
        t[p + "post_attention_layernorm.weight"] = b.ln2.weight
        t[p + "post_attention_layernorm.bias"] = _zeros_if_none(b.ln2.bias, d)
        t[p + "attention.query_key_value.weight"] = _per_head_qkv(b.attn.qkv.weight, c.n_head)
        t[p + "attention.dense.weight"] = b.attn.proj.weight
        if c.bias:
            t[p + "attention.query_key_value.bias"] = _per_head_qkv(b.attn.qkv.bias, c.n_head)
            t[p + "attention.dense.bias"] = b.attn.proj.bias
        t[p + "mlp.dense_h_to_4h.weight"] = b.fc.weight
        t[p + "mlp.dense_h_to_4h.bias"] = _zeros_if_none(b.fc.bias, c.d_mlp)
        t[p + "mlp.dense_4h_to_h.weight"] = b.out.weight
        t[p + "mlp.dense_4h_to_h.bias"] = _zeros_if_none(b.out.bias, d)
    t["gpt_neox.final_layer_norm.weight"] = model.ln_f.weight
    t["gpt_neox.final_layer_norm.bias"] = _zeros_if_none(model.ln_f.bias, d)
    if not c.tie_embeddings:
        t["embed_out.weight"] = model.head.weight
    return config, t


def _write_model(model: GPT, special: dict[str, int | None], folder: Path) -> str:
    """config.json, generation_config.json and model.safetensors for `model`; returns the architecture's name."""
    from safetensors.torch import save_file  # optional dependency (the hf extra)
    from transformers import GenerationConfig  # optional dependency (the hf extra)

    config, tensors = (_gpt2 if model.config.pos == "learned" else _gpt_neox)(model, special)
    config.dtype = "float32"
    config.save_pretrained(folder)
    extra = {"torch_dtype": "float32"}  # what transformers 4.x reads for the dtype
    if model.config.pos == "rotary":  # and its names for the rope settings
        extra.update(rotary_pct=1.0, rotary_emb_base=ROPE_BASE, rope_theta=ROPE_BASE)
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, **{k: v for k, v in extra.items() if k not in cfg}},
                                                   indent=2, sort_keys=True) + "\n")
    GenerationConfig(bos_token_id=special["bos"], eos_token_id=special["eos"],
                     pad_token_id=special["pad"]).save_pretrained(folder)
    save_file({k: v.detach().float().contiguous().clone() for k, v in tensors.items()},
              str(folder / "model.safetensors"), metadata={"format": "pt"})
    return config.architectures[0]


# ---------------------------------------------------------------------------------------------------------------------
# Tokenizers.

def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map from each byte to a printable character, the alphabet of byte-level tokenizers (Radford et al.
    2019, `encoder.py`; the `tokenizers` ByteLevel pre-tokenizer applies the same map)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, n = list(keep), 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(keep, chars)}


def _with_bos(tok, bos: tuple[str, int]):
    from tokenizers import processors  # optional dependency (the hf extra)

    tok.post_processor = processors.TemplateProcessing(single=f"{bos[0]} $A", pair=f"{bos[0]} $A $B:1",
                                                       special_tokens=[bos])
    return tok


def task_tokenizer():
    """The task character vocabulary as a `tokenizers.Tokenizer`: one token per character, ids as `VOCAB`'s."""
    # optional dependency (the hf extra)
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers

    vocab = {name: i for i, name in enumerate(SPECIALS)} | {ch: VOCAB.id(ch) for ch in CHARS}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))  # no merges: every character is its own token
    lo, hi = ord(CHARS[1]), ord(CHARS[-1])  # after the newline, one run of code points: space to '~'
    tok.normalizer = normalizers.Replace(Regex(f"[^\\n\\x{{{lo:x}}}-\\x{{{hi:x}}}]"), "")  # drop the rest
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in SPECIALS])
    return _with_bos(tok, (SPECIALS[VOCAB.bos], VOCAB.bos))


def byte_tokenizer():
    """emergence's byte vocabulary (`emergence.data.TextSource`) as a `tokenizers.Tokenizer`: ids 0-255 are the
    UTF-8 bytes of the text, then <bos>, <eos>, <pad> at `TEXT_SPECIALS`' ids."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers  # optional dependency (the hf extra)

    vocab = {ch: b for b, ch in _bytes_to_unicode().items()}
    names = {SPECIAL_NAMES[k]: i for k, i in TEXT_SPECIALS.items()}
    tok = Tokenizer(models.BPE(vocab=vocab | names, merges=[]))  # no merges: every byte is its own token
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False)
                            for s, _ in sorted(names.items(), key=lambda kv: kv[1])])
    return _with_bos(tok, (SPECIAL_NAMES["bos"], TEXT_SPECIALS["bos"]))


def _find_bpe(checkpoint: Path, state: dict):
    """The run's learned tokenizer: embedded in the checkpoint, or `tokenizer.json` beside it or in the run folder."""
    from tokenizers import Tokenizer  # optional dependency (the hf extra)

    if isinstance(state.get("tokenizer"), str):
        try:
            return Tokenizer.from_str(state["tokenizer"])
        except Exception as e:  # the tokenizers library raises its own exception type
            raise ValueError(f"{checkpoint}: its embedded tokenizer does not load: {str(e).splitlines()[0]}") from None
    for folder in (checkpoint.parent, checkpoint.parent.parent):
        path = folder / "tokenizer.json"
        if path.is_file():
            try:
                return Tokenizer.from_file(str(path))
            except Exception as e:  # the tokenizers library raises its own exception type
                raise ValueError(f"{path} is not a tokenizers file: {str(e).splitlines()[0]}") from None
    raise ValueError(f"{checkpoint} was trained with data.tokenizer=bpe but no tokenizer.json is beside it or in "
                     f"{checkpoint.parent.parent}; copy the run's tokenizer.json there")


def _tokenizer_for(checkpoint: Path, state: dict, vocab_size: int):
    """(tokenizers.Tokenizer, {"bos": id, "eos": id, "pad": id}, kind) for the run that wrote `state`."""
    data = (state.get("config") or {}).get("data") or {}
    if data.get("tokenizer") == "bpe":
        tok = _find_bpe(checkpoint, state)
        vocab = tok.get_vocab(with_added_tokens=True)
        special = {k: next((vocab[n] for n in names if n in vocab), None) for k, names in BPE_SPECIALS.items()}
        kind = "bpe"
    elif data.get("source", "tasks") == "text":
        tok, special, kind = byte_tokenizer(), dict(TEXT_SPECIALS), "bytes"
    else:
        tok, special, kind = task_tokenizer(), {"pad": VOCAB.pad, "bos": VOCAB.bos, "eos": VOCAB.eos}, "chars"
    if tok.get_vocab_size(with_added_tokens=True) > vocab_size:
        raise ValueError(f"{checkpoint}: the run's tokenizer has {tok.get_vocab_size(with_added_tokens=True)} tokens "
                         f"but the model only {vocab_size}; this checkpoint and tokenizer do not belong together")
    return tok, special, kind


def _write_tokenizer(tok, special: dict[str, int | None], kind: str, block_size: int, folder: Path) -> None:
    """The tokenizer files, wrapped as transformers' fast tokenizer with its special tokens declared. "<bos>" typed
    in a text is read as text (`split_special_tokens`), as emergence reads it in training, for the character, byte
    and learned vocabularies alike."""
    from transformers import PreTrainedTokenizerFast  # optional dependency (the hf extra)

    names = {k: tok.id_to_token(i) for k, i in special.items() if i is not None}
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=block_size,
                                      split_special_tokens=True, **{f"{k}_token": v for k, v in names.items()})
    wrapped.save_pretrained(folder)
    path = folder / "tokenizer_config.json"  # a class name that transformers 4.x knows too (5.x maps it to its own)
    path.write_text(json.dumps({**json.loads(path.read_text()), "tokenizer_class": "PreTrainedTokenizerFast"},
                               indent=2, sort_keys=True) + "\n")


# ---------------------------------------------------------------------------------------------------------------------
# The check and the export.

def our_ids(text: str, kind: str, tok=None) -> list[int]:
    """The ids emergence itself gives `text` (no special tokens): `chars` as our reader of text in the task vocabulary
    (characters outside it dropped), `bytes` as `TextSource`, `bpe` as the run's own tokenizer `tok`."""
    if kind == "chars":
        return [VOCAB.id(ch) for ch in text if ch in VOCAB.chars]
    if kind == "bytes":
        return list(text.encode("utf-8"))
    return tok.encode(text, add_special_tokens=False).ids


def _sample_text(kind: str) -> str:
    if kind == "chars":
        prompt, answer = get_task("add2").example
        return f"{prompt}{answer}\nS:q7c2xa= ~|\u00e9<eos>"
    return "Hello, world: 12+34=46.\n caf\u00e9 \u2013 \u00fcber"


def _check(model: GPT, folder: Path, kind: str, tok) -> None:
    """Load `folder` with transformers and compare its logits and token ids with ours; ValueError if they differ."""
    from transformers import AutoModelForCausalLM, AutoTokenizer  # optional dependency (the hf extra)
    from transformers.utils import logging as hf_logging  # optional dependency (the hf extra)

    c = model.config
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, c.vocab_size, (2, min(c.block_size, CHECK_TOKENS)), generator=g)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no "Loading weights" bar in the middle of a one-line command
    try:
        hf = AutoModelForCausalLM.from_pretrained(folder).float()
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    hf.eval()
    with torch.no_grad():
        ours = model(ids)[0].float()
        theirs = hf(input_ids=ids).logits.float()
    if theirs.shape != ours.shape:
        raise ValueError(f"the export read back by transformers gives logits of shape {tuple(theirs.shape)}, ours "
                         f"{tuple(ours.shape)}; nothing was written")
    diff = float((theirs - ours).abs().max())
    tol = 1e-3 * max(1.0, float(ours.abs().max()))
    if not diff <= tol:
        import transformers  # optional dependency (the hf extra)

        raise ValueError(f"transformers {transformers.__version__} reads the export with logits {diff:.3g} away from "
                         f"ours (tolerance {tol:.3g}); nothing was written")
    text = _sample_text(kind)
    expected = our_ids(text, kind, tok)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the sample may be longer than the context: only the ids are compared
    try:
        got = AutoTokenizer.from_pretrained(folder)(text, add_special_tokens=False)["input_ids"]
    finally:
        hf_logging.set_verbosity(verbosity)
    if got != expected:
        raise ValueError(f"the exported tokenizer encodes {text!r} as {got[:12]}..., emergence as {expected[:12]}...; "
                         "nothing was written")


def export(checkpoint: Path, out_dir: Path, *, check: bool = True) -> Path:
    """Write checkpoint `checkpoint` as a Hugging Face folder `out_dir` (model, config and tokenizer); returns it.

    `out_dir` must not exist or be empty. The folder is built under a temporary name beside it, checked by loading it
    back with transformers (`check`), then renamed into place: a failure leaves nothing behind.
    """
    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    if not checkpoint.is_file():
        raise ValueError(f"checkpoint {checkpoint} does not exist; give a checkpoint file, "
                         ".../runs/<run_id>/checkpoints/step_<N>.pt")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ValueError(f"{out_dir} already exists and is not an empty folder; give a new one (nothing was written)")
    _require_hf()
    state = ckpt.load(checkpoint)
    if not isinstance(state, dict) or not isinstance(state.get("model_config"), dict) or "model" not in state:
        raise ValueError(f"{checkpoint} is not an emergence model checkpoint (no model or model_config in it)")
    try:
        gc = GPTConfig(**state["model_config"])
        model = GPT(gc)
        model.load_state_dict(state["model"])
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"{checkpoint}: its weights do not fit its model_config: {str(e).splitlines()[0]}") from None
    model.eval()
    tok, special, kind = _tokenizer_for(checkpoint, state, gc.vocab_size)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_killed_exports(out_dir)
    tmp = out_dir.parent / f".{out_dir.name}.export-{os.getpid()}"
    if tmp.exists():
        raise ValueError(f"{tmp} exists and this export did not create it; move it away (nothing was written)")
    try:
        tmp.mkdir()
        (tmp / EXPORT_MARK).write_text(f"{os.getpid()}\n")  # the folder is ours: `remove_killed_exports`'s proof
        arch = _write_model(model, special, tmp)
        _write_tokenizer(tok, special, kind, gc.block_size, tmp)
        meta = {"source": str(checkpoint.resolve()), "run_id": state.get("run_id"), "step": state.get("step"),
                "tokens": state.get("tokens"), "n_params": n_params(gc), "model_config": gc.to_dict(),
                "architecture": arch, "tokenizer": kind, "code_version": state.get("code_version")}
        (tmp / "emergence.json").write_text(json.dumps(meta, indent=1, default=str) + "\n")
        umask = os.umask(0)
        os.umask(umask)
        for f in tmp.iterdir():  # safetensors writes its file owner-only; the folder is shared as the others are
            f.chmod(0o666 & ~umask)
        if check:
            _check(model, tmp, kind, tok)
        (tmp / EXPORT_MARK).unlink()
        if out_dir.exists():
            out_dir.rmdir()  # empty, checked above
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


EXPORT_MARK = ".emergence-export"  # in a folder an export is building; gone once the folder is renamed into place


def remove_killed_exports(out_dir: Path) -> list[Path]:
    """Delete the folders an export to `out_dir` was building when it was killed: named exactly
    `.<out_dir name>.export-<process id>`, holding this tool's mark, their process gone. Nothing else is touched,
    whatever its name (the name is matched as text, never as a pattern)."""
    import re

    name = re.compile(rf"^\.{re.escape(out_dir.name)}\.export-(\d+)$")
    removed = []
    if not out_dir.parent.is_dir():
        return removed
    for old in out_dir.parent.iterdir():
        m = name.match(old.name)
        if (m and old.is_dir() and not old.is_symlink() and (old / EXPORT_MARK).is_file()
                and int(m.group(1)) != os.getpid() and not pid_alive(int(m.group(1)))):
            shutil.rmtree(old, ignore_errors=True)
            removed.append(old)
    return removed


def export_cli(checkpoint: str, out_dir: str) -> int:
    """`emergence export CHECKPOINT OUT_DIR`; a bad input raises ValueError with one line (the CLI exits 2)."""
    out = export(Path(checkpoint), Path(out_dir))
    meta = json.loads((out / "emergence.json").read_text())
    print(f"{out}: {meta['architecture']}, {meta['n_params']:,} parameters, step {meta['step']}, {meta['tokenizer']} "
          f"tokenizer; load it with transformers.AutoModelForCausalLM.from_pretrained({str(out)!r})")
    return 0
