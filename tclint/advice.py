"""Framework advice as data: what to change in the PyTorch code for a finding.

A finding says which ONNX dim is off (``TC102 N=2730 -> 2736``); the user's fix is a config
field or a constructor argument (``intermediate_size``, ``nn.Conv2d(3, ...)``). Each entry of
:data:`ADVICE` says when it applies (rule codes, the dim, the framework seen in the node's
:class:`tclint.source.Source`, a pattern on the module path) and the one line to print, with the
public ``source`` it rests on. :data:`HF_CONFIG_FIELDS` names the config fields per Hugging Face
model type (they differ: GPT-2 says ``n_embd``/``n_inner``, LLaMA ``hidden_size``/
``intermediate_size``, T5 ``d_model``/``d_ff``).

Frameworks are recognised from the class hierarchy the dynamo exporter records, never guessed
from names alone: ``transformers.models.<type>.*`` for Hugging Face, ``torchvision.models.*``
for torchvision; ``torch`` means any node whose module path is known. A finding with no such
evidence gets no advice (legacy exports know the module but not its class).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tclint.source import Source

HF_DOCS = "https://huggingface.co/docs/transformers"
NVIDIA_GEMM = ("https://docs.nvidia.com/deeplearning/performance/"
               "dl-performance-matrix-multiplication/index.html")
NVIDIA_FC = ("https://docs.nvidia.com/deeplearning/performance/"
             "dl-performance-fully-connected/index.html")
NVIDIA_CONV = ("https://docs.nvidia.com/deeplearning/performance/"
               "dl-performance-convolutional/index.html")
TORCHVISION = "https://github.com/pytorch/vision/blob/main/torchvision/models"


@dataclass(frozen=True)
class ConfigFields:
    """A Hugging Face config's names for the dims tclint reports."""

    vocab: str = "vocab_size"
    ffn: str | None = "intermediate_size"
    hidden: str | None = "hidden_size"
    #: how the attention head dim is set, as a phrase
    head: str | None = "`hidden_size` / `num_attention_heads`"
    source: str = ""


_LLAMA_LIKE_HEAD = "`head_dim` (default `hidden_size` / `num_attention_heads`)"
_GPT2_LIKE = {"ffn": "n_inner", "hidden": "n_embd", "head": "`n_embd` / `n_head`"}

#: model type (``transformers.models.<type>``) -> config field names; types not listed get only
#: the advice every Hugging Face model shares (``vocab_size``, tokenizer padding).
HF_CONFIG_FIELDS: dict[str, ConfigFields] = {
    "llama": ConfigFields(head=_LLAMA_LIKE_HEAD, source=f"{HF_DOCS}/model_doc/llama#transformers.LlamaConfig"),
    "mistral": ConfigFields(head=_LLAMA_LIKE_HEAD, source=f"{HF_DOCS}/model_doc/mistral#transformers.MistralConfig"),
    "qwen2": ConfigFields(source=f"{HF_DOCS}/model_doc/qwen2#transformers.Qwen2Config"),
    "qwen3": ConfigFields(head=_LLAMA_LIKE_HEAD, source=f"{HF_DOCS}/model_doc/qwen3#transformers.Qwen3Config"),
    "gemma": ConfigFields(head=_LLAMA_LIKE_HEAD, source=f"{HF_DOCS}/model_doc/gemma#transformers.GemmaConfig"),
    "gemma2": ConfigFields(head=_LLAMA_LIKE_HEAD, source=f"{HF_DOCS}/model_doc/gemma2#transformers.Gemma2Config"),
    "bert": ConfigFields(source=f"{HF_DOCS}/model_doc/bert#transformers.BertConfig"),
    "roberta": ConfigFields(source=f"{HF_DOCS}/model_doc/roberta#transformers.RobertaConfig"),
    "gpt_neox": ConfigFields(source=f"{HF_DOCS}/model_doc/gpt_neox#transformers.GPTNeoXConfig"),
    "gpt2": ConfigFields(**_GPT2_LIKE, source=f"{HF_DOCS}/model_doc/gpt2#transformers.GPT2Config"),
    "gptj": ConfigFields(**_GPT2_LIKE, source=f"{HF_DOCS}/model_doc/gptj#transformers.GPTJConfig"),
    "codegen": ConfigFields(**_GPT2_LIKE, source=f"{HF_DOCS}/model_doc/codegen#transformers.CodeGenConfig"),
    "gpt_bigcode": ConfigFields(**_GPT2_LIKE, source=f"{HF_DOCS}/model_doc/gpt_bigcode#transformers.GPTBigCodeConfig"),
    "opt": ConfigFields(ffn="ffn_dim", source=f"{HF_DOCS}/model_doc/opt#transformers.OPTConfig"),
    "t5": ConfigFields(ffn="d_ff", hidden="d_model", head="`d_kv`", source=f"{HF_DOCS}/model_doc/t5#transformers.T5Config"),
    "mt5": ConfigFields(ffn="d_ff", hidden="d_model", head="`d_kv`", source=f"{HF_DOCS}/model_doc/mt5#transformers.MT5Config"),
}

# Module paths by role, as the Hugging Face and torchvision implementations name them.
_VOCAB = r"(^|\.)(lm_head|decoder|embed_out|output_projection|proj_out)$"
_FFN_UP = (r"(^|\.)(gate_proj|up_proj|fc1|fc_in|dense_h_to_4h|w1|w3)$|mlp\.c_fc$"
           r"|DenseReluDense\.wi(_0|_1)?$|\.intermediate\.dense$")
_FFN_DOWN = (r"(^|\.)(down_proj|fc2|fc_out|dense_4h_to_h|w2)$|mlp\.c_proj$|DenseReluDense\.wo$"
             r"|(?<!attention)\.output\.dense$")
_ATTN_IN = r"(^|\.)(q_proj|k_proj|v_proj|query|key|value|c_attn|qkv_proj|query_key_value|q|k|v)$"
_ATTN_OUT = r"(^|\.)(o_proj|out_proj|o|dense)$|attn\.c_proj$|attention\.output\.dense$"
_HEAD = r"(^|\.)(fc|head|heads|heads\.head|classifier)(\.\d+)?$"


@dataclass(frozen=True)
class Advice:
    """One piece of advice: when it applies and the line to print (``str.format`` fields:
    module, leaf, value, suggested, multiple, field, model, K, C), with its public source."""

    id: str
    codes: frozenset[str]
    #: the finding dim it is about: a key of the finding's ``suggested`` (``N``, ``K``, ``C``,
    #: ``head_dim``, ``C/g``), or ``*`` for whichever one the finding suggests
    dim: str
    #: "transformers", "torchvision" (from the class hierarchy) or "torch" (a known module path)
    family: str
    text: str
    source: str
    module: str | None = None  # regex (re.search) on the module path
    classes: str | None = None  # regex (re.search) on one of the module classes
    exclude: str | None = None  # regex (re.search) on the module path: does not apply there
    #: config role the text's {field} names (vocab, ffn, hidden, head); the entry applies only
    #: to model types whose config has it
    field: str | None = None


ADVICE: tuple[Advice, ...] = (
    # --- Hugging Face transformers -----------------------------------------------------------
    Advice("hf-vocab", frozenset({"TC104", "TC102"}), "N", "transformers", module=_VOCAB,
           field="vocab",
           text="`{field}` {value} -> {suggested}: `model.resize_token_embeddings(len(tokenizer), "
                "pad_to_multiple_of={multiple})` ({model})",
           source=f"{HF_DOCS}/main_classes/model#transformers.PreTrainedModel.resize_token_embeddings"),
    Advice("hf-ffn-width", frozenset({"TC102"}), "N", "transformers", module=_FFN_UP, field="ffn",
           text="`{field}` {value} -> {suggested} in the {model} config (sizes `{leaf}` and the "
                "other FFN projections)",
           source=NVIDIA_FC),
    Advice("hf-ffn-reduction", frozenset({"TC101"}), "K", "transformers", module=_FFN_DOWN,
           field="ffn",
           text="`{field}` {value} -> {suggested} in the {model} config (`{leaf}` reduces over it)",
           source=NVIDIA_FC),
    Advice("hf-hidden-in", frozenset({"TC101"}), "K", "transformers",
           module=f"{_FFN_UP}|{_ATTN_IN}|{_VOCAB}", field="hidden",
           text="`{field}` {value} -> {suggested} in the {model} config (every projection reduces over it)",
           source=NVIDIA_FC),
    Advice("hf-hidden-out", frozenset({"TC102"}), "N", "transformers",
           module=f"{_FFN_DOWN}|{_ATTN_OUT}", field="hidden",
           text="`{field}` {value} -> {suggested} in the {model} config",
           source=NVIDIA_FC),
    Advice("hf-head-dim", frozenset({"TC105"}), "head_dim", "transformers", field="head",
           text="head dim {value} is set by {field} in the {model} config: make it a multiple "
                "of {multiple} (e.g. {suggested})",
           source=NVIDIA_GEMM),
    Advice("hf-tokenizer", frozenset({"TC103"}), "*", "transformers",
           text="pad sequences to a multiple of {multiple} at the tokenizer: `tokenizer(..., "
                "padding=True, pad_to_multiple_of={multiple})` or `DataCollatorWithPadding("
                "tokenizer, pad_to_multiple_of={multiple})`",
           source=f"{HF_DOCS}/main_classes/data_collator#transformers.DataCollatorWithPadding"),
    # --- torchvision-style CNNs -----------------------------------------------------------------
    Advice("cnn-first-conv", frozenset({"TC204"}), "C", "torch",
           text="`{module}` takes {value} channels: build it as `nn.Conv2d(4, {K}, ...)` with a zero "
                "4th input channel (`weight = F.pad(weight, (0, 0, 0, 0, 0, 1))`) and append a zero "
                "channel to the images in preprocessing",
           source=NVIDIA_CONV),
    Advice("tv-growth-rate", frozenset({"TC202"}), "K", "torchvision", module=r"\.conv2$",
           classes=r"^torchvision\.models\.densenet\._DenseLayer$",
           text="`growth_rate` {value} -> {suggested} (`DenseNet(growth_rate=...)`: each dense "
                "layer's `conv2` adds that many channels)",
           source=f"{TORCHVISION}/densenet.py"),
    Advice("tv-dense-concat", frozenset({"TC201"}), "C", "torchvision", module=r"\.conv1?$",
           classes=r"^torchvision\.models\.densenet\.(_DenseLayer|_Transition)$",
           text="`{module}` reads the concatenated features ({value} channels = "
                "`num_init_features` + i * `growth_rate`): make both multiples of {multiple}",
           source=f"{TORCHVISION}/densenet.py"),
    Advice("tv-group-width", frozenset({"TC203"}), "*", "torchvision",
           classes=r"^torchvision\.models\.regnet\.",
           text="`group_width` {value} -> {suggested} (RegNet `BlockParams`: channels per group "
                "of the 3x3 convs)",
           source=f"{TORCHVISION}/regnet.py"),
    Advice("tv-width-mult", frozenset({"TC201", "TC202"}), "*", "torchvision",
           classes=r"^torchvision\.models\.(mobilenetv2|mobilenetv3|efficientnet)\.",
           exclude=r"\.fc[12]$",  # SE squeeze widths: efficientnet does not round them
           text="`{module}` has {value} channels because {model} rounds `channels * width_mult` "
                "to a multiple of 8 (`_make_divisible`): a `width_mult` that keeps it a multiple "
                "of {multiple} ({suggested}), or `tclint fix`",
           source=f"{TORCHVISION}/_utils.py"),
    Advice("tv-num-classes", frozenset({"TC104", "TC102"}), "N", "torchvision", module=_HEAD,
           text="`num_classes` {value} -> {suggested} and slice the logits back "
                "(`logits[..., :{value}]`)",
           source=NVIDIA_FC),
    Advice("torch-conv-out", frozenset({"TC202"}), "K", "torch",
           text="`{module}`: out_channels {value} -> {suggested} in its constructor (and "
                "in_channels of the layers it feeds)",
           source=NVIDIA_CONV),
    Advice("torch-conv-in", frozenset({"TC201"}), "C", "torch",
           text="`{module}`: in_channels {value} -> {suggested} (the out_channels of the layer "
                "that feeds it)",
           source=NVIDIA_CONV),
)


#: the multiple to print when the finding does not carry one (domain.md section 3: vocab 64,
#: tokenizer padding 8, the FP16 minimum)
_DEFAULT_MULTIPLE = {"hf-vocab": 64}


def hf_model(source: Source) -> tuple[str, str] | None:
    """(model type, class name) of the outermost Hugging Face model class in the hierarchy:
    ``transformers.models.llama.modeling_llama.LlamaForCausalLM`` -> (``llama``, ``LlamaForCausalLM``)."""
    for cls in source.classes:
        if cls.startswith("transformers.models."):
            atoms = cls.split(".")
            if len(atoms) >= 4:
                return atoms[2], atoms[-1]
    return None


def torchvision_model(source: Source) -> str | None:
    for cls in source.classes:
        if cls.startswith("torchvision.models."):
            return cls.rsplit(".", 1)[-1]
    return None


def _value(dim: str, dims: dict, suggested: dict) -> int | None:
    if dim in dims and dims[dim] is not None:
        return dims[dim]
    if dim in ("C/g", "K/g") and dims.get("groups"):
        whole = dims.get(dim[0])
        return None if whole is None else whole // dims["groups"]
    return None


def find_advice(source: Source, code: str, dims: dict, suggested: dict | None,
                multiple: int | None = None) -> tuple[Advice, str] | None:
    """The first :data:`ADVICE` entry that applies to a finding, and its line."""
    if not suggested or source.module is None:
        return None
    hf = hf_model(source)
    tv = torchvision_model(source)
    for a in ADVICE:
        if code not in a.codes:
            continue
        if a.family == "transformers" and hf is None or a.family == "torchvision" and tv is None:
            continue
        dim = next(iter(suggested)) if a.dim == "*" else a.dim
        if dim not in suggested:
            continue
        if a.module is not None and not re.search(a.module, source.module):
            continue
        if a.classes is not None and not any(re.search(a.classes, c) for c in source.classes):
            continue
        if a.exclude is not None and re.search(a.exclude, source.module):
            continue
        field = ""
        if a.field is not None:
            fields = HF_CONFIG_FIELDS.get(hf[0]) if hf else None
            if a.field == "vocab":
                field = fields.vocab if fields else "vocab_size"  # every HF LM config has it
            else:
                field = getattr(fields, a.field, None) if fields else None
                if not field:
                    continue
        value = _value(dim, dims, suggested)
        mult = multiple or _DEFAULT_MULTIPLE.get(a.id, 8)
        text = a.text.format(
            module=source.module, leaf=source.module.rsplit(".", 1)[-1], value=value,
            suggested=suggested[dim], multiple=mult, field=field,
            model=hf[1] if hf else tv or "", K=dims.get("K", "K"), C=dims.get("C", "C"))
        return a, text
    return None


def advise(source: Source, code: str, dims: dict, suggested: dict | None,
           multiple: int | None = None) -> str | None:
    """One line of framework advice for a finding (its rule code, dims and suggested values,
    as :class:`tclint.rules.Finding` has them), or None when the model does not say enough."""
    found = find_advice(source, code, dims, suggested, multiple)
    return found[1] if found else None
