"""Architectures as data: a space name plus one choice per decision, stored as versioned JSON."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Mapping

from ..errors import ArchError, HwnasError
from ..jsonio import atomic_write_json, read_json
from ..schemas import first_error
from .spaces import SearchSpace, get_space

ARCH_FORMAT = "hwnas.arch"
ARCH_VERSION = 1


@dataclass(frozen=True)
class Arch:
    """An architecture: `space` name and `(decision, choice)` pairs in the space's order."""

    space: str
    choices: tuple[tuple[str, str], ...]

    @classmethod
    def create(cls, space: SearchSpace, choices: Mapping[str, str]) -> "Arch":
        """Validate `choices` against `space` and order them as the space lists its decisions."""
        choices = {str(k): str(v) for k, v in choices.items()}
        space.validate(choices)
        return cls(space.name, tuple((name, choices[name]) for name in space.decision_names))

    @property
    def choice_map(self) -> dict[str, str]:
        return dict(self.choices)

    def to_dict(self) -> dict:
        return {"format": ARCH_FORMAT, "version": ARCH_VERSION, "space": self.space, "choices": self.choice_map}

    @property
    def hash(self) -> str:
        """Stable 12-hex-digit id: the same space and choices always give the same hash."""
        canonical = json.dumps({"space": self.space, "choices": self.choice_map}, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:12]

    def arch_def(self, space: SearchSpace) -> list[list[str]]:
        self.check_space(space)
        return space.arch_def(self.choice_map)

    def ops(self, space: SearchSpace) -> list:
        """The LUT ops (OpInstance: stem, blocks, head) of this architecture's network in `space`."""
        self.check_space(space)
        return space.arch_ops(self.choice_map)

    def check_space(self, space: SearchSpace) -> None:
        if space.name != self.space:
            raise ArchError(f"architecture is of space {self.space!r}, not {space.name!r}; use a {space.name!r} architecture")
        space.validate(self.choice_map)


def arch_from_dict(data: object, source: str = "architecture", space: SearchSpace | None = None) -> Arch:
    """Parse and validate an architecture document (see `Arch.to_dict`). `space`: the space to
    check the choices against where the document names it (a batch reader then builds it once)."""
    if not isinstance(data, dict):
        raise ArchError(f"{source}: expected a JSON object with 'space' and 'choices'")
    if data.get("format", ARCH_FORMAT) != ARCH_FORMAT:
        raise ArchError(f"{source}: format is {data.get('format')!r}, expected {ARCH_FORMAT!r}")
    version = data.get("version", ARCH_VERSION)
    if version != ARCH_VERSION:
        raise ArchError(f"{source}: version {version!r} is not supported (this hwnas reads version {ARCH_VERSION})")
    space_name, choices = data.get("space"), data.get("choices")
    if not isinstance(space_name, str) or not isinstance(choices, dict):
        raise ArchError(f"{source}: needs a string 'space' and an object 'choices' (see `hwnas arch sample`)")
    plain = (isinstance(space_name, str) and space_name and type(version) is int and isinstance(data.get("format", ""), str)
             and all(type(v) is str and v for v in choices.values()))
    problem = None if plain else first_error(data, "arch")  # the schema's checks, done quickly where they hold
    if problem:
        raise ArchError(f"{source}: {problem}; fix it (the format: hwnas/schemas/arch.schema.json, "
                        "the choices: `hwnas space show SPACE`)")
    if space is None or space.name != space_name:
        try:
            space = get_space(space_name)
        except HwnasError as exc:
            raise ArchError(f"{source}: {exc}") from None
    try:
        return Arch.create(space, choices)
    except ArchError as exc:
        raise ArchError(f"{source}: {exc}") from None


def save_arch(arch: Arch, path: str | os.PathLike) -> None:
    atomic_write_json(path, arch.to_dict())


def load_arch(path: str | os.PathLike) -> Arch:
    try:
        data = read_json(path, "architecture file")
    except HwnasError as exc:
        raise ArchError(str(exc)) from None
    return arch_from_dict(data, source=str(path))

