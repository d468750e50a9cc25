"""Shared helpers for the packaged YAML reference data: types, reading, validating, look-ups."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Annotated, Any, Generic, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError

ModelT = TypeVar("ModelT", bound=BaseModel)
EntryT = TypeVar("EntryT")

Slug = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$")]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
Version = Annotated[str, StringConstraints(pattern=r"^[0-9]{4}\.[0-9]{1,2}\.[0-9]+$")]


class FrozenModel(BaseModel):
    """Base of the reference-data models: unknown keys are errors and values never change."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class ReferenceFile(Generic[ModelT]):
    """One kind of reference file: the model it holds and how its error messages name it.

    ``name`` reads "invalid <name>:"; ``subject`` (default "the <name>") starts the sentences
    about unreadable YAML. ``entries`` maps each list of entries to its singular noun
    ({"rules": "rule", "sources": "source"}), ``entry_keys`` the field that names an entry
    when it is not "id". ``whole`` labels a problem with the whole file; None shows such a
    problem as the bare message. ``top_level`` lists the keys the file must have, for the
    error about a file that is not a mapping ("" leaves them out). ``package`` and
    ``resource`` locate the packaged file, ``packaged`` names it when it cannot be read
    ("cannot read the packaged <packaged> <package>/<resource>"; default ``name``).
    """

    model: type[ModelT]
    error: type[Exception]
    name: str
    entries: Mapping[str, str]
    entry_keys: Mapping[str, str] = field(default_factory=dict)
    whole: str | None = None
    top_level: str = ""
    subject: str = ""
    package: str = ""
    resource: str = ""
    packaged: str = ""

    def read(self) -> str:
        """The text of the packaged file."""
        what = self.packaged or self.name
        label = f"the packaged {what} {self.package}/{self.resource}"
        return read_packaged(self.package, self.resource, self.error, label)

    def load(self, text: str | None = None) -> ModelT:
        """Parse and validate text (the packaged file when text is None)."""
        return parse_yaml(self.read() if text is None else text, self)


def read_packaged(package: str, resource: str, error: type[Exception], label: str) -> str:
    """The text of a packaged file; ``error`` saying "cannot read <label>: ..." when it fails."""
    try:
        return resources.files(package).joinpath(resource).read_text(encoding="utf-8")
    except (OSError, ModuleNotFoundError) as exc:
        raise error(f"cannot read {label}: {exc}") from exc


def find_entry(entries: Iterable[EntryT], key: str, wanted: str, missing: str) -> EntryT:
    """The first entry whose attribute ``key`` equals wanted; KeyError(missing) when none does."""
    for entry in entries:
        if getattr(entry, key) == wanted:
            return entry
    raise KeyError(missing)


def in_language(texts: Any, language: str, missing: str) -> str:
    """texts.pl or texts.en for 'pl' or 'en' (or a locale such as 'pl_PL', 'en-GB').

    Raises ValueError(missing) for any other language.
    """
    primary = language.replace("_", "-").split("-", 1)[0].lower()
    if primary not in ("pl", "en"):
        raise ValueError(missing)
    text: str = getattr(texts, primary)
    return text


def _path(parts: tuple[int | str, ...]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _describe(loc: tuple[int | str, ...], data: dict[str, Any], spec: ReferenceFile[Any]) -> str:
    """Turn a pydantic error location into "rule #4 ('EL-004'), field when[0].op"."""
    if len(loc) >= 2 and loc[0] in spec.entries and isinstance(loc[1], int):
        collection = str(loc[0])
        key = spec.entry_keys.get(collection, "id")
        head = f"{spec.entries[collection]} #{loc[1] + 1}"
        entries = data.get(collection)
        if isinstance(entries, list) and loc[1] < len(entries):
            entry = entries[loc[1]]
            if isinstance(entry, dict) and entry.get(key) is not None:
                head += f" ({entry[key]!r})"
        rest = _path(loc[2:])
        return f"{head}, field {rest}" if rest else head
    return f"field {_path(loc)}" if loc else (spec.whole or "")


def _line(
    loc: tuple[int | str, ...], msg: str, data: dict[str, Any], spec: ReferenceFile[Any]
) -> str:
    msg = msg.removeprefix("Value error, ")
    if not loc and spec.whole is None:
        return msg
    return f"{_describe(loc, data, spec)}: {msg}"


def parse_yaml(text: str, spec: ReferenceFile[ModelT]) -> ModelT:
    """Parse YAML text and validate it as spec.model.

    Raises spec.error for text that is not a YAML mapping, or naming the entry and field of
    every problem the model finds.
    """
    subject = spec.subject or f"the {spec.name}"
    try:
        # libyaml's parser when PyYAML was built with it: the same safe subset, ~10x faster,
        # and start-up parses every reference file.
        data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506
    except yaml.YAMLError as exc:
        raise spec.error(f"{subject} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        keys = f" with {spec.top_level}" if spec.top_level else ""
        raise spec.error(f"{subject} must be a YAML mapping{keys}")
    try:
        return spec.model.model_validate(data)
    except ValidationError as exc:
        lines = [
            _line(error["loc"], error["msg"], data, spec) for error in exc.errors(include_url=False)
        ]
        raise spec.error(f"invalid {spec.name}:\n  " + "\n  ".join(lines)) from exc
