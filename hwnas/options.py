"""Options declared once, as data: a frozen dataclass (subclass of `Options`) whose fields carry
their command-line flag, help and type in their metadata (`option(...)`).

From the declaration, `add_flags` adds the flags to an argparse group and `from_args` builds the
record back from the parsed namespace. A generated flag has the default `argparse.SUPPRESS`: a flag
the user did not give leaves no attribute in the namespace, so `given` tells what the user set
without looking into argparse, and the record's own defaults (one place) fill the rest. A field
declared with `reads(dest)` takes its value from a flag the command defines itself (e.g. --epochs);
it is neither added nor ever refused.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Iterable, Mapping

_ARGPARSE_KEYS = ("type", "choices", "metavar", "action", "nargs", "const")


def option(default: Any, flag: str, help: str, dest: str | None = None, **argparse_kwargs) -> Any:
    """A field settable by `flag` (argparse keywords: type, choices, metavar, action, nargs, const).
    `dest` defaults to the flag's name with dashes as underscores, as argparse makes it."""
    unknown = set(argparse_kwargs) - set(_ARGPARSE_KEYS)
    if unknown:
        raise TypeError(f"option {flag}: unknown argparse keywords {sorted(unknown)}")
    dest = dest or flag.lstrip("-").replace("-", "_")
    return dataclasses.field(default=default, metadata={"flag": flag, "dest": dest, "help": help,
                                                       "argparse": argparse_kwargs})


def reads(dest: str, default: Any) -> Any:
    """A field whose value is the command's own flag `dest` (not added, not refused, not owned)."""
    return dataclasses.field(default=default, metadata={"reads": dest})


@dataclass(frozen=True)
class Flag:
    """One declared flag: the record and field it sets, its dest and its argparse keywords."""

    record: type
    field: str
    flag: str
    dest: str
    help: str
    kwargs: dict

    def add_to(self, group) -> None:
        group.add_argument(self.flag, dest=self.dest, default=argparse.SUPPRESS, help=self.help, **self.kwargs)


class Options:
    """Base of an options record; subclasses are frozen dataclasses. `title`: the argparse group
    their flags are listed under (records with the same title share it)."""

    title: ClassVar[str] = ""

    @classmethod
    def flags(cls) -> tuple[Flag, ...]:
        """The flags this record declares, in field order."""
        return tuple(Flag(cls, f.name, f.metadata["flag"], f.metadata["dest"], f.metadata["help"],
                          dict(f.metadata["argparse"]))
                     for f in dataclasses.fields(cls) if "flag" in f.metadata)

    @classmethod
    def dests(cls) -> frozenset[str]:
        return frozenset(flag.dest for flag in cls.flags())

    @classmethod
    def given(cls, args: argparse.Namespace) -> tuple[Flag, ...]:
        """The flags of this record the user set."""
        present = vars(args)
        return tuple(flag for flag in cls.flags() if flag.dest in present)

    @classmethod
    def values(cls, args: argparse.Namespace) -> dict:
        """field -> value for every field: the given flag's (or the read flag's), else the default.
        Unvalidated: `from_args` builds (and so checks) the record."""
        present = vars(args)
        out = {}
        for f in dataclasses.fields(cls):
            dest = f.metadata.get("dest") or f.metadata.get("reads")
            if dest is not None and dest in present:
                out[f.name] = present[dest]
            elif f.default is not dataclasses.MISSING:
                out[f.name] = f.default
        return out

    @classmethod
    def from_args(cls, args: argparse.Namespace):
        """The record of the parsed `args` (its defaults for flags not given), checked by the record."""
        return cls(**cls.values(args))


def record_from(cls: type, values: Mapping[str, Any]):
    """The dataclass `cls` of those `values` named like its fields (its defaults for the others;
    other keys ignored), e.g. a request built from `vars(args)`."""
    return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls) if f.name in values})


def add_flags(parser: argparse.ArgumentParser, records: Iterable[type[Options]], groups: dict | None = None,
              titles: dict | None = None) -> dict[str, Flag]:
    """Add every record's flags to `parser`, each under its record's group (`titles` may rename a
    group). A flag declared by several records (e.g. --population) is added once: the declarations
    must agree on everything but the help (the first one's is shown). Returns dest -> Flag."""
    groups = {} if groups is None else groups
    titles = titles or {}
    added: dict[str, Flag] = {}
    for record in records:
        for flag in record.flags():
            first = added.get(flag.dest)
            if first is not None:
                if (first.flag, first.kwargs) != (flag.flag, flag.kwargs):
                    raise TypeError(f"{flag.flag} is declared differently by {first.record.__name__} and "
                                    f"{record.__name__}")
                continue
            title = titles.get(record.title, record.title)
            if title not in groups:
                groups[title] = parser.add_argument_group(title)
            flag.add_to(groups[title])
            added[flag.dest] = flag
    return added
