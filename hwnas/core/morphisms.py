"""Network morphisms (Wei et al. 2016; Elsken et al., NASH 2017 and LEMONADE 2019) on our spaces: a
morphism is a change of decisions (Arch -> Arch) that a weight transfer from the parent's trained
network to the child's makes function-preserving, so that the child starts where its parent ended.

Exact morphisms (the child computes the parent's function, in eval mode):

- `deepen`: a skipped layer (or one more layer of a stage) becomes a block whose residual branch is
  zero (its last BN's gamma and beta are 0), so the block is its shortcut; only where the block has a
  residual connection (stride 1, same width, no `_noskip`).
- `kernel_up`: a depthwise kernel 3 -> 5 -> 7, the old kernel zero-padded at the centre.
- `expand_up`: a larger expansion; the new hidden channels' outgoing weights are zero.
- `widen` (Net2Wider, Chen et al. 2016): a larger stage width; new channels replicate old ones and
  the consumers' weights of a replicated channel are split among its copies (random shares that sum
  to 1, so copies do not stay tied in training).

Approximate morphisms (`remove`, `kernel_down`, `expand_down`, `narrow`) inherit what fits (a
centre crop, the first channels) and are marked `exact=False`. A morphism a space cannot express
(an op or SE change, a residual added or removed) is not offered.

The weight transfer (`inherit_weights`) does not look at the morphisms: it aligns the parent's and
the child's blocks by position (a layer of a layer-wise space, a stage slot of a stagewise one) and
maps every tensor axis through channel maps, so a child k morphisms away inherits in one step.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
from torch import nn

from ..errors import ArchError
from .arch import Arch
from .spaces import SKIP, LayerwiseSpace, SearchSpace
from .spaces.mnasnet import MnasNetSpace
from .spaces.mobilenetv3 import MobileNetV3Space
from .spaces.proxylessnas import ProxylessNASSpace

_LAYER = re.compile(r"^k(?P<k>\d+)_e(?P<e>\d+)(?P<rest>(?:_.+)?)$")
EXACT_KINDS = ("deepen", "kernel_up", "expand_up", "widen")
APPROXIMATE_KINDS = ("remove", "kernel_down", "expand_down", "narrow")


@dataclass(frozen=True)
class Morphism:
    """A change of one decision (`decision`: `before` -> `after`), plus `also` (decisions set with it,
    e.g. the layer a deeper MobileNetV3 stage activates); `exact`: the transfer preserves the function."""

    kind: str
    decision: str
    before: str
    after: str
    exact: bool = True
    also: tuple[tuple[str, str], ...] = ()

    @property
    def text(self) -> str:
        extra = "".join(f", {d}={c}" for d, c in self.also)
        return f"{self.kind} {self.decision}: {self.before} -> {self.after}{extra}"

    def apply(self, space: SearchSpace, arch: Arch) -> Arch:
        choices = arch.choice_map
        if choices.get(self.decision) != self.before:
            raise ArchError(f"morphism {self.text!r} does not apply: {self.decision} is {choices.get(self.decision)!r}")
        choices.update({self.decision: self.after, **dict(self.also)})
        return Arch.create(space, choices)


def _layer_moves(decision: str, choice: str, choices: Sequence[str], removable: bool) -> list[Morphism]:
    """Morphisms of one layer decision with choices `k{K}_e{E}[_x]` and perhaps `skip`."""
    out = []
    plain = sorted((c for c in choices if (m := _LAYER.match(c)) and not m["rest"]),
                   key=lambda c: (int(_LAYER.match(c)["k"]), int(_LAYER.match(c)["e"])))
    if choice == SKIP:
        if plain:  # the smallest plain block, identity-initialised; kernel_up / expand_up grow it later
            out.append(Morphism("deepen", decision, SKIP, plain[0]))
        return out
    m = _LAYER.match(choice)
    if not m:
        return out
    k, e, rest = int(m["k"]), int(m["e"]), m["rest"]
    kernels = sorted({int(x["k"]) for c in choices if (x := _LAYER.match(c)) and int(x["e"]) == e and x["rest"] == rest})
    bigger = [x for x in kernels if x > k]
    smaller = [x for x in kernels if x < k]
    if bigger:
        out.append(Morphism("kernel_up", decision, choice, f"k{bigger[0]}_e{e}{rest}"))
    if smaller:
        out.append(Morphism("kernel_down", decision, choice, f"k{smaller[-1]}_e{e}{rest}", exact=False))
    if not rest:  # grouped 1x1 convolutions change their grouping with the expansion: not offered
        exps = sorted({int(x["e"]) for c in plain if int((x := _LAYER.match(c))["k"]) == k})
        if [x for x in exps if x > e]:
            out.append(Morphism("expand_up", decision, choice, f"k{k}_e{min(x for x in exps if x > e)}"))
        if [x for x in exps if x < e]:
            out.append(Morphism("expand_down", decision, choice, f"k{k}_e{max(x for x in exps if x < e)}", exact=False))
    if removable and SKIP in choices:
        out.append(Morphism("remove", decision, choice, SKIP, exact=False))
    return out


def morphisms(space: SearchSpace, arch: Arch, exact_only: bool = True) -> list[Morphism]:
    """Every single morphism applicable to `arch` in `space` (the exact ones only, unless
    `exact_only` is False), in a fixed order. An empty list for a space without morphisms (nb201)."""
    arch.check_space(space)
    choices = arch.choice_map
    out: list[Morphism] = []
    if isinstance(space, LayerwiseSpace):
        for layer in space.layers:
            if layer.projection_skip and (choices[layer.name] == SKIP or SKIP in layer.candidates):
                moves = [m for m in _layer_moves(layer.name, choices[layer.name], layer.candidates, False)
                         if m.kind != "deepen"]  # a projection skip is not an identity
            else:
                moves = _layer_moves(layer.name, choices[layer.name], layer.candidates, True)
            out += moves
    elif isinstance(space, ProxylessNASSpace):
        for d in space.decisions:
            out += _layer_moves(d.name, choices[d.name], d.choices, True)
    elif isinstance(space, MobileNetV3Space):
        for d in space.decisions:
            stage, what = d.name.split(".")
            depth = int(choices[f"{stage}.depth"])
            if what == "depth":
                deeper = [c for c in d.choices if int(c) > depth]
                if deeper:  # the next layer joins as an identity block (it has a residual: stride 1, same width)
                    out.append(Morphism("deepen", d.name, str(depth), str(min(map(int, deeper)))))
                shallower = [c for c in d.choices if int(c) < depth]
                if shallower:
                    out.append(Morphism("remove", d.name, str(depth), str(max(map(int, shallower))), exact=False))
            elif int(what[1:]) < depth:  # an inactive layer's choice changes nothing: no morphism
                out += _layer_moves(d.name, choices[d.name], d.choices, False)
    elif isinstance(space, MnasNetSpace):
        for i in range(len(space.strides)):
            c = {k: choices[f"s{i}.{k}"] for k in ("op", "kernel", "depth", "width", "skip")}

            def step(what, kind, up):
                values = [v for v in space.decision(f"s{i}.{what}").choices if v != "sep"]
                ordered = sorted(values, key=lambda v: float(v) if what != "op" else ("mb3", "mb6").index(v))
                at = ordered.index(c[what])
                if 0 <= at + up < len(ordered):
                    out.append(Morphism(kind, f"s{i}.{what}", c[what], ordered[at + up], exact=up > 0))

            step("kernel", "kernel_up", 1)
            step("kernel", "kernel_down", -1)
            if c["op"] in ("mb3", "mb6"):
                step("op", "expand_up", 1)
                step("op", "expand_down", -1)
            step("width", "widen", 1)
            step("width", "narrow", -1)
            if c["skip"] == "res":  # a block without a residual cannot start as the identity
                step("depth", "deepen", 1)
            step("depth", "remove", -1)
    return [m for m in out if m.exact or not exact_only]


def apply_morphisms(space: SearchSpace, arch: Arch, rng: random.Random, count: int, exact_only: bool = True
                    ) -> tuple[Arch, tuple[Morphism, ...]]:
    """`arch` after `count` random morphisms, each drawn among those of the architecture so far
    (fewer when none is left), and the morphisms applied."""
    applied = []
    for _ in range(count):
        options = morphisms(space, arch, exact_only)
        if not options:
            break
        move = rng.choice(options)
        arch = move.apply(space, arch)
        applied.append(move)
    return arch, tuple(applied)


def has_morphisms(space: SearchSpace) -> bool:
    """Whether `morphisms` knows the space (every timm space of hwnas; not the cell space nb201)."""
    return isinstance(space, (LayerwiseSpace, ProxylessNASSpace, MobileNetV3Space, MnasNetSpace))


# --- weight transfer -----------------------------------------------------------------------------
def block_keys(space: SearchSpace, choices: Mapping[str, str]) -> list[list[tuple[int, str]]]:
    """Per arch_def stage, a (channel group, position) key per block: blocks with the same key in a
    parent and a child correspond; blocks of one channel group share their output width."""
    arch_def = space.arch_def(choices)
    if isinstance(space, LayerwiseSpace):
        keys: dict[int, list] = {}
        for layer in space.layers:
            if layer.block_string(choices[layer.name]) is not None:
                keys.setdefault(layer.stage, []).append((layer.stage, layer.name))
        out = [keys[s] for s in sorted(keys)]
    elif isinstance(space, ProxylessNASSpace):
        out = [[(0, "first")]]
        for i in range(1, len(space.strides)):
            names = [d.name for d in space.decisions if d.name.startswith(f"s{i}.")]
            out.append([(i, n) for n in names if choices[n] != SKIP])
    else:
        out = [[(i, str(j)) for j in range(len(stage))] for i, stage in enumerate(arch_def)]
    if [len(s) for s in out] != [len(s) for s in arch_def]:  # pragma: no cover - a space this does not know
        raise ArchError(f"space {space.name!r}: cannot align its blocks for a weight transfer")
    return out


class _Map:
    """child channel j <- parent channel src[j] (None: a new channel whose outgoing weights are 0);
    `share[j]`: the part of a replicated parent channel's consumer weight that copy j takes."""

    def __init__(self, src: list[int | None], share: list[float] | None = None):
        self.src, self.share = src, share or [1.0] * len(src)

    @classmethod
    def grow(cls, parent: int, child: int) -> "_Map":
        """Prefix map: the first channels correspond, later child channels are new (zero out)."""
        return cls([j if j < parent else None for j in range(child)])

    @classmethod
    def wider(cls, parent: int, child: int, rng: random.Random) -> "_Map":
        """Net2Wider: extra channels copy random old ones; consumer weights are split in random shares."""
        if child <= parent:
            return cls.grow(parent, child)
        src = list(range(parent)) + [rng.randrange(parent) for _ in range(child - parent)]
        raw = [0.5 + rng.random() for _ in src]
        totals: dict[int, float] = {}
        for s, r in zip(src, raw):
            totals[s] = totals.get(s, 0.0) + r
        return cls(src, [r / totals[s] for s, r in zip(src, raw)])

    def identity(self, parent: int) -> bool:
        return len(self.src) == parent and self.src == list(range(parent)) and all(s == 1.0 for s in self.share)

    def truncates(self, parent: int) -> bool:
        return len(self.src) < parent


def _kernel(t: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, bool]:
    """A conv weight's kernel zero-padded (exact) or centre-cropped (not) to `size`."""
    kh, kw = t.shape[-2:]
    if (kh, kw) == tuple(size):
        return t, True
    if kh <= size[0] and kw <= size[1]:
        ph, pw = (size[0] - kh) // 2, (size[1] - kw) // 2
        return nn.functional.pad(t, (pw, size[1] - kw - pw, ph, size[0] - kh - ph)), True
    ch, cw = (kh - size[0]) // 2, (kw - size[1]) // 2
    return t[..., ch:ch + size[0], cw:cw + size[1]], False


class _Transfer:
    def __init__(self):
        self.exact = True
        self.notes: list[str] = []

    def approx(self, note: str) -> None:
        self.exact = False
        self.notes.append(note)

    def tensor(self, child: torch.Tensor, parent: torch.Tensor, out: _Map | None, inp: _Map | None = None,
               where: str = "") -> None:
        """Write into `child` the parent's tensor mapped through `out` (axis 0, producer) and `inp`
        (axis 1, consumer); new producer rows keep the child's own initialisation."""
        t = parent.detach()
        if t.dim() == 4 and t.shape[2:] != child.shape[2:]:
            t, ok = _kernel(t, child.shape[2:])
            if not ok:
                self.approx(f"{where}: kernel cropped")
        if inp is not None:
            if inp.truncates(t.shape[1]):
                self.approx(f"{where}: inputs dropped")
            src = torch.tensor([0 if s is None else s for s in inp.src])
            share = torch.tensor([0.0 if s is None else w for s, w in zip(inp.src, inp.share)], dtype=t.dtype)
            t = t.index_select(1, src) * share.view(1, -1, *([1] * (t.dim() - 2)))
        result = child.detach().clone()
        if out is None:
            out = _Map(list(range(t.shape[0])))
        if out.truncates(t.shape[0]):
            self.approx(f"{where}: outputs dropped")
        rows = [j for j, s in enumerate(out.src) if s is not None]
        if rows:
            result[torch.tensor(rows)] = t.index_select(0, torch.tensor([out.src[j] for j in rows]))
        if result.shape != child.shape:  # pragma: no cover - a map inconsistent with the built model
            raise ArchError(f"weight transfer: {where} maps to {tuple(result.shape)}, not {tuple(child.shape)}")
        child.data.copy_(result)

    def bn(self, child: nn.Module, parent: nn.Module, out: _Map, where: str) -> None:
        for name in ("weight", "bias", "running_mean", "running_var"):
            c, p = getattr(child, name, None), getattr(parent, name, None)
            if c is not None and p is not None:
                self.tensor(c, p, out, where=f"{where}.{name}")
        if getattr(child, "num_batches_tracked", None) is not None:
            child.num_batches_tracked.copy_(parent.num_batches_tracked)

    def conv(self, child: nn.Module, parent: nn.Module, out: _Map, inp: _Map | None, where: str) -> None:
        self.tensor(child.weight, parent.weight, out, inp, where)
        if child.bias is not None and parent.bias is not None:
            self.tensor(child.bias, parent.bias, out, where=f"{where}.bias")

    def se(self, child: nn.Module, parent: nn.Module, chans: _Map, where: str) -> None:
        c_se, p_se = not isinstance(child, nn.Identity), not isinstance(parent, nn.Identity)
        if c_se != p_se:
            self.approx(f"{where}: squeeze-excite added or removed")
        if not (c_se and p_se):
            return
        hidden = _Map.grow(parent.conv_reduce.out_channels, child.conv_reduce.out_channels)
        self.conv(child.conv_reduce, parent.conv_reduce, hidden, chans, f"{where}.conv_reduce")
        self.conv(child.conv_expand, parent.conv_expand, chans, hidden, f"{where}.conv_expand")


def _kind(block: nn.Module) -> str:
    return type(block).__name__


def _last_bn(block: nn.Module) -> nn.Module | None:
    name = {"InvertedResidual": "bn3", "GroupedInvertedResidual": "bn3", "DepthwiseSeparableConv": "bn2"}.get(_kind(block))
    return getattr(block, name) if name else None


def _block(tr: _Transfer, child: nn.Module, parent: nn.Module, inp: _Map, out: _Map, where: str) -> None:
    kind = _kind(child)
    if kind != _kind(parent):
        tr.approx(f"{where}: block type {_kind(parent)} -> {kind}, not inherited")
        return
    if getattr(child, "has_skip", False) != getattr(parent, "has_skip", False):
        tr.approx(f"{where}: residual connection added or removed")
    if kind == "InvertedResidual" or kind == "GroupedInvertedResidual":
        if kind == "GroupedInvertedResidual" and not (
                inp.identity(parent.conv_pw.in_channels) and out.identity(parent.conv_pwl.out_channels)
                and child.conv_pw.out_channels == parent.conv_pw.out_channels):
            tr.approx(f"{where}: a grouped block changed its widths, not inherited")
            return
        if kind == "GroupedInvertedResidual":  # same widths: the grouped 1x1 convs copy as they are
            inp = out = None
        mid = _Map.grow(parent.conv_pw.out_channels, child.conv_pw.out_channels)
        tr.conv(child.conv_pw, parent.conv_pw, mid, inp, f"{where}.conv_pw")
        tr.bn(child.bn1, parent.bn1, mid, f"{where}.bn1")
        tr.conv(child.conv_dw, parent.conv_dw, mid, None, f"{where}.conv_dw")
        tr.bn(child.bn2, parent.bn2, mid, f"{where}.bn2")
        tr.se(child.se, parent.se, mid, f"{where}.se")
        tr.conv(child.conv_pwl, parent.conv_pwl, out, None if kind == "GroupedInvertedResidual" else mid,
                f"{where}.conv_pwl")
        tr.bn(child.bn3, parent.bn3, out or _Map(list(range(child.bn3.num_features))), f"{where}.bn3")
    elif kind == "DepthwiseSeparableConv":
        tr.conv(child.conv_dw, parent.conv_dw, inp, None, f"{where}.conv_dw")
        tr.bn(child.bn1, parent.bn1, inp, f"{where}.bn1")
        tr.se(child.se, parent.se, inp, f"{where}.se")
        tr.conv(child.conv_pw, parent.conv_pw, out, inp, f"{where}.conv_pw")
        tr.bn(child.bn2, parent.bn2, out, f"{where}.bn2")
    elif kind == "ConvBnAct":
        tr.conv(child.conv, parent.conv, out, inp, f"{where}.conv")
        tr.bn(child.bn1, parent.bn1, out, f"{where}.bn1")
    else:  # pragma: no cover - a block type our spaces do not build
        tr.approx(f"{where}: block type {kind} is not inherited")


@dataclass(frozen=True)
class TransferReport:
    """Whether the child computes the parent's function after the transfer, and why not."""

    exact: bool
    notes: tuple[str, ...] = ()


@torch.no_grad()
def inherit_weights(space: SearchSpace, parent: Arch, parent_model: nn.Module, child: Arch, child_model: nn.Module,
                    seed: int = 0) -> TransferReport:
    """Copy `parent_model`'s weights into `child_model` (built for `child`, in place) through the
    block alignment and channel maps; new blocks start as their shortcut, new hidden channels with
    zero outgoing weights, new stage channels as Net2Wider copies (seeded by `seed`)."""
    rng = random.Random(seed)
    tr = _Transfer()
    p_choices, c_choices = parent.choice_map, child.choice_map
    p_keys, c_keys = block_keys(space, p_choices), block_keys(space, c_choices)
    p_blocks = {k: b for stage_keys, stage in zip(p_keys, parent_model.blocks) for k, b in zip(stage_keys, stage)}
    p_width = {k[0]: _out_chs(b) for k, b in p_blocks.items()}
    c_width = {keys[0][0]: _out_chs(stage[0]) for keys, stage in zip(c_keys, child_model.blocks)}
    maps = {g: _Map.wider(p_width[g], w, rng) if g in p_width else None for g, w in sorted(c_width.items())}
    for g, m in maps.items():
        if m is not None and m.truncates(p_width[g]):
            tr.approx(f"stage {g}: narrower")
    tr.conv(child_model.conv_stem, parent_model.conv_stem, None, None, "conv_stem")
    tr.bn(child_model.bn1, parent_model.bn1, _Map(list(range(child_model.bn1.num_features))), "bn1")
    inp = _Map(list(range(child_model.conv_stem.out_channels)))
    seen = set()
    for stage_keys, stage in zip(c_keys, child_model.blocks):
        for key, block in zip(stage_keys, stage):
            out = maps[key[0]] or _Map(list(range(_out_chs(block))))
            where = f"block {key[1]}"
            if key in p_blocks:
                seen.add(key)
                _block(tr, block, p_blocks[key], inp, out, where)
            elif getattr(block, "has_skip", False) and _last_bn(block) is not None:
                bn = _last_bn(block)  # the residual branch is zero: the block is its shortcut
                nn.init.zeros_(bn.weight)
                nn.init.zeros_(bn.bias)
            else:
                tr.approx(f"{where}: a new block without a residual connection")
            inp = out
    for key in p_blocks.keys() - seen:
        tr.approx(f"block {key[1]}: removed")
    if hasattr(child_model, "bn2"):
        tr.conv(child_model.conv_head, parent_model.conv_head, None, inp, "conv_head")
        tr.bn(child_model.bn2, parent_model.bn2, _Map(list(range(child_model.bn2.num_features))), "bn2")
    else:  # a pooled head (MobileNetV3's): its conv follows the pool
        tr.conv(child_model.conv_head, parent_model.conv_head, None, inp, "conv_head")
    tr.conv(child_model.classifier, parent_model.classifier, None, None, "classifier")
    return TransferReport(tr.exact, tuple(tr.notes))


def _out_chs(block: nn.Module) -> int:
    for name in ("conv_pwl", "conv_pw", "conv"):  # the last conv of an ir, ds or cn block
        if hasattr(block, name):
            return getattr(block, name).out_channels
    raise ArchError(f"weight transfer: cannot tell the width of a {type(block).__name__}")  # pragma: no cover


def child_state(space: SearchSpace, parent: Arch, parent_state: Mapping[str, torch.Tensor], child: Arch,
                seed: int = 0) -> tuple[dict[str, torch.Tensor], TransferReport]:
    """The child's initial state dict inherited from the parent's trained state (new weights drawn
    under `seed`), and the transfer's report."""
    dtype = next((v.dtype for v in parent_state.values() if v.is_floating_point()), torch.float32)
    parent_model = space.build_model(parent.choice_map).to(dtype)
    parent_model.load_state_dict(parent_state)
    torch.manual_seed(seed)
    child_model = space.build_model(child.choice_map).to(dtype)
    report = inherit_weights(space, parent, parent_model, child, child_model, seed)
    return child_model.state_dict(), report


def _small_layer(choices: Sequence[str], allow_skip: bool) -> str:
    """A layer's smallest choice that morphisms can grow: skip, else the smallest plain block."""
    if allow_skip and SKIP in choices:
        return SKIP
    plain = [c for c in choices if (m := _LAYER.match(c)) and not m["rest"]]
    return min(plain or choices, key=lambda c: (int(_LAYER.match(c)["k"]), int(_LAYER.match(c)["e"])) if _LAYER.match(c)
               else (99, 99))


def small_start(space: SearchSpace) -> Arch:
    """NASH's and LEMONADE's starting network: the smallest one from which every exact morphism is
    reachable (skipped layers, kernel 3, the least expansion, depth and width; MnasNet's MBConv with a
    residual and no SE, so that deepening and expanding stay exact)."""
    choices: dict[str, str] = {}
    if isinstance(space, LayerwiseSpace):
        for layer in space.layers:
            choices[layer.name] = _small_layer(layer.candidates, not layer.projection_skip)
    elif isinstance(space, ProxylessNASSpace):
        choices = {d.name: _small_layer(d.choices, True) for d in space.decisions}
    elif isinstance(space, MobileNetV3Space):
        for d in space.decisions:
            choices[d.name] = min(d.choices, key=int) if d.name.endswith("depth") else _small_layer(d.choices, False)
    elif isinstance(space, MnasNetSpace):
        fixed = {"op": "mb3", "kernel": "3", "se": "0", "skip": "res"}
        for d in space.decisions:
            what = d.name.split(".")[1]
            choices[d.name] = fixed[what] if what in fixed else min(d.choices, key=float)
    else:
        raise ArchError(f"space {space.name!r} has no network morphisms (a cell space); search it with another "
                        "strategy (random, evolution, local, bananas)")
    return Arch.create(space, choices)
