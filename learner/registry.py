"""The adapter registry: immutable adapter versions and one pointer saying which ones serve.

A light module (no torch): serving imports it to watch the pointer and for the admin API.

    <root>/versions/<version>/   adapter weights + meta.json (lineage, gate report, created_at)
    <root>/pointer.json          {"active", "canary", "canary_share", "previous", "rejected", "updated_at"}
    <root>/audit.jsonl           one line per action: who, what, when, why, forced, before, after
    <root>/stats.json            live feedback per adapter and volume over time, written by the learner

`root` is a local directory or an fsspec URL (`s3://bucket/registry`, `gs://...`, `memory://...`).
Versions are never overwritten (OpenPipe ART's step directories). Locally, publishing and pointer
moves are atomic (write to a temporary name, fsync, rename). On an object store a version is
complete once its meta.json exists (written last). Remote versions are copied once into a local
cache, since vLLM loads adapters from local paths.

Pointer moves are compare-and-set: the pointer carries a `revision`; a move reads it, computes the
new pointer and writes revision + 1 only if nobody moved it meanwhile (locally under a file lock; on
S3 with a conditional PUT, `If-Match` on the ETag read). A caller that passes `expected` (the
promotion policy) is refused with `Conflict` when the pointer is no longer the one it decided on;
without it (an operator) a lost race is re-read and applied on top, so an operator's move always
lands. On S3 each move's audit entry is its own object (`audit/<revision>.json`, written once), so
concurrent writers never lose a line. Object stores other than S3 have no conditional PUT here:
there one writer at a time is assumed, as in k8s/.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import fsspec
from fsspec.implementations.local import LocalFileSystem
from pydantic import BaseModel, ConfigDict, Field

from feedback.files import write_atomic

# What every LoRA of this service adapts (the policy's adapters, which the registry holds, and the reward
# model's): every attention projection. The vLLM engines that load adapters, serving's and the learner's,
# apply LoRA to these only: by default vLLM computes a LoRA term for every projection it supports, zeros
# included (measured here: 16 answers with an adapter took 7.1-8.2 s on CPU, 3.6-4.0 s restricted to these).
LORA_TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj"]


class RegistryError(RuntimeError):
    """A refused registry action; the message says why and what would allow it."""


class UnknownVersion(RegistryError):
    pass


class Conflict(RegistryError):
    """The pointer moved since the caller read it: nothing was written."""


class Pointer(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    active: str | None = Field(default=None, description="Version serving everyone outside the canary; None: base model.")
    canary: str | None = Field(default=None, description="Version serving `canary_share` of users, sticky per user.")
    canary_share: float = Field(default=0.0, ge=0.0, le=1.0)
    previous: str | None = Field(default=None, description="The active version before the last move (rollback target).")
    rejected: tuple[str, ...] = Field(default=(), description="Versions an operator or the canary policy turned down.")
    revision: int = Field(default=0, ge=0, description="Moves so far: each move writes revision + 1 (compare-and-set).")
    updated_at: datetime | None = None


def gate_status(meta: dict[str, Any]) -> str:
    """'passed', 'failed' or 'ungated' (published without a gate report)."""
    report = meta.get("gate_report")  # optional by design: versions published by hand carry none
    if report is None:
        return "ungated"
    return "passed" if report["passed"] else "failed"


class Registry:
    def __init__(self, root: str | Path, cache_dir: Path | None = None) -> None:
        self.url = str(root)
        self.fs, self.root = fsspec.core.url_to_fs(self.url)
        self.local = isinstance(self.fs, LocalFileSystem)
        self.cache_dir = cache_dir or Path(tempfile.gettempdir()) / "rlhf-loop-registry-cache"

    @classmethod
    def from_settings(cls, settings) -> Registry:
        """The registry a process's settings name (`RLHF_REGISTRY`), cached under RLHF_HOME."""
        return cls(settings.registry_url, settings.home / "cache" / "registry")

    def _path(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts])

    def _write(self, path: str, text: str) -> None:
        if not self.local:
            with self.fs.open(path, "w") as stream:  # one PUT: readers see the old object or the new one
                stream.write(text)
            return
        write_atomic(path, text)

    # -- versions ----------------------------------------------------------------------------------
    def versions(self) -> list[str]:
        try:
            names = [p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(self._path("versions"), detail=False)]
        except FileNotFoundError:
            return []
        return sorted(n for n in names if n.startswith("v") and self.fs.exists(self._path("versions", n, "meta.json")))

    def meta(self, version: str) -> dict[str, Any]:
        try:
            return json.loads(self.fs.cat_file(self._path("versions", version, "meta.json")))
        except FileNotFoundError:
            raise UnknownVersion(f"unknown adapter version {version!r}") from None

    def version_path(self, version: str) -> Path:
        """A local directory holding the version's files (a cached copy for remote registries)."""
        self.meta(version)  # refuses unknown or incomplete versions
        if self.local:
            return Path(self._path("versions", version))
        cached = self.cache_dir / self.url.replace("://", "/").strip("/") / version
        if not (cached / "meta.json").exists():
            staging = cached.with_name(f".{version}.{os.getpid()}")
            shutil.rmtree(staging, ignore_errors=True)
            self.fs.get(self._path("versions", version) + "/", str(staging) + "/", recursive=True)
            staging.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(staging, cached)
            except OSError:  # another process cached it first; versions are immutable, so it is the same
                shutil.rmtree(staging, ignore_errors=True)
        return cached

    def publish(self, adapter_dir: Path, lineage: dict[str, Any], gate_report: dict[str, Any] | None = None) -> str:
        """Copy an adapter in as the next version (`v0001`, `v0002`, ...) and return its name."""
        if gate_report is not None and "only" in gate_report:
            raise RegistryError(f"a report of some gates only ({', '.join(gate_report['only'])}) cannot publish a version")
        created_at = datetime.now(timezone.utc).isoformat()
        while True:
            existing = [int(v[1:]) for v in self.versions() if v[1:].isdigit()]
            version = f"v{max(existing, default=0) + 1:04d}"
            meta = json.dumps({"version": version, "created_at": created_at, "lineage": lineage, "gate_report": gate_report})
            if not self.local:
                target = self._path("versions", version)
                self.fs.put(str(adapter_dir) + "/", target + "/", recursive=True)
                self._write(target + "/meta.json", meta)  # last: the version exists from here on
                return version
            versions_dir = Path(self._path("versions"))
            versions_dir.mkdir(parents=True, exist_ok=True)
            staging = versions_dir / f".staging-{os.getpid()}-{time.monotonic_ns()}"
            shutil.copytree(adapter_dir, staging)
            self._write(str(staging / "meta.json"), meta)
            try:
                os.rename(staging, versions_dir / version)  # fails if a concurrent publish took the name
                return version
            except OSError:
                shutil.rmtree(staging, ignore_errors=True)

    # -- the pointer and its moves ------------------------------------------------------------------
    def read_pointer(self) -> Pointer:
        try:
            return Pointer.model_validate_json(self.fs.cat_file(self._path("pointer.json")))
        except FileNotFoundError:
            return Pointer()

    def audit(self) -> list[dict[str, Any]]:
        """Every move, oldest first."""
        try:
            text = self.fs.cat_file(self._path("audit.jsonl")).decode()
        except FileNotFoundError:
            text = ""
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        if self._conditional:
            try:
                paths = sorted(self.fs.ls(self._path("audit"), detail=False, refresh=True))
            except FileNotFoundError:
                paths = []
            rows += [json.loads(text) for text in self.fs.cat(paths).values()] if paths else []
        return rows

    def move_pointer(self, pointer: Pointer, *, actor: str, reason: str, action: str = "move",
                     version: str | None = None, forced: bool = False, expected: int | None = None) -> Pointer:
        """Set the pointer to `pointer` (its revision is ignored) and append the move to the audit log."""
        return self._transition(lambda current: pointer, actor=actor, reason=reason, action=action, version=version,
                                forced=forced, expected=expected)

    def _transition(self, change: Callable[[Pointer], Pointer], *, actor: str, reason: str, action: str,
                    version: str | None | Callable[[Pointer], str | None], forced: bool = False,
                    expected: int | None = None) -> Pointer:
        """Compare-and-set: read the pointer, `change` it (raising RegistryError to refuse), write it as the
        next revision only if it is still the one read. With `expected`, a pointer at another revision is
        a Conflict; without, a lost race is read again and the change applied on top (a few tries)."""
        for attempt in range(5):
            with self._exclusive():
                before, tag = self._read_pointer_tagged()
                if expected is not None and before.revision != expected:
                    raise Conflict(f"the pointer moved (revision {before.revision}, expected {expected}): "
                                   f"read it again and decide anew")
                after = change(before)
                for name in (after.active, after.canary):
                    if name is not None:
                        self.meta(name)  # refuse to point at something that does not exist
                after = after.model_copy(update={"updated_at": datetime.now(timezone.utc), "revision": before.revision + 1})
                if not self._write_pointer(after, tag):
                    if expected is not None or attempt == 4:
                        raise Conflict(f"another writer moved the pointer past revision {before.revision} meanwhile")
                    continue
                self._append_audit({
                    "at": after.updated_at.isoformat(), "actor": actor, "action": action,
                    "version": version(before) if callable(version) else version,
                    "reason": reason, "forced": forced, "revision": after.revision,
                    "before": before.model_dump(mode="json", exclude={"updated_at", "revision"}),
                    "after": after.model_dump(mode="json", exclude={"updated_at", "revision"}),
                })
                return after
        raise AssertionError("unreachable")

    # -- compare-and-set storage: a file lock locally, conditional PUTs on S3 ----------------------------
    @property
    def _conditional(self) -> bool:
        return not self.local and "s3" in (self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,))

    def _read_pointer_tagged(self) -> tuple[Pointer, str | None]:
        """The pointer and, on S3, the ETag of exactly that content (None when there is no pointer yet)."""
        path = self._path("pointer.json")
        if not self._conditional:
            return self.read_pointer(), None
        for _ in range(10):  # HEAD, GET, HEAD: the same ETag both sides means the content read is that version
            try:
                tag = self.fs.info(path, refresh=True)["ETag"]
                pointer = Pointer.model_validate_json(self.fs.cat_file(path))
                if self.fs.info(path, refresh=True)["ETag"] == tag:
                    return pointer, tag
            except FileNotFoundError:
                return Pointer(), None
        raise Conflict("the pointer keeps changing while it is read")

    def _write_pointer(self, pointer: Pointer, tag: str | None) -> bool:
        """Write the pointer if it is still at `tag` (S3); False when another writer got there first."""
        path = self._path("pointer.json")
        self.fs.makedirs(self.root, exist_ok=True)
        if not self._conditional:
            self._write(path, pointer.model_dump_json())
            return True
        condition = {"IfMatch": tag} if tag is not None else {"IfNoneMatch": "*"}
        try:
            self.fs.pipe_file(path, pointer.model_dump_json().encode(), **condition)
        except OSError as error:  # a 412 comes as OSError (FileExistsError for If-None-Match)
            self.fs.invalidate_cache(path)
            now = self.fs.info(path, refresh=True)["ETag"] if self.fs.exists(path) else None
            if now != tag:  # a 412: someone else wrote first
                return False
            raise error
        self.fs.invalidate_cache(path)
        return True

    def _append_audit(self, row: dict[str, Any]) -> None:
        line = json.dumps(row) + "\n"
        if self.local:
            with open(self._path("audit.jsonl"), "a") as audit:  # under the pointer's file lock
                audit.write(line)
        elif self._conditional:  # one object per move: concurrent writers never overwrite each other's line
            self.fs.pipe_file(self._path("audit", f"{row['revision']:012d}.json"), line.encode(), IfNoneMatch="*")
        else:  # no conditional PUT: rewrite (one writer at a time, see the module doc)
            self._write(self._path("audit.jsonl"), "".join(json.dumps(r) + "\n" for r in self.audit()) + line)

    # -- live statistics (the learner writes them; the admin API and dashboard read them) ------------
    def write_stats(self, stats: dict[str, Any]) -> None:
        self.fs.makedirs(self.root, exist_ok=True)
        self._write(self._path("stats.json"), json.dumps(stats))

    def read_stats(self) -> dict[str, Any]:
        try:
            return json.loads(self.fs.cat_file(self._path("stats.json")))
        except FileNotFoundError:
            return {"updated_at": None, "adapters": [], "volume": []}

    @contextlib.contextmanager
    def _exclusive(self):
        """Serialize read-modify-write pointer actions across processes on a local registry (a file
        lock; on S3 the conditional PUT in `_write_pointer` does that job)."""
        if not self.local:
            yield
            return
        self.fs.makedirs(self.root, exist_ok=True)
        with open(self._path(".pointer.lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _check_servable(self, version: str, pointer: Pointer, force: bool) -> None:
        status = gate_status(self.meta(version))
        if force:
            return
        if version in pointer.rejected:
            raise RegistryError(f"{version} was rejected; pass force to serve it anyway (recorded in the audit log)")
        if status != "passed":
            raise RegistryError(f"{version} has {status} gates; pass force to serve it anyway (recorded in the audit log)")

    def promote(self, version: str, *, actor: str, reason: str, force: bool = False, expected: int | None = None) -> Pointer:
        """Make `version` active for everyone; the old active becomes `previous`."""
        def change(pointer: Pointer) -> Pointer:
            self._check_servable(version, pointer, force)
            if pointer.active == version:
                raise RegistryError(f"{version} is already active")
            canary = (None, 0.0) if pointer.canary == version else (pointer.canary, pointer.canary_share)
            return pointer.model_copy(update={
                "active": version, "previous": pointer.active, "canary": canary[0], "canary_share": canary[1]})
        return self._transition(change, actor=actor, reason=reason, action="promote", version=version, forced=force,
                                expected=expected)

    def canary(self, version: str, share: float, *, actor: str, reason: str, force: bool = False,
               expected: int | None = None) -> Pointer:
        """Serve `version` to `share` of users (sticky per user), beside the active one."""
        if not 0.0 < share <= 1.0:
            raise RegistryError(f"canary share must be in (0, 1], not {share}")

        def change(pointer: Pointer) -> Pointer:
            if pointer.active == version:
                raise RegistryError(f"{version} is already active")
            self._check_servable(version, pointer, force)
            return pointer.model_copy(update={"canary": version, "canary_share": share})
        return self._transition(change, actor=actor, reason=reason, action="canary", version=version, forced=force,
                                expected=expected)

    def rollback(self, *, actor: str, reason: str, expected: int | None = None) -> Pointer:
        """End a canary if one runs; otherwise make `previous` active again."""
        def change(pointer: Pointer) -> Pointer:
            if pointer.canary is not None:
                return pointer.model_copy(update={"canary": None, "canary_share": 0.0})
            if pointer.previous is None and pointer.active is None:
                raise RegistryError("nothing to roll back: no canary, no active adapter")
            return pointer.model_copy(update={"active": pointer.previous, "previous": pointer.active})
        return self._transition(change, actor=actor, reason=reason, action="rollback", expected=expected,
                                version=lambda pointer: pointer.canary if pointer.canary is not None else pointer.active)

    def reject(self, version: str, *, actor: str, reason: str, expected: int | None = None) -> Pointer:
        """Turn a version down: it leaves the canary, and it needs force to serve from now on."""
        self.meta(version)

        def change(pointer: Pointer) -> Pointer:
            if pointer.active == version:
                raise RegistryError(f"{version} is active: roll back or promote another version first")
            update: dict[str, Any] = {"rejected": tuple(sorted({*pointer.rejected, version}))}
            if pointer.canary == version:
                update.update(canary=None, canary_share=0.0)
            return pointer.model_copy(update=update)
        return self._transition(change, actor=actor, reason=reason, action="reject", version=version, expected=expected)

    def summary(self, version: str) -> dict[str, Any]:
        """One version as operators list it: role, gates, creation time, lineage."""
        meta, pointer = self.meta(version), self.read_pointer()
        role = ("active" if pointer.active == version else "canary" if pointer.canary == version
                else "rejected" if version in pointer.rejected else "previous" if pointer.previous == version else "")
        return {"version": version, "role": role, "gates": gate_status(meta), "created_at": meta["created_at"],
                "parent": meta["lineage"].get("parent"), "reward_model": meta["lineage"].get("reward_model")}

    def diff(self, a: str, b: str) -> dict[str, Any]:
        """What differs between two versions: lineage and gate figures, and how far the weights moved."""
        flat_a, flat_b = _flatten(self.meta(a)), _flatten(self.meta(b))
        changed = {key: [flat_a.get(key), flat_b.get(key)] for key in sorted(flat_a.keys() | flat_b.keys())
                   if key not in ("version", "created_at") and flat_a.get(key) != flat_b.get(key)}
        return {"a": a, "b": b, "changed": changed, "weights": _weight_distance(self.version_path(a), self.version_path(b))}


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in _flatten(item, f"{prefix}{key}.").items()}
    if isinstance(value, list) and value and all(isinstance(item, dict) and "name" in item for item in value):
        return {k: v for item in value for k, v in _flatten(item, f"{prefix}{item['name']}.").items()}
    return {prefix.rstrip("."): value}


def _weight_distance(a: Path, b: Path) -> dict[str, Any]:
    """Relative L2 distance ||b - a|| / ||a|| over the LoRA tensors both versions share (numpy: no torch)."""
    import numpy as np
    from safetensors import safe_open

    name = "adapter_model.safetensors"
    if not (a / name).exists() or not (b / name).exists():
        return {"comparable": False, "why": f"a version has no {name}"}
    with safe_open(a / name, framework="numpy") as left, safe_open(b / name, framework="numpy") as right:
        shared = sorted(set(left.keys()) & set(right.keys()))
        if not shared or any(left.get_slice(k).get_shape() != right.get_slice(k).get_shape() for k in shared):
            return {"comparable": False, "why": "different tensor names or shapes (e.g. another LoRA rank)"}
        difference = norm = 0.0
        for key in shared:
            x, y = left.get_tensor(key).astype(np.float64), right.get_tensor(key).astype(np.float64)
            difference += float(((y - x) ** 2).sum())
            norm += float((x ** 2).sum())
    return {"comparable": True, "tensors": len(shared), "relative_l2": (difference / norm) ** 0.5 if norm else None}
