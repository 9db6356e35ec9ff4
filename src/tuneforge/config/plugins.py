"""Plug-in families: each method, stage, loss, reward, backend ... is one file that declares its own keys.

A family is a folder (a package) selected by one config key: `finetuning_type` picks a member of
`tuneforge/model/adapters/`, `stage` one of `tuneforge/train/stages/`, and so on (`FAMILIES` below).
A member file declares a small `Params` model with the flat keys it reads and registers itself:

    class LoraParams(Params):
        lora_rank: int = Field(8, gt=0, description="Rank of the LoRA matrices.")

    @family("finetuning_type").register("lora", params=LoraParams, peft=True)
    def build_lora(model, finetuning, model_args): ...

The folder is discovered (every module in it is imported once), so adding a member edits no list.
`compose_group` builds each config group from its base keys plus every member's keys, which keeps
YAML files, `--help`, the board's form and run.yaml flat as LLaMA-Factory writes them, while
`owner_problems` can say that `lora_rank` belongs to `finetuning_type: lora`.

Member files import only pydantic, config and utils at module level (torch inside functions), so
discovering them stays fast and config stays free of torch. Config names the folders as data (the
table below) and imports them by name; it never imports a member's code statically.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, create_model
from pydantic.fields import FieldInfo

T = TypeVar("T")


class Params(BaseModel):
    """The keys one plug-in reads; composed into its config group, so they stay flat in YAML."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


@dataclass
class Member:
    """One registered plug-in: its name, its keys and the object the family calls."""

    family: str
    name: str
    params: type[Params] | None
    target: Any
    traits: dict[str, Any] = field(default_factory=dict)


@dataclass
class Family:
    """Members selected by the config key `key`, found in the package `package`, keys in group `group`."""

    key: str
    package: str
    group: str
    multiple: bool = False  # the key takes a list of members (reward_funcs)
    _members: dict[str, Member] = field(default_factory=dict)
    _discovered: bool = False

    def register(self, name: str, params: type[Params] | None = None, **traits: Any) -> Callable[[T], T]:
        """Decorator: register the decorated object as member `name` with its keys and traits."""

        def wrap(target: T) -> T:
            self._members[name] = Member(self.key, name, params, target, traits)
            compose_group.cache_clear()
            return target

        return wrap

    def unregister(self, name: str) -> None:
        """Remove a member (tests that define throwaway plug-ins clean up with this)."""
        self._members.pop(name, None)
        compose_group.cache_clear()

    def discover(self) -> None:
        """Import every module of the family's folder once (each registers its members)."""
        if self._discovered:
            return
        self._discovered = True
        package = importlib.import_module(self.package)
        for info in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{self.package}.{info.name}")

    def members(self) -> dict[str, Member]:
        self.discover()
        return dict(self._members)

    def get(self, name: str) -> Member:
        """The member called `name`; a KeyError names the known ones."""
        members = self.members()
        if name not in members:
            raise KeyError(f"{self.key} '{name}' is not registered; known: {', '.join(sorted(members))}")
        return members[name]


# The families, by the key that selects a member. Adding a family adds a line here; adding a member
# adds a file to its folder and touches nothing else.
FAMILIES: dict[str, Family] = {
    f.key: f
    for f in (
        Family("stage", "tuneforge.train.stages", "finetuning"),
        Family("finetuning_type", "tuneforge.model.adapters", "finetuning"),
        Family("pref_loss", "tuneforge.train.pref_losses", "finetuning"),
        Family("grpo_loss_type", "tuneforge.train.grpo_losses", "finetuning"),
        Family("reward_funcs", "tuneforge.train.rewards", "finetuning", multiple=True),
        Family("reward_model_type", "tuneforge.train.reward_models", "finetuning"),
        Family("infer_backend", "tuneforge.inference.backends", "model"),
        Family("export_format", "tuneforge.export.formats", "export"),
        # chosen by the shape of model_name_or_path, not by a key of its own: no config group
        Family("model_source", "tuneforge.model.sources", ""),
    )
}


def family(key: str) -> Family:
    return FAMILIES[key]


def _same_field(a: FieldInfo, b: FieldInfo) -> bool:
    return a is b or (
        a.annotation == b.annotation and a.default == b.default and a.description == b.description
    )


@functools.cache
def compose_group(name: str, base: type[BaseModel]) -> type[BaseModel]:
    """`base` (the group's own keys) plus the keys of every member of the families living in group `name`;
    each family's selecting key becomes a choice of its registered members."""
    families = [f for f in FAMILIES.values() if f.group == name]
    if not families:
        return base
    params: list[type[Params]] = []
    seen: dict[str, tuple[str, FieldInfo]] = {}
    for fam in families:
        for member in fam.members().values():
            if member.params is None or member.params in params:
                continue
            for key, info in member.params.model_fields.items():
                if key in base.model_fields:
                    raise TypeError(f"{member.name} redeclares the base key '{key}' of group {name}")
                if key in seen and not _same_field(seen[key][1], info):
                    raise TypeError(
                        f"key '{key}' is declared differently by {seen[key][0]} and {member.name}"
                    )
                seen[key] = (member.name, info)
            params.append(member.params)
    choices: dict[str, Any] = {}
    for fam in FAMILIES.values():  # a selecting key may live in the base or in a member's params (pref_loss)
        declared = base.model_fields.get(fam.key) or (seen[fam.key][1] if fam.key in seen else None)
        if fam.multiple or declared is None:
            continue
        names = tuple(sorted(fam.members()))
        choices[fam.key] = (Literal[names], FieldInfo.merge_field_infos(declared, annotation=Literal[names]))
    # a params class shared by several members (TargetParams under LoraParams and OftParams) is inherited once
    leaves = [p for p in params if not any(other is not p and issubclass(other, p) for other in params)]
    _check_validator_names(leaves)
    composed = create_model(base.__name__, __base__=(base, *leaves), __module__=base.__module__, **choices)
    composed.__doc__ = base.__doc__
    return composed


def _check_validator_names(classes: list[type[Params]]) -> None:
    """Validators are inherited by name: two members' validators with one name would silently drop one."""
    owner: dict[str, tuple[type, Any]] = {}
    for cls in classes:
        decorators = cls.__pydantic_decorators__
        for name, dec in {**decorators.field_validators, **decorators.model_validators}.items():
            func = getattr(dec.func, "__func__", dec.func)
            if name in owner and owner[name][1] is not func:
                raise TypeError(
                    f"validator '{name}' is defined by {owner[name][0].__name__} and {cls.__name__}: rename one"
                )
            owner[name] = (cls, func)


def key_order(group: str, base: type[BaseModel]) -> list[str]:
    """The keys of a composed group as people read them: the base keys, then each family's members' keys
    (families in `FAMILIES` order, members in registration order, keys as declared)."""
    order = list(base.model_fields)
    for fam in FAMILIES.values():
        if fam.group != group:
            continue
        for member in fam.members().values():
            order += [k for k in (member.params.model_fields if member.params else ()) if k not in order]
    return order


def key_owners(group: str) -> dict[str, list[tuple[str, list[str]]]]:
    """For each member-owned key of `group`: [(selecting key, [member names])], e.g.
    `lora_target` -> [("finetuning_type", ["lora", "oft"])]."""
    owners: dict[str, dict[str, list[str]]] = {}
    for fam in FAMILIES.values():
        if fam.group != group:
            continue
        for member in fam.members().values():
            for key in member.params.model_fields if member.params else ():
                owners.setdefault(key, {}).setdefault(fam.key, []).append(member.name)
    return {key: list(by.items()) for key, by in owners.items()}


def owner_problems(values: BaseModel, group: str) -> list[str]:
    """Keys given a value other than their default that belong only to members this run does not select."""
    problems = []
    for key, owners in key_owners(group).items():
        if key not in values.model_fields_set:
            continue
        info = type(values).model_fields[key]
        if getattr(values, key) == info.get_default(call_default_factory=True):
            continue  # a default written out (run.yaml, a form) changes nothing
        for selector, names in owners:
            chosen = getattr(values, selector, None)
            picked = chosen if isinstance(chosen, list) else [chosen]
            if any(name in picked for name in names) or not hasattr(values, selector):
                break
        else:
            selector, names = owners[0]
            chosen = getattr(values, selector, None)
            shown = ", ".join(map(str, chosen)) if isinstance(chosen, list) else chosen
            problems.append(
                f"key '{key}' belongs to {selector}: {' or '.join(names)}; this run uses {selector}: {shown or 'none'}"
            )
    return problems


def member_of(key: str, value: str) -> Member:
    """The member selected by `key: value`."""
    return family(key).get(value)


def choices(annotation: object) -> list[str]:
    """The names of a Literal annotation (a family's registered members)."""
    return [str(a) for a in typing.get_args(annotation)] if typing.get_origin(annotation) is Literal else []
